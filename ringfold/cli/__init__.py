"""The ``ringfold`` command. Subcommands import their heavy dependencies lazily, so the
runtime commands (classify, parity without --run) work on a torch-free device install.

Exit codes: 0 success, 1 parity gate failed, 2 bad input (one-line error, nothing written).

One module per command or group of commands, each with its options beside its handler: a module's
``add_<command>(sub)`` adds the subparser and sets its handler ``cmd_<command>(args)`` as ``func``.
Handlers parse nothing themselves and print what the library returns; the work is in the library
(``ringfold.commands``, ``trainer/``, ``exporter/``, ``runtime/``), which takes typed values, never the
parsed ``Namespace``. The trainer and the exporter (torch, onnx) are imported by the handler that needs
them, when it runs; the runtime loads ONNX Runtime, onnx and TensorRT itself, when they are used. What
every command shares (the parser class, exit codes and error lines, SIGTERM, report folders) is
:mod:`ringfold.cli.common`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from . import bench, classify, compress, demo, deploy, evaluate, export, parity, signing, tensorrt, train
from .common import Parser, install_sigterm, run_command

#: the subcommands in the order ``ringfold --help`` lists them
_COMMANDS = (
    train.add_params,
    train.add_train,
    export.add_export,
    classify.add_classify,
    classify.add_relabel,
    parity.add_parity,
    deploy.add_deepstream,
    tensorrt.add_build_engine,
    deploy.add_triton,
    bench.add_bench,
    compress.add_compress,
    tensorrt.add_check,
    evaluate.add_evaluate,
    signing.add_sign,
    signing.add_verify,
    demo.add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``ringfold`` parser: every subcommand, each with its handler as ``func``."""
    parser = Parser(prog="ringfold", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"ringfold {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in _COMMANDS:
        add(sub)
    signing.add_signature_options(sub)  # --public-key on every bundle-loading command, --sign-key on writers
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``ringfold ARGS``: the exit code (0 success, 1 a gate failed, 2 bad input, 130/143 interrupted)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    install_sigterm()
    return run_command(parser, args)


__all__ = ["build_parser", "main"]
