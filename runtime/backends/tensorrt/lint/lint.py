"""The lint's entry points: one ONNX file, or every graph of a bundle that TensorRT gets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ringfold.errors import RingfoldError
from ringfold.extras import pip_install_extra
from ringfold.runtime.bundle.loader import Bundle, load_bundle

from .findings import Finding, grouped
from .parsers import parser_spec
from .subjects import select_subjects


def import_onnx():
    """The onnx package, or a one-line error naming the extra that installs it."""
    try:
        import onnx
    except ImportError:
        raise RingfoldError(
            "`ringfold check` needs the onnx package to read the graph: `pip install onnx`, or ringfold's [check] "
            f"extra: {pip_install_extra('check')}"
        ) from None
    return onnx


def lint_model(path: str | Path, target: str = "trt-10", precision: str | None = None) -> list[Finding]:
    """Findings (blockers first) for one ONNX file against ``target`` (one of :data:`~.parsers.TARGETS`)."""
    spec = parser_spec(target)
    import_onnx()
    # these read graphs with onnx, imported at their top: only now that it is known to be installed
    from .checks import run_checks  # optional: onnx (ringfold[check])
    from .graph import Graphs, load_model  # optional: onnx (ringfold[check])

    g = Graphs(load_model(Path(path)))
    return grouped(run_checks(g, spec, precision))


def lint_bundle(
    bundle: Bundle | str | Path, target: str = "trt-10", precisions: Sequence[str] | str | None = None
) -> dict[str, list[Finding]]:
    """Findings per graph of a bundle (a :class:`Bundle` or its path), keyed by subject name: a precision,
    ``raw-float32`` / ``raw-uint8`` (the raw-pixel models) or ``text`` (the text tower). ``None``/"all": every
    graph, int8-dynamic included (``ringfold check`` lists that one without judging it: see :mod:`.subjects`)."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    parser_spec(target)
    subjects = select_subjects(bundle, precisions)
    paths = {s.name: (bundle.file(s.file), s.precision) for s in subjects}  # confined to the bundle, hashed
    return {name: lint_model(path, target, precision) for name, (path, precision) in paths.items()}
