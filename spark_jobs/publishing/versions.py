"""Published versions of a partition: the folders of succeeded runs under `_runs/`. Retention keeps the
published one and the newest N superseded ones; rollback republishes the newest superseded one."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pyspark.sql import SparkSession

from spark_jobs import fs
from spark_jobs.publishing import staging
from spark_jobs.scoring.bad_rows import OUTCOME

log = logging.getLogger("score_table.versions")


@dataclass(frozen=True)
class Version:
    run_id: str
    scored: str  # folder of the partition's scored rows in that run
    rejected: str

    @property
    def challenger(self) -> str:
        """Its challenger's rows (a run with --challenger-uri), published in the challenger table."""
        return self.scored.replace(f"/{OUTCOME}={staging.SCORED}", f"/{OUTCOME}=challenger", 1)


def kept(spark: SparkSession, table_location: str, partition_path: str,
         succeeded: Mapping[str, dt.datetime]) -> list[Version]:
    """Versions of one partition by succeeded runs, newest first."""
    found = [Version(*v) for v in staging.version_folders(spark, table_location, partition_path) if v[0] in succeeded]
    return sorted(found, key=lambda v: succeeded[v.run_id], reverse=True)


def prune(spark: SparkSession, table_location: str, partition_paths: Iterable[str], current_run: str,
          succeeded: Mapping[str, dt.datetime], unfinished: Iterable[str], keep: int,
          published_runs: Callable[[], set[str]]) -> None:
    """Delete superseded versions beyond `keep`, and the folders of runs the history knows as failed or
    still `running` (crashed: the caller holds the table lock, so none of them is still writing). Folders
    of runs the history does not know are left alone."""
    garbage = set(unfinished) - {current_run}
    if garbage:  # a run that crashed while publishing may still serve some partitions: keep those folders
        garbage -= published_runs()
    for path in partition_paths:
        older = [v for v in kept(spark, table_location, path, succeeded) if v.run_id != current_run]
        for v in older[keep:]:
            log.info("retention: deleting version of run %s of partition %s", v.run_id, path or "(table)")
            fs.delete(spark, v.scored)
            for folder in (v.rejected, v.challenger):
                if fs.exists(spark, folder):
                    fs.delete(spark, folder)
    for run_id, folder in staging.run_folders(spark, table_location):
        if run_id in garbage:
            log.info("deleting the staged rows of run %s, which did not succeed", run_id)
            fs.delete(spark, folder)
        elif run_id != current_run and run_id in succeeded and not staging.holds_versions(spark, folder):
            fs.delete(spark, folder)  # every version it held was pruned
