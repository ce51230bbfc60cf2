"""spark_jobs.quality.metrics against independent computations: PSI by its formula in numpy, Jensen-Shannon by
scipy, and the binned KS statistic by scipy's two-sample KS on integer samples (one bin per integer value, where
the statistic at the bin edges is the exact one)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from spark_jobs.quality import metrics

PAIRS = [
    ([100, 200, 300, 400], [110, 190, 310, 390]),  # close
    ([500, 300, 150, 50], [50, 150, 300, 500]),  # reversed
    ([10, 0, 30, 60, 0], [0, 25, 25, 25, 25]),  # empty bins on both sides
    ([7, 3], [7, 3]),  # the same
    ([1, 0, 0], [0, 0, 5]),  # disjoint
]


def numpy_psi(baseline: list[int], current: list[int], epsilon: float) -> float:
    b = np.maximum(np.asarray(baseline, float) / sum(baseline), epsilon)
    c = np.maximum(np.asarray(current, float) / sum(current), epsilon)
    return float(np.sum((c - b) * np.log(c / b)))


@pytest.mark.parametrize(("baseline", "current"), PAIRS)
def test_psi(baseline: list[int], current: list[int]) -> None:
    assert metrics.EPSILON == 1e-4
    assert metrics.psi(baseline, current) == pytest.approx(numpy_psi(baseline, current, 1e-4), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("baseline", "current"), PAIRS)
def test_js_distance(baseline: list[int], current: list[int]) -> None:
    expected = float(jensenshannon(baseline, current, base=2))
    assert metrics.js_distance(baseline, current) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_js_distance_bounds() -> None:
    assert metrics.js_distance([3, 4], [3, 4]) == 0.0
    assert metrics.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
def test_ks_on_integer_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = 9
    a = rng.integers(0, values, size=int(rng.integers(20, 200)))
    b = rng.binomial(values - 1, rng.uniform(0.2, 0.8), size=int(rng.integers(20, 200)))
    counts_a, counts_b = np.bincount(a, minlength=values), np.bincount(b, minlength=values)
    assert metrics.ks(counts_a.tolist(), counts_b.tolist()) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)


def test_different_bins_are_refused() -> None:
    for f in (metrics.psi, metrics.js_distance, metrics.ks):
        with pytest.raises(ValueError, match="different bins"):
            f([1, 2], [1, 2, 3])
        with pytest.raises(ValueError):
            f([], [])


def test_shares() -> None:
    assert metrics.shares([1, 3]) == [0.25, 0.75]
    assert metrics.shares([0, 0]) == [0.0, 0.0]
