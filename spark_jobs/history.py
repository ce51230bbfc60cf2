"""The run-history table (`<output>_runs`): one row per run, queryable with SQL. Each run's row is its own
partition, so runs never rewrite each other's rows; the row goes in as `running` and is replaced when the
run ends."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field, replace

from pyspark.sql import Row, SparkSession
from pyspark.sql import types as T

from spark_jobs.errors import one_line
from spark_jobs.session import runtime_conf
from udfs.compat import col

log = logging.getLogger("score_table.history")
SCHEMA = T.StructType([
    T.StructField("kind", T.StringType()),  # score | rollback
    T.StructField("status", T.StringType()),  # running | succeeded | failed
    T.StructField("started_at", T.TimestampType()),
    T.StructField("ended_at", T.TimestampType()),
    T.StructField("model_uri", T.StringType()),
    T.StructField("model_name", T.StringType()),
    T.StructField("model_version", T.StringType()),
    T.StructField("model_run_id", T.StringType()),
    T.StructField("input_table", T.StringType()),
    T.StructField("output_table", T.StringType()),
    T.StructField("partition_selection", T.StringType()),
    T.StructField("rows_read", T.LongType()),
    T.StructField("rows_scored", T.LongType()),
    T.StructField("rows_rejected", T.LongType()),
    T.StructField("duration_s", T.DoubleType()),
    T.StructField("rows_per_s", T.DoubleType()),
    T.StructField("published_partitions", T.ArrayType(T.StringType())),
    T.StructField("error", T.StringType()),
    T.StructField("scoring_run_id", T.StringType()),
])


@dataclass(frozen=True)
class RunRecord:
    kind: str
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    model_uri: str | None
    model_name: str | None
    model_version: str | None
    model_run_id: str | None
    input_table: str | None
    output_table: str
    partition_selection: str | None
    rows_read: int | None = None
    rows_scored: int | None = None
    rows_rejected: int | None = None
    duration_s: float | None = None
    rows_per_s: float | None = None
    published_partitions: list[str] = field(default_factory=list)
    error: str | None = None
    scoring_run_id: str = ""

    def finished(self, status: str, error: str | None = None, **counts: object) -> RunRecord:
        ended = dt.datetime.now(dt.timezone.utc)
        duration = (ended - self.started_at).total_seconds()
        done = replace(self, status=status, ended_at=ended, duration_s=duration, error=error, **counts)  # type: ignore[arg-type]
        rate = done.rows_read / duration if done.rows_read is not None and duration > 0 else None
        return replace(done, rows_per_s=rate)


def abandoned(row: Row, reason: str) -> RunRecord:
    """A `running` row of a dead run, marked failed (its duration is unknown)."""
    record = RunRecord(**{k: row[k] for k in SCHEMA.fieldNames()})
    return replace(record, status="failed", ended_at=dt.datetime.now(dt.timezone.utc), error=reason)


def write(spark: SparkSession, table: str, record: RunRecord) -> None:
    row = spark.createDataFrame([astuple(record)], SCHEMA)
    if not spark.catalog.tableExists(table):
        row.limit(0).writeTo(table).using("parquet").partitionedBy(col("scoring_run_id")).create()
    with runtime_conf(spark, {"spark.sql.sources.partitionOverwriteMode": "dynamic"}):
        row.write.mode("overwrite").insertInto(table)


def write_failure(spark: SparkSession, table: str, record: RunRecord, error: BaseException) -> None:
    """Record a run's failure; if recording fails too, log that and let the run's own error reach the user."""
    try:
        write(spark, table, record.finished("failed", error=one_line(error)))
    except Exception:
        log.error("could not record the failure of run %s in %s", record.scoring_run_id, table, exc_info=True)


def read(spark: SparkSession, table: str, statuses: Sequence[str] = ()) -> list[Row]:
    if not spark.catalog.tableExists(table):
        return []
    df = spark.table(table)
    if statuses:
        df = df.where(col("status").isin(list(statuses)))
    return df.orderBy("started_at").collect()
