"""Named crash points for the fault-injection tests: SCORE_TABLE_CRASH_AT=<point> SIGKILLs the driver there,
as a node loss or an OOM kill would. Unset in production; costs one environment look-up per point."""

from __future__ import annotations

import os
import signal
import threading
import time

from pyspark.sql import SparkSession

ENV = "SCORE_TABLE_CRASH_AT"


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def while_running_jobs(spark: SparkSession) -> None:
    """Crash point `while_scoring`: SIGKILL the driver once a Spark job is running."""
    if os.environ.get(ENV) != "while_scoring":
        return

    def watch() -> None:
        tracker = spark.sparkContext.statusTracker()
        while not tracker.getActiveJobsIds():
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()
