"""One run at a time per output table: a lock file beside the table, with a heartbeat, so a second run fails
fast naming the holder, and a crashed holder's lock goes stale after a timeout."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

from pyspark.sql import SparkSession

from spark_jobs import fs
from spark_jobs.errors import ScoringError

log = logging.getLogger("score_table.lock")


@dataclass(frozen=True)
class Holder:
    scoring_run_id: str
    started_at: str
    host: str
    pid: int


class LockedError(ScoringError):
    """Another run holds the output table."""


def lock_path(spark: SparkSession, output_table: str) -> str:
    parts = output_table.split(".")
    database = ".".join(parts[:-1]) if len(parts) > 1 else spark.catalog.currentDatabase()  # catalog.db too
    location = fs.path_of(spark, spark.catalog.getDatabase(database).locationUri).rstrip("/")  # a URI: decode
    return f"{location}/_scoring_locks/{parts[-1].lower()}.lock"


class TableLock:
    def __init__(self, spark: SparkSession, path: str, holder: Holder, stale_after_s: float) -> None:
        self.spark, self.path, self.holder, self.stale_after_s = spark, path, holder, stale_after_s
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self, break_lock: bool = False) -> Holder | None:
        """Take the lock; return the previous holder when a stale (or, with break_lock, live) lock was taken
        over. Raise LockedError when a live run holds it."""
        taken_over = None
        if not fs.create_exclusive(self.spark, self.path, json.dumps(asdict(self.holder))):
            current = self._current()
            age = time.time() - fs.mtime(self.spark, self.path)
            if not break_lock and age < self.stale_after_s:
                raise LockedError(
                    f"output table is locked by run {current.scoring_run_id} started at {current.started_at} "
                    f"on {current.host} (pid {current.pid}); its last heartbeat was {age:.0f} s ago, it becomes "
                    f"stale after {self.stale_after_s:.0f} s; use --break-lock if that run is gone"
                )
            log.warning("taking over the lock of run %s (started %s, last heartbeat %.0f s ago)",
                        current.scoring_run_id, current.started_at, age)
            fs.delete(self.spark, self.path)
            if not fs.create_exclusive(self.spark, self.path, json.dumps(asdict(self.holder))):
                raise LockedError(f"output table lock {self.path} was taken by another run while breaking it")
            taken_over = current
        self._beat = threading.Thread(target=self._heartbeat, name="score-table-lock", daemon=True)
        self._beat.start()
        return taken_over

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if not fs.exists(self.spark, self.path):
            log.warning("the lock %s was gone at release: another run broke it", self.path)
        elif self._current().scoring_run_id == self.holder.scoring_run_id:
            fs.delete(self.spark, self.path)

    def _current(self) -> Holder:
        """Who holds the lock, as its file says; a file this job did not write reads as an unknown holder
        (and can still go stale). A file that cannot be read at all is an error, not a stale lock."""
        text = fs.read_text(self.spark, self.path)
        try:
            return Holder(**json.loads(text))
        except (ValueError, TypeError):
            log.warning("lock file %s does not name a run: %r", self.path, text[:200])
            return Holder("unknown", "unknown", "unknown", -1)

    def _heartbeat(self) -> None:
        interval = max(0.5, min(30.0, self.stale_after_s / 4))
        while not self._stop.wait(interval):
            try:
                fs.touch(self.spark, self.path, time.time())
            except Exception:
                log.warning("lock heartbeat failed", exc_info=True)


def holder(scoring_run_id: str, started_at: str) -> Holder:
    return Holder(scoring_run_id, started_at, socket.gethostname(), os.getpid())
