"""Drift metrics of two histograms on the same bins (the baseline's): PSI, Jensen-Shannon distance and, for
numbers, the Kolmogorov-Smirnov statistic at the bin edges. Pure functions of counts."""

from __future__ import annotations

import math
from collections.abc import Sequence

EPSILON = 1e-4  # share given to an empty bin, so that PSI stays finite (common practice)


def shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0 for _ in counts]


def psi(baseline: Sequence[int], current: Sequence[int]) -> float:
    """Population stability index: sum over bins of (cur - base) * ln(cur / base), empty bins at EPSILON."""
    _same_bins(baseline, current)
    b = [max(s, EPSILON) for s in shares(baseline)]
    c = [max(s, EPSILON) for s in shares(current)]
    return float(sum((ci - bi) * math.log(ci / bi) for bi, ci in zip(b, c, strict=True)))


def js_distance(baseline: Sequence[int], current: Sequence[int]) -> float:
    """Jensen-Shannon distance in base 2 (0: the same distribution, 1: disjoint): the square root of the
    divergence, as scipy.spatial.distance.jensenshannon(p, q, base=2)."""
    _same_bins(baseline, current)
    p, q = shares(baseline), shares(current)
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: Sequence[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0)

    divergence = (kl(p) + kl(q)) / 2
    return math.sqrt(max(divergence, 0.0))


def ks(baseline: Sequence[int], current: Sequence[int]) -> float:
    """Kolmogorov-Smirnov statistic from ordered bins: the largest gap between the two cumulative shares."""
    _same_bins(baseline, current)
    gap = cb = cc = 0.0
    for b, c in zip(shares(baseline), shares(current), strict=True):
        cb, cc = cb + b, cc + c
        gap = max(gap, abs(cb - cc))
    return gap


def _same_bins(a: Sequence[int], b: Sequence[int]) -> None:
    if len(a) != len(b) or not a:
        raise ValueError(f"histograms on different bins: {len(a)} and {len(b)} bins")
