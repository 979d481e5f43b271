"""Parity metrics: per-precision tolerances, one comparison's numbers, and the gate's verdict (torch-free).

A comparison puts a backend's outputs beside a PyTorch reference computed on
the same preprocessed tensors. The gate's tolerances depend on precision and
are printed in every report, so "passed" always says against what.

Top-1 gate: a flip (backend top-1 ≠ reference top-1) counts against the gate only when the
reference's own top-1 margin (top-1 logit − top-2 logit) is larger than the precision's tie
margin, 2 × its expected logit error (``Tolerance.tie_margin``): each of the two logits may
move by that error, so their difference may move by twice it. A flip inside that band is a
near-tie, reported (image, margin) but not a failure. The measured agreement is still reported.

What a comparison is (which PyTorch side, which images, end to end or on stored tensors) is
carried by typed fields (:data:`AGAINST`, :data:`SOURCES`), never read back from its title.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from ringfold.runtime.backends.openvino.modes import OPENVINO_NUMERICS
from ringfold.runtime.bundle.precisions import numerics

#: the PyTorch side a comparison is measured against: the adapted model (adapters unfolded) or the folded one
Against = Literal["unfolded", "folded"]
AGAINST: tuple[Against, ...] = ("unfolded", "folded")
#: the images a comparison ran on: the bundle's reference set, or the user's ``parity --images``
Source = Literal["reference set", "--images"]
SOURCES: tuple[Source, ...] = ("reference set", "--images")


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
    # OpenVINO's bf16 inference precision: 3 mantissa bits fewer than fp16, so 8 × fp16's expected error
    "bf16": Tolerance(max_abs_logit=None, min_cosine=0.995, min_top1=0.99, expected_logit_error=0.08),
    "int8": Tolerance(max_abs_logit=None, min_cosine=0.99, min_top1=0.98, expected_logit_error=0.1),
    # int8 Q/DQ with fp16 float parts (TensorRT's int8 source): int8's error plus fp16's, same gate
    "int8-fp16": Tolerance(max_abs_logit=None, min_cosine=0.99, min_top1=0.98, expected_logit_error=0.11),
}
#: Preprocessing must reproduce open_clip's tensors (normalised units); bicubic/bilinear PIL paths are exact.
PREPROCESS_TOLERANCE = 1e-5


def tolerance_for(precision: str, overrides: dict[str, float | None] | None = None) -> Tolerance:
    """The gate's tolerance for ``precision`` (int8-dynamic: int8's; OpenVINO's bf16: its own), with
    ``overrides`` where not None."""
    base = DEFAULT_TOLERANCES[OPENVINO_NUMERICS.get(precision) or numerics(precision)]
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
    #: which PyTorch side the reference outputs come from
    against: Against = "unfolded"
    #: which images: the reference set or --images; None for a comparison outside a parity report
    source: Source | None = None
    #: the backend's input came from the runtime's own preprocessing of the images (not the stored tensors)
    end_to_end: bool = False
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
        for internal in ("abs_logit_diffs", "cosines", "against", "source", "end_to_end"):
            d.pop(internal)  # parity.json keeps its format; the name says what the typed fields say
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
    *,
    against: Against = "unfolded",
    source: Source | None = None,
    end_to_end: bool = False,
) -> Comparison:
    """Backend outputs vs the reference on the same inputs; ``images`` names the rows in the report.

    ``against``, ``source`` and ``end_to_end`` say what the comparison is (see :class:`Comparison`).
    """
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
        against=against,
        source=source,
        end_to_end=end_to_end,
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
