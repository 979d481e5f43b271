"""Signed bundles (issue 27): sign on the workstation, verify on the device, refuse what the key did not sign.

The manifest's sha256 set proves a bundle whole, not where it came from: a bundle whose labels were
swapped and whose manifest was re-hashed passes every other check (tests/bundle_tamper.py). Here a
signature by the OpenSSF model-signing library must catch it, and every bundle-loading command must
refuse an unsigned or tampered bundle before any model opens once a public key is set.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("model_signing", reason="signed bundles need the [sign] extra (model-signing)")
pytest.importorskip("OpenSSL", reason="model-signing imports pyOpenSSL (the [sign] extra names it)")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from ringfold.cli import main  # noqa: E402
from ringfold.cli.signing import BUNDLE_COMMANDS  # noqa: E402
from ringfold.ownership import RECORD_FILE, ownership_problem, read_record  # noqa: E402
from ringfold.runtime.bundle.signature import PUBLIC_KEY_ENV, SIGNATURE_FILE  # noqa: E402
from tests.bundle_tamper import copy_bundle, rehash, write_json_file  # noqa: E402


def _write_private(path: Path, key, password: bytes | None = None) -> Path:
    crypt = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt))
    return path


def _write_public(path: Path, key) -> Path:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(pem)
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """A P-256 pair (the signer), a P-384 pair (someone else), an RSA key, a password-protected P-256 key."""
    root = tmp_path_factory.mktemp("keys")
    signer, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    big = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "private": _write_private(root / "private.pem", signer),
        "public": _write_public(root / "public.pem", signer),
        "other_private": _write_private(root / "other.pem", other),
        "other_public": _write_public(root / "other_public.pem", other),
        "rsa": _write_private(root / "rsa.pem", big),
        "rsa_public": _write_public(root / "rsa_public.pem", big),
        "encrypted": _write_private(root / "encrypted.pem", signer, b"correct horse"),
        "garbage": _write_text(root / "garbage.pem", "-----BEGIN PUBLIC KEY-----\nnot base64\n"),
    }


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def signed(tmp_path_factory, tiny_bundle, keys) -> Path:
    """The tiny bundle, signed with ``keys['private']`` by ``ringfold sign`` (read only: tests copy it)."""
    bundle = copy_bundle(tiny_bundle, tmp_path_factory.mktemp("signed") / "bundle")
    assert main(["sign", str(bundle), "--key", str(keys["private"])]) == 0
    return bundle


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(argv: list[str], capsys) -> str:
    """The one stderr line of a command that must refuse with exit 2."""
    code, _, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    return lines[0]


def _fingerprint(public: Path) -> str:
    return hashlib.sha256(public.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------- round trip
def test_sign_then_verify_names_the_key_and_what_is_covered(signed, keys, capsys):
    code, out, _ = _run(["verify", signed, "--public-key", keys["public"]], capsys)
    assert code == 0
    assert f"signed by key sha256:{_fingerprint(keys['public'])}" in out  # `sha256sum public.pem` on the device
    files = [p for p in signed.rglob("*") if p.is_file() and p.name not in (SIGNATURE_FILE, RECORD_FILE)]
    assert f"covers {len(files)} files" in out and f"every file but {RECORD_FILE} (ringfold's ownership" in out
    assert "never covered: engines/, the TensorRT engines built on the device after signing (it has none yet)" in out
    signature = json.loads((signed / SIGNATURE_FILE).read_text())  # a Sigstore bundle: DSSE envelope, in-toto
    assert signature["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"


def test_the_signature_is_ringfolds_so_export_overwrite_may_replace_the_bundle(signed):
    assert SIGNATURE_FILE in read_record(signed)
    assert ownership_problem(signed) is None


def test_engines_built_later_on_the_device_are_not_covered_and_said_so(signed, keys, tmp_path, capsys):
    bundle = copy_bundle(signed, tmp_path / "bundle")
    (bundle / "engines").mkdir()
    (bundle / "engines" / "model_fp16.plan").write_bytes(b"built on the device")
    code, out, _ = _run(["verify", bundle, "--public-key", keys["public"]], capsys)
    assert (
        code == 0
        and "never covered: engines/, the TensorRT engines built on the device after signing (its "
        "engines/ folder is not checked)"
        in out
    )


def test_sign_again_replaces_ringfolds_own_signature_but_not_one_it_did_not_write(signed, keys, tmp_path, capsys):
    bundle = copy_bundle(signed, tmp_path / "bundle")
    assert _run(["sign", bundle, "--key", keys["other_private"]], capsys)[0] == 0  # rotated to another key
    assert _run(["verify", bundle, "--public-key", keys["other_public"]], capsys)[0] == 0
    (bundle / SIGNATURE_FILE).write_text("{}")
    line = _refused(["sign", bundle, "--key", keys["private"]], capsys)
    assert line.endswith(
        f"{bundle / SIGNATURE_FILE}: exists and ringfold did not write it (or it changed since); "
        "move it away to sign the bundle again"
    )


# ------------------------------------------------------------------------------------------- refusals
def test_verify_refuses_an_unsigned_bundle(tiny_bundle, keys, capsys):
    line = _refused(["verify", tiny_bundle, "--public-key", keys["public"]], capsys)
    assert f"{tiny_bundle}: is not signed (no model.sig); sign it on the workstation" in line


def test_verify_refuses_a_signature_by_another_key(signed, keys, capsys):
    line = _refused(["verify", signed, "--public-key", keys["other_public"]], capsys)
    assert f"{signed}: signed by another key (sha256:{_fingerprint(keys['public'])[:16]}…)" in line


def test_verify_refuses_a_signature_whose_key_hint_was_forged(signed, keys, tmp_path, capsys):
    """An attacker signs with their own key and copies the victim's key hint: the envelope check fails."""
    bundle = copy_bundle(signed, tmp_path / "bundle")
    (bundle / SIGNATURE_FILE).unlink()
    assert _run(["sign", bundle, "--key", keys["other_private"]], capsys)[0] == 0
    signature = json.loads((bundle / SIGNATURE_FILE).read_text())
    signature["verificationMaterial"]["publicKey"]["hint"] = _fingerprint(keys["public"])
    (bundle / SIGNATURE_FILE).write_text(json.dumps(signature))
    line = _refused(["verify", bundle, "--public-key", keys["public"]], capsys)
    assert f"{bundle / SIGNATURE_FILE}: does not verify with {keys['public']}" in line


@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        (lambda b: (b / "export_report.md").write_text("edited"), "(changed: export_report.md)"),
        (lambda b: (b / "extra.onnx").write_bytes(b"added"), "(added: extra.onnx)"),
        (lambda b: (b / "export_report.md").unlink(), "(removed: export_report.md)"),
        (lambda b: (b / "reference" / "images" / "x.png").write_bytes(b"x"), "(added: reference/images/x.png)"),
    ],
    ids=["changed", "added", "removed", "added-deep"],
)
def test_verify_refuses_a_changed_added_or_removed_file(signed, keys, tmp_path, capsys, tamper, said):
    bundle = copy_bundle(signed, tmp_path / "bundle")
    tamper(bundle)
    line = _refused(["verify", bundle, "--public-key", keys["public"]], capsys)
    assert f"{bundle}: differs from its signature {said} — modified since it was signed" in line


def test_verify_refuses_swapped_labels_with_a_re_hashed_manifest(signed, keys, tmp_path, capsys):
    """The attack the manifest cannot see: swap two class names, re-hash the manifest to match."""
    bundle = copy_bundle(signed, tmp_path / "bundle")
    labels = json.loads((bundle / "labels.json").read_text())
    write_json_file(bundle, "labels.json", [labels[1], labels[0], *labels[2:]])  # re-hashes manifest.json
    assert main(["classify", str(bundle), str(bundle / "reference" / "images"), "--top-k", "1"]) == 0  # unseen
    capsys.readouterr()
    line = _refused(["verify", bundle, "--public-key", keys["public"]], capsys)
    assert f"{bundle}: differs from its signature (changed: labels.json, manifest.json)" in line


def test_verify_refuses_a_damaged_signature_file(signed, keys, tmp_path, capsys):
    bundle = copy_bundle(signed, tmp_path / "bundle")
    (bundle / SIGNATURE_FILE).write_text("not json")
    line = _refused(["verify", bundle, "--public-key", keys["public"]], capsys)
    assert f"{bundle / SIGNATURE_FILE}: not a Sigstore signature bundle from model-signing" in line


# ---------------------------------------------------------------------------------------- bad keys
@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("missing", "not found; pass a PEM elliptic-curve private key, made with `openssl ecparam"),
        ("garbage", "holds a public key; signing needs its private key (--key)"),
        ("public", "holds a public key; signing needs its private key (--key)"),
        ("rsa", "is an RSA key; ringfold signs with elliptic-curve keys (P-256, P-384, P-521)"),
        ("encrypted", "is password-protected; set RINGFOLD_SIGN_PASSWORD to its password"),
        ("labels", "not a PEM private key (ValueError)"),
    ],
)
def test_sign_refuses_a_bad_private_key_and_writes_nothing(tiny_bundle, keys, tmp_path, capsys, key, said):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    path = {"missing": tmp_path / "nope.pem", "labels": bundle / "labels.json"}.get(key) or keys[key]
    before = sorted(p.name for p in bundle.iterdir()), (bundle / RECORD_FILE).read_bytes()
    line = _refused(["sign", bundle, "--key", path], capsys)
    assert line == f"ringfold sign: error: {path}: {said}" or line.startswith(f"ringfold sign: error: {path}: {said}")
    assert (sorted(p.name for p in bundle.iterdir()), (bundle / RECORD_FILE).read_bytes()) == before


def test_a_password_protected_key_signs_with_its_password(tiny_bundle, keys, tmp_path, capsys, monkeypatch):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    monkeypatch.setenv("RINGFOLD_SIGN_PASSWORD", "wrong")
    assert "wrong RINGFOLD_SIGN_PASSWORD or not a PEM private key" in _refused(
        ["sign", bundle, "--key", keys["encrypted"]], capsys
    )
    monkeypatch.setenv("RINGFOLD_SIGN_PASSWORD", "correct horse")
    assert _run(["sign", bundle, "--key", keys["encrypted"]], capsys)[0] == 0
    assert _run(["verify", bundle, "--public-key", keys["public"]], capsys)[0] == 0


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("missing", "not found; pass the signer's public key (PEM), made with `openssl ec -in private.pem -pubout"),
        ("garbage", "not a PEM public key (ValueError)"),
        ("private", "holds a private key, which stays on the workstation"),
        ("rsa_public", "is an RSA key; ringfold signs with elliptic-curve keys"),
    ],
)
def test_verify_refuses_a_bad_public_key(signed, keys, tmp_path, capsys, key, said):
    path = tmp_path / "nope.pem" if key == "missing" else keys[key]
    assert _refused(["verify", signed, "--public-key", path], capsys).startswith(
        f"ringfold verify: error: {path}: {said}"
    )


# ------------------------------------------------------------------------- every bundle-loading command
def test_every_bundle_loading_command_takes_public_key():
    import argparse

    from ringfold.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for name in BUNDLE_COMMANDS:
        options = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert "--public-key" in options, name
    assert set(BUNDLE_COMMANDS) >= {"classify", "parity", "bench", "relabel", "check", "build-engine", "deepstream"}


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "{b}", "{b}/reference/images"],
        ["parity", "{b}", "--report", "{t}/parity"],
        ["bench", "{b}", "--out", "{t}/bench"],
        ["relabel", "{b}", "--classes", "cat,dog", "--out", "{t}/relabelled"],
        ["check", "{b}"],
        ["build-engine", "{b}"],
        ["deepstream", "{b}", "--out", "{t}/ds"],
        ["triton", "{b}", "--out", "{t}/triton"],
        ["evaluate", "{b}"],  # its positional names a bundle or a run; a folder with manifest.json is a bundle
    ],
    ids=lambda a: a[0],
)
def test_with_a_key_set_every_command_refuses_an_unsigned_bundle_before_any_model_opens(
    tiny_bundle, keys, tmp_path, capsys, monkeypatch, argv
):
    import onnxruntime

    def no_model(*args, **kwargs):
        raise AssertionError("a model opened before the signature was checked")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_model)
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(keys["public"]))  # a device's policy: every command, no flag
    argv = [a.format(b=tiny_bundle, t=tmp_path) for a in argv]
    line = _refused(argv, capsys)
    assert line.startswith(f"ringfold {argv[0]}: error: {tiny_bundle}: is not signed (no model.sig)")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_with_public_key_a_signed_bundle_runs_and_a_tampered_one_is_refused(signed, keys, tmp_path, capsys):
    images = signed / "reference" / "images"
    code, out, err = _run(["classify", signed, images, "--top-k", "1", "--public-key", keys["public"]], capsys)
    assert code == 0 and len(out.splitlines()) == len(list(images.iterdir())) and "signature good" in err
    bundle = copy_bundle(signed, tmp_path / "bundle")
    rehash(bundle, {**json.loads((bundle / "manifest.json").read_text()), "model_name": "evil"})
    line = _refused(["classify", bundle, images, "--public-key", keys["public"]], capsys)
    assert "differs from its signature (changed: manifest.json)" in line


def test_relabel_of_a_signed_bundle_says_its_output_is_unsigned_or_signs_it(signed, keys, tmp_path, capsys):
    out = tmp_path / "relabelled"
    code, _, err = _run(["relabel", signed, "--classes", "cat,dog", "--out", out], capsys)
    assert code == 0 and not (out / SIGNATURE_FILE).exists()
    assert f"note: {signed} is signed, {out} is not (its head and labels are new)" in err
    signed_out = tmp_path / "relabelled-signed"
    argv = ["relabel", signed, "--classes", "cat,dog", "--out", signed_out, "--sign-key", keys["private"]]
    assert _run(argv, capsys)[0] == 0
    assert _run(["verify", signed_out, "--public-key", keys["public"]], capsys)[0] == 0


def test_relabel_with_a_bad_sign_key_refuses_before_writing(signed, keys, tmp_path, capsys):
    out = tmp_path / "relabelled"
    line = _refused(["relabel", signed, "--classes", "cat,dog", "--out", out, "--sign-key", keys["rsa"]], capsys)
    assert "is an RSA key" in line and not out.exists()


def test_export_with_a_bad_sign_key_refuses_before_the_export(tiny_run, keys, tmp_path, capsys, monkeypatch):
    import ringfold.exporter.export as export

    def no_export(*args, **kwargs):
        raise AssertionError("exported before the signing key was checked")

    monkeypatch.setattr(export, "export_run", no_export)
    out = tmp_path / "bundle"
    line = _refused(["export", tiny_run, "--out", out, "--sign-key", keys["encrypted"]], capsys)
    assert f"{keys['encrypted']}: is password-protected" in line and not out.exists()


@pytest.mark.slow
def test_export_sign_key_signs_in_the_same_step(tiny_run, keys, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert _run(["export", tiny_run, "--out", out, "--ref-count", "4", "--sign-key", keys["private"]], capsys)[0] == 0
    assert _run(["verify", out, "--public-key", keys["public"]], capsys)[0] == 0
    argv = ["export", tiny_run, "--out", out, "--ref-count", "4", "--overwrite"]
    assert _run(argv, capsys)[0] == 0  # the signature was ringfold's: --overwrite replaces the bundle
    assert not (out / SIGNATURE_FILE).exists()


# ------------------------------------------------------------------------ model-signing's own CLI
def _model_signing(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_signing", *map(str, args)], capture_output=True, text=True)


def test_a_signature_made_by_model_signings_cli_verifies_with_ringfold(tiny_bundle, keys, tmp_path, capsys):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    made = _model_signing(
        "sign", "key", bundle, "--private_key", keys["private"], "--signature", bundle / SIGNATURE_FILE,
        "--ignore-paths", bundle / RECORD_FILE,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert _run(["verify", bundle, "--public-key", keys["public"]], capsys)[0] == 0


def test_a_ringfold_signature_verifies_with_model_signings_cli(signed, keys):
    checked = _model_signing(
        "verify", "key", signed, "--public_key", keys["public"], "--signature", signed / SIGNATURE_FILE,
        "--ignore-paths", signed / RECORD_FILE,
    )  # fmt: skip
    assert checked.returncode == 0 and "Verification succeeded" in checked.stdout, checked.stderr
    other = _model_signing(
        "verify", "key", signed, "--public_key", keys["other_public"], "--signature", signed / SIGNATURE_FILE,
        "--ignore-paths", signed / RECORD_FILE,
    )  # fmt: skip
    assert other.returncode == 1


def test_a_signature_that_leaves_out_a_manifest_file_is_refused(tiny_bundle, keys, tmp_path, capsys):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    made = _model_signing(
        "sign", "key", bundle, "--private_key", keys["private"], "--signature", bundle / SIGNATURE_FILE,
        "--ignore-paths", bundle / RECORD_FILE, "--ignore-paths", bundle / "labels.json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    line = _refused(["verify", bundle, "--public-key", keys["public"]], capsys)
    assert f"{bundle / 'labels.json'}: not covered by the signature" in line


def test_without_a_key_nothing_changes(tiny_bundle, capsys):
    code, out, err = _run(["classify", tiny_bundle, tiny_bundle / "reference" / "images", "--top-k", "1"], capsys)
    assert code == 0 and "signature" not in err


def test_without_the_sign_extra_a_key_is_refused_in_one_line_naming_it(signed, keys, capsys, monkeypatch):
    import ringfold.extras as extras

    monkeypatch.setattr(extras, "missing_module", lambda modules: "model_signing" if "OpenSSL" in modules else None)
    line = _refused(["classify", signed, signed / "reference" / "images", "--public-key", keys["public"]], capsys)
    assert "needs model_signing, which is not installed" in line and "[sign]" in line


def test_a_library_signature_that_covers_the_ownership_record_is_refused_naming_the_fix(
    tiny_bundle, keys, tmp_path, capsys
):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    made = _model_signing(
        "sign", "key", bundle, "--private_key", keys["private"], "--signature", bundle / SIGNATURE_FILE
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    line = _refused(["verify", bundle, "--public-key", keys["public"]], capsys)
    assert f"{bundle / SIGNATURE_FILE}: covers {RECORD_FILE}, which no bundle signature may cover" in line
    assert f"--ignore-paths {bundle / RECORD_FILE}" in line
