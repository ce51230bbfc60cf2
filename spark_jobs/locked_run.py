"""The skeleton every writing command shares (a scoring run, a rollback): under the output table's lock, with
a run-history row that says `running` while it works and `succeeded` or `failed` (with the error) after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from spark_jobs import history, lock, output


@dataclass
class LockedRun:
    spark: SparkSession
    runs_table: str
    record: history.RunRecord

    def succeeded(self, **fields: Any) -> None:
        """Record the run as succeeded, with its counts (and any lineage learnt while running)."""
        history.write(self.spark, self.runs_table, self.record.finished("succeeded", **fields))


@contextmanager
def locked_run(spark: SparkSession, output_table: str, runs_table: str, record: history.RunRecord,
               stale_after_s: float, break_lock: bool) -> Iterator[LockedRun]:
    """Take the lock (a live holder: LockedError), clean up after a dead holder, record the run; on any error
    record it as failed (the error itself still reaches the caller), and release the lock in every case."""
    table_lock = lock.TableLock(spark, lock.lock_path(spark, output_table),
                                lock.holder(record.scoring_run_id, record.started_at.isoformat()), stale_after_s)
    previous = table_lock.acquire(break_lock)
    try:
        if previous is not None:
            _abandon(spark, runs_table, previous)
            output.reconcile_manifest(spark, output_table)  # it may have died between a switch and its line
        history.write(spark, runs_table, record)
        yield LockedRun(spark, runs_table, record)
    except BaseException as e:
        history.write_failure(spark, runs_table, record, e)
        raise
    finally:
        table_lock.release()


def _abandon(spark: SparkSession, runs_table: str, previous: lock.Holder) -> None:
    """A run whose lock was taken over is dead: mark its history row failed, so it is not left `running`."""
    for r in history.read(spark, runs_table, ["running"]):
        if r.scoring_run_id == previous.scoring_run_id:
            history.write(spark, runs_table, history.abandoned(
                r, f"abandoned: its lock was taken over by a later run (holder pid {previous.pid})"))
