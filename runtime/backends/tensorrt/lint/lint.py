"""The lint's entry points: one ONNX file, or every precision variant of a bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ringfold.errors import RingfoldError
from ringfold.runtime.bundle.loader import Bundle, load_bundle

from .findings import Finding, grouped
from .parsers import parser_spec


def import_onnx():
    """The onnx package, or a one-line error naming the extra that installs it."""
    try:
        import onnx
    except ImportError:
        raise RingfoldError(
            "`ringfold check` needs the onnx package to read the graph: pip install onnx (or 'ringfold[check]')"
        ) from None
    return onnx


def lint_model(path: str | Path, target: str = "trt-10", precision: str | None = None) -> list[Finding]:
    """Findings (blockers first) for one ONNX file against ``target`` (trt-8.6 | trt-10)."""
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
    """Findings per precision variant of a bundle (a :class:`Bundle` or its path); ``None``/"all": every variant."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    parser_spec(target)
    if precisions is None or precisions == "all" or (not isinstance(precisions, str) and "all" in precisions):
        names = list(bundle.variants) or ["fp32"]
    else:
        names = [precisions] if isinstance(precisions, str) else list(dict.fromkeys(precisions))
    paths = {p: bundle.model_path(p) for p in names}  # one-line BundleError for a variant the bundle lacks
    return {p: lint_model(path, target, p) for p, path in paths.items()}
