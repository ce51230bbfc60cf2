"""Publishing a run's audited staging area into a table, behind one interface with one implementation per
output format: readers of Parquet-in-the-metastore tables are switched partition by partition to the staged
folders (which stay as versions for rollback); Delta copies the rows in with its own atomic overwrite."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from spark_jobs.planning import partitions, tables
from spark_jobs.publishing import output, versions
from spark_jobs.publishing.staging import SCORED, StagedPartition, StagingArea, split_location
from spark_jobs.publishing.staging import run_folders as staging_run_folders
from spark_jobs.runs import history

Values = tuple[Any, ...]


class Publisher(Protocol):
    def publish(self, spark: SparkSession, table: str, schema: T.StructType, staging: StagingArea, outcome: str,
                staged: Sequence[StagedPartition], run_partitions: Iterable[Values], manifest: bool = False,
                between: Callable[[], None] = lambda: None) -> None:
        """Make the run's partitions of `table` hold its staged rows of `outcome` (no rows: dropped)."""

    def retain(self, spark: SparkSession, staging: StagingArea, staged: Sequence[StagedPartition], runs_table: str,
               keep: int, tables_of_run: Sequence[str]) -> None:
        """After a successful run: keep what rollback may need, delete the rest."""


@dataclass(frozen=True)
class MetastorePublisher:
    """Parquet in the Hive metastore: one metastore update per partition points it at its staged folder, so
    readers see the old rows or the new, never a mix; `_published.jsonl` follows each switch."""

    def publish(self, spark: SparkSession, table: str, schema: T.StructType, staging: StagingArea, outcome: str,
                staged: Sequence[StagedPartition], run_partitions: Iterable[Values], manifest: bool = False,
                between: Callable[[], None] = lambda: None) -> None:
        output.publish(spark, table, staging.partition_columns, [p for p in staged if p.outcome == outcome],
                       run_partitions, between, manifest_in=staging.table_location if manifest else None)

    def retain(self, spark: SparkSession, staging: StagingArea, staged: Sequence[StagedPartition], runs_table: str,
               keep: int, tables_of_run: Sequence[str]) -> None:
        runs = history.outcomes(spark, runs_table, [r for r, _ in staging_run_folders(spark, staging.table_location)])
        succeeded = {r: o.ended_at for r, o in runs.items()
                     if o.kind == "score" and o.status == "succeeded" and o.ended_at is not None}
        unfinished = [r for r, o in runs.items() if o.status in ("failed", "running")]
        found = [split_location(p.location) for p in staged if p.outcome == SCORED]
        paths = {f[2] for f in found if f is not None}
        versions.prune(spark, staging.table_location, paths, staging.run_id, succeeded, unfinished, keep,
                       lambda: published_runs(spark, tables_of_run))


@dataclass(frozen=True)
class DeltaPublisher:
    """Delta: the run's partitions overwritten by Delta's own atomic commit; Delta's log keeps the versions."""

    def publish(self, spark: SparkSession, table: str, schema: T.StructType, staging: StagingArea, outcome: str,
                staged: Sequence[StagedPartition], run_partitions: Iterable[Values], manifest: bool = False,
                between: Callable[[], None] = lambda: None) -> None:
        output.publish_copy(spark, table, staging.rows(spark, outcome, schema))

    def retain(self, spark: SparkSession, staging: StagingArea, staged: Sequence[StagedPartition], runs_table: str,
               keep: int, tables_of_run: Sequence[str]) -> None:
        staging.delete(spark)  # Delta copied the rows in


def publisher_for(output_format: str) -> Publisher:
    return DeltaPublisher() if output_format == "delta" else MetastorePublisher()


def published_runs(spark: SparkSession, names: Sequence[str]) -> set[str]:
    """Runs whose folders some partition of these tables points at now (one metastore call per partition:
    only done when there is a crashed run's folder to clean up)."""
    found = set()
    for name in names:
        info = tables.describe(spark, name)
        if info is None:
            continue
        for values in partitions.listed(spark, info):
            where = split_location(output.location(spark, name, dict(zip(info.partition_columns, values,
                                                                         strict=True))))
            if where is not None:
                found.add(where[1])
    return found

