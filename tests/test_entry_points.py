"""The three ways users run the job (spark-submit, the console script, python -m), each in its own process
against its own embedded metastore and registry, as a new user would: one process per way of running. The
spark-submit runs are test_spark_submit.py's (one process for all of them); the console script's scoring run
is test_platforms.py's, with a model from an MLflow tracking server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from tests.support import BIN, call, expected_for, published
from tests.support import DEMO_DAYS as DAYS

pytestmark = pytest.mark.processes


def test_module_scores_every_partition_with_a_profile(spark: SparkSession, home: Path, scored_by_module: str) -> None:
    """`python -m spark_jobs.score_table --config PROFILE` (the run is the scored_by_module fixture: the SQL
    clients' test in test_platforms.py queries the same table)."""
    scored = published(spark, home, scored_by_module)
    assert sorted(str(r.ds) for r in scored.select("ds").distinct().collect()) == DAYS
    for day in DAYS:
        actual = scored.where(F.col("ds") == day)
        assertDataFrameEqual(actual, expected_for(spark, home, actual, day))


def test_console_script_usage_error_exits_2_before_spark_starts(home: Path, tmp_path: Path) -> None:
    done = call([str(BIN / "score-table"), "--config", str(home / "profile.yaml"),
                 "--input-table", "lake.t; DROP TABLE lake.customer_features", "--output-table", "lake.x"],
                home, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("score-table: error: --input-table")
    assert "SparkContext" not in done.stderr
