"""The three ways users run the job (spark-submit, the console script, python -m), each in its own process
against its own embedded metastore and registry, as a new user would: one process per way of running (the
spark-submit process, the `submitted` fixture, also runs test_serving.py's runs). The console script's
scoring run is test_platforms.py's, with a model from an MLflow tracking server."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from tests.support import BIN, RUN_COLUMNS, Driver, call, expected_for, published, snapshot
from tests.support import DEMO_DAYS as DAYS

pytestmark = pytest.mark.processes


def test_spark_submit_with_conf_only_scores_and_rerun_is_identical(spark: SparkSession, home: Path,
                                                                   submitted: Driver) -> None:
    """Configured by spark-submit --conf alone; the second run, in the same spark-submit process, replaces the
    partition with the same rows."""
    flags = ["--model-uri", "models:/churn@champion", "--input-table", "lake.customer_features",
             "--output-table", "lake.scored_submit", "--partition", f"ds={DAYS[0]}"]
    code, out = submitted.run(*flags)
    assert code == 0, out[-3000:]
    assert f"ds={DAYS[0]}: 2000 scored, 0 rejected" in out
    actual = published(spark, home, "scored_submit")
    assertDataFrameEqual(actual, expected_for(spark, home, actual, DAYS[0]))
    before = snapshot(actual)

    code, out = submitted.run(*flags)
    assert code == 0, out[-3000:]
    assert_df_equality(published(spark, home, "scored_submit"), before, ignore_row_order=True,
                       ignore_columns=RUN_COLUMNS)


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
