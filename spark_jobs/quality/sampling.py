"""The profile sample, drawn while the run writes: a large partition's profiles are made from a seeded sample
of its rows, and reading every staged row again only to keep a few of them cost more than the profiles
themselves (4,000,000 rows scanned for 100,000; benchmarks/RESULTS.md). So the staging write copies each row
of a partition with a known row count (its Parquet footers: planning.partitions) with probability
OVERDRAW * profile_rows / rows under `__outcome=sample_<outcome>`, and the quality step profiles those
copies. Where a sample came out too small for its partition (an estimate off, a partition of other files),
the quality step draws from the staged rows as before; a partition too small to sample is read whole."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_jobs.planning.partitions import matches
from spark_jobs.publishing.staging import SAMPLE
from spark_jobs.scoring.bad_rows import OUTCOME
from udfs.compat import col

OVERDRAW = 1.25  # copies drawn per row wanted: an estimate a little high still leaves enough
ENOUGH = 0.8  # the share of the wanted rows below which a drawn sample is not used
SEED = 20_231  # the sample's: the same rows in every pass of a run
Values = tuple[Any, ...]


def rates(estimates: Mapping[Values, int], profile_rows: int) -> dict[Values, float]:
    """The probability to copy a row, per partition worth sampling (one whose rows a sample would not
    nearly all copy anyway: those are read whole, as cheaply)."""
    return {v: OVERDRAW * profile_rows / rows for v, rows in estimates.items() if rows > 2 * profile_rows}


def with_sample(df: DataFrame, partition_columns: Sequence[str], drawn: Mapping[Values, float]) -> DataFrame:
    """A second row, of outcome `sample_<outcome>`, for each row drawn: the outcome alone is exploded, so the
    copy costs one more row written and nothing else in the pass."""
    if not drawn:
        return df
    chance = per_partition(partition_columns, drawn, 0.0)
    copies = F.when(F.rand(SEED) < chance, F.array(col(OUTCOME), F.concat(F.lit(SAMPLE), col(OUTCOME))))
    return df.withColumn(OUTCOME, F.explode(copies.otherwise(F.array(col(OUTCOME)))))


def per_partition(partition_columns: Sequence[str], values: Mapping[Values, float], default: float) -> Column:
    """A number per partition as one column: a CASE over the partitions, `default` elsewhere."""
    if not partition_columns:
        return F.lit(next(iter(values.values()), default))
    found: Any = None
    for v, x in values.items():
        cond = matches(partition_columns, v)
        found = F.when(cond, F.lit(x)) if found is None else found.when(cond, F.lit(x))
    return F.lit(default) if found is None else found.otherwise(F.lit(default))
