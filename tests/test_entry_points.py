"""The three ways users run the job (spark-submit, the console script, python -m), each in its own process
against its own embedded metastore and registry, as a new user would: one process per way of running. The
spark-submit runs are test_spark_submit.py's (one process for all of them); the console script's scoring run
is test_platforms.py's, with a model from an MLflow tracking server; `python -m`'s is test_faults.py's first
run. Here: a usage error from the console script, before Spark starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spark_jobs.cli import SWITCH_INTERVAL_S
from tests.support import BIN, call

pytestmark = pytest.mark.processes


def test_console_script_usage_error_exits_2_before_spark_starts(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(f"model_uri: models:/churn@champion\nspark:\n  local_home: {tmp_path}\n")
    done = call([str(BIN / "score-table"), "--config", str(profile),
                 "--input-table", "lake.t; DROP TABLE lake.customer_features", "--output-table", "lake.x"],
                tmp_path, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("score-table: error: --input-table")
    assert "SparkContext" not in done.stderr


@pytest.mark.parametrize("databricks, teardown", [(False, False), (True, True)])
def test_the_process_exits_at_once_except_inside_databricks(tmp_path: Path, databricks: bool, teardown: bool) -> None:
    """`cli` skips the interpreter's teardown (atexit handlers included) with the run's exit code; a Databricks
    wheel task calls it inside the platform's Python process, which must go on: there it exits as usual, with
    the interpreter's thread switch interval as it was (the run itself has the job's)."""
    script = ("import atexit, sys; atexit.register(lambda: print('teardown ran', sys.getswitchinterval())); "
              "import spark_jobs.cli as c; run = c.main; "
              "c.main = lambda: (print('run with', sys.getswitchinterval()), run())[1]; "
              "sys.argv = ['score-table', '--model-uri', 'models:/m@a', "
              "'--input-table', 'lake.t; DROP TABLE x', '--output-table', 'lake.x']; c.cli()")
    done = call([str(BIN / "python"), "-c", script], tmp_path, Path.cwd(),
                {"DATABRICKS_RUNTIME_VERSION": "15.4"} if databricks else None)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("score-table: error: --input-table")
    assert f"run with {SWITCH_INTERVAL_S}" in done.stdout
    assert ("teardown ran" in done.stdout) is teardown
    if teardown:
        assert f"teardown ran {sys.getswitchinterval()}" in done.stdout


def test_a_session_that_profiles_python_keeps_the_interpreters_exit(tmp_path: Path) -> None:
    """PySpark prints the Python workers' profiles at exit (`spark.python.profile`): that exit is kept."""
    script = ("import atexit; atexit.register(lambda: print('teardown ran')); "
              "from pyspark import SparkConf, SparkContext; "
              "SparkContext(conf=SparkConf().setMaster('local[1]').set('spark.ui.enabled', 'false')"
              ".set('spark.python.profile', 'true')); "
              "from spark_jobs.cli import end_process; end_process(3)")
    done = call([str(BIN / "python"), "-c", script], tmp_path, Path.cwd())
    assert done.returncode == 3, done.stderr[-2000:]
    assert "teardown ran" in done.stdout
