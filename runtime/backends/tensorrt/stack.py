"""TensorRT and Polygraphy as ringfold uses them: the imports (each missing one a one-line install
instruction), the supported versions, and Polygraphy's log kept off stdout.

ringfold builds and runs engines through Polygraphy, NVIDIA's maintained layer over the TensorRT
Python API, so the API differences between TensorRT 8.6 (JetPack 6.0), 10.x and 11.x are Polygraphy's (what each
version may be asked to build is :mod:`.versions`').
What stays here: which versions ringfold accepts, and that a Polygraphy failure becomes one line
(``what (Polygraphy's first line); fix``) while its details go to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

from ringfold.errors import RingfoldError
from ringfold.extras import pip_install_extra
from ringfold.runtime.bundle.engines import parse_version

MIN_TRT = (8, 6)
#: the first TensorRT major ringfold has not been written against (its API changed at every major so far)
NEXT_TRT_MAJOR = (12,)


TRT_MISSING = (
    "TensorRT is not installed: on Jetson it comes with JetPack (python3-libnvinfer); on a desktop "
    f"ringfold's [tensorrt] extra: {pip_install_extra('tensorrt')}"
)
POLYGRAPHY_MISSING = (
    "Polygraphy (NVIDIA's TensorRT toolkit ringfold builds and runs engines with) is not installed: "
    f"ringfold's [trt] extra: {pip_install_extra('trt')}; or on Jetson, where TensorRT comes with JetPack, "
    "`pip install polygraphy`"
)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RingfoldError(TRT_MISSING) from None
    if parse_version(trt.__version__) < MIN_TRT:
        raise RingfoldError(
            f"TensorRT {trt.__version__} is too old: ringfold needs 8.6 (JetPack 6.0), 10.x or 11.x; "
            "upgrade JetPack/TensorRT"
        )
    if parse_version(trt.__version__) >= NEXT_TRT_MAJOR:
        _warn_untested_trt(trt.__version__)
    return trt


@functools.cache
def _warn_untested_trt(version: str) -> None:
    """Once per process: a newer major may work through Polygraphy, but nobody has checked it."""
    print(
        f"ringfold: note: TensorRT {version} is newer than the 8.6, 10.x and 11.x ringfold is written and tested for; "
        "if a build or run fails, say so with this version in the report",
        file=sys.stderr,
    )


def import_polygraphy():
    """The ``polygraphy`` package, or the one-line install instruction."""
    try:
        import polygraphy
        from polygraphy.backend import trt as _  # noqa: F401 (a broken install fails here, not mid-build)
    except ImportError:
        raise RingfoldError(POLYGRAPHY_MISSING) from None
    return polygraphy


def require_trt_stack():
    """TensorRT, then Polygraphy: each missing one is a one-line install instruction. Returns tensorrt."""
    trt = import_tensorrt()
    import_polygraphy()
    return trt


@contextlib.contextmanager
def polygraphy_log(severity: str = "WARNING") -> Iterator[None]:
    """Polygraphy's log (and TensorRT's, which it forwards) at ``severity`` and above, on stderr.

    Polygraphy prints to stdout; ringfold's stdout is the command's result (JSON lines,
    the parity table), so the log is sent to stderr while Polygraphy works.
    """
    try:
        from polygraphy.logger import G_LOGGER
    except ImportError:  # a Polygraphy without its logger module (stand-ins in tests): the redirect only
        G_LOGGER = None
    with contextlib.redirect_stdout(sys.stderr):
        if G_LOGGER is None:
            yield
            return
        with G_LOGGER.verbosity(getattr(G_LOGGER, severity)):
            yield


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def run_polygraphy(loader, what: str, fix: str, severity: str = "WARNING"):
    """Call a Polygraphy loader or runner method; a failure becomes ``what (Polygraphy's first line); fix``.

    Polygraphy raises ``PolygraphyException`` after logging the details (TensorRT's own
    messages included) on stderr, so the one-line error can point "above".
    """
    from polygraphy.exception import PolygraphyException

    try:
        with polygraphy_log(severity):
            return loader()
    except PolygraphyException as exc:
        raise RingfoldError(f"{what} ({_first_line(exc)}); {fix}") from None
