"""The run-history table (`<output>_runs`): one row per run, queryable with SQL. Each run's row is its own
partition, so runs never rewrite each other's rows; the row goes in as `running` and is replaced when the
run ends."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field, replace
from typing import Any

from pyspark.sql import Row, SparkSession
from pyspark.sql import types as T

from spark_jobs import compat, fs, parquet_rows
from spark_jobs.errors import one_line
from spark_jobs.publishing import output
from udfs.compat import col, quote, sql_type

log = logging.getLogger("score_table.history")
COMPARISON = T.StructType([
    T.StructField("partition", T.StringType()),
    T.StructField("output", T.StringType()),
    T.StructField("rows", T.LongType()),
    T.StructField("agreement", T.DoubleType()),
    T.StructField("mean_abs_diff", T.DoubleType()),
    T.StructField("max_abs_diff", T.DoubleType()),
    T.StructField("spearman", T.DoubleType()),
    T.StructField("psi", T.DoubleType()),
])
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
    T.StructField("engine", T.StringType()),  # sql | udf (score runs that scored)
    T.StructField("engine_max_diff", T.DoubleType()),  # sql: largest difference from the model on verification
    T.StructField("transforms", T.StringType()),  # the run's per-row SQL transforms, as JSON {column: expression}
    T.StructField("drift_baseline", T.StringType()),  # what the run's drift was measured against
    T.StructField("max_drift", T.DoubleType()),  # the largest PSI of any column of any partition
    T.StructField("challenger_uri", T.StringType()),
    T.StructField("challenger_version", T.StringType()),
    T.StructField("challenger", T.ArrayType(COMPARISON)),  # champion vs challenger, per partition
    T.StructField("report_path", T.StringType()),
    T.StructField("mlflow_run_id", T.StringType()),
    T.StructField("scoring_run_id", T.StringType()),
])
ADDED_LATER = ("engine", "engine_max_diff", "transforms", "drift_baseline", "max_drift", "challenger_uri",
               "challenger_version", "challenger", "report_path", "mlflow_run_id")  # added to an older table by `write`
PARTITION = "scoring_run_id"  # each run's row is a partition of its own


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
    engine: str | None = None
    engine_max_diff: float | None = None
    transforms: str | None = None
    drift_baseline: str | None = None
    max_drift: float | None = None
    challenger_uri: str | None = None
    challenger_version: str | None = None
    challenger: list[dict[str, Any]] | None = None  # COMPARISON rows
    report_path: str | None = None
    mlflow_run_id: str | None = None
    scoring_run_id: str = ""

    def finished(self, status: str, error: str | None = None, **counts: object) -> RunRecord:
        ended = dt.datetime.now(dt.timezone.utc)
        duration = (ended - self.started_at).total_seconds()
        done = replace(self, status=status, ended_at=ended, duration_s=duration, error=error, **counts)  # type: ignore[arg-type]
        rate = done.rows_read / duration if done.rows_read is not None and duration > 0 else None
        return replace(done, rows_per_s=rate)


def abandoned(row: Row, reason: str) -> RunRecord:
    """A `running` row of a dead run, marked failed (its duration is unknown)."""
    held = row.asDict(recursive=True)
    values: dict[str, Any] = {k: held.get(k) for k in SCHEMA.fieldNames()}  # an older table lacks some columns
    record = RunRecord(**values)
    return replace(record, status="failed", ended_at=dt.datetime.now(dt.timezone.utc), error=reason)


def write(spark: SparkSession, table: str, record: RunRecord, folder: str | None = None) -> str:
    """Write the run's row without a Spark job: one Parquet file (made on the driver) replaced in the run's
    own partition folder, and the partition added to the catalog on the run's first write, which returns
    the folder. A later write of the same run passes it: the table and partition exist, only the file
    changes (no metastore call)."""
    if folder is None:
        found = compat.table_location_and_columns(spark, table)  # one metastore read where the table exists
        if found is not None:
            _add_missing_columns(spark, table, found[1])
        elif not spark.catalog.tableExists(table):
            output.create_empty(spark, table, SCHEMA, [PARTITION], "parquet")
        else:
            _add_missing_columns(spark, table, spark.table(table).schema.fieldNames())
        where = found[0] if found is not None else output.location(spark, table)
        folder = f"{fs.path_of(spark, where)}/{PARTITION}={record.scoring_run_id}"
        fs.replace_bytes(spark, f"{folder}/part-00000.parquet", _parquet(record))
        spec = output.partition_spec({PARTITION: record.scoring_run_id})
        compat.sql(spark, f"ALTER TABLE IDENTIFIER(:table) ADD IF NOT EXISTS{spec.sql} LOCATION :location",
                   {"table": table, **spec.args, "location": folder})
    else:
        fs.replace_bytes(spark, f"{folder}/part-00000.parquet", _parquet(record))
    return folder


def _parquet(record: RunRecord) -> bytes:
    """The record as a one-row Parquet file of the table's data columns."""
    data = T.StructType([f for f in SCHEMA.fields if f.name != PARTITION])
    return parquet_rows.to_parquet(data, [dict(zip(SCHEMA.fieldNames(), astuple(record), strict=True))])


def _add_missing_columns(spark: SparkSession, table: str, columns: Sequence[str]) -> None:
    """A history table made by an older version of the job (its `columns`) lacks the columns added since: add
    them (before the partition column, where a Hive table puts new data columns)."""
    have = {c.lower() for c in columns}
    missing = [f for f in SCHEMA.fields if f.name in ADDED_LATER and f.name not in have]
    if missing:
        columns = ", ".join(f"{quote(f.name)} {sql_type(f.dataType)}" for f in missing)
        compat.sql(spark, f"ALTER TABLE IDENTIFIER(:table) ADD COLUMNS ({columns})", {"table": table})


def write_failure(spark: SparkSession, table: str, record: RunRecord, error: BaseException,
                  folder: str | None = None) -> None:
    """Record a run's failure; if recording fails too, log that and let the run's own error reach the user."""
    try:
        write(spark, table, record.finished("failed", error=one_line(error)), folder)
    except Exception:
        log.error("could not record the failure of run %s in %s", record.scoring_run_id, table, exc_info=True)


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: str
    ended_at: dt.datetime | None


def outcomes(spark: SparkSession, table: str, run_ids: Sequence[str]) -> dict[str, Outcome]:
    """Kind, status and end of these runs, read on the driver from their rows' files (each run's row is a
    partition folder of its own): retention asks it after every run, and a Spark job would cost more than
    the few small files. A run without a row is missing from the answer."""
    ids = sorted(r for r in run_ids if r.isalnum())  # the job's run ids; anything else is not a run's folder
    where = output.existing_location(spark, table) if ids else None
    if where is None:
        return {}
    root = fs.path_of(spark, where)
    found: dict[str, Outcome] = {}
    for path in fs.glob(spark, f"{root}/{PARTITION}={{{','.join(ids)}}}/*.parquet"):
        run_id = path.rsplit(f"/{PARTITION}=", 1)[1].split("/", 1)[0]
        for row in parquet_rows.from_parquet(fs.read_bytes(spark, path), ["kind", "status", "ended_at"]):
            ended = row["ended_at"]  # a table written by Spark may hold timestamps without a zone: UTC
            found[run_id] = Outcome(row["kind"], row["status"],
                                    ended.replace(tzinfo=dt.timezone.utc) if ended and not ended.tzinfo else ended)
    return found


def read(spark: SparkSession, table: str, statuses: Sequence[str] = ()) -> list[Row]:
    if not spark.catalog.tableExists(table):
        return []
    df = spark.table(table)
    if statuses:
        df = df.where(col("status").isin(list(statuses)))
    return df.orderBy("started_at").collect()
