"""The three ways users run the job (spark-submit, the console script, python -m), each in its own process
against its own embedded metastore and registry, as a new user would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from tests.support import DEMO_DAYS as DAYS
from tests.support import call, expected_for, published, submit_conf

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def test_spark_submit_with_conf_only_scores_and_rerun_is_identical(spark: SparkSession, home: Path,
                                                                   tmp_path: Path) -> None:
    cmd = [str(BIN / "spark-submit"), *submit_conf(home), str(REPO / "spark_jobs" / "score_table.py"),
           "--model-uri", "models:/churn@champion", "--input-table", "lake.customer_features",
           "--output-table", "lake.scored_submit", "--partition", f"ds={DAYS[0]}"]
    first = call(cmd, home, tmp_path)  # cwd elsewhere: the embedded default would find no table there
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"ds={DAYS[0]}: 2000 scored, 0 rejected" in first.stdout
    actual = published(spark, home, "scored_submit")
    assertDataFrameEqual(actual, expected_for(spark, home, actual, DAYS[0]))
    before = actual.drop("scored_at", "scoring_run_id").collect()

    again = call(cmd, home, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assertDataFrameEqual(published(spark, home, "scored_submit").drop("scored_at", "scoring_run_id"), before)


@pytest.mark.parametrize("launcher", ["console-script", "python-m"])
def test_console_script_and_module_score_with_a_profile(spark: SparkSession, home: Path, tmp_path: Path,
                                                        launcher: str) -> None:
    table = f"scored_{launcher.replace('-', '_')}"
    module = [sys.executable, "-m", "spark_jobs.score_table"]
    head = [str(BIN / "score-table")] if launcher == "console-script" else module
    done = call([*head, "--config", str(home / "profile.yaml"), "--output-table", f"lake.{table}",
                 "--partition", f"ds={DAYS[1]}"], home, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    actual = published(spark, home, table)
    assertDataFrameEqual(actual, expected_for(spark, home, actual, DAYS[1]))


def test_console_script_usage_error_exits_2_before_spark_starts(home: Path, tmp_path: Path) -> None:
    done = call([str(BIN / "score-table"), "--config", str(home / "profile.yaml"),
                 "--input-table", "lake.t; DROP TABLE lake.customer_features", "--output-table", "lake.x"],
                home, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("score-table: error: --input-table")
    assert "SparkContext" not in done.stderr
