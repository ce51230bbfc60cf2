"""The skeleton every writing command shares (a scoring run, a rollback): under the output table's lock, with
a run-history row that says `running` while it works and `succeeded` or `failed` (with the error) after."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from spark_jobs.background import Background
from spark_jobs.publishing import output
from spark_jobs.runs import history, lock

log = logging.getLogger("score_table")


@dataclass
class LockedRun:
    spark: SparkSession
    runs_table: str
    record: history.RunRecord
    recording: Background[str] | None = None  # the `running` row, written while the run starts its work
    done: bool = False
    publishing: bool = False  # set before the first partition switch: a failure from then on reconciles

    @property
    def folder(self) -> str:
        """The folder of the run's history row, once its `running` row is written (its failure raises here)."""
        assert self.recording is not None
        return self.recording.result()

    def start_publishing(self) -> None:
        """From here on partitions may point at the run's folder. The `running` row is on record first, so a
        run that dies while publishing is never missing from the history."""
        self.folder  # noqa: B018 (waits for the row)
        self.publishing = True

    def succeeded(self, **fields: Any) -> None:
        """Record the run as succeeded, with its counts (and any lineage learnt while running); what fails
        after this (retention) no longer makes the run failed."""
        history.write(self.spark, self.runs_table, self.record.finished("succeeded", **fields), self.folder)
        self.done = True


@contextmanager
def locked_run(spark: SparkSession, output_table: str, runs_table: str, record: history.RunRecord,
               stale_after_s: float, break_lock: bool, manifest: bool = True) -> Iterator[LockedRun]:
    """Take the lock (a live holder: LockedError), clean up after a dead holder, record the run; on any error
    record it as failed (the error itself still reaches the caller), and release the lock in every case.
    `manifest`: the table has a `_published.jsonl` to keep in step with the metastore (not Delta)."""
    table_lock = lock.TableLock(spark, lock.lock_path(spark, output_table),
                                lock.holder(record.scoring_run_id, record.started_at.isoformat()), stale_after_s)
    previous = table_lock.acquire(break_lock)
    run = LockedRun(spark, runs_table, record)
    try:
        if previous is not None:
            _abandon(spark, runs_table, previous)
            if manifest:  # it may have died between a partition's switch and its manifest line
                output.reconcile_manifest(spark, output_table)
        # the row's metastore calls (the history table's first creation, its partition) overlap the run's start
        run.recording = Background(lambda: history.write(spark, runs_table, record), "run-history")
        yield run
    except BaseException as e:
        if not run.done:
            history.write_failure(spark, runs_table, run.record, e, _written(run))
            if manifest and run.publishing:
                _reconcile_after_failure(spark, output_table)
        raise
    finally:
        try:
            table_lock.release()
        except Exception:  # the run's own outcome stands; the lock goes stale and is taken over
            log.warning("could not release the lock of %s; it goes stale after %.0f s", output_table, stale_after_s,
                        exc_info=True)


def _written(run: LockedRun) -> str | None:
    """The `running` row's folder, or None when that write failed or never started (the failure row is then
    written as a new one)."""
    if run.recording is None:
        return None
    try:
        return run.folder
    except Exception:
        log.warning("could not record run %s as running in %s", run.record.scoring_run_id, run.runs_table,
                    exc_info=True)
        return None


def _reconcile_after_failure(spark: SparkSession, output_table: str) -> None:
    """A run that failed while publishing may have switched a partition without its manifest line."""
    try:
        output.reconcile_manifest(spark, output_table)
    except Exception:
        log.error("could not rewrite the manifest of %s from the metastore; the next run that takes the lock "
                  "does", output_table, exc_info=True)


def _abandon(spark: SparkSession, runs_table: str, previous: lock.Holder) -> None:
    """A run whose lock was taken over is dead: mark its history row failed, so it is not left `running`."""
    for r in history.read(spark, runs_table, ["running"]):
        if r.scoring_run_id == previous.scoring_run_id:
            history.write(spark, runs_table, history.abandoned(
                r, f"abandoned: its lock was taken over by a later run (holder pid {previous.pid})"))
