"""Parity verdicts for ``ringfold bench``: run the gate on an opened model, or read them from a parity.json.

bench recommends only configurations whose gate passed on this machine. It either runs the gate itself
(:func:`run_gate`: the bundle's stored reference set, the precision's own tolerance) or takes the verdicts
of ``ringfold parity`` runs (:func:`read_gates`), keyed like bench's points: (backend label, precision).
"""

from __future__ import annotations

import json
from pathlib import Path

from ringfold.errors import RingfoldError
from ringfold.runtime.backends.base import Backend
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.infer.bench import short_provider

from .stored import bundle_parity

#: what bench's report says when it ran the gates itself
RUN_HERE = "run here on the bundle's reference set (each precision's own tolerance)"


def run_gate(bundle: Bundle, model: Backend, precision: str) -> bool:
    """Whether ``model`` at ``precision`` passes the stored-reference parity gate (preprocessing included)."""
    return bundle_parity(bundle, model, precision).passed


def read_gates(paths: list[str | Path], bundle: Bundle) -> dict[tuple[str, str], bool]:
    """(backend label, precision) → passed, from parity.json files of ``ringfold parity`` on ``bundle``.

    A file that is not such a report, or that judged another bundle, is one line naming it. A failed
    preprocessing check fails every precision of its file (the runtime's inputs were wrong there).
    """
    out: dict[tuple[str, str], bool] = {}
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            backend, gates, judged = data["backend"], data["gates"], Path(data["bundle"])
            verdicts = {name: bool(g["passed"]) for name, g in gates.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RingfoldError(
                f"--parity {path}: not a parity.json of `ringfold parity` ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:120]}); pass the parity.json from its report folder"
            ) from None
        if judged.resolve() != bundle.path.resolve():
            raise RingfoldError(
                f"--parity {path}: judged {judged}, not {bundle.path}; run `ringfold parity {bundle.path}` first"
            )
        name, _, provider = str(backend).partition(" (")
        label = f"{name} {short_provider(provider.rstrip(')'))}"
        preprocessing = verdicts.pop("preprocessing", True)
        for precision, passed in verdicts.items():
            out[(label, precision)] = passed and preprocessing
    return out
