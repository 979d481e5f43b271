"""``ringfold sign`` and ``ringfold verify``, and the signature check every bundle-loading command runs first.

The check is written once, here: :func:`add_signature_options` (called by ``build_parser`` after every
subcommand is added) gives each command of :data:`BUNDLE_COMMANDS` a ``--public-key`` option and wraps
its handler so that, when a key is given (or :data:`~ringfold.runtime.bundle.signature.PUBLIC_KEY_ENV`
is set, a device's policy), the bundle's signature is verified before the handler opens anything.
``export`` and ``relabel`` get ``--sign-key``: the key is checked before the work, the written bundle
signed after it. The work is :mod:`ringfold.runtime.bundle.signature` (the optional ``[sign]`` extra).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ringfold.runtime.bundle.signature import (
    PASSWORD_ENV,
    PUBLIC_KEY_ENV,
    SIGNATURE_FILE,
    load_private_key,
    password_from_env,
    sign_bundle,
    verify_signature,
)
from ringfold.runtime.bundle.spec import MANIFEST_FILE

from ..errors import RingfoldError
from ..extras import require

#: every command that loads a bundle: each refuses an unsigned or tampered one when a public key is set
BUNDLE_COMMANDS = (
    "classify",
    "parity",
    "bench",
    "evaluate",
    "relabel",
    "check",
    "build-engine",
    "deepstream",
    "triton",
)
#: commands that write a bundle, and the argument naming it
WRITERS = {"export": "out", "relabel": "out"}
PUBLIC_KEY_HELP = (
    f"refuse the bundle unless it is signed by this EC public key (PEM), checked before any model opens "
    f"(default: ${PUBLIC_KEY_ENV} when set, else no signature needed)"
)


# ------------------------------------------------------------------------------------- sign and verify
def add_sign(sub) -> None:
    p = sub.add_parser("sign", help="sign every file of a bundle with an EC private key (model-signing, no network)")
    p.add_argument("bundle", help="bundle directory from `ringfold export`")
    p.add_argument(
        "--key",
        required=True,
        metavar="PRIVATE.pem",
        help=f"EC private key (P-256/384/521, PEM); an encrypted one takes its password from ${PASSWORD_ENV}",
    )
    p.set_defaults(func=cmd_sign)


def cmd_sign(args: argparse.Namespace) -> int:
    require("sign", "sign")
    check = sign_bundle(args.bundle, args.key, password_from_env())
    print(f"{Path(args.bundle) / SIGNATURE_FILE}: signed {check.covered()}")
    print(f"key fingerprint: sha256:{check.fingerprint} (on the device: sha256sum public.pem)")
    return 0


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check a bundle's signature with the signer's public key (torch-free)")
    p.add_argument("bundle", help="bundle directory, signed with `ringfold sign`")
    p.add_argument(
        "--public-key", metavar="PUBLIC.pem", help=f"the signer's EC public key (PEM; default: ${PUBLIC_KEY_ENV})"
    )
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    key = public_key(args)
    if key is None:
        raise RingfoldError(f"--public-key: required (or set {PUBLIC_KEY_ENV}); pass the signer's public key (PEM)")
    require("verify", "sign")
    print(verify_signature(args.bundle, key).summary())
    return 0


# ------------------------------------------------------------------------- every bundle-loading command
def public_key(args: argparse.Namespace) -> str | None:
    """``--public-key``, else :data:`PUBLIC_KEY_ENV` (an empty value counts as unset), else None."""
    return getattr(args, "public_key", None) or os.environ.get(PUBLIC_KEY_ENV) or None


def add_signature_options(sub: argparse._SubParsersAction) -> None:
    """``--public-key`` on every bundle-loading command, ``--sign-key`` on every bundle writer; see the docstring."""
    for name in BUNDLE_COMMANDS:
        if name in sub.choices:
            parser = sub.choices[name]
            parser.add_argument("--public-key", metavar="PUBLIC.pem", help=PUBLIC_KEY_HELP)
            parser.set_defaults(func=functools.partial(_verified, parser.get_default("func")))
    for name, dest in WRITERS.items():
        if name in sub.choices:
            parser = sub.choices[name]
            parser.add_argument(
                "--sign-key",
                metavar="PRIVATE.pem",
                help="sign the written bundle with this EC private key, as `ringfold sign` does (default: unsigned)",
            )
            parser.set_defaults(func=functools.partial(_signed, parser.get_default("func"), dest))


def _bundle_of(args: argparse.Namespace) -> Path | None:
    """The bundle a command loads: its ``bundle`` argument, or a ``run`` argument that names a bundle folder."""
    if getattr(args, "bundle", None) is not None:
        return Path(args.bundle)
    run = getattr(args, "run", None)
    return Path(run) if run is not None and (Path(run) / MANIFEST_FILE).is_file() else None


def _verified(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Verify the bundle's signature when a public key is set, then run ``handler``."""
    key, bundle = public_key(args), _bundle_of(args)
    if key is not None and bundle is not None:
        require(args.command, "sign")
        check = verify_signature(bundle, key)
        print(f"ringfold {args.command}: {check.summary()}", file=sys.stderr)
    return handler(args)


def _signed(handler: Callable[[argparse.Namespace], int], dest: str, args: argparse.Namespace) -> int:
    """Check ``--sign-key`` before ``handler`` writes the bundle, sign the bundle after; without it say when a
    signed source gave an unsigned bundle."""
    password = password_from_env()
    if args.sign_key is not None:
        require(args.command, "sign")
        load_private_key(args.sign_key, password)  # a bad key is refused before the work, nothing written
    code = handler(args)
    out = Path(getattr(args, dest))
    if args.sign_key is not None:
        check = sign_bundle(out, args.sign_key, password)
        print(f"ringfold {args.command}: {out / SIGNATURE_FILE}: signed {check.covered()}", file=sys.stderr)
    elif getattr(args, "bundle", None) is not None and (Path(args.bundle) / SIGNATURE_FILE).exists():
        print(
            f"ringfold {args.command}: note: {args.bundle} is signed, {out} is not (its head and labels are new): "
            f"sign it with `ringfold sign {out} --key PRIVATE.pem`, or pass --sign-key",
            file=sys.stderr,
        )
    return code
