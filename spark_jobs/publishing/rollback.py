"""`score-table rollback`: republish the previous kept version of a partition (and its rejects), under the
table lock, recorded in the run history."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from spark_jobs import fs
from spark_jobs.config import RollbackConfig
from spark_jobs.errors import UsageError
from spark_jobs.planning import partitions, plan, tables
from spark_jobs.publishing import output, serving, versions
from spark_jobs.publishing.staging import split_location
from spark_jobs.runs import history
from spark_jobs.runs.locked_run import locked_run
from udfs.compat import col

log = logging.getLogger("score_table.rollback")


def rollback(spark: SparkSession, cfg: RollbackConfig) -> str:
    """Returns a description of what was republished."""
    table = tables.require(spark, cfg.output_table, "output table")
    values: dict[str, object] = {}
    for name, (text,) in cfg.partitions.items():
        field = plan.find_column(table.schema, name, case_sensitive=False)
        if field is None or field.name not in table.partition_columns:
            raise UsageError(f"--partition column '{name}' is not a partition column of {table.name}")
        values[field.name] = plan.partition_literal(field, text)
    if sorted(values) != sorted(table.partition_columns):
        raise UsageError(f"rollback needs one value for each partition column of {table.name}: "
                         f"{', '.join(table.partition_columns)}")
    spec = {c: values[c] for c in table.partition_columns}
    described = partitions.describe(table.partition_columns, tuple(spec.values()))
    if not any(p == tuple(spec.values()) for p in partitions.listed(spark, table)):
        raise UsageError(f"partition {described} of {table.name} is not published")

    _target(spark, cfg, spec, described)  # a usage error here: exit 2, nothing written
    run_id = uuid.uuid4().hex
    started = dt.datetime.now(dt.timezone.utc)
    record = history.RunRecord(kind="rollback", status="running", started_at=started, ended_at=None, model_uri=None,
                               model_name=None, model_version=None, model_run_id=None, input_table=None,
                               output_table=cfg.output_table, partition_selection=described, scoring_run_id=run_id)
    with locked_run(spark, cfg.output_table, cfg.runs, record, cfg.lock_stale_after_s, cfg.break_lock) as this:
        # again under the lock: another run may have published in between
        table_location, current, target, source = _target(spark, cfg, spec, described)
        if cfg.serve is not None:  # first: a failed load leaves the warehouse as it was, and a rerun the same
            served = serving.serve(spark, _version_rows(spark, cfg.output_table, spec, target.scored), cfg.serve,
                                   run_id)
            log.info("served %d rows of run %s to %s", served, target.run_id, cfg.serve.table)
        this.start_publishing()
        output.point_at(spark, cfg.output_table, spec, target.scored, exists=True)
        spark.catalog.refreshTable(cfg.output_table)
        output.update_manifest(spark, table_location, table.partition_columns,
                               {tuple(spec.values()): target.scored})
        if spark.catalog.tableExists(cfg.rejects):
            output.point_at(spark, cfg.rejects, spec, target.rejected if fs.exists(spark, target.rejected) else None)
            spark.catalog.refreshTable(cfg.rejects)
        this.succeeded(model_uri=source.model_uri, model_name=source.model_name, model_version=source.model_version,
                       model_run_id=source.model_run_id, input_table=source.input_table,
                       published_partitions=[described])
    return (f"rolled back {cfg.output_table} {described} from run {current} to run {target.run_id} "
            f"(model {source.model_name} version {source.model_version})")


def _target(spark: SparkSession, cfg: RollbackConfig, spec: dict[str, Any],
            described: str) -> tuple[str, str, versions.Version, Row]:
    """(table location, the run published now, the version to republish, its run's history row)."""
    runs = {r.scoring_run_id: r for r in history.read(spark, cfg.runs, ["succeeded"]) if r.kind == "score"}
    found = split_location(output.location(spark, cfg.output_table, spec))
    if found is None:
        raise UsageError(f"partition {described} of {cfg.output_table} was not published by this job")
    table_location, current, path = found
    current_end = runs[current].ended_at if current in runs else dt.datetime.max
    older = [v for v in versions.kept(spark, table_location, path, {k: r.ended_at for k, r in runs.items()})
             if v.run_id != current and runs[v.run_id].ended_at < current_end]
    if not older:
        raise UsageError(f"no earlier version of partition {described} is kept (see keep_versions)")
    return table_location, current, older[0], runs[older[0].run_id]


def _version_rows(spark: SparkSession, table: str, spec: dict[str, Any], folder: str) -> DataFrame:
    """A kept version's rows in the table's columns (the folder holds the data columns; the partition values
    are in its path)."""
    schema = spark.table(table).schema
    rows = spark.read.parquet(folder).withColumns(
        {c: F.lit(v).cast(schema[c].dataType) for c, v in spec.items()})
    return rows.select(*[col(f.name) for f in schema.fields])
