"""Parity metrics, per-precision tolerances, the gate and its report (torch-free).

A comparison puts a backend's outputs beside a PyTorch reference computed on
the same preprocessed tensors. The gate's tolerances depend on precision and
are printed in every report, so "passed" always says against what.

Top-1 gate: a flip (backend top-1 ≠ reference top-1) counts against the gate only when the
reference's own top-1 margin (top-1 logit − top-2 logit) is larger than the precision's tie
margin, 2 × its expected logit error (``Tolerance.tie_margin``): each of the two logits may
move by that error, so their difference may move by twice it. A flip inside that band is a
near-tie, reported (image, margin) but not a failure. The measured agreement is still reported.
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
    #: The per-logit error the precision is expected to make where max |Δlogit| is not gated
    #: (fp16 0.01 over ViT-B/16's measured 6.3e-4; int8 0.1, about twice its 0.050); only sets the tie margin.
    expected_logit_error: float = 1e-4

    @property
    def logit_error(self) -> float:
        """The logit error this precision is allowed: the gate's max |Δlogit| where set, else the expected one."""
        return self.max_abs_logit if self.max_abs_logit is not None else self.expected_logit_error

    @property
    def tie_margin(self) -> float:
        """A flip whose reference top-1 margin is ≤ this is a near-tie: two logits, each off by ≤ logit_error."""
        return 2.0 * self.logit_error

    def describe(self) -> str:
        parts = []
        if self.max_abs_logit is not None:
            parts.append(f"max |Δlogit| ≤ {self.max_abs_logit:g}")
        parts.append(f"min embedding cosine ≥ {self.min_cosine:g}")
        parts.append(
            f"top-1 agreement ≥ {self.min_top1:.1%} counting only flips whose reference margin "
            f"> {self.tie_margin:g} (2 × logit error {self.logit_error:g}; smaller ones are near-ties)"
        )
        return ", ".join(parts)


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_logit=1e-4, min_cosine=0.99999, min_top1=1.0, expected_logit_error=1e-4),
    "fp16": Tolerance(max_abs_logit=None, min_cosine=0.999, min_top1=0.995, expected_logit_error=0.01),
    "int8": Tolerance(max_abs_logit=None, min_cosine=0.99, min_top1=0.98, expected_logit_error=0.1),
}
#: Preprocessing must reproduce open_clip's tensors (normalised units); bicubic/bilinear PIL paths are exact.
PREPROCESS_TOLERANCE = 1e-5


def tolerance_for(precision: str, overrides: dict[str, float | None] | None = None) -> Tolerance:
    base = DEFAULT_TOLERANCES.get(precision.split("-")[0], DEFAULT_TOLERANCES["int8"])
    values = asdict(base)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Tolerance(**values)


def top1_margins(logits: np.ndarray) -> np.ndarray:
    """Per row: top-1 logit − top-2 logit (float64); inf with a single class."""
    values = np.asarray(logits, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        return np.full(len(values), np.inf)
    top2 = np.sort(values, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


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
    #: top-1 flips: {"image", "index", "margin" (reference top-1 − top-2 logit), "reference", "backend"}
    near_ties: list[dict[str, Any]] = field(default_factory=list)
    flips_beyond_margin: list[dict[str, Any]] = field(default_factory=list)
    #: what the gate judges, when not the backend at ``precision`` (e.g. the live PyTorch rebuild)
    subject: str = ""
    abs_logit_diffs: list[float] = field(default_factory=list, repr=False)
    cosines: list[float] = field(default_factory=list, repr=False)

    @property
    def gate_name(self) -> str:
        return self.subject or self.precision

    @property
    def top1_agreement_gated(self) -> float:
        """Top-1 agreement with near-ties counted as agreeing: the figure the top-1 gate compares."""
        return 1.0 - len(self.flips_beyond_margin) / self.n if self.n else 1.0

    @property
    def top1_passed(self) -> bool:
        return self.top1_agreement_gated >= self.tolerance.min_top1

    @property
    def failures(self) -> list[str]:
        tol = self.tolerance
        out = []
        if tol.max_abs_logit is not None and not self.max_abs_logit <= tol.max_abs_logit:
            out.append(f"max |Δlogit| {self.max_abs_logit:.3g} > {tol.max_abs_logit:g}")
        if not self.cosine_min >= tol.min_cosine:
            out.append(f"min cosine {self.cosine_min:.6f} < {tol.min_cosine:g}")
        if not self.top1_passed:
            k = len(self.flips_beyond_margin)
            out.append(
                f"{k} flip{'s' if k != 1 else ''} beyond margin (top-1 agreement {self.top1_agreement_gated:.2%} "
                f"counting near-ties as agreeing < {tol.min_top1:.1%})"
            )
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("abs_logit_diffs")
        d.pop("cosines")
        d["tolerance"] = {**asdict(self.tolerance), "tie_margin": self.tolerance.tie_margin}
        d["top1_agreement_gated"] = self.top1_agreement_gated
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
    images: list[str] | None = None,
    subject: str = "",
) -> Comparison:
    """Backend outputs vs the reference on the same inputs; ``images`` names the rows in the report."""
    if logits.shape != ref_logits.shape:
        raise ValueError(f"{name}: logits shape {logits.shape} vs reference {ref_logits.shape}")
    diff = np.abs(logits.astype(np.float64) - ref_logits.astype(np.float64))
    cos = _cosine_rows(embedding, ref_embedding)
    pred, ref_pred = logits.argmax(-1), ref_logits.argmax(-1)
    tolerance = tolerance or tolerance_for(precision)
    margins = top1_margins(ref_logits)
    near, beyond = [], []
    for i in np.flatnonzero(pred != ref_pred):
        flip = {
            "image": str(images[i]) if images is not None and i < len(images) else f"#{i}",
            "index": int(i),
            "margin": float(margins[i]),
            "reference": int(ref_pred[i]),
            "backend": int(pred[i]),
        }
        (near if margins[i] <= tolerance.tie_margin else beyond).append(flip)
    comp = Comparison(
        name=name,
        precision=precision,
        tolerance=tolerance,
        near_ties=near,
        flips_beyond_margin=beyond,
        subject=subject,
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
    #: what the bundle's reference set is (ReferenceInfo.describe); its figures are measured on it
    reference: str = ""
    #: generated images: every summary says SYNTHETIC_NOTE, and no accuracy is computed on them
    reference_synthetic: bool = False

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons) and all(p.passed for p in self.preprocessing)

    def reference_note(self) -> str:
        """`` — reference set: synthetic: numerics only, no accuracy`` for a summary line; "" for real images."""
        from .bundle import SYNTHETIC_NOTE

        return f" — reference set: {SYNTHETIC_NOTE}" if self.reference_synthetic else ""

    def gates(self) -> dict[str, list[str]]:
        """What the gate judged, in report order ("fp32", "int8", ..., "preprocessing") → its failures, short."""
        out: dict[str, list[str]] = {}
        for c in self.comparisons:
            reasons = out.setdefault(c.gate_name, [])
            reasons += [f.split(" (")[0] for f in c.failures if f.split(" (")[0] not in reasons]
        if self.preprocessing:
            out["preprocessing"] = [
                f"{p.name}: max {p.max_abs:.3g} > {p.tolerance:g}" for p in self.preprocessing if not p.passed
            ]
        return out

    def sample_warning(self) -> str | None:
        """One line when the images are too few for a passed top-1 gate to mean its threshold, else None.

        Per gate below 100 % whose top-1 check passed, its largest sample: with k flips beyond margin in
        n images, the one-sided 95 % Clopper–Pearson lower bound on the agreement must reach the gate's
        ``min_top1`` (with no flips: n ≥ ln 0.05 / ln p, 149 images for 98 %, 598 for 99.5 %).
        A 100 % gate (fp32) is a rule, no flip at all, which no sample size can support statistically.
        """
        from .parity_stats import CONFIDENCE, clopper_pearson_lower, images_needed

        short: list[tuple[Comparison, float]] = []
        for gate in dict.fromkeys(c.gate_name for c in self.comparisons):
            comps = [c for c in self.comparisons if c.gate_name == gate and c.n]
            if not comps or comps[0].tolerance.min_top1 >= 1.0 or not all(c.top1_passed for c in comps):
                continue
            best = max(comps, key=lambda c: (c.n, "--images" in c.name))  # the largest sample says most
            lower = clopper_pearson_lower(best.n - len(best.flips_beyond_margin), best.n)
            if lower < best.tolerance.min_top1:
                short.append((best, lower))
        if not short:
            return None
        c, lower = min(short, key=lambda item: item[1] - item[0].tolerance.min_top1)
        gates = ", ".join(f"{s.gate_name} ≥ {s.tolerance.min_top1:.1%}" for s, _ in short)
        need = images_needed(c.tolerance.min_top1)
        where = "images" if "--images" in c.name else "reference images"
        ties = " (near-ties counted as agreeing)" if c.near_ties else ""
        return (
            f"parity: only {c.n} {where}; {c.top1_agreement_gated:.1%} agreement{ties} on {c.n} images bounds the "
            f"true agreement only to ≥ {lower:.1%} ({CONFIDENCE:.0%}), below the gate ({gates}); "
            f"pass --run RUN --images DIR with more (≥ {need} images with no flip for {c.gate_name})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "model": self.model,
            "random_weights": self.random_weights,
            "backend": self.backend,
            "reference": self.reference,
            "reference_synthetic": self.reference_synthetic,
            "passed": self.passed,
            "gates": {name: {"passed": not reasons, "failures": reasons} for name, reasons in self.gates().items()},
            "sample_warning": self.sample_warning(),
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
            *([f"- reference set: {self.reference}"] if self.reference else []),
            "",
            "| comparison | precision | n | max abs Δlogit | mean abs Δlogit | min cos | mean cos | top-1 agree "
            "| near-ties | flips beyond margin | acc backend | acc reference | gate |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in self.comparisons:
            acc_b = "—" if c.accuracy_backend is None else f"{c.accuracy_backend:.2%}"
            acc_r = "—" if c.accuracy_reference is None else f"{c.accuracy_reference:.2%}"
            gate = "pass" if c.passed else "FAIL: " + "; ".join(c.failures)
            lines.append(
                f"| {c.name} | {c.precision} | {c.n} | {c.max_abs_logit:.3g} | {c.mean_abs_logit:.3g} | "
                f"{c.cosine_min:.6f} | {c.cosine_mean:.6f} | {c.top1_agreement:.2%} | {len(c.near_ties)} | "
                f"{len(c.flips_beyond_margin)} | {acc_b} | {acc_r} | {gate} |"
            )
        flips = [
            (c, kind, f)
            for c in self.comparisons
            for kind in ("near_ties", "flips_beyond_margin")
            for f in getattr(c, kind)
        ]
        if flips:
            lines += [
                "",
                "Top-1 flips (margin: the reference's top-1 − top-2 logit; a near-tie's margin is within the "
                "precision's tie margin, 2 × its logit error, and does not fail the gate):",
                "",
                "| comparison | image | margin | tie margin | kind | reference top-1 | backend top-1 |",
                "|---|---|---|---|---|---|---|",
            ]
            for c, kind, f in flips:
                label = "near-tie" if kind == "near_ties" else "FLIP beyond margin"
                lines.append(
                    f"| {c.name} | {f['image']} | {f['margin']:.3g} | {c.tolerance.tie_margin:g} | {label} | "
                    f"{f['reference']} | {f['backend']} |"
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
        warning = self.sample_warning()
        if warning:
            lines += ["", f"**Warning:** {warning}"]
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
    """One panel per precision (runtime/parity_plot.py); skipped where matplotlib is not installed (Jetson)."""
    from .parity_plot import plot_report

    return plot_report(report, path)


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
        reference=bundle.manifest.reference.describe(),
        reference_synthetic=bundle.manifest.reference.synthetic,
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
    # generated images have no true class: no accuracy is computed on them, whatever the archive holds
    labels = ref.labels if (ref.labels >= 0).any() and not report.reference_synthetic else None
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
            images=list(ref.images),
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
            images=list(ref.images),
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
            images=list(ref.images),
        )
    )
    if bundle.random_weights:
        report.notes.append("random weights: accuracy figures are not meaningful; numerics parity is")
    return report
