"""Small builders the tests share: real models logged to the test registry, real tables in the metastore."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.demo import FEATURES as DEMO_FEATURES

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


def register_sklearn(model: Any, X: pd.DataFrame, name: str, alias: str | None = None) -> str:
    """Log a fitted sklearn model with a signature inferred from X; returns the registered version."""
    signature = infer_signature(X, model.predict(X))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", signature=signature, registered_model_name=name,
            serialization_format="cloudpickle",
        )
    version = str(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version)
    return version


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
DEMO_DAYS = ["2026-11-20", "2026-11-21"]


def env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "MLFLOW_REGISTRY_URI": f"sqlite:///{home / 'mlflow.db'}", **(extra or {})}


def call(cmd: list[str], home: Path, cwd: Path, extra_env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env(home, extra_env), capture_output=True, text=True, timeout=300)


def prepare_home(home: Path) -> Path:
    """The demo's model and a small two-day table in a metastore and registry of their own."""
    done = call([sys.executable, "-m", "spark_jobs.demo", "prepare", "--rows", "4000", "--days", "2",
                 "--start", DEMO_DAYS[0], "--home", str(home)], home, REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    (home / "profile.yaml").write_text(
        "model_uri: models:/churn@champion\ninput_table: lake.customer_features\n"
        f"spark:\n  local_home: {home}\n"
    )
    return home


def submit_conf(home: Path) -> list[str]:
    """Configuration by spark-submit --conf only: the job must take these over its embedded defaults."""
    return [
        "--master", "local[2]",
        "--conf", "spark.sql.catalogImplementation=hive",
        "--conf", f"spark.sql.warehouse.dir={home / 'warehouse'}",
        "--conf", f"spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName={home / 'metastore_db'}",
        "--conf", "spark.ui.enabled=false",
    ]


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
