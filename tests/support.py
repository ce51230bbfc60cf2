"""Small builders the tests share: real models logged to the test registry, real tables in the metastore."""

from __future__ import annotations

import functools
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs import jvm_classes
from spark_jobs.config import parse_args
from spark_jobs.demo import FEATURES as DEMO_FEATURES
from spark_jobs.scoring.job import RunResult, run

SCHEMA = "customer_id bigint, tenure int, spend decimal(10,2), visits bigint, segment string, ds string"
DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
# The signature keeps MLflow's case; the Hive metastore lower-cases the table's columns.
FEATURES = {"Tenure": "tenure", "Spend": "spend", "Visits": "visits"}


def fit(coefs: tuple[float, float, float], seed: int) -> tuple[Any, pd.DataFrame]:
    """A linear model over FEATURES with the given coefficients (plus noise), and its training frame."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.uniform(0, 50, size=(60, 3)), columns=list(FEATURES))
    return LinearRegression().fit(X, X.to_numpy() @ np.array(coefs) + rng.normal(0, 1, 60)), X


def log_model(model: Any, signature: ModelSignature | None = None, name: str | None = None,
              alias: str | None = None, experiment_id: str | None = None, **kwargs: Any) -> str:
    """Log a model in a run of its own (in the active experiment, or `experiment_id`): a `PythonModel` as
    pyfunc, anything else as scikit-learn (pickled with cloudpickle); `kwargs` go to the flavor's log_model.
    Registered as `name` when given, with `alias` moved to the new version. Returns the model's URI:
    `models:/NAME/VERSION`, or `runs:/RUN_ID/model` when not registered.

    The requirements are the flavor's own (scikit-learn, cloudpickle; mlflow is added by MLflow): without them
    MLflow infers requirements by loading the model in a subprocess, seconds per model."""
    with mlflow.start_run(experiment_id=experiment_id) as active:
        if isinstance(model, mlflow.pyfunc.PythonModel):
            info = mlflow.pyfunc.log_model(name="model", python_model=model, signature=signature,
                                           registered_model_name=name,
                                           pip_requirements=mlflow.pyfunc.get_default_pip_requirements(), **kwargs)
        else:
            info = mlflow.sklearn.log_model(
                model, name="model", signature=signature, registered_model_name=name,
                serialization_format="cloudpickle",
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_cloudpickle=True), **kwargs)
    if name is None:
        return f"runs:/{active.info.run_id}/model"
    version = str(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version)
    return f"models:/{name}/{version}"


def register_sklearn(model: Any, X: pd.DataFrame, name: str, alias: str | None = None) -> str:
    """Register a fitted scikit-learn model with a signature inferred from X; returns the new version."""
    return log_model(model, infer_signature(X, model.predict(X)), name, alias).rsplit("/", 1)[1]


def score(spark: SparkSession, *args: str) -> RunResult:
    """One run of the job in this process, on the suite's session, from command-line flags."""
    return run(spark, parse_args(list(args)))


def base(source: str, output_table: str, uri: str = "models:/churn_lr@champion") -> list[str]:
    return ["--model-uri", uri, "--input-table", source, "--output-table", output_table]


RUN_COLUMNS = ["scored_at", "scoring_run_id"]  # what differs between two runs that score the same rows alike


def snapshot(df: DataFrame) -> DataFrame:
    """The rows `df` holds now, kept in memory: what a table must still hold after something that must not
    change it (compare with chispa's assert_df_equality, exactly)."""
    return df.sparkSession.createDataFrame(df.collect(), df.schema)


def create_table(spark: SparkSession, name: str, rows: Sequence[tuple[Any, ...]], schema: T.StructType | str,
                 partition_by: Sequence[str] = ("ds",)) -> DataFrame:
    df = spark.createDataFrame(list(rows), schema)
    df.write.mode("overwrite").partitionBy(*partition_by).format("parquet").saveAsTable(name)
    return df


def pyfunc_predictions(model_uri: str, features: pd.DataFrame) -> list[Any]:
    """What MLflow itself predicts for these rows: the reference every scored row is compared with."""
    return list(mlflow.pyfunc.load_model(model_uri).predict(features))


def expected_scored(spark: SparkSession, source: DataFrame, output: DataFrame, model_uri: str,
                    features: dict[str, str], lineage: Any) -> DataFrame:
    """The scored table as it must be: every source row, MLflow's own prediction for it (features renamed to
    the signature's names, as floats), and the run's lineage values."""
    rows = source.collect()
    inputs = pd.DataFrame([[float(r[c]) for c in features.values()] for r in rows], columns=list(features))
    predictions = pyfunc_predictions(model_uri, inputs) if rows else []
    return expected_table(spark, rows, output, {"prediction": predictions}, lineage)


def expected_table(spark: SparkSession, rows: Sequence[Any], output: DataFrame, outputs: dict[str, Sequence[Any]],
                   lineage: Any) -> DataFrame:
    """Source rows plus the given output columns and the run's lineage, in the output table's schema."""
    lineage_values = {f: getattr(lineage, f) for f in
                      ("model_name", "model_version", "model_run_id", "scored_at", "scoring_run_id")}
    names = output.schema.fieldNames()
    prints: dict[tuple[Any, ...], str] = {}
    if "input_fingerprint" in names:  # checked by the incremental tests; here taken per partition as written
        parts = names[names.index("input_fingerprint") + 1:]
        prints = {tuple(r[:-1]): r[-1] for r in output.select(*parts, "input_fingerprint").distinct().collect()}
    expected = []
    for i, row in enumerate(rows):
        values = {**row.asDict(), **{k: _plain(v[i]) for k, v in outputs.items()}, **lineage_values}
        if prints:
            values["input_fingerprint"] = prints.get(tuple(values[c] for c in parts))
        expected.append(tuple(values[f.name] for f in output.schema.fields))
    return spark.createDataFrame(expected, output.schema)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


# -- separate processes on their own embedded metastore (Derby admits one process at a time) ----------------

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_DAYS = ["2026-11-20", "2026-11-21"]
JDBC_JAR = "/usr/share/java/postgresql.jar"  # Debian's PostgreSQL JDBC driver (.ci/run installs it)


# The JVMs of the processes the tests start live seconds: compiled by C1 alone (no C2), each costs about a third
# less CPU, and the suite is CPU-bound on 2 cores. The suite's own session, which lives for the whole run,
# keeps the JVM's defaults (there C2 pays for itself).
# Every JVM maps Spark's classes from the virtualenv's class-data archive (spark_jobs/jvm_classes.py) when there is one.
SHORT_LIVED_JVM = f"-XX:TieredStopAtLevel=1 {jvm_classes.java_options()}".strip()


def env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A process's environment: this interpreter for Spark's Python, loopback only, the home's registry, and
    short-lived JVMs (spark-submit's, and a standalone master's and worker's)."""
    jvm = {key: f"{os.environ.get(key, '')} {SHORT_LIVED_JVM}".strip()
           for key in ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS")}
    return {**os.environ, **jvm, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "MLFLOW_REGISTRY_URI": f"sqlite:///{home / 'mlflow.db'}", **(extra or {})}


def call(cmd: list[str], home: Path, cwd: Path, extra_env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env(home, extra_env), capture_output=True, text=True, timeout=300)


HOME_TABLE = {"rows": 4000, "days": 2, "start": DEMO_DAYS[0]}  # a home's feature table: small, two days


def prepare_home(home: Path) -> Path:
    """The demo's model and a small two-day table in a metastore and registry of their own, made by a process
    of its own unless a Driver's process made them already (Driver.prepare_home: no JVM start of its own)."""
    if not prepared(home):
        args = [a for k, v in HOME_TABLE.items() for a in (f"--{k}", str(v))]
        done = call([sys.executable, "-m", "spark_jobs.demo", "prepare", *args, "--home", str(home)], home, REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        write_profile(home)
    return home


def prepared(home: Path) -> bool:
    return (home / "profile.yaml").exists()


def write_profile(home: Path) -> None:
    """The home's profile, written once the home is prepared (its existence says so)."""
    (home / "profile.yaml").write_text(
        "model_uri: models:/churn@champion\ninput_table: lake.customer_features\n"
        f"spark:\n  local_home: {home}\n"
    )


def submit_conf(home: Path) -> list[str]:
    """Configuration by spark-submit --conf only: the job must take these over its embedded defaults."""
    return [
        "--master", "local[2]",
        "--conf", "spark.sql.catalogImplementation=hive",
        "--conf", f"spark.sql.warehouse.dir={home / 'warehouse'}",
        "--conf",  # create=true: the first process in a home may be this one (Driver.prepare_home)
        f"spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        "--conf", "spark.ui.enabled=false",
    ]


class Driver:
    """A process that runs the job as often as the test asks, in one JVM (tests/driver.py): each way of running
    costs one Spark start, however many runs a test needs. `head` is the launcher: spark-submit with its
    options (the session it configures) or this interpreter (then `local_home` names the embedded default)."""

    def __init__(self, head: list[str], home: Path, cwd: Path, extra_env: dict[str, str] | None = None,
                 local_home: Path | None = None, timeout: float = 300) -> None:
        fifo = Path(tempfile.mkdtemp(prefix="driver-", dir=cwd)) / "commands"
        os.mkfifo(fifo)
        self._commands = os.open(fifo, os.O_RDWR)  # never blocks; the driver sees the end when this closes
        cmd = [*head, str(REPO / "tests" / "driver.py"), str(fifo),
               *(["--local-home", str(local_home)] if local_home else [])]
        self.home, self.timeout, self._buffer = home, timeout, b""
        self.process = subprocess.Popen(cmd, cwd=cwd, env=env(home, extra_env), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def run(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        """One run of the job with these flags: its exit code (the signal's, negative, if it killed the process)
        and everything the process printed meanwhile."""
        answer, output = self._ask({"run": list(argv), "env": env or {}})
        return (answer["code"] if answer else self._ended()), output

    def prepare_home(self) -> Path:
        """Prepare the process's home on its own session, as support.prepare_home would in a process of its
        own, unless it is prepared already; the home."""
        if not prepared(self.home):
            answer, output = self._ask({"prepare": {"home": str(self.home), **HOME_TABLE}})
            assert answer is not None, output[-3000:]
            write_profile(self.home)
        return self.home

    def inspect(self, table: str) -> dict[str, Any]:
        """What the metastore publishes of `table`: sorted JSON rows, the run folder each partition points
        at, and the run history (status and error by scoring_run_id)."""
        answer, output = self._ask({"inspect": table})
        assert answer is not None, output[-3000:]
        return answer

    def close(self) -> str:
        """End the process (its session stops) and return what it printed after the last answer."""
        output = self._read_all() if self.process.poll() is None else ""
        assert self._ended() == 0, output[-3000:]
        return output

    def _ask(self, command: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        os.write(self._commands, (json.dumps(command) + "\n").encode())
        lines = []
        for line in self._lines():
            if line.startswith("DONE "):
                return json.loads(line.removeprefix("DONE ")), "".join(lines)
            lines.append(line)
        return None, "".join(lines)  # the process ended without answering

    def _lines(self) -> Iterator[str]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    yield line.decode(errors="replace") + "\n"
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    self.process.kill()
                    raise TimeoutError(f"no answer from the job's process in {self.timeout:.0f} s")
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    if self._buffer:
                        yield self._buffer.decode(errors="replace")
                    self._buffer = b""
                    return
                self._buffer += chunk

    def _read_all(self) -> str:
        os.close(self._commands)
        self._commands = -1
        return "".join(self._lines())

    def _ended(self) -> int:
        return self.process.wait(timeout=self.timeout)

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._commands >= 0:
            os.close(self._commands)


@contextmanager
def registry(uri: str) -> Iterator[None]:
    """Point this process's MLflow (tracking and registry) at another store for a while."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    tracking, models = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(models)
        for k, v in saved.items():  # MLflow mirrors its globals into the environment
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def published(spark: SparkSession, home: Path, table: str) -> DataFrame:
    """Read what the job published without the metastore (this process holds another one): the folders
    that the table's `_published.jsonl` names, as the README tells plain Parquet readers to."""
    folder = home / "warehouse" / "lake.db" / table
    if not (folder / "_published.jsonl").exists():
        return spark.read.parquet(str(folder))
    entries = [json.loads(line) for line in (folder / "_published.jsonl").read_text().splitlines()]
    frames = [spark.read.parquet(e["folder"]).drop("reject_reason")
              .withColumn("ds", F.lit(e["partition"]["ds"]).cast("date"))
              for e in entries]
    return functools.reduce(DataFrame.unionByName, frames)


def expected_for(spark: SparkSession, home: Path, actual: DataFrame, day: str, uri: str | None = None,
                 model: str = "churn") -> DataFrame:
    """What a run of the demo model over one day must have published: MLflow's own predictions."""
    (run,) = actual.select("scored_at", "scoring_run_id").distinct().collect()
    source = published(spark, home, "customer_features").where(F.col("ds") == day)
    with registry(uri or f"sqlite:///{home / 'mlflow.db'}"):
        mv = MlflowClient().get_model_version_by_alias(model, "champion")
        lineage = SimpleNamespace(model_name=model, model_version=mv.version, model_run_id=mv.run_id,
                                  scored_at=run.scored_at, scoring_run_id=run.scoring_run_id)
        return expected_scored(spark, source, actual, f"models:/{model}/{mv.version}", {f: f for f in DEMO_FEATURES},
                               lineage)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The two ways a translated tree ensemble runs: SQL expressions (views, and sessions without the jar) and the
# JVM evaluator (udfs.compiled.native, what runs use). Tests of tree translations run both.
TREE_ENGINES = ["sql", "native"]


def native_trees(spark: SparkSession, engine: str) -> bool:
    """Program.native for a tree engine: the evaluator loaded into the session (its jar is built by `make`:
    a missing jar fails here rather than testing the SQL path twice)."""
    from udfs import jvm_jar
    from udfs.compiled import native

    if engine == "native":
        assert native.load(spark), f"{jvm_jar.JAR} is not built or does not load (make jar)"
    return engine == "native"


def assert_tree_engine(engine: str, programs: Sequence[Any]) -> None:
    """The programs' trees ran as asked: every tree in the evaluator, or none."""
    if engine == "native":
        assert all(p.size == 0 for p in programs) and any(p.native_trees for p in programs)
    else:
        assert any(p.size > 0 for p in programs) and not any(p.native_trees for p in programs)
