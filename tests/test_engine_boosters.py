"""XGBoost and LightGBM end to end, in process: models logged with their own MLflow flavors (and a wrapper at
the end of a scikit-learn Pipeline) score in the sql engine, verified, and the table holds MLflow's own
predictions; one that does not translate falls back to the UDF under auto and exits 2 under --engine sql."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow.models import infer_signature
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spark_jobs.cli import main
from tests.support import DAYS, FEATURES, base, expected_table, score


def _data(seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.uniform(0, 50, size=(300, 3)), columns=list(FEATURES))
    return X, X["Tenure"].to_numpy() * 0.2 + X["Spend"].to_numpy() * 0.05 - X["Visits"].to_numpy() * 0.1


def _log(flavor: Any, model: Any, X: pd.DataFrame, predict: Callable[[pd.DataFrame], Any], **kw: Any) -> str:
    with mlflow.start_run():
        info = flavor.log_model(model, name="model", signature=infer_signature(X, predict(X)),
                                pip_requirements=[], **kw)
    return str(info.model_uri)


def xgb_booster() -> str:
    X, score_ = _data()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, label=score_ > 2), 8)
    return _log(mlflow.xgboost, booster, X, lambda d: booster.predict(xgb.DMatrix(d)))


def xgb_classifier() -> str:
    X, score_ = _data()
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(X, np.digitize(score_, [1, 3]))
    return _log(mlflow.xgboost, model, X, model.predict)


def lgbm_regressor() -> str:
    X, score_ = _data()
    model = lgb.LGBMRegressor(n_estimators=8, num_leaves=6, verbose=-1).fit(X, score_)
    return _log(mlflow.lightgbm, model, X, model.predict)


def lgbm_booster_binary() -> str:
    X, score_ = _data()
    booster = lgb.train({"objective": "binary", "num_leaves": 6, "verbose": -1}, lgb.Dataset(X, label=score_ > 2), 8)
    return _log(mlflow.lightgbm, booster, X, booster.predict)


def lgbm_categorical() -> str:
    """Visits as integer codes, a categorical feature: odd and even codes apart, so the trees split on it."""
    X, score_ = _data()
    X["Visits"] = np.floor(X["Visits"] / 10)
    model = lgb.LGBMRegressor(n_estimators=6, verbose=-1, min_child_samples=5, min_data_per_group=5).fit(
        X, score_ + 10 * (X["Visits"] % 2), categorical_feature=[2])
    return _log(mlflow.lightgbm, model, X, model.predict)


def pipeline_proba() -> str:
    X, score_ = _data()
    model = make_pipeline(StandardScaler(), xgb.XGBClassifier(n_estimators=6, max_depth=3)).fit(X, score_ > 2)
    return _log(mlflow.sklearn, model, X, model.predict_proba, pyfunc_predict_fn="predict_proba",
                serialization_format="cloudpickle")


MODELS = {"xgboost Booster": xgb_booster, "XGBClassifier": xgb_classifier, "LGBMRegressor": lgbm_regressor,
          "lightgbm Booster": lgbm_booster_binary, "LGBMRegressor, categorical": lgbm_categorical,
          "Pipeline + XGBClassifier, predict_proba": pipeline_proba}


@pytest.mark.spark35
@pytest.mark.parametrize("case", list(MODELS))
def test_library_models_score_in_sql_with_mlflows_own_predictions(spark: SparkSession, source: str, output: str,
                                                                  tracking_uri: str, case: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    uri = MODELS[case]()
    with caplog.at_level(logging.INFO, logger="score_table"):
        result = score(spark, *base(source, output, uri), "--partition", f"ds={DAYS[0]}", "--engine", "sql")
    assert result.engine is not None and result.engine.engine == "sql", result.engine
    assert any(re.match(r"engine: sql \(translated, \d+ trees in the JVM tree evaluator, verified on 4 rows",
                        r.getMessage()) for r in caplog.records), [r.getMessage() for r in caplog.records]
    actual = spark.table(output)
    rows = spark.table(source).where(F.col("ds") == DAYS[0]).collect()
    inputs = pd.DataFrame([[float(r[c]) for c in FEATURES.values()] for r in rows], columns=list(FEATURES))
    predicted = np.asarray(mlflow.pyfunc.load_model(uri).predict(inputs))
    outputs = [f for f in actual.columns if f == "prediction" or f.startswith("proba_")]
    columns = predicted.reshape(len(rows), -1).T
    expected = expected_table(spark, rows, actual, dict(zip(outputs, columns, strict=True)), result.lineage)
    assertDataFrameEqual(actual, expected, rtol=1e-9, atol=1e-9)


def test_an_untranslatable_lightgbm_model_falls_back_and_sql_exits_2(spark: SparkSession, source: str, output: str,
                                                                     tracking_uri: str,
                                                                     caplog: pytest.LogCaptureFixture,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    X, score_ = _data()
    model = lgb.LGBMRegressor(boosting_type="rf", bagging_freq=1, bagging_fraction=0.8, n_estimators=4,
                              verbose=-1).fit(X, score_)
    uri = _log(mlflow.lightgbm, model, X, model.predict)
    assert main([*base(source, output, uri), "--partition", f"ds={DAYS[0]}", "--engine", "sql"]) == 2
    assert ("--engine sql: the model does not translate: LGBMRegressor: boosting rf (averaged trees)"
            in capsys.readouterr().err)
    assert not spark.catalog.tableExists(output)
    with caplog.at_level(logging.INFO, logger="score_table"):
        result = score(spark, *base(source, output, uri), "--partition", f"ds={DAYS[0]}")
    assert result.engine is not None and result.engine.engine == "udf"
    assert any("engine: udf (not translated: LGBMRegressor: boosting rf (averaged trees)" in r.getMessage()
               for r in caplog.records)


def test_a_large_xgboost_ensemble_gets_the_udf_under_auto_and_the_evaluator_when_asked(
        spark: SparkSession, source: str, output: str, tracking_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    """XGBoost's own predictor walks a large ensemble faster than the evaluator: auto keeps the node budget
    for it (and says so); --engine sql runs it in the evaluator as asked. MLflow's predictions either way."""
    X, score_ = _data()
    model = xgb.XGBRegressor(n_estimators=120, max_depth=4, random_state=0).fit(X, score_)
    uri = _log(mlflow.xgboost, model, X, model.predict)
    rows = spark.table(source).where(F.col("ds") == DAYS[0]).collect()
    inputs = pd.DataFrame([[float(r[c]) for c in FEATURES.values()] for r in rows], columns=list(FEATURES))
    predicted = np.asarray(mlflow.pyfunc.load_model(uri).predict(inputs))
    for flags, engine_line in ([], r"engine: udf \([\d,]+ tree nodes: XGBoost's own predictor walks large ensembles"),\
                              (["--engine", "sql"], r"engine: sql \(translated, 120 trees in the JVM tree evaluator"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="score_table"):
            result = score(spark, *base(source, output, uri), "--partition", f"ds={DAYS[0]}", *flags)
        assert any(re.match(engine_line, r.getMessage()) for r in caplog.records), \
            [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine")]
        actual = spark.table(output)
        expected = expected_table(spark, rows, actual, {"prediction": predicted}, result.lineage)
        assertDataFrameEqual(actual, expected, rtol=1e-6, atol=1e-6)
