"""`score-table view` in process: the view's rows equal a run's (same predictions, same lineage), it follows
the alias when created again, and a model that does not translate, a name taken by a table or a bad flag
exits 2 with nothing created."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.cli import main
from tests.models import Thresholded
from tests.support import FEATURES, base, log_model, score

VIEW = "lake.scores_now"


def view_args(source: str, uri: str, view: str = VIEW) -> list[str]:
    return ["view", "--model-uri", uri, "--input-table", source, "--view", view]


@pytest.fixture()
def view(spark: SparkSession) -> object:
    yield VIEW
    spark.sql(f"DROP VIEW IF EXISTS {VIEW}")


def xgb_model(name: str, seed: int) -> str:
    """An XGBoost classifier over FEATURES, registered as `name` with alias champion."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.uniform(0, 50, size=(300, 3)), columns=list(FEATURES))
    model = xgb.XGBClassifier(n_estimators=5, max_depth=3, random_state=seed).fit(
        X, (X["Tenure"] + rng.normal(0, 5, 300) > 25).astype(int))
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(model, name="model", signature=infer_signature(X, model.predict(X)),
                                        registered_model_name=name, pip_requirements=[])
    MlflowClient().set_registered_model_alias(name, "champion", str(info.registered_model_version))
    return str(info.registered_model_version)


@pytest.mark.spark35
def test_the_view_gives_a_runs_predictions_and_follows_the_alias(spark: SparkSession, source: str, output: str,
                                                                  tracking_uri: str, view: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    first = xgb_model("churn_view", seed=1)
    uri = "models:/churn_view@champion"
    assert main(view_args(source, uri)) == 0
    report = capsys.readouterr().out
    assert re.search(rf"view {VIEW}: churn_view version {first} over {source}, in SQL \(translated, \d+ tree nodes "
                     r"as SQL expressions, verified on 12 rows", report), report
    run = score(spark, *base(source, output, uri), "--engine", "sql")
    assert run.engine is not None and run.engine.engine == "sql"
    columns = ["customer_id", "ds", "prediction", "model_name", "model_version", "model_run_id"]
    from_view = spark.table(VIEW)
    assertDataFrameEqual(from_view.select(*columns), spark.table(output).select(*columns))
    assert from_view.where(F.col("model_error").isNotNull()).count() == 0
    # every input column passes through unchanged
    assertDataFrameEqual(from_view.select(*spark.table(source).columns), spark.table(source))
    properties = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {VIEW}").collect()}
    assert (properties["score_table.model_uri"], properties["score_table.model_version"]) == (uri, first)

    second = xgb_model("churn_view", seed=2)  # the alias moves to a new version
    assert main(view_args(source, uri)) == 0
    versions = {r.model_version for r in spark.table(VIEW).select("model_version").distinct().collect()}
    assert versions == {second}
    rows = spark.table(source).orderBy("customer_id").collect()
    inputs = pd.DataFrame([[float(r[c]) for c in FEATURES.values()] for r in rows], columns=list(FEATURES))
    expected = mlflow.pyfunc.load_model(f"models:/churn_view/{second}").predict(inputs)
    assert [r.prediction for r in spark.table(VIEW).orderBy("customer_id").collect()] == list(expected)


@pytest.mark.parametrize("case, message", [
    ("custom PythonModel", "cannot be a view, it does not translate into SQL (flavor mlflow.pyfunc.model (a "
                           "custom PythonModel)"),
    ("view is a table", "--view lake.features_copy is a table, not a view"),
    ("view is the input", "--view 'lake.features' is the input table"),
    ("bad name", "--view 'lake.scores-now' is not a valid table name"),
    ("too long for Derby", "characters; the metastore in Derby stores at most 32,700"),
])
def test_a_view_that_cannot_be_made_exits_2_and_creates_nothing(spark: SparkSession, source: str, model: dict[str, str],
                                                                tracking_uri: str, view: str,
                                                                capsys: pytest.CaptureFixture[str], case: str,
                                                                message: str) -> None:
    uri, target = "models:/churn_lr@champion", VIEW
    if case == "custom PythonModel":
        uri = log_model(Thresholded(), infer_signature(pd.DataFrame({"tenure": [1.0]}), pd.Series([1])))
    elif case == "view is a table":
        target = "lake.features_copy"
        spark.table(source).write.mode("overwrite").saveAsTable(target)
    elif case == "view is the input":
        target = source
    elif case == "bad name":
        target = "lake.scores-now"
    elif case == "too long for Derby":  # 150 trees of depth 3: about 72,000 characters of SQL
        from sklearn.ensemble import HistGradientBoostingRegressor

        X = pd.DataFrame(np.random.default_rng(0).uniform(0, 50, size=(400, 3)), columns=list(FEATURES))
        hgb = HistGradientBoostingRegressor(max_iter=150, max_depth=3, random_state=0).fit(X, X["Tenure"] ** 2)
        uri = log_model(hgb, infer_signature(X, hgb.predict(X)))
    try:
        assert main(view_args(source, uri, target)) == 2
        assert message in capsys.readouterr().err
        assert not spark.catalog.tableExists(VIEW)
        if case == "view is a table":
            assert spark.catalog.getTable(target).tableType != "VIEW"
    finally:
        spark.sql("DROP TABLE IF EXISTS lake.features_copy")
