"""The scored table: checked against the plan before any data is read, then written partition by partition."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from spark_jobs import tables
from spark_jobs.errors import UsageError
from spark_jobs.plan import ScoringPlan
from udfs.model_udf import col


@dataclass(frozen=True)
class PartitionCount:
    values: dict[str, object]
    rows: int


def check_compatible(spark: SparkSession, name: str, plan: ScoringPlan) -> bool:
    """True when the table exists and matches the plan; a conflict is a usage error, found before reading."""
    existing = tables.describe(spark, name)
    if existing is None:
        return False
    want_parts = [c.lower() for c in plan.partition_columns]
    have_parts = [c.lower() for c in existing.partition_columns]
    if want_parts != have_parts:
        raise UsageError(
            f"output table {name} is partitioned by ({', '.join(have_parts) or 'nothing'}), "
            f"but the input is partitioned by ({', '.join(want_parts) or 'nothing'})"
        )
    want, have = _columns(plan.output_schema), _columns(existing.schema)
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        detail = "; ".join(
            f"{c}: table has {have.get(c, 'no such column')}, run writes {want.get(c, 'no such column')}"
            for c in dict(diff)
        )
        raise UsageError(f"output table {name} has a different schema than this run writes ({detail})")
    return True


def write(df: DataFrame, name: str, plan: ScoringPlan, output_format: str, exists: bool) -> None:
    """Replace exactly the partitions present in `df`; other partitions stay as they were."""
    ordered = df.select(*[col(f.name) for f in plan.output_schema.fields])
    if not exists:
        ordered.write.format(output_format).partitionBy(*plan.partition_columns).saveAsTable(name)
    elif output_format == "delta":
        writer = ordered.writeTo(name)
        if plan.selection.condition is not None:
            writer.overwrite(plan.selection.condition)
        else:
            writer.overwritePartitions()
    else:
        # insertInto ignores the writer option; the session setting is what v1 file tables read.
        with session_conf(df.sparkSession, "spark.sql.sources.partitionOverwriteMode", "dynamic"):
            ordered.write.mode("overwrite").insertInto(name)


@contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """Set a runtime SQL setting for one write, then give the caller's session back as it was."""
    old = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if old is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, old)


def count_written(spark: SparkSession, name: str, plan: ScoringPlan, scoring_run_id: str) -> list[PartitionCount]:
    """Rows this run published, per partition: one small job over the written files."""
    df = spark.table(name).where(col("scoring_run_id") == scoring_run_id)
    if plan.selection.condition is not None:
        df = df.where(plan.selection.condition)
    parts = list(plan.partition_columns)
    rows = df.groupBy(*[col(c) for c in parts]).count().orderBy(*[col(c) for c in parts]).collect()
    return [PartitionCount({c: r[c] for c in parts}, int(r["count"])) for r in rows]


def _columns(schema: T.StructType) -> dict[str, str]:
    return {f.name.lower(): f.dataType.simpleString() for f in schema.fields}
