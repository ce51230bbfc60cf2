"""Audit a run's staged rows before anything is published: nothing lost or duplicated, bad rows handled by
the chosen policy, the rejected share under the threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.errors import ScoringError
from spark_jobs.publishing.staging import REJECTED, SCORED, StagedPartition
from udfs.compat import col


@dataclass(frozen=True)
class Counts:
    read: int
    scored: int
    rejected: int


def count(read: int, staged: Sequence[StagedPartition]) -> Counts:
    return Counts(
        read=read,
        scored=sum(p.rows for p in staged if p.outcome == SCORED),
        rejected=sum(p.rows for p in staged if p.outcome == REJECTED),
    )


def check(counts: Counts, policy: str, max_bad_fraction: float | None, example: str | None) -> None:
    """Raise (nothing published) when the run must not publish."""
    if counts.scored + counts.rejected != counts.read:
        raise ScoringError(
            f"audit failed: read {counts.read} rows but staged {counts.scored} scored + {counts.rejected} rejected; "
            "nothing published"
        )
    if counts.rejected and policy == "fail":
        raise ScoringError(
            f"{counts.rejected} of {counts.read} rows have bad features (first: {example}); nothing published "
            "(--on-bad-rows quarantine writes them to the rejects table instead)"
        )
    if max_bad_fraction is not None and counts.read and counts.rejected / counts.read > max_bad_fraction:
        raise ScoringError(
            f"rejected {counts.rejected} of {counts.read} rows ({counts.rejected / counts.read:.2%}), more than "
            f"--max-bad-fraction {max_bad_fraction:g}; nothing published"
        )


def check_range(scored: DataFrame, outputs: T.StructType, bounds: tuple[float, float]) -> None:
    """Configured audit: every scored numeric output within [low, high]."""
    low, high = bounds
    numeric = [f.name for f in outputs.fields if isinstance(f.dataType, T.NumericType)]
    if not numeric:
        return
    outside = F.lit(False)
    for name in numeric:
        outside = outside | (col(name) < low) | (col(name) > high)
    bad = scored.where(outside).count()
    if bad:
        raise ScoringError(f"audit failed: {bad} predictions outside prediction_range [{low:g}, {high:g}]; "
                           "nothing published")
