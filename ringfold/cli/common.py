"""What every ``ringfold`` command shares: the parser class, exit codes and error lines, SIGTERM, report folders.

A handler raises; :func:`run_command` turns what it raised into one line on stderr and the exit code
(0 success, 1 a gate failed, 2 bad input, 130/143 interrupted), so no handler prints its own errors.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .. import cli_types as T
from ..errors import FieldError, GateFailed, RingfoldError
from ..extras import install_hint, needed_extra, optional_module, require
from ..ownership import owned_directory
from .helpfmt import DefaultsHelpFormatter


class Parser(argparse.ArgumentParser):
    """argparse, but unknown options get a 'did you mean' and the usual exit code 2 in one line."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)  # every --help shows each option's default
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """Unknown options are reported by the subcommand that was given them, which suggests only its own
        options (argparse reports them at the top level, with every subcommand's options as candidates)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            (self._subcommand(parsed) or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _subcommand(self, parsed: argparse.Namespace) -> argparse.ArgumentParser | None:
        """The parser of the subcommand ``parsed`` ran, if any."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None))
        return None

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = ""
        if "unrecognized arguments:" in message:
            known = self._all_options()
            bad = message.split(":", 1)[1].split()
            for arg in bad:
                match = difflib.get_close_matches(arg.split("=")[0], known, n=1)
                if match:
                    hint = f"; did you mean {match[0]}?"
                    break
        self.exit(2, f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")

    def _all_options(self) -> list[str]:
        """Options of this parser and of every subcommand (unknown options surface at the top level)."""
        found = []
        for action in self._actions:
            found += action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += sub._all_options()
        return found


def add_bundle_backend_options(p: argparse.ArgumentParser) -> None:
    """The bundle and how to run it, as ``classify`` and ``parity`` take them."""
    p.add_argument("bundle", help="bundle directory from `ringfold export`")
    p.add_argument(
        "--precision", default="fp32", help="which model of the bundle: fp32 fp16 int8 int8-dynamic (parity: all)"
    )
    p.add_argument("--provider", default="auto", help="auto | trt | cuda | cpu (ONNX Runtime provider)")
    p.add_argument(
        "--backend",
        default="onnxruntime",
        choices=["onnxruntime", "tensorrt", "openvino"],
        help="tensorrt: the engine built by `ringfold build-engine` for this GPU; openvino: OpenVINO's CPU plugin "
        "(the [openvino] extra; --precision fp32 bf16 fp16 int8 int8-bf16, inference precision pinned)",
    )
    p.add_argument("--threads", type=T.positive_int, help="ONNX Runtime intra-op threads")


# ----------------------------------------------------------------------------------------- report folders
def beside(bundle: Path, suffix: str) -> Path:
    """The default report folder: ``BUNDLE.parity`` / ``BUNDLE.bench`` next to the bundle."""
    bundle = bundle if bundle.name not in ("", ".", "..") else bundle.resolve()
    return bundle.parent / f"{bundle.name}{suffix}"


def write_report(
    write: Callable[[Path], list[Path]], out: Path, flag: str, command: str, overwrite: bool
) -> list[Path]:
    """Write a report folder whole, under the ownership rule (``ringfold.ownership``); where that fails
    (a bundle on a read-only partition) say which flag moves it."""
    try:
        with owned_directory(out, command, overwrite, flag) as tmp:
            names = [p.relative_to(tmp) for p in write(tmp)]
        return [out / name for name in names]
    except OSError as exc:
        raise RingfoldError(f"{os_error_line(exc)} — pass {flag} DIR to put the report elsewhere") from None


# --------------------------------------------------------------------------------------- errors, signals
class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup path (temporary folders, locks) runs for it too."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def install_sigterm() -> None:
    """SIGTERM raises :class:`Terminated` (only where Python may set handlers and nobody else has)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)


_OS_ERROR_FIXES = {
    errno.EROFS: "read-only file system; write somewhere else (--out / --report)",
    errno.ENOSPC: "no space left on the device; free some space or write somewhere else",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else",
    errno.EACCES: "permission denied; fix its permissions or write somewhere else",
    errno.EPERM: "operation not permitted; fix its permissions or write somewhere else",
}


def os_error_line(exc: OSError) -> str:
    """One line for an I/O failure: the path, what happened, what to do."""
    where = exc.filename if exc.filename is not None else "(unnamed file)"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = _OS_ERROR_FIXES.get(exc.errno or -1) or f"{exc.strerror or type(exc).__name__}; check the path"
    return " ".join(f"{where}: {reason}".split())


def flag_of(parser: argparse.ArgumentParser, command: str, field: str) -> str | None:
    """The option of ``command`` that sets config field ``field`` (options are named by their dest)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices[command]
            for option in sub._actions:
                if option.dest == field and option.option_strings:
                    return option.option_strings[0]
            if any(option.dest == "adapter_opt" for option in sub._actions):
                return f"--adapter-opt {field}"
    return None


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the handler ``args.func``; what it raises becomes one line on stderr and an exit code."""
    try:
        extra = needed_extra(args.command, live_parity=bool(getattr(args, "run", None)))
        if extra:
            require(args.command, extra)  # one line naming the extra, before any work
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        module = optional_module(exc)
        if module is None:
            raise  # not an optional dependency: a real bug, keep the traceback
        print(f"ringfold {args.command}: error: {install_hint(args.command, module)}", file=sys.stderr)
        return 2
    except FieldError as exc:  # the library names the field; the user typed a flag
        flag = flag_of(parser, args.command, exc.field)
        print(f"ringfold {args.command}: error: {f'{flag}: {exc.problem}' if flag else exc}", file=sys.stderr)
        return exc.exit_code
    except RingfoldError as exc:
        print(f"ringfold {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except GateFailed as exc:
        print(f"ringfold {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"ringfold {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"ringfold {args.command}: terminated; nothing partial was left behind", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"ringfold {args.command}: interrupted; nothing partial was left behind", file=sys.stderr)
        return 130
