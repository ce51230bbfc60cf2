"""Real models and messy tables: output kinds, input types, tensor inputs, params, bad-row policies."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.cli import main
from tests import models
from tests.support import DAYS, FEATURES, create_table, expected_table, fit, log_model, score, snapshot


def log_on_tenure(model: Any, name: str) -> str:
    """Register a custom model that takes `tenure`, its signature inferred from what it returns."""
    X = pd.DataFrame({"tenure": [1.0, 2.0]})
    return log_model(model, infer_signature(X, model.predict(None, X)), name)

def rows_of(spark: SparkSession, table: str, day: str | None = None) -> list[Row]:
    df = spark.table(table)
    return (df.where(F.col("ds") == day) if day else df).orderBy("customer_id").collect()


def frame(rows: list[Row], columns: dict[str, str], dtype: str | None = "float64") -> pd.DataFrame:
    """Model input as MLflow would get it: signature names, values of the declared type."""
    data = pd.DataFrame([[r[c] for c in columns.values()] for r in rows], columns=list(columns))
    return data.astype(dtype) if dtype else data


# -- model outputs ---------------------------------------------------------------------------------------


def test_classifier_with_predict_proba_gives_one_column_per_class(spark: SparkSession, source: str, output: str,
                                                                  tracking_uri: str) -> None:
    from sklearn.linear_model import LogisticRegression

    _, X = fit((1.0, 0.0, 0.0), seed=5)
    clf = LogisticRegression(max_iter=500).fit(X, (X["Tenure"] > 25).astype(int))
    uri = log_model(clf, infer_signature(X, clf.predict_proba(X)), "churn_proba", pyfunc_predict_fn="predict_proba")
    result = score(spark, "--model-uri", uri, "--input-table", source, "--output-table", output,
                   "--partition", f"ds={DAYS[0]}")
    rows = rows_of(spark, source, DAYS[0])
    proba = mlflow.pyfunc.load_model(uri).predict(frame(rows, FEATURES))
    actual = spark.table(output)
    assert [f.name for f in actual.schema.fields][5:7] == ["proba_0", "proba_1"]
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"proba_0": proba[:, 0],
                                                                      "proba_1": proba[:, 1]}, result.lineage))


def test_custom_model_returning_named_columns(spark: SparkSession, source: str, output: str,
                                              tracking_uri: str) -> None:
    uri = log_on_tenure(models.LabelAndScore(), "label_and_score")
    result = score(spark, "--model-uri", uri, "--input-table", source, "--output-table", output)
    rows = rows_of(spark, source)
    out = mlflow.pyfunc.load_model(uri).predict(frame(rows, {"tenure": "tenure"}))
    actual = spark.table(output)
    assert dict(actual.dtypes)["label"] == "string" and dict(actual.dtypes)["score"] == "double"
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"label": list(out["label"]),
                                                                      "score": list(out["score"])}, result.lineage))


def test_pipeline_with_column_transformer_over_string_categories(spark: SparkSession, source: str, output: str,
                                                                 tracking_uri: str) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = pd.DataFrame({"segment": ["s0", "s1"] * 10, "tenure": np.arange(20.0), "spend": np.arange(20.0) % 7})
    pipe = Pipeline([
        ("prep", ColumnTransformer([("cat", OneHotEncoder(), ["segment"])], remainder="passthrough")),
        ("lr", LinearRegression()),
    ]).fit(X, X["tenure"] * 2 + (X["segment"] == "s1") * 10)
    uri = log_model(pipe, infer_signature(X, pipe.predict(X)), "churn_pipeline")
    result = score(spark, "--model-uri", uri, "--input-table", source, "--output-table", output)
    rows = rows_of(spark, source)
    inputs = frame(rows, {"segment": "segment", "tenure": "tenure", "spend": "spend"}, dtype=None)
    inputs = inputs.astype({"tenure": "float64", "spend": "float64"})
    actual = spark.table(output)
    expected = mlflow.pyfunc.load_model(uri).predict(inputs)
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"prediction": expected}, result.lineage))


def test_params_are_typed_by_the_models_schema(spark: SparkSession, source: str, output: str,
                                               tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    X = pd.DataFrame({"tenure": [1.0, 20.0]})
    model = models.Thresholded()
    uri = log_model(model, infer_signature(X, model.predict(None, X), params={"threshold": 0.5}), "thresholded")
    result = score(spark, "--model-uri", uri, "--input-table", source, "--output-table", output,
                   "--param", "threshold=0.6")
    rows = rows_of(spark, source)
    expected = mlflow.pyfunc.load_model(uri).predict(frame(rows, {"tenure": "tenure"}), params={"threshold": 0.6})
    assert 0 < int(expected.sum()) < len(rows)  # the param splits the rows: a wrong threshold would show
    actual = spark.table(output)
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"prediction": expected}, result.lineage))

    assert main(["--model-uri", uri, "--input-table", source, "--output-table", output, "--param", "cutoff=1"]) == 2
    assert "--param cutoff: the model has no such param (it has: threshold)" in capsys.readouterr().err


def test_model_without_output_signature_uses_result_type_or_infers(spark: SparkSession, source: str, output: str,
                                                                   tracking_uri: str) -> None:
    uri = log_model(models.Thresholded(), ModelSignature(inputs=Schema([ColSpec("double", "tenure")])), "unsigned")
    rows = rows_of(spark, source)
    expected = mlflow.pyfunc.load_model(uri).predict(frame(rows, {"tenure": "tenure"}))

    inferred = score(spark, "--model-uri", uri, "--input-table", source, "--output-table", output)
    assert dict(spark.table(output).dtypes)["prediction"] == "bigint"  # int64 came back
    actual = spark.table(output)
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"prediction": expected}, inferred.lineage))

    declared = score(spark, "--model-uri", uri, "--input-table", source, "--output-table", output + "_d",
                     "--result-type", "double")
    actual = spark.table(output + "_d")
    assert dict(actual.dtypes)["prediction"] == "double"
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"prediction": expected.astype(float)},
                                                declared.lineage))
    spark.catalog.dropTable(output + "_d")


# -- inputs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def typed(spark: SparkSession) -> str:
    """Every type a feature table holds."""
    spark.catalog.createDatabase("lake", ifNotExists=True)
    schema = ("customer_id bigint, i int, l bigint, f float, d double, dec decimal(12,3), b boolean, s string, "
              "day date, ts timestamp, name string, ds string")
    rows = [
        (1, 3, 2**40, 1.5, 2.25, Decimal("10.125"), True, "7.5", dt.date(2026, 1, 2),
         dt.datetime(2026, 1, 2, 3, 4, 5), "ann", DAYS[0]),
        (2, -4, -5, -0.25, 1e300, Decimal("-0.001"), False, "-1e3", dt.date(1999, 12, 31),
         dt.datetime(1999, 12, 31, 23, 59, 59), "bob", DAYS[0]),
    ]
    create_table(spark, "lake.typed", rows, schema)
    return "lake.typed"


@pytest.mark.spark35
def test_every_input_type_arrives_as_the_signature_declares(spark: SparkSession, typed: str, output: str,
                                                            tracking_uri: str) -> None:
    example = pd.DataFrame({
        "I": [1.0], "L": pd.Series([1], dtype="int64"), "F": [1.0], "D": [1.0], "DEC": [1.0], "B": [True],
        "S": [1.0], "DAY": pd.to_datetime(["2026-01-01"]), "TS": pd.to_datetime(["2026-01-01"]), "NAME": ["x"],
    })
    uri = log_model(models.Echo(), infer_signature(example, pd.Series(["x"])), "echo")
    result = score(spark, "--model-uri", uri, "--input-table", typed, "--output-table", output)
    rows = rows_of(spark, typed)
    inputs = pd.DataFrame({
        "I": [float(r.i) for r in rows], "L": pd.Series([r.l for r in rows], dtype="int64"),
        "F": [float(r.f) for r in rows], "D": [r.d for r in rows], "DEC": [float(r.dec) for r in rows],
        "B": [r.b for r in rows], "S": [float(r.s) for r in rows],
        "DAY": pd.to_datetime([dt.datetime.combine(r.day, dt.time()) for r in rows]),
        "TS": pd.to_datetime([r.ts for r in rows]), "NAME": [r.name for r in rows],
    })
    expected = mlflow.pyfunc.load_model(uri).predict(inputs)
    assert "DEC=10.125" in expected[0] and "S=-1000.0" in expected[1]  # decimals and text really converted
    actual = spark.table(output)
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"prediction": list(expected)}, result.lineage))


@pytest.mark.parametrize("fed_from", ["feature-columns", "array-column"])
def test_tensor_model_fed_from_columns_or_an_array(spark: SparkSession, source: str, output: str,
                                                   tracking_uri: str, fed_from: str) -> None:
    from sklearn.linear_model import LinearRegression

    X = np.random.default_rng(8).uniform(0, 50, size=(40, 3))
    reg = LinearRegression().fit(X, X @ np.array([1.0, -2.0, 0.5]))
    uri = log_model(reg, infer_signature(X, reg.predict(X)), "tensor_lr")
    if fed_from == "feature-columns":
        table, extra = source, ["--feature-columns", "tenure,spend,visits"]
    else:
        table, extra = "lake.with_array", []
        spark.table(source).withColumn("features", F.array(*[F.col(c).cast("double")
                                                             for c in ("tenure", "spend", "visits")])) \
            .write.mode("overwrite").partitionBy("ds").saveAsTable(table)
    result = score(spark, "--model-uri", uri, "--input-table", table, "--output-table", output, *extra)
    rows = rows_of(spark, table)
    matrix = np.array([[float(r.tenure), float(r.spend), float(r.visits)] for r in rows])
    actual = spark.table(output)
    expected = mlflow.pyfunc.load_model(uri).predict(matrix)
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"prediction": expected}, result.lineage))


# -- bad rows --------------------------------------------------------------------------------------------

MESSY_SCHEMA = "customer_id bigint, tenure int, spend double, visits bigint, code string, ds string"
MESSY = [
    (1, 10, 1.0, 1, "1", DAYS[0]),
    (2, None, 2.0, 2, "2", DAYS[0]),
    (3, 12, float("nan"), 3, "3", DAYS[0]),
    (4, 13, 4.0, 4, "4", DAYS[0]),
    (5, 14, float("inf"), 5, "5", DAYS[1]),
    (6, 15, 6.0, 6, "x1", DAYS[1]),
    (7, -3, 7.0, 7, "7", DAYS[1]),
    (8, 17, 8.0, 8, "8", DAYS[1]),
]
MESSY_REASONS = {
    2: "column 'tenure' is null",
    3: "column 'spend' is NaN",
    5: "column 'spend' is infinite",
    6: "column 'code' cannot be cast to double",
    7: "model error: ValueError: negative tenure -3",
}


@pytest.fixture(scope="module")
def messy(spark: SparkSession, tracking_uri: str) -> tuple[str, str]:
    spark.catalog.createDatabase("lake", ifNotExists=True)
    create_table(spark, "lake.messy", MESSY, MESSY_SCHEMA)
    X = pd.DataFrame({"tenure": [1.0], "spend": [1.0], "visits": [1.0], "code": [1.0]})
    return "lake.messy", log_model(models.RaisesOnNegative(), infer_signature(X, pd.Series([1.0])), "raises")


@pytest.mark.spark35
def test_quarantine_isolates_bad_rows_and_the_rows_the_model_raises_on(
        spark: SparkSession, messy: tuple[str, str], output: str, capsys: pytest.CaptureFixture[str]) -> None:
    table, uri = messy
    code = main(["--model-uri", uri, "--input-table", table, "--output-table", output, "--on-bad-rows",
                 "quarantine", "--batch-size", "8"])
    out = capsys.readouterr().out
    assert code == 0
    assert "rows read: 8, scored: 3, rejected: 5" in out
    assert f"quarantined 5 rows in {output}_rejects" in out
    actual, rejects = spark.table(output), spark.table(f"{output}_rejects")
    (run_id,) = {r.scoring_run_id for r in actual.collect()}
    good = [r for r in rows_of(spark, table) if r.customer_id not in MESSY_REASONS]
    lineage = actual.select("model_name", "model_version", "model_run_id", "scored_at", "scoring_run_id").first()
    assertDataFrameEqual(actual, expected_table(spark, good, actual, {"prediction": [r.tenure * 2.0 for r in good]},
                                                lineage))
    bad = [r for r in rows_of(spark, table) if r.customer_id in MESSY_REASONS]
    assertDataFrameEqual(rejects, expected_table(
        spark, bad, rejects, {"reject_reason": [MESSY_REASONS[r.customer_id] for r in bad]}, lineage))
    assert spark.sql(f"SELECT count(*) FROM {output}_rejects WHERE scoring_run_id = '{run_id}'").first()[0] == 5


def test_fail_policy_names_the_count_and_an_example_and_publishes_nothing(
        spark: SparkSession, messy: tuple[str, str], output: str, capsys: pytest.CaptureFixture[str]) -> None:
    table, uri = messy
    args = ["--model-uri", uri, "--input-table", table, "--output-table", output, "--partition", f"ds={DAYS[0]}"]
    assert main([*args, "--on-bad-rows", "quarantine"]) == 0
    before = snapshot(spark.table(output))
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("score-table: error: 2 of 4 rows have bad features (first: customer_id=")
    assert "nothing published" in err
    assert_df_equality(spark.table(output), before, ignore_row_order=True)


def test_max_bad_fraction_fails_before_publishing(spark: SparkSession, messy: tuple[str, str], output: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    table, uri = messy
    code = main(["--model-uri", uri, "--input-table", table, "--output-table", output, "--on-bad-rows",
                 "quarantine", "--max-bad-fraction", "0.5", "--partition", f"ds={DAYS[1]}"])
    assert code == 1
    assert "rejected 3 of 4 rows (75.00%), more than --max-bad-fraction 0.5; nothing published" in \
        capsys.readouterr().err
    assert spark.table(output).collect() == []
    assert not spark.catalog.tableExists(f"{output}_rejects") or spark.table(f"{output}_rejects").collect() == []


def test_pass_policy_hands_nulls_and_nans_to_the_model(spark: SparkSession, messy: tuple[str, str], output: str,
                                                       tracking_uri: str) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    table, _ = messy
    X = pd.DataFrame({"tenure": np.arange(30.0), "spend": np.arange(30.0) % 5, "visits": np.arange(30.0) % 3})
    hgb = HistGradientBoostingRegressor(max_iter=10, min_samples_leaf=2).fit(X, X["tenure"] + X["spend"])
    uri = log_model(hgb, infer_signature(X, hgb.predict(X)), "handles_nan")
    result = score(spark, "--model-uri", uri, "--input-table", table, "--output-table", output,
                   "--on-bad-rows", "pass", "--partition", f"ds={DAYS[0]}")
    assert (result.counts.read, result.counts.scored, result.counts.rejected) == (4, 4, 0)
    rows = rows_of(spark, table, DAYS[0])
    inputs = pd.DataFrame([[math.nan if r[c] is None else float(r[c]) for c in ("tenure", "spend", "visits")]
                           for r in rows], columns=["tenure", "spend", "visits"])
    actual = spark.table(output)
    expected = mlflow.pyfunc.load_model(uri).predict(inputs)
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"prediction": expected}, result.lineage))


def test_rerun_replaces_the_partitions_rejects(spark: SparkSession, messy: tuple[str, str], output: str) -> None:
    table, uri = messy
    args = ["--model-uri", uri, "--input-table", table, "--output-table", output, "--on-bad-rows", "quarantine"]
    score(spark, *args)
    second = score(spark, *args)
    rejects = spark.table(f"{output}_rejects")
    assert sorted(r.customer_id for r in rejects.collect()) == sorted(MESSY_REASONS)
    assert {r.scoring_run_id for r in rejects.collect()} == {second.lineage.scoring_run_id}




def test_tensor_output_becomes_an_array_column(spark: SparkSession, source: str, output: str,
                                               tracking_uri: str) -> None:
    uri = log_on_tenure(models.Embedder(), "embedder")
    result = score(spark, "--model-uri", uri, "--input-table", source, "--output-table", output)
    actual = spark.table(output)
    assert dict(actual.dtypes)["prediction"] == "array<float>"
    rows = rows_of(spark, source)
    expected = mlflow.pyfunc.load_model(uri).predict(frame(rows, {"tenure": "tenure"}))
    assertDataFrameEqual(actual, expected_table(spark, rows, actual, {"prediction": list(expected)},
                                                result.lineage))
