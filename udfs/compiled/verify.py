"""Whether a translated model gives the model's own predictions: labels, integers, strings and booleans
exactly; floating outputs within a tolerance relative to the larger magnitude, and absolute below 1
(|a - b| <= tol * max(|a|, |b|, 1)), so a probability is held to tol itself and a large score to tol of it.
NaN equals NaN and null equals null, as the model's own two calls would agree. An output the model itself
gives as float32 (XGBoost's) carries no more than float32's precision: it is held to the larger of the
tolerance and one float32 unit in the last place (2**-23 relative), since Java has no float32 exp and glibc's
expf rounds a few values in 10,000 the other way."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_TOLERANCE = 1e-9
TIMESTAMP = re.compile(r"\[\d\d:\d\d:\d\d\] ")  # XGBoost's `[hh:mm:ss] ` in front of its messages
FLOAT32_TOLERANCE = 2.0**-23  # one float32 ulp, relative (absolute below 1)


@dataclass(frozen=True)
class Comparison:
    max_diff: float  # the largest scaled difference of a floating output; 0.0 when all are equal
    mismatch: str | None  # the first output and row that differ beyond the tolerance (or at all, for labels)

    @property
    def equal(self) -> bool:
        return self.mismatch is None


def compare(expected: pd.DataFrame, actual: pd.DataFrame, columns: Sequence[str],
            tolerance: float = DEFAULT_TOLERANCE, messages: Sequence[str] = ()) -> Comparison:
    """Compare two frames of outputs row by row (same order, same length); `messages`: columns of error
    messages, compared without the time stamp XGBoost puts in front of its own."""
    if len(expected) != len(actual):
        return Comparison(float("inf"), f"{len(actual)} rows against the model's {len(expected)}")
    worst, mismatch = 0.0, None
    for name in columns:
        e, a = expected[name].reset_index(drop=True), actual[name].reset_index(drop=True)
        if name in messages:
            e, a = (v.map(lambda m: TIMESTAMP.sub("", m) if isinstance(m, str) else m) for v in (e, a))
        if _floating(e) or _floating(a):
            diff = _scaled_difference(e.to_numpy(dtype="float64", na_value=np.nan),
                                      a.to_numpy(dtype="float64", na_value=np.nan))
            if len(diff) and float(diff.max()) > worst:
                worst = float(diff.max())
            limit = max(tolerance, FLOAT32_TOLERANCE) if e.dtype == np.float32 else tolerance
            bad = np.flatnonzero(diff > limit)
        else:
            same = (e.isna() & a.isna()) | (e.astype(object) == a.astype(object))
            bad = np.flatnonzero(~same.to_numpy(dtype=bool))
            if len(bad):
                worst = float("inf")
        if len(bad) and mismatch is None:
            i = int(bad[0])
            mismatch = f"output {name}, row {i}: {a[i]!r} where the model gives {e[i]!r}"
    return Comparison(worst, mismatch)


def _floating(values: pd.Series) -> bool:
    return bool(pd.api.types.is_float_dtype(values.dtype))


def _scaled_difference(e: np.ndarray, a: np.ndarray) -> np.ndarray:
    both_nan = np.isnan(e) & np.isnan(a)
    with np.errstate(invalid="ignore", over="ignore"):
        same_inf = np.isinf(e) & (e == a)
        scale = np.maximum(np.maximum(np.abs(e), np.abs(a)), 1.0)
        diff = np.abs(e - a) / scale
    diff[both_nan | same_inf] = 0.0
    return np.where(np.isnan(diff), np.inf, diff)
