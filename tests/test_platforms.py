"""Where users run it, against the real components on 127.0.0.1: a Spark standalone master and worker,
and an MLflow tracking server. Each test starts what it needs and stops it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs import demo
from tests.support import (
    BIN,
    DEMO_DAYS,
    REPO,
    SHORT_LIVED_JVM,
    call,
    expected_for,
    free_port,
    log_model,
    published,
    registry,
    submit_conf,
)
from tests.support import env as process_env

pytestmark = pytest.mark.processes


def wait_for(check: object, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f} s")


def stop(processes: list[subprocess.Popen[bytes]], grace: float = 5) -> None:
    """SIGTERM to each process group, SIGKILL to what still runs after `grace` seconds (the MLflow server's
    uvicorn waits for its clients' keep-alive connections to close: about 12 s)."""
    for p in processes:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


@pytest.fixture()
def standalone(home: Path, tmp_path: Path) -> Iterator[str]:
    """A real standalone master and worker, bound to 127.0.0.1."""
    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    env = process_env(home, {"SPARK_LOG_DIR": str(tmp_path), "SPARK_NO_DAEMONIZE": "1"})
    port, ui = free_port(), free_port()
    master = start([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
                    str(port), "--webui-port", str(ui)], tmp_path / "master.log", env)
    processes = [master]
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), 1).close() is None, "Spark master")
        processes.append(start([spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                                "--host", "127.0.0.1", "--cores", "2", "--memory", "2g", "--webui-port",
                                str(free_port()), "--work-dir", str(tmp_path / "work")], tmp_path / "worker.log", env))

        # The worker's own log says when the master took it; the master's web UI port, picked free before the
        # master bound it, may by then be another process's (a CI run once read a driver's UI there).
        wait_for(lambda: "Successfully registered with master" in (tmp_path / "worker.log").read_text(errors="replace"),
                 "Spark worker")
        yield f"spark://127.0.0.1:{port}"
    finally:
        stop(processes)


@pytest.mark.parametrize("engine, day, engine_line", [
    # the UDF: the model's files ship to the worker's executor, which loads and scores it there
    ("udf", DEMO_DAYS[0], r"engine: udf \(--engine udf\)"),
    # the demo's trees in the JVM tree evaluator: the driver adds its jar to the session, the worker's executor
    # (a JVM of its own) fetches it and runs the trees
    ("sql", DEMO_DAYS[1], r"engine: sql \(translated, \d+ trees in the JVM tree evaluator, verified"),
], ids=["udf", "sql"])
def test_spark_submit_to_a_standalone_cluster(spark: SparkSession, home: Path, standalone: str, tmp_path: Path,
                                              engine: str, day: str, engine_line: str) -> None:
    conf = submit_conf(home)
    conf[conf.index("--master") + 1] = standalone
    table = f"scored_cluster_{engine}"
    done = call([str(BIN / "spark-submit"), *conf, "--conf", f"spark.pyspark.python={sys.executable}",
                 "--conf", "spark.executor.memory=1g", "--conf", f"spark.executor.extraJavaOptions={SHORT_LIVED_JVM}",
                 str(REPO / "spark_jobs" / "score_table.py"),
                 "--config", str(REPO / "conf" / "cluster.yaml"), "--model-uri", "models:/churn@champion",
                 "--input-table", "lake.customer_features", "--output-table", f"lake.{table}",
                 "--partition", f"ds={day}", "--engine", engine], home, tmp_path)
    assert done.returncode == 0, "\n".join(line for line in (done.stderr + done.stdout).splitlines()
                                            if " INFO " not in line)
    assert re.search(engine_line, done.stdout), done.stdout
    actual = published(spark, home, table)
    assertDataFrameEqual(actual, expected_for(spark, home, actual, day), rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    server = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                    "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                    "--default-artifact-root", (folder / "artifacts").as_uri(), "--no-serve-artifacts",
                    "--workers", "1"], folder / "mlflow.log", {**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, "mlflow server")
        yield url
    finally:
        stop([server])


@pytest.fixture(scope="module")
def scored_by_console_script(home: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`score-table --config PROFILE`, the console script as a new user runs it (the embedded default of the
    profile's local_home), every partition, with the model from a tracking server over HTTP: what the console
    script's test checks and the SQL clients' test queries (one Spark start for both)."""
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("console_script")
    model, X = demo.train(seed=3, n=2_000)
    with registry(mlflow_server):
        # the session's active experiment lives in the session's own store, not on this server
        experiment = MlflowClient().create_experiment("server-test", artifact_location=(folder / "art").as_uri())
        log_model(model, infer_signature(X, model.predict(X)), "churn_server", alias="champion",
                  experiment_id=experiment)
    done = call([str(BIN / "score-table"), "--config", str(home / "profile.yaml"), "--model-uri",
                 "models:/churn_server@champion", "--output-table", "lake.scored_server"], home, folder,
                {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_REGISTRY_URI": mlflow_server})
    assert done.returncode == 0, done.stderr[-3000:]
    return "scored_server"


@pytest.fixture(scope="module")
def view_by_console_script(home: Path, mlflow_server: str, scored_by_console_script: str,
                           tmp_path_factory: pytest.TempPathFactory) -> str:
    """`score-table view` from the console script: the run's model as a view over the same input, for the SQL
    clients' test (after the run: Derby admits one process)."""
    done = call([str(BIN / "score-table"), "view", "--config", str(home / "profile.yaml"), "--model-uri",
                 "models:/churn_server@champion", "--input-table", "lake.customer_features", "--view",
                 "lake.churn_now"], home, tmp_path_factory.mktemp("view"),
                {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_REGISTRY_URI": mlflow_server})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "view lake.churn_now: churn_server version 1 over lake.customer_features, in SQL" in done.stdout
    return "lake.churn_now"


def test_console_script_scores_with_a_profile_and_a_model_from_an_mlflow_tracking_server(
        spark: SparkSession, home: Path, mlflow_server: str, scored_by_console_script: str) -> None:
    from mlflow.tracking import MlflowClient

    scored = published(spark, home, scored_by_console_script)
    assert sorted(str(r.ds) for r in scored.select("ds").distinct().collect()) == DEMO_DAYS
    for day in DEMO_DAYS:
        actual = scored.where(F.col("ds") == day)
        assertDataFrameEqual(actual, expected_for(spark, home, actual, day, uri=mlflow_server, model="churn_server"))
    # the scoring run is an MLflow run on the same server: params, metrics, the report, the run id as a tag
    (run_id,) = [r.scoring_run_id for r in scored.select("scoring_run_id").distinct().collect()]
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("score-table/lake.scored_server")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["score_table.scoring_run_id"] == run_id
    assert (run.data.params["model_name"], run.data.params["input_table"]) == ("churn_server",
                                                                               "lake.customer_features")
    assert run.data.metrics["rows_read"] == run.data.metrics["rows_scored"] == scored.count()
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.html"]


def beeline(port: int, query: str) -> str:
    """One query through the Thrift server with beeline; its rows as CSV."""
    out = subprocess.run([str(BIN / "beeline"), "-u", f"jdbc:hive2://127.0.0.1:{port}/default", "-n", "test",
                          "--silent=true", "--showHeader=false", "--outputformat=csv2", "-e", query],
                         capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@contextmanager
def thrift(home: Path, tmp_path: Path) -> Iterator[int]:
    """Spark's Thrift JDBC server over the test's own metastore, on 127.0.0.1."""
    port = free_port()
    server = start([str(BIN / "spark-submit"), "--class", "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2",
                    *submit_conf(home), "spark-internal", "--hiveconf", f"hive.server2.thrift.port={port}",
                    "--hiveconf", "hive.server2.thrift.bind.host=127.0.0.1"], tmp_path / "thrift.log",
                   process_env(home))
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), 1).close() is None, "Thrift server", 120)
        yield port
    finally:
        stop([server])


def test_sql_over_results_with_beeline_and_duckdb(spark: SparkSession, home: Path, scored_by_console_script: str,
                                                  view_by_console_script: str, tmp_path: Path) -> None:
    import duckdb

    table = scored_by_console_script  # every partition
    expected = published(spark, home, table).select("customer_id", "prediction", "ds")

    # (b) a plain Parquet reader: DuckDB over the folders `_published.jsonl` names, with hive partitioning
    folder = home / "warehouse" / "lake.db" / table
    globs = [json.loads(line)["folder"].removeprefix("file:") + "/*.parquet"
             for line in (folder / "_published.jsonl").read_text().splitlines()]
    rows = duckdb.sql(f"SELECT customer_id, prediction, ds FROM read_parquet({globs!r}, hive_partitioning = true)")
    duck = spark.createDataFrame(rows.df()).selectExpr("customer_id", "prediction", "cast(ds as date) as ds")
    assertDataFrameEqual(duck, expected)

    # (a) the Thrift JDBC server and beeline, over the same metastore (after the job: Derby admits one process)
    with thrift(home, tmp_path) as port:
        query = (f"SELECT ds, count(*) AS n, round(sum(prediction), 6) AS total FROM lake.{table} "
                 "GROUP BY ds ORDER BY ds")
        out = beeline(port, query)
        # the scoring view: fresh scores for any slice, the same as the run's
        day = DEMO_DAYS[1]
        view_rows = beeline(port, f"SELECT customer_id, prediction, model_version FROM {view_by_console_script} "
                                  f"WHERE ds = '{day}' AND customer_id % 7 = 0 ORDER BY customer_id")
    got = [line.split(",") for line in out.split() if line.count(",") == 2]
    in_view = [line.split(",") for line in view_rows.split() if line.count(",") == 2]
    run = expected.where((F.col("ds") == day) & (F.col("customer_id") % 7 == 0)).orderBy("customer_id").collect()
    assert len(run) > 10
    assert [(int(c), float(p), v) for c, p, v in in_view] == [(r.customer_id, r.prediction, "1") for r in run]
    want = expected.groupBy("ds").agg({"prediction": "sum", "*": "count"}).orderBy("ds").collect()
    assert len(want) == len(DEMO_DAYS)
    assert [(d, int(n), round(float(t), 4)) for d, n, t in got] == [
        (str(r["ds"]), r["count(1)"], round(r["sum(prediction)"], 4)) for r in want]
