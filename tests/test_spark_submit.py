"""The job under spark-submit, configured by spark-submit --conf alone, in one spark-submit process for every
run of this module (one Spark start): scoring and an identical rerun, then the serving copy in a real
PostgreSQL (Debian's server, started here on 127.0.0.1 and stopped after) with a failing run and a rollback.
The process holds the embedded metastore (Derby admits one process at a time) until the module ends."""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from spark_jobs.cli import main
from tests.support import (
    BIN,
    DEMO_DAYS,
    JDBC_JAR,
    RUN_COLUMNS,
    Driver,
    expected_for,
    free_port,
    published,
    snapshot,
    submit_conf,
)

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
PASSWORD = "serve-test-password"

needs_postgres = pytest.mark.skipif(
    not (PG_BIN and Path(JDBC_JAR).exists()) and not os.environ.get("CI"),
    reason="PostgreSQL server or JDBC driver not installed (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def submitted(home_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    """The module's spark-submit process (with PostgreSQL's JDBC driver on its classpath when installed),
    which prepares the worker's home first when nothing has (the tests read it as `submitted.home`). Its
    cwd is elsewhere than the home: the embedded default would find no table there."""
    jars = ["--jars", JDBC_JAR] if Path(JDBC_JAR).exists() else []
    with Driver([str(BIN / "spark-submit"), *submit_conf(home_dir), *jars], home_dir,
                tmp_path_factory.mktemp("spark_submit")) as driver:
        driver.prepare_home()
        yield driver
        driver.close()


@pytest.mark.processes
def test_spark_submit_with_conf_only_scores_and_rerun_is_identical(spark: SparkSession, submitted: Driver) -> None:
    """Configured by spark-submit --conf alone; the second run, in the same spark-submit process, replaces the
    partition with the same rows."""
    home = submitted.home
    flags = ["--model-uri", "models:/churn@champion", "--input-table", "lake.customer_features",
             "--output-table", "lake.scored_submit", "--partition", f"ds={DEMO_DAYS[0]}"]
    code, out = submitted.run(*flags)
    assert code == 0, out[-3000:]
    assert f"ds={DEMO_DAYS[0]}: 2000 scored, 0 rejected" in out
    actual = published(spark, home, "scored_submit")
    assertDataFrameEqual(actual, expected_for(spark, home, actual, DEMO_DAYS[0]))
    before = snapshot(actual)

    code, out = submitted.run(*flags)
    assert code == 0, out[-3000:]
    assert_df_equality(published(spark, home, "scored_submit"), before, ignore_row_order=True,
                       ignore_columns=RUN_COLUMNS)


def as_postgres(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """initdb refuses to run as root: run the server's tools as the postgres user then."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120, check=True, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture()
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    data = Path(subprocess.run(["mktemp", "-d", "/tmp/pg-XXXXXX"], capture_output=True, text=True).stdout.strip())
    pwfile = data / "pw"
    pwfile.write_text(PASSWORD)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres", str(data)], check=True)
    port = free_port()
    bin_dir = PG_BIN[-1]
    as_postgres([f"{bin_dir}/initdb", "-D", str(data / "db"), "-U", "postgres", "-A", "scram-sha-256",
                 f"--pwfile={pwfile}"])
    as_postgres([f"{bin_dir}/pg_ctl", "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-o",
                 f"-h 127.0.0.1 -p {port} -k {data}", "start"])
    try:
        yield port, data
    finally:
        as_postgres([f"{bin_dir}/pg_ctl", "-D", str(data / "db"), "-m", "fast", "-w", "stop"])
        subprocess.run(["rm", "-rf", str(data)], check=False)


def psql(port: int, sql: str) -> list[str]:
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-At",
                          "-c", sql], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PGPASSWORD": PASSWORD}, check=True)
    return out.stdout.split()


@needs_postgres
@pytest.mark.processes
def test_serving_copy_is_idempotent_and_matches_the_published_rows(spark: SparkSession, postgres: tuple[int, Path],
                                                                   tmp_path: Path, submitted: Driver) -> None:
    """Runs, a failing run and a rollback, one after another in the suite's spark-submit process (which has
    the JDBC jar), the credentials in each run's environment."""
    home = submitted.home
    port, _ = postgres
    profile = tmp_path / "serve.yaml"
    profile.write_text((home / "profile.yaml").read_text()
                       + "serve:\n  table: public.churn_scores\n  key_columns: [customer_id]\n")
    flags = ["--config", str(profile), "--output-table", "lake.scored_served", "--partition", f"ds={DEMO_DAYS[0]}",
             "--serve-to", f"jdbc:postgresql://127.0.0.1:{port}/postgres"]
    creds = {"SCORE_TABLE_JDBC_USER": "postgres", "SCORE_TABLE_JDBC_PASSWORD": PASSWORD}
    printed = []
    for attempt in range(2):  # the rerun replaces the keys' rows: no duplicates
        code, out = submitted.run(*flags, env=creds)
        printed.append(out)
        assert code == 0, out[-3000:]
        rows = psql(port, "SELECT customer_id || ':' || round(prediction::numeric, 9) FROM churn_scores "
                          "ORDER BY customer_id")
        expected = published(spark, home, "scored_served").orderBy("customer_id").collect()
        assert rows == [f"{r.customer_id}:{round(r.prediction, 9):.9f}" for r in expected], attempt
    assert psql(port, "SELECT count(DISTINCT scoring_run_id) FROM churn_scores") == ["1"]
    assert psql(port, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'churn_scores_staging%'") == ["0"]

    code, out = submitted.run(*flags, env={**creds, "SCORE_TABLE_JDBC_PASSWORD": "wrong"})
    printed.append(out)
    assert code == 1
    (error,) = [line for line in out.splitlines() if line.startswith("score-table: error:")]
    assert "PSQLException" in error and "password authentication failed" in error, error  # the Java cause
    assert len(psql(port, "SELECT customer_id FROM churn_scores")) == len(rows)  # unchanged
    # the warehouse partition the failed run had already published stays readable and whole
    republished = published(spark, home, "scored_served").orderBy("customer_id").collect()
    assert [(r.customer_id, r.prediction) for r in republished] == [(r.customer_id, r.prediction)
                                                                      for r in expected]

    # rollback takes the serving copy back with the warehouse: the earlier run's rows, by key, in one transaction
    psql(port, "UPDATE churn_scores SET scoring_run_id = 'not the republished run'")
    code, out = submitted.run("rollback", *flags, env=creds)
    printed.append(out)
    assert code == 0, out[-3000:]
    assert PASSWORD not in "".join(printed)
    back = published(spark, home, "scored_served").orderBy("customer_id").collect()
    assert {r.scoring_run_id for r in back} != {r.scoring_run_id for r in republished}
    rows = psql(port, "SELECT customer_id || ':' || scoring_run_id FROM churn_scores ORDER BY customer_id")
    assert rows == [f"{r.customer_id}:{r.scoring_run_id}" for r in back]


def test_serve_to_without_credentials_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCORE_TABLE_JDBC_USER", raising=False)
    profile = tmp_path / "p.yaml"
    profile.write_text("serve:\n  table: churn_scores\n  key_columns: [customer_id]\n")
    assert main(["--config", str(profile), "--model-uri", "models:/m/1", "--input-table", "lake.a",
                 "--output-table", "lake.b", "--serve-to", "jdbc:postgresql://127.0.0.1:5432/x"]) == 2
    assert "SCORE_TABLE_JDBC_USER" in capsys.readouterr().err


@pytest.mark.processes
def test_the_jobs_jvm_maps_sparks_classes_from_the_virtualenvs_archive(tmp_path: Path) -> None:
    """`make` writes the class-data archive before the tests (spark_jobs.jvm_classes); a JVM that spark-submit
    starts with the option the README's command takes loads Spark's classes from it, not from the jars."""
    from spark_jobs import jvm_classes

    assert jvm_classes.ARCHIVE.exists(), "no class-data archive: `make test` writes it first"
    option = subprocess.run([str(BIN / "python"), "-m", "spark_jobs.jvm_classes", "--java-option"], check=True,
                            capture_output=True, text=True).stdout.strip()
    assert option == f"-XX:SharedArchiveFile={jvm_classes.ARCHIVE}"
    env = {**os.environ, "SPARK_SUBMIT_OPTS": f"{option} -Xlog:class+load=info"}
    done = subprocess.run([str(BIN / "spark-submit"), "--version"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = [line for line in done.stdout.splitlines() if "[class,load] org.apache.spark." in line]
    from_jars = [line for line in loaded if "source: jar:" in line or "source: file:" in line]
    assert any("SparkSubmit source: shared objects file" in line for line in loaded), loaded[:5]
    assert from_jars == []
