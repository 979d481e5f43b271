"""The parity report: every comparison and preprocessing check, the gates' verdicts, parity.json and parity.md.

The report holds what was measured and on what (:attr:`ParityReport.reference` describes the
reference set); :meth:`ParityReport.write` writes the JSON and markdown files and, where
matplotlib is installed, the figure (:mod:`.plot`, which draws it; this module only decides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringfold.atomic import write_json, write_text
from ringfold.runtime.bundle.spec import SYNTHETIC_NOTE

from .metrics import Comparison, PreprocessCheck
from .plot import plot_report
from .stats import CONFIDENCE, clopper_pearson_lower, images_needed


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
        short: list[tuple[Comparison, float]] = []
        for gate in dict.fromkeys(c.gate_name for c in self.comparisons):
            comps = [c for c in self.comparisons if c.gate_name == gate and c.n]
            if not comps or comps[0].tolerance.min_top1 >= 1.0 or not all(c.top1_passed for c in comps):
                continue
            best = max(comps, key=lambda c: (c.n, c.source == "--images"))  # the largest sample says most
            lower = clopper_pearson_lower(best.n - len(best.flips_beyond_margin), best.n)
            if lower < best.tolerance.min_top1:
                short.append((best, lower))
        if not short:
            return None
        c, lower = min(short, key=lambda item: item[1] - item[0].tolerance.min_top1)
        gates = ", ".join(f"{s.gate_name} ≥ {s.tolerance.min_top1:.1%}" for s, _ in short)
        need = images_needed(c.tolerance.min_top1)
        where = "images" if c.source == "--images" else "reference images"
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
        plot = plot_report(self, out_dir / "parity.png")  # None without matplotlib (Jetson)
        if plot:
            written.append(plot)
        return written
