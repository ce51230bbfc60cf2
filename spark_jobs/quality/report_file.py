"""The run's report as a file: `<output table location>/_reports/<scoring_run_id>.html`, beside `_runs/`
(underscore: table readers skip it). Written before publishing, so a run the drift gate stops has one too."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from spark_jobs import fs
from spark_jobs.publishing.staging import StagingArea
from spark_jobs.quality import report
from spark_jobs.quality.records import RunQuality

if TYPE_CHECKING:
    from spark_jobs.scoring.job import RunResult

log = logging.getLogger("score_table.quality")
REPORTS_DIR = "_reports"


def path(staging: StagingArea, run_id: str) -> str:
    return f"{staging.table_location}/{REPORTS_DIR}/{run_id}.html"


def write(spark: SparkSession, result: RunResult, summary: str) -> None:
    """Render and write the report; a report that cannot be written is logged, never the run's failure."""
    if result.quality is None or result.report_path is None:
        return
    q = result.quality
    quality = RunQuality(title=f"score-table run {result.lineage.scoring_run_id}",
                         summary=tuple(summary.splitlines()), partitions=q.partitions, baseline_note=q.baseline_note,
                         gate=q.crossed)
    try:
        fs.replace_text(spark, result.report_path, report.render(quality))
    except Exception:
        log.warning("could not write the run's report to %s", result.report_path, exc_info=True)
