"""The engines end to end, in process: which engine a run gets, the verification that decides it, what the
run history and summary say, and that whatever the engine the table holds the model's own predictions."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from spark_jobs.cli import main
from spark_jobs.model import engine
from spark_jobs.publishing.staging import StagingArea
from spark_jobs.scoring import job
from tests.models import Thresholded
from tests.support import DAYS, FEATURES, base, expected_scored, fit, log_model, register_sklearn, score
from udfs import jvm_jar
from udfs.compiled import Program, native


def engine_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine: ")]


def check_predictions(spark: SparkSession, source: str, output: str, uri: str, result: Any) -> None:
    actual = spark.table(output)
    assertDataFrameEqual(actual, expected_scored(spark, spark.table(source).where(F.col("ds") == DAYS[0]), actual,
                                                 uri, FEATURES, result.lineage), rtol=1e-9, atol=1e-9)


@pytest.mark.spark35
@pytest.mark.parametrize("read, code", [  # a table's rows come back with the write; a view's are read
    ("table", "interpreted"), ("view", "interpreted"), ("table", "generated")])
def test_auto_scores_a_translatable_model_in_sql_and_records_it(spark: SparkSession, source: str, output: str,
                                                                 model: dict[str, str], read: str, code: str,
                                                                 caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A small run interprets its write's expressions (a table's rows counted in its footers; a view's are
    not, so it generates code); a large one generates code: the same predictions either way."""
    flags = ["--partition", f"ds={DAYS[0]}"]
    if read == "view":
        spark.sql(f"CREATE OR REPLACE VIEW {source}_view AS SELECT * FROM {source}")
        flags += ["--partition-columns", "ds"]
    if code == "generated":
        monkeypatch.setattr(job, "INTERPRETED_ROWS", 0)
    with caplog.at_level(logging.DEBUG, logger="score_table"):
        result = score(spark, *base(source if read == "table" else f"{source}_view", output), *flags)
    said = any(r.getMessage().startswith("the write interprets") for r in caplog.records)
    assert said == (read == "table" and code == "interpreted")
    assert result.engine is not None and result.engine.engine == "sql"
    (line,) = engine_lines(caplog)
    assert line.startswith("engine: sql (translated, verified on 4 rows (largest difference")
    check_predictions(spark, source, output, f"models:/churn_lr/{model['v1']}", result)
    run = spark.table(f"{output}_runs").select("engine", "engine_max_diff").first()
    assert run is not None and run.engine == "sql" and 0.0 <= run.engine_max_diff <= 1e-9


def wrong_by(offset: float) -> Callable[..., Program]:
    """A translation made wrong on purpose: every output moved by `offset`."""
    real = engine.translate

    def translate(*args: Any, **kwargs: Any) -> Program:
        program = real(*args, **kwargs)
        program.outputs = [o + F.lit(offset) for o in program.outputs]
        return program

    return translate


def unsupported_model(tracking_uri: str) -> str:
    from sklearn.neighbors import KNeighborsRegressor

    model, X = fit((1.0, 2.0, 3.0), seed=5)
    from mlflow.models import infer_signature

    knn = KNeighborsRegressor(n_neighbors=3).fit(X, model.predict(X))
    return log_model(knn, infer_signature(X, knn.predict(X)))


@pytest.mark.parametrize("case, expected_line", [
    ("unsupported estimator", "engine: udf (not translated: KNeighborsRegressor"),
    ("custom PythonModel", "engine: udf (not translated: flavor mlflow.pyfunc.model (a custom PythonModel)"),
    ("wrong translation", "engine: udf (verification failed: differs from the model: output prediction, row 0:"),
    # a view's rows are not counted before the write: the verification reads them back from the staged rows
    ("wrong translation, a view's rows", "engine: udf (verification failed: differs from the model: output "
                                         "prediction, row 0:"),
    # features stored as the model takes them: the verification reads the staged rows on the driver
    ("wrong translation, features stored as doubles", "engine: udf (verification failed: differs from the "
                                                      "model: output prediction, row 0:"),
    ("--engine udf", "engine: udf (--engine udf)"),
])
def test_auto_falls_back_to_the_udf_and_says_why(spark: SparkSession, source: str, output: str, model: dict[str, str],
                                                 tracking_uri: str, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest,
                                                 case: str, expected_line: str) -> None:
    uri, flags, read = f"models:/churn_lr/{model['v1']}", [], source
    read_on_driver: list[int] = []
    if case == "unsupported estimator":
        uri = unsupported_model(tracking_uri)
    elif case == "custom PythonModel":
        uri = log_model(Thresholded(), ModelSignature(inputs=Schema([ColSpec("double", "tenure")])))
        flags = ["--result-type", "bigint"]
    elif case.startswith("wrong translation"):
        monkeypatch.setattr(engine, "translate", wrong_by(1e-6))
        if case.endswith("view's rows"):
            read = f"{source}_view"
            spark.sql(f"CREATE OR REPLACE VIEW {read} AS SELECT * FROM {source}")
            flags = ["--partition-columns", "ds"]
        if case.endswith("as doubles"):
            read = f"{source}_doubles"
            spark.table(source).select("customer_id", *[F.col(c).cast("double").alias(c) for c in FEATURES.values()],
                                       "segment", "ds").write.partitionBy("ds").saveAsTable(read)
            request.addfinalizer(lambda: spark.catalog.dropTable(read, ifExists=True))
        real_some_rows = StagingArea.some_rows

        def some_rows(*args: Any) -> Any:
            read_on_driver.append(1)
            return real_some_rows(*args)

        monkeypatch.setattr(StagingArea, "some_rows", staticmethod(some_rows))
    else:
        flags = ["--engine", "udf"]
    with caplog.at_level(logging.INFO, logger="score_table"):
        result = score(spark, *base(read, output, uri), "--partition", f"ds={DAYS[0]}", *flags)
    (line,) = engine_lines(caplog)
    assert line.startswith(expected_line), line
    assert bool(read_on_driver) == case.endswith("as doubles")  # the others' features need casts (or a view's)
    assert result.engine is not None and result.engine.engine == "udf"
    if case != "custom PythonModel":
        check_predictions(spark, read, output, uri, result)
    if case.startswith("wrong translation"):
        assert result.engine.max_diff is not None and 1e-8 < result.engine.max_diff < 1e-5
    run = spark.table(f"{output}_runs").select("engine").first()
    assert run is not None and run.engine == "udf"


@pytest.mark.parametrize("case, code, message", [
    ("unsupported", 2, "score-table: error: --engine sql: the model does not translate: KNeighborsRegressor"),
    ("wrong translation", 1, "score-table: error: --engine sql: verification failed, nothing written: differs "
                             "from the model: output prediction, row 0"),
])
def test_engine_sql_fails_rather_than_fall_back_and_writes_nothing(
        spark: SparkSession, source: str, output: str, model: dict[str, str], tracking_uri: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str, code: int,
        message: str) -> None:
    uri = f"models:/churn_lr/{model['v1']}"
    if case == "unsupported":
        uri = unsupported_model(tracking_uri)
    else:
        monkeypatch.setattr(engine, "translate", wrong_by(1e-3))
    capsys.readouterr()
    assert main([*base(source, output, uri), "--engine", "sql"]) == code
    assert capsys.readouterr().err.startswith(message)
    assert not spark.catalog.tableExists(output) or spark.table(output).isEmpty()


def test_model_that_raises_in_sql_rejects_the_rows_it_raises_on(spark: SparkSession, source: str, output: str,
                                                                tracking_uri: str) -> None:
    """A one-hot encoder that errors on unknown categories: under quarantine the rows it would raise on are
    rejected with the model's message, as the UDF's bisection would; the other rows are scored. (`source`:
    its database.)"""
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from tests.support import create_table

    X = pd.DataFrame({"segment": ["a", "b", "a", "b"], "tenure": [1.0, 2.0, 3.0, 4.0]})
    pipe = make_pipeline(ColumnTransformer([("seg", OneHotEncoder(), ["segment"])], remainder="passthrough"),
                         LinearRegression()).fit(X, [1.0, 2.0, 3.5, 4.0])
    uri = log_model(pipe, infer_signature(X, pipe.predict(X)))
    create_table(spark, "lake.segments", [(1, "a", 1.0, "d"), (2, "zz", 2.0, "d"), (3, "b", 5.0, "d")],
                 T.StructType([T.StructField("id", T.LongType()), T.StructField("segment", T.StringType()),
                               T.StructField("tenure", T.DoubleType()), T.StructField("ds", T.StringType())]))
    outcomes = {}
    for chosen in ("sql", "auto", "udf"):  # auto: verified on the rows as written, the raising row among them
        table = f"{output}_{chosen}"
        spark.catalog.dropTable(table, ifExists=True)
        result = score(spark, *base("lake.segments", table, uri), "--on-bad-rows", "quarantine", "--engine", chosen)
        assert result.engine is not None and result.engine.engine == ("sql" if chosen == "auto" else chosen)
        outcomes[chosen] = (spark.table(table).select("id", "prediction"),
                            spark.table(f"{table}_rejects").select("id", "reject_reason"))
    for chosen in ("sql", "auto"):
        assertDataFrameEqual(outcomes[chosen][0], outcomes["udf"][0], rtol=1e-9)
        assertDataFrameEqual(outcomes[chosen][1], outcomes["udf"][1])
    assert outcomes["sql"][1].first().reject_reason.startswith("model error: ValueError: Found unknown categories")


@pytest.mark.parametrize("engine_flag", ["auto", "sql"])
def test_a_run_whose_every_row_is_rejected_is_verified_on_no_row(spark: SparkSession, source: str, output: str,
                                                                  model: dict[str, str], engine_flag: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Every row has a null feature: under quarantine none reaches the model, so the translation is verified on
    no row (a model given zero rows may raise: that is not a difference) and every row goes to the rejects."""
    bad = spark.table(source).where(F.col("ds") == DAYS[0]).withColumn("tenure", F.lit(None).cast("int"))
    table = f"{source}_all_bad"
    bad.write.mode("overwrite").partitionBy("ds").format("parquet").saveAsTable(table)
    with caplog.at_level(logging.INFO, logger="score_table"):
        result = score(spark, *base(table, output), "--on-bad-rows", "quarantine", "--engine", engine_flag)
    (line,) = engine_lines(caplog)
    assert line.startswith("engine: sql (translated, verified on 0 rows (largest difference 0.0e+00))"), line
    assert result.counts.scored == 0 and result.counts.rejected == bad.count()
    assertDataFrameEqual(spark.table(f"{output}_rejects").select("customer_id", "reject_reason"),
                         bad.select("customer_id", F.lit("column 'tenure' is null").alias("reject_reason")))


def test_history_made_by_an_older_version_gets_the_engine_columns(spark: SparkSession, source: str, output: str,
                                                                  model: dict[str, str]) -> None:
    from spark_jobs.runs import history

    old = T.StructType([f for f in history.SCHEMA.fields if f.name not in history.ADDED_LATER])
    spark.createDataFrame([], old).writeTo(f"{output}_runs").using("parquet").partitionedBy(
        F.col("scoring_run_id")).create()
    register_sklearn(*fit((1.0, 1.0, 1.0), seed=3), "churn_history_old")
    score(spark, *base(source, output, "models:/churn_history_old/1"), "--partition", f"ds={DAYS[0]}")
    run = spark.table(f"{output}_runs").select("status", "engine").first()
    assert run is not None and (run.status, run.engine) == ("succeeded", "sql")


@pytest.mark.parametrize("jar", ["built", "missing"])
def test_trees_run_in_the_jvm_evaluator_and_as_sql_or_the_udf_without_it(
        spark: SparkSession, source: str, output: str, tracking_uri: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, tmp_path: Path, jar: str) -> None:
    """A 100-tree ensemble (over the 1,000 nodes auto takes as SQL expressions): in the evaluator where its jar
    is there; without it, the UDF, and the log says why. The table holds MLflow's predictions either way."""
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingRegressor

    linear, X = fit((1.0, 2.0, 3.0), seed=9)
    trees = HistGradientBoostingRegressor(max_iter=100, min_samples_leaf=2, random_state=0).fit(X, linear.predict(X))
    uri = log_model(trees, infer_signature(X, trees.predict(X)))
    if jar == "missing":
        monkeypatch.setattr(jvm_jar, "JAR", tmp_path / "missing.jar")
        monkeypatch.setattr(native, "_factory", {})
    with caplog.at_level(logging.INFO, logger="score_table"):
        result = score(spark, *base(source, output, uri), "--partition", f"ds={DAYS[0]}")
    (line,) = engine_lines(caplog)
    assert result.engine is not None
    if jar == "built":
        assert line.startswith("engine: sql (translated, 100 trees in the JVM tree evaluator, verified on 4 rows"), line
        assert result.engine.engine == "sql"
    else:
        assert re.match(r"engine: udf \(not translated: [\d,]+ tree nodes, more than the 1,000", line), line
        assert any("the JVM tree evaluator is not built (missing.jar missing)" in r.getMessage()
                   for r in caplog.records)
        assert result.engine.engine == "udf"
    check_predictions(spark, source, output, uri, result)


def test_a_tree_champion_and_a_tree_challenger_both_run_in_the_evaluator(
        spark: SparkSession, source: str, output: str, tracking_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    """Two ensembles in one write, each a step of the evaluator in the same query (the challenger's first): each
    table holds its own model's predictions, row by row."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    linear, X = fit((1.0, 2.0, 3.0), seed=9)
    y = linear.predict(X)
    champion = HistGradientBoostingRegressor(max_iter=100, min_samples_leaf=2, random_state=0).fit(X, y)
    rival = RandomForestRegressor(30, max_depth=6, random_state=0).fit(X, y)
    uri = log_model(champion, infer_signature(X, champion.predict(X)))
    rival_uri = log_model(rival, infer_signature(X, rival.predict(X)))
    with caplog.at_level(logging.INFO, logger="score_table"):
        result = score(spark, *base(source, output, uri), "--partition", f"ds={DAYS[0]}",
                       "--challenger-uri", rival_uri, "--key-columns", "customer_id", "--no-mlflow-run")
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("challenger engine: sql (translated, 30 trees in the JVM tree evaluator") for m in said)
    assert any(m.startswith("engine: sql (translated, 100 trees in the JVM tree evaluator") for m in said)
    check_predictions(spark, source, output, uri, result)
    rows = spark.table(source).where(F.col("ds") == DAYS[0]).orderBy("customer_id").toPandas()
    inputs = rows[list(FEATURES.values())].astype(float).set_axis(list(FEATURES), axis=1)
    expected = mlflow.pyfunc.load_model(rival_uri).predict(inputs)
    got = spark.table(f"{output}_challenger").orderBy("customer_id").select("customer_id", "prediction").toPandas()
    assert got["customer_id"].tolist() == rows["customer_id"].tolist()
    assert got["prediction"].tolist() == pytest.approx(list(expected), rel=1e-9, abs=1e-9)
    for side in ("challenger", "profiles", "runs"):
        spark.catalog.dropTable(f"{output}_{side}", ifExists=True)
