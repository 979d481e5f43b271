"""Parity metrics, per-precision tolerances, the gate and its report (torch-free).

A comparison puts a backend's outputs beside a PyTorch reference computed on
the same preprocessed tensors. The gate's tolerances depend on precision and
are printed in every report, so "passed" always says against what.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import write_json, write_text


@dataclass(frozen=True)
class Tolerance:
    max_abs_logit: float | None  # None: not gated (reduced precision is judged by cosine and top-1)
    min_cosine: float
    min_top1: float

    def describe(self) -> str:
        parts = []
        if self.max_abs_logit is not None:
            parts.append(f"max |Δlogit| ≤ {self.max_abs_logit:g}")
        parts.append(f"min embedding cosine ≥ {self.min_cosine:g}")
        parts.append(f"top-1 agreement ≥ {self.min_top1:.1%}")
        return ", ".join(parts)


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_logit=1e-4, min_cosine=0.99999, min_top1=1.0),
    "fp16": Tolerance(max_abs_logit=None, min_cosine=0.999, min_top1=0.995),
    "int8": Tolerance(max_abs_logit=None, min_cosine=0.99, min_top1=0.98),
}
#: Preprocessing must reproduce open_clip's tensors (normalised units); bicubic/bilinear PIL paths are exact.
PREPROCESS_TOLERANCE = 1e-5


def tolerance_for(precision: str, overrides: dict[str, float | None] | None = None) -> Tolerance:
    base = DEFAULT_TOLERANCES.get(precision.split("-")[0], DEFAULT_TOLERANCES["int8"])
    values = asdict(base)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Tolerance(**values)


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(denom, 1e-30)


@dataclass
class Comparison:
    name: str
    precision: str
    tolerance: Tolerance
    n: int
    max_abs_logit: float
    mean_abs_logit: float
    cosine_min: float
    cosine_mean: float
    top1_agreement: float
    accuracy_backend: float | None = None
    accuracy_reference: float | None = None
    labelled: int = 0
    abs_logit_diffs: list[float] = field(default_factory=list, repr=False)
    cosines: list[float] = field(default_factory=list, repr=False)

    @property
    def failures(self) -> list[str]:
        tol = self.tolerance
        out = []
        if tol.max_abs_logit is not None and not self.max_abs_logit <= tol.max_abs_logit:
            out.append(f"max |Δlogit| {self.max_abs_logit:.3g} > {tol.max_abs_logit:g}")
        if not self.cosine_min >= tol.min_cosine:
            out.append(f"min cosine {self.cosine_min:.6f} < {tol.min_cosine:g}")
        if not self.top1_agreement >= tol.min_top1:
            out.append(f"top-1 agreement {self.top1_agreement:.2%} < {tol.min_top1:.1%}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("abs_logit_diffs")
        d.pop("cosines")
        d["tolerance"] = asdict(self.tolerance)
        d["passed"] = self.passed
        d["failures"] = self.failures
        return d


def compare(
    name: str,
    precision: str,
    logits: np.ndarray,
    embedding: np.ndarray,
    ref_logits: np.ndarray,
    ref_embedding: np.ndarray,
    labels: np.ndarray | None = None,
    tolerance: Tolerance | None = None,
) -> Comparison:
    """Backend outputs vs the reference on the same inputs."""
    if logits.shape != ref_logits.shape:
        raise ValueError(f"{name}: logits shape {logits.shape} vs reference {ref_logits.shape}")
    diff = np.abs(logits.astype(np.float64) - ref_logits.astype(np.float64))
    cos = _cosine_rows(embedding, ref_embedding)
    pred, ref_pred = logits.argmax(-1), ref_logits.argmax(-1)
    comp = Comparison(
        name=name,
        precision=precision,
        tolerance=tolerance or tolerance_for(precision),
        n=len(logits),
        max_abs_logit=float(diff.max()) if diff.size else 0.0,
        mean_abs_logit=float(diff.mean()) if diff.size else 0.0,
        cosine_min=float(cos.min()) if cos.size else 1.0,
        cosine_mean=float(cos.mean()) if cos.size else 1.0,
        top1_agreement=float((pred == ref_pred).mean()) if len(pred) else 1.0,
        abs_logit_diffs=diff.max(axis=1).tolist() if diff.size else [],
        cosines=cos.tolist(),
    )
    if labels is not None:
        known = labels >= 0
        if known.any():
            comp.labelled = int(known.sum())
            comp.accuracy_backend = float((pred[known] == labels[known]).mean())
            comp.accuracy_reference = float((ref_pred[known] == labels[known]).mean())
    return comp


@dataclass
class PreprocessCheck:
    name: str
    n: int
    max_abs: float
    tolerance: float = PREPROCESS_TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_abs <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class ParityReport:
    bundle: str
    model: str
    random_weights: bool
    backend: str
    comparisons: list[Comparison] = field(default_factory=list)
    preprocessing: list[PreprocessCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons) and all(p.passed for p in self.preprocessing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "model": self.model,
            "random_weights": self.random_weights,
            "backend": self.backend,
            "passed": self.passed,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "preprocessing": [p.to_dict() for p in self.preprocessing],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Parity report — {verdict}",
            "",
            f"- bundle: `{self.bundle}`",
            f"- model: {self.model}"
            + (" — **random weights**: numerics only, not accuracy" if self.random_weights else ""),
            f"- backend: {self.backend}",
            "",
            "| comparison | precision | n | max abs Δlogit | mean abs Δlogit | min cos | mean cos | top-1 agree "
            "| acc backend | acc reference | gate |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in self.comparisons:
            acc_b = "—" if c.accuracy_backend is None else f"{c.accuracy_backend:.2%}"
            acc_r = "—" if c.accuracy_reference is None else f"{c.accuracy_reference:.2%}"
            gate = "pass" if c.passed else "FAIL: " + "; ".join(c.failures)
            lines.append(
                f"| {c.name} | {c.precision} | {c.n} | {c.max_abs_logit:.3g} | {c.mean_abs_logit:.3g} | "
                f"{c.cosine_min:.6f} | {c.cosine_mean:.6f} | {c.top1_agreement:.2%} | {acc_b} | {acc_r} | {gate} |"
            )
        if self.preprocessing:
            lines += ["", "| preprocessing check | n | max abs diff | tolerance | gate |", "|---|---|---|---|---|"]
            for p in self.preprocessing:
                gate = "pass" if p.passed else "FAIL"
                lines.append(f"| {p.name} | {p.n} | {p.max_abs:.3g} | {p.tolerance:g} | {gate} |")
        lines += ["", "Tolerances (gate):"]
        for precision, tol in dict.fromkeys((c.precision, c.tolerance) for c in self.comparisons):
            lines.append(f"- {precision}: {tol.describe()}")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "parity.json", self.to_dict())
        write_text(out_dir / "parity.md", self.to_markdown())
        written = [out_dir / "parity.json", out_dir / "parity.md"]
        plot = _plot(self, out_dir / "parity.png")
        if plot:
            written.append(plot)
        return written


def _plot(report: ParityReport, path: Path) -> Path | None:
    """|Δlogit| and cosine histograms per comparison; skipped where matplotlib is not installed (Jetson)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from ringfold.atomic import atomic_path

    comps = [c for c in report.comparisons if c.abs_logit_diffs]
    if not comps:
        return None
    fig, (ax_d, ax_c) = plt.subplots(1, 2, figsize=(10, 3.5))
    for c in comps:
        ax_d.hist(np.maximum(c.abs_logit_diffs, 1e-12), bins=30, alpha=0.6, label=c.name[:40])
        ax_c.hist(1.0 - np.asarray(c.cosines), bins=30, alpha=0.6, label=c.name[:40])
    ax_d.set_xlabel("max |Δlogit| per image")
    ax_c.set_xlabel("1 − embedding cosine per image")
    ax_d.set_ylabel("images")
    ax_d.legend(fontsize=6)
    fig.suptitle(f"parity: {report.model}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def load_report(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def bundle_parity(
    bundle,
    model,
    precision: str = "fp32",
    tolerance: Tolerance | None = None,
) -> ParityReport:
    """Check a loaded backend against the PyTorch reference stored in the bundle (no torch needed).

    Three checks: runtime preprocessing of the stored reference images vs the
    open_clip tensors computed at export; backend logits vs the unfolded
    adapted PyTorch model; and vs the folded PyTorch model.
    """
    from .images import load_image
    from .preprocess import preprocess_batch

    ref = bundle.reference()
    tolerance = tolerance or tolerance_for(precision)
    report = ParityReport(
        bundle=str(bundle.path),
        model=bundle.describe(),
        random_weights=bundle.random_weights,
        backend=f"{model.backend} ({getattr(model, 'provider', '?')})",
    )
    ours = preprocess_batch([load_image(bundle.path / name) for name in ref.images], bundle.preprocess)
    report.preprocessing.append(
        PreprocessCheck(
            "runtime preprocess vs open_clip transform (reference images)",
            len(ours),
            float(np.abs(ours - ref.pixel_values).max()) if len(ours) else 0.0,
        )
    )
    out = model.run_batched(ref.pixel_values)
    labels = ref.labels if (ref.labels >= 0).any() else None
    report.comparisons.append(
        compare(
            f"{precision} backend vs PyTorch adapted (unfolded), reference set",
            precision,
            out["logits"],
            out["embedding"],
            ref.logits,
            ref.embedding,
            labels,
            tolerance,
        )
    )
    report.comparisons.append(
        compare(
            f"{precision} backend vs PyTorch folded, reference set",
            precision,
            out["logits"],
            out["embedding"],
            ref.logits_folded,
            ref.embedding_folded,
            labels,
            tolerance,
        )
    )
    own = model.run_batched(ours)
    report.comparisons.append(
        compare(
            f"{precision} backend on runtime-preprocessed images vs PyTorch adapted (end to end)",
            precision,
            own["logits"],
            own["embedding"],
            ref.logits,
            ref.embedding,
            labels,
            tolerance,
        )
    )
    if bundle.random_weights:
        report.notes.append("random weights: accuracy figures are not meaningful; numerics parity is")
    return report
