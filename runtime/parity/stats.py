"""How much a parity sample can say: exact binomial bounds on top-1 agreement (numpy + math only, no scipy).

``ringfold parity`` measures top-1 agreement on a handful of images. 100 % on 8 images does not mean
the backend agrees on 98 % of all images; the one-sided Clopper–Pearson bound says what it does mean
(≥ 68.8 % at 95 %), and the report warns when that bound falls below the gate's requirement.
"""

from __future__ import annotations

import math

import numpy as np

#: One-sided confidence of the small-sample warning.
CONFIDENCE = 0.95


def binomial_sf(x: int, n: int, p: float) -> float:
    """P(X ≥ x) for X ~ Binomial(n, p), summed in log space (exact for any n a parity run uses)."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    k = np.arange(x, n + 1, dtype=np.float64)
    log_comb = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    terms = log_comb + k * math.log(p) + (n - k) * math.log1p(-p)
    top = terms.max()
    return float(min(1.0, math.exp(top) * np.exp(terms - top).sum()))


def clopper_pearson_lower(successes: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided exact (Clopper–Pearson) lower confidence bound on a success rate.

    The p at which seeing ``successes`` or more out of ``n`` has probability 1 − ``confidence``,
    found by bisection on the binomial tail (equal to ``scipy.stats.beta.ppf(1 - confidence, x, n - x + 1)``).
    With no failures it is (1 − confidence)^(1/n): 0.6877 for n = 8 at 95 %, ≈ 1 − 3/n for large n.
    """
    if n <= 0:
        return 0.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} not in 0..{n}")
    if successes == 0:
        return 0.0
    alpha = 1.0 - confidence
    if successes == n:
        return alpha ** (1.0 / n)
    lo, hi = 0.0, 1.0
    for _ in range(80):  # the tail P(X ≥ x) grows with p: bisect until 2^-80
        mid = 0.5 * (lo + hi)
        if binomial_sf(successes, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def images_needed(required: float, confidence: float = CONFIDENCE) -> int | None:
    """The fewest images on which 100 % agreement bounds the true agreement to ≥ ``required``; None for 100 %."""
    if required >= 1.0:
        return None
    if required <= 0.0:
        return 1
    return math.ceil(math.log(1.0 - confidence) / math.log(required))
