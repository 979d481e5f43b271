"""Signed bundles: proof of where a bundle came from, on top of the manifest's proof that it is whole.

The manifest's sha256 set proves integrity, not origin: whoever changes a file can re-hash the
manifest to match. A signature made with the OpenSSF ``model-signing`` library (key-based, no
network) binds every file's sha256 to the holder of a private elliptic-curve key (P-256, P-384 or
P-521); the device checks it with the public key before any model opens.

The signature is a Sigstore bundle (a DSSE envelope around an in-toto statement listing each file
and its sha256), written beside the files as :data:`SIGNATURE_FILE` (``model.sig``, the library's
own default name), so the library's CLI verifies it too. Not covered (:data:`UNSIGNED`): the
signature itself; ``engines/`` (TensorRT engines are built later on the device, from the signed
ONNX); and ``.ringfold-files.json``, ringfold's ownership record, which lists ``model.sig`` and so
changes after signing, and which only decides what ``--overwrite`` may replace, never what runs.
Everything else in the folder is covered: an added, removed or changed file fails verification,
and every file the manifest lists must be covered by the signature (a signature that left one out
is refused too).

``model_signing`` and ``cryptography`` are the optional ``[sign]`` extra, imported only when a key
is read or a signature made or checked: a device that checks no signatures installs neither.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfold.atomic import sha256_file
from ringfold.errors import BundleError, RingfoldError
from ringfold.ownership import RECORD_FILE, read_record, record_files

from .engines import ENGINE_DIR
from .loader import load_bundle
from .manifest import read_manifest
from .spec import MANIFEST_FILE

#: the signature's name beside the bundle's files (model-signing's default, ``--signature model.sig``)
SIGNATURE_FILE = "model.sig"
#: top-level entries no signature covers: itself, ringfold's ownership record, engines built on the device
UNSIGNED = (SIGNATURE_FILE, RECORD_FILE, ENGINE_DIR)
#: the public key every bundle-loading command requires a signature by, when set (a device's policy)
PUBLIC_KEY_ENV = "RINGFOLD_PUBLIC_KEY"
#: the password of an encrypted private key (never on the command line, where `ps` shows it)
PASSWORD_ENV = "RINGFOLD_SIGN_PASSWORD"
#: the curves model-signing takes, by their cryptography names
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
MAKE_KEY = "openssl ecparam -name prime256v1 -genkey -noout -out private.pem"
MAKE_PUBLIC = "openssl ec -in private.pem -pubout -out public.pem"
#: a PEM key is a few hundred bytes; a signature a few KiB per hundred files
MAX_KEY_BYTES = 64 << 10
MAX_SIGNATURE_BYTES = 16 << 20


@dataclass(frozen=True)
class SignatureCheck:
    """A good signature: the bundle, the signer's key fingerprint, and what the signature covers."""

    bundle: Path
    fingerprint: str  # sha256 of the public key's PEM (SubjectPublicKeyInfo): `sha256sum public.pem`
    files: tuple[str, ...]
    size: int  # bytes covered
    engines: bool  # whether the bundle has an engines/ folder (not covered)

    def covered(self) -> str:
        """What the signature covers and what it does not, in words."""
        engines = "its engines/ folder is not checked" if self.engines else "it has none yet"
        return (
            f"{len(self.files)} files, {self.size / 1e6:.1f} MB — every file but {RECORD_FILE} (ringfold's "
            f"ownership record); never covered: {ENGINE_DIR}/, the TensorRT engines built on the device after "
            f"signing ({engines})"
        )

    def summary(self) -> str:
        return f"{self.bundle}: signature good — signed by key sha256:{self.fingerprint}; covers {self.covered()}"


# ------------------------------------------------------------------------------------------------ keys
def _key_bytes(path: Path, what: str, fix: str) -> bytes:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RingfoldError(f"{path}: not found; {fix}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_KEY_BYTES:
        raise RingfoldError(f"{path}: not a PEM {what} key file; {fix}")
    return path.read_bytes()


def _check_curve(public_key: Any, path: Path) -> None:
    """Refuse a key model-signing cannot sign with (RSA, Ed25519, another curve) in one line."""
    from cryptography.hazmat.primitives.asymmetric import ec  # the optional [sign] extra

    fix = f"ringfold signs with elliptic-curve keys (P-256, P-384, P-521): make one with `{MAKE_KEY}`"
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = type(public_key).__name__.replace("PublicKey", "").lstrip("_") or "non-EC"
        raise RingfoldError(f"{path}: is an {kind} key; {fix}")
    if public_key.curve.name not in CURVES:
        raise RingfoldError(f"{path}: uses the curve {public_key.curve.name}; {fix}")


def load_public_key(path: str | os.PathLike) -> Any:
    """The EC public key in ``path`` (PEM); one line naming the file and the fix for anything else."""
    from cryptography.exceptions import UnsupportedAlgorithm  # the optional [sign] extra
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    fix = f"pass the signer's public key (PEM), made with `{MAKE_PUBLIC}`"
    data = _key_bytes(path, "public", fix)
    if b"PRIVATE KEY-----" in data:
        raise RingfoldError(f"{path}: holds a private key, which stays on the workstation; {fix}")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise RingfoldError(f"{path}: not a PEM public key ({type(exc).__name__}); {fix}") from None
    _check_curve(key, path)
    return key


def load_private_key(path: str | os.PathLike, password: bytes | None = None) -> Any:
    """The EC private key in ``path`` (PEM), decrypted with ``password``; one line for anything else."""
    from cryptography.exceptions import UnsupportedAlgorithm  # the optional [sign] extra
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    fix = f"pass a PEM elliptic-curve private key, made with `{MAKE_KEY}`"
    data = _key_bytes(path, "private", fix)
    if b"PRIVATE KEY-----" not in data and b"PUBLIC KEY-----" in data:
        raise RingfoldError(f"{path}: holds a public key; signing needs its private key (--key); {fix}")
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:  # cryptography: a password for a plain key, or none for an encrypted one
        if password is None:
            raise RingfoldError(
                f"{path}: is password-protected; set {PASSWORD_ENV} to its password (or write a plain copy to "
                f"keep offline: openssl ec -in {path.name} -out plain.pem)"
            ) from None
        raise RingfoldError(f"{path}: is not password-protected; unset {PASSWORD_ENV}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:  # not a key, or a wrong password
        why = f"wrong {PASSWORD_ENV} or " if password is not None else ""
        raise RingfoldError(f"{path}: {why}not a PEM private key ({type(exc).__name__}); {fix}") from None
    _check_curve(key.public_key(), path)
    return key


def fingerprint(public_key: Any) -> str:
    """sha256 of the key's PEM SubjectPublicKeyInfo: model-signing's key hint, and `sha256sum public.pem`."""
    from cryptography.hazmat.primitives import serialization  # the optional [sign] extra

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def password_from_env() -> bytes | None:
    """The private key's password from :data:`PASSWORD_ENV`, or None when unset or empty."""
    value = os.environ.get(PASSWORD_ENV)
    return value.encode() if value else None


# ----------------------------------------------------------------------------------- signature file
@dataclass(frozen=True)
class _Signed:
    """What a signature file says (trusted only once the library has checked the envelope)."""

    hint: str  # the signer's key fingerprint, as the signature names it
    resources: dict[str, str]  # file → sha256


def _read_signature(root: Path) -> _Signed:
    path = root / SIGNATURE_FILE
    if not os.path.lexists(path):
        raise BundleError(
            f"{root}: is not signed (no {SIGNATURE_FILE}); sign it on the workstation with "
            f"`ringfold sign {root} --key PRIVATE.pem`, or copy the signed bundle again"
        )
    fix = "sign the bundle again with `ringfold sign`, or copy the signed bundle again"
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SIGNATURE_BYTES:
        raise BundleError(f"{path}: not a signature file (a symlink, folder or over 16 MiB); {fix}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        statement = json.loads(base64.b64decode(data["dsseEnvelope"]["payload"], validate=True))
        hint = data["verificationMaterial"]["publicKey"].get("hint", "")
        resources = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BundleError(f"{path}: not a Sigstore signature bundle from model-signing (damaged?); {fix}") from None
    if not isinstance(hint, str) or not all(isinstance(v, str) for v in resources.values()):
        raise BundleError(f"{path}: not a Sigstore signature bundle from model-signing (damaged?); {fix}")
    return _Signed(hint, resources)


def _on_disk(root: Path) -> dict[str, Path]:
    """Every file a signature covers, by its path relative to the bundle."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in UNSIGNED or path.is_dir() and not path.is_symlink():
            continue
        found[rel.as_posix()] = path
    return found


def _difference(root: Path, signed: _Signed) -> str:
    """One line: which files were changed, added or removed since the bundle was signed."""
    disk = _on_disk(root)
    changed = [rel for rel in signed.resources if rel in disk and sha256_file(disk[rel]) != signed.resources[rel]]
    parts = [
        ("changed", changed),
        ("added", [rel for rel in disk if rel not in signed.resources]),
        ("removed", [rel for rel in signed.resources if rel not in disk]),
    ]
    said = "; ".join(f"{what}: {', '.join(rels[:4])}{' …' if len(rels) > 4 else ''}" for what, rels in parts if rels)
    return (
        f"{root}: differs from its signature ({said or 'files differ'}) — modified since it was signed, whatever its "
        f"manifest says; copy the signed bundle again, or re-sign it on the workstation"
    )


def _hashing_config() -> Any:
    from model_signing import hashing  # the optional [sign] extra

    # every file counts, git's too: ringfold's bundles hold none, so one there was added
    return hashing.Config().set_ignored_paths(paths=list(UNSIGNED), ignore_git_paths=False)


# ------------------------------------------------------------------------------------------- verify
def verify_signature(bundle: str | os.PathLike, public_key: str | os.PathLike) -> SignatureCheck:
    """Refuse ``bundle`` in one line unless ``public_key``'s holder signed exactly the files it holds now.

    Run before anything opens a model: the key, the signature file, the signer's key, the envelope, every
    file's sha256 (model-signing), then that the signature covers every file the manifest lists.
    """
    root, public_key = Path(bundle), Path(public_key)
    key = load_public_key(public_key)  # a bad key is refused whatever the bundle holds
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory; pass the --out folder of `ringfold export`")
    signed = _read_signature(root)
    mine = fingerprint(key)
    if signed.hint and signed.hint != mine:
        raise BundleError(
            f"{root}: signed by another key (sha256:{signed.hint[:16]}…), not by {public_key} "
            f"(sha256:{mine[:16]}…); pass the public key of whoever signed it, or do not run this bundle"
        )
    _refuse_unsignable(root, signed)
    _library_verify(root, public_key, signed)
    return SignatureCheck(
        bundle=root,
        fingerprint=mine,
        files=_covered(root, signed),
        size=sum((root / rel).stat().st_size for rel in signed.resources),
        engines=(root / ENGINE_DIR).is_dir(),
    )


def _refuse_unsignable(root: Path, signed: _Signed) -> None:
    """A signature made without ringfold's exclusions (model-signing's CLI without --ignore-paths) covers a
    file that changes after signing; say so, rather than report it as removed."""
    covered = sorted(rel for rel in signed.resources if rel.split("/")[0] in UNSIGNED)
    if covered:
        raise BundleError(
            f"{root / SIGNATURE_FILE}: covers {', '.join(covered[:3])}, which no bundle signature may cover (it "
            f"changes after signing); sign with `ringfold sign`, or pass model-signing --ignore-paths "
            f"{root / RECORD_FILE} --ignore-paths {root / ENGINE_DIR}"
        )


def _library_verify(root: Path, public_key: Path, signed: _Signed) -> None:
    """model-signing's own check (envelope signature, then every file's sha256), its refusals in one line."""
    from cryptography.exceptions import InvalidSignature  # the optional [sign] extra
    from model_signing import verifying

    path = root / SIGNATURE_FILE
    config = verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    try:
        config.set_hashing_config(_hashing_config()).verify(root, path)
    except InvalidSignature:
        raise BundleError(
            f"{path}: does not verify with {public_key}: signed by another key, or altered since; copy the signed "
            "bundle again, or pass the public key of whoever signed it"
        ) from None
    except ValueError as exc:
        if str(exc).startswith("Signature mismatch"):
            raise BundleError(_difference(root, signed)) from None
        raise BundleError(f"{path}: refused by model-signing: {_one_line(exc)}") from None
    except Exception as exc:  # a damaged envelope fails inside protobuf/sigstore parsers with their own errors
        raise BundleError(f"{path}: refused by model-signing ({type(exc).__name__}: {_one_line(exc)})") from None


def _covered(root: Path, signed: _Signed) -> tuple[str, ...]:
    """The signed files, once every file the manifest lists is among them (the signer may have left one out)."""
    needed = [MANIFEST_FILE, *read_manifest(root).files]
    missing = [rel for rel in needed if rel not in signed.resources]
    if missing:
        raise BundleError(
            f"{root / missing[0]}: not covered by the signature ({len(missing)} manifest file(s) left out when it "
            f"was made); sign the whole bundle with `ringfold sign {root} --key PRIVATE.pem`"
        )
    return tuple(sorted(signed.resources))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# --------------------------------------------------------------------------------------------- sign
def sign_bundle(
    bundle: str | os.PathLike, private_key: str | os.PathLike, password: bytes | None = None
) -> SignatureCheck:
    """Sign every file of ``bundle`` (but :data:`UNSIGNED`) with ``private_key``; write ``model.sig`` beside them.

    The key and the bundle (every device check, its sha256 set included) are checked before anything is
    written; the signature is made in a temporary folder beside the bundle, moved into place whole,
    recorded as ringfold's in the bundle's ownership record (so ``export --overwrite`` may replace it),
    and verified with the key's public half before this returns.
    """
    root, private_key = Path(bundle), Path(private_key)
    key = load_private_key(private_key, password)
    load_bundle(root)
    _check_replaceable(root)
    with tempfile.TemporaryDirectory(dir=root.resolve().parent, prefix=f".{root.resolve().name}.sign-") as tmp:
        made = Path(tmp) / SIGNATURE_FILE
        _sign_to(root, private_key, password, made)
        os.replace(made, root / SIGNATURE_FILE)
        record_files(root, "ringfold sign", [SIGNATURE_FILE])
        public = Path(tmp) / "public.pem"
        public.write_bytes(_public_pem(key))
        return verify_signature(root, public)


def _public_pem(private_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization  # the optional [sign] extra

    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_replaceable(root: Path) -> None:
    """An existing ``model.sig`` is replaced only when ringfold wrote it and it is unchanged (ownership rule)."""
    path = root / SIGNATURE_FILE
    if not os.path.lexists(path):
        return
    try:
        ours = (
            path.is_file() and not path.is_symlink() and sha256_file(path) in read_record(root).get(SIGNATURE_FILE, ())
        )
    except RingfoldError:
        ours = False
    if not ours:
        raise RingfoldError(
            f"{path}: exists and ringfold did not write it (or it changed since); move it away to sign the bundle again"
        )


def _sign_to(root: Path, private_key: Path, password: bytes | None, target: Path) -> None:
    from model_signing import signing  # the optional [sign] extra

    config = signing.Config().use_elliptic_key_signer(private_key=private_key, password=password)  # type: ignore[arg-type]
    try:
        config.set_hashing_config(_hashing_config()).sign(root, target)
    except ValueError as exc:  # e.g. a symlink inside the bundle, which model-signing refuses to follow
        raise BundleError(f"{root}: model-signing cannot sign it: {_one_line(exc)}; re-export the bundle") from None
