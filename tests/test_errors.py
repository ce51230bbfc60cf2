"""Bad input: one line on stderr naming what is wrong, exit 2, found before reading data, nothing written.
A failure while running: one line, exit 1."""

from __future__ import annotations

import datetime as dt
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import pandas as pd
import pytest
from chispa import assert_df_equality
from mlflow.models import infer_signature
from pyspark.sql import SparkSession

from spark_jobs.cli import main
from tests.support import DAYS, SCHEMA, create_table, log_model, snapshot


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("score-table: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def odd_tables(spark: SparkSession, source: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Inputs and existing outputs that conflict with the model or with the run."""
    create_table(spark, "lake.no_visits", [(1, 2, Decimal(3), "s", DAYS[0])],
                 "customer_id bigint, tenure int, spend decimal(10,2), segment string, ds string")
    create_table(spark, "lake.date_visits", [(1, 2, Decimal(3), dt.date(2026, 1, 1), "s", DAYS[0])],
                 SCHEMA.replace("visits bigint", "visits date"))
    create_table(spark, "lake.out_by_segment", [(1, "s", DAYS[0])], "customer_id bigint, ds string, segment string",
                 partition_by=("segment",))
    create_table(spark, "lake.out_other_schema", [(1, 0.5, DAYS[0])], "customer_id bigint, score double, ds string")
    empty = create_table(spark, "lake.empty_file", [], SCHEMA)  # one partition, whose only file has 0 rows
    folder = tmp_path_factory.mktemp("empty_file") / "ds=2026-12-01"
    empty.drop("ds").coalesce(1).write.parquet(str(folder))
    spark.sql("ALTER TABLE lake.empty_file ADD PARTITION (ds = :day) LOCATION :folder",
              args={"day": "2026-12-01", "folder": str(folder)})
    spark.sql("CREATE OR REPLACE VIEW lake.features_by_day AS SELECT * FROM lake.features")
    return {"source": source}


BASE = ["--model-uri", "models:/churn_lr@champion", "--input-table", "lake.features"]

USAGE_ERRORS: list[tuple[str, list[str], list[str]]] = [
    ("unknown model", ["--model-uri", "models:/no_such_model@champion"],
     ["models:/no_such_model@champion", "'no_such_model'"]),
    ("unknown alias", ["--model-uri", "models:/churn_lr@retired"], ["alias 'retired'", "'churn_lr'"]),
    ("unknown version", ["--model-uri", "models:/churn_lr/99"], ["version 99", "'churn_lr'"]),
    ("missing input table", ["--input-table", "lake.nope"], ["input table lake.nope not found"]),
    ("missing feature column", ["--input-table", "lake.no_visits"], ["no column 'Visits'", "lake.no_visits"]),
    ("uncastable column", ["--input-table", "lake.date_visits"], ["'visits'", "type date", "to double"]),
    ("not a partition column", ["--partition", "segment=s0"], ["'segment' is not a partition column", "ds"]),
    ("empty selection", ["--partition", "ds=2099-01-01"], ["ds=2099-01-01", "matches no rows", "lake.features"]),
    ("quoted value is a literal", ["--partition", "ds=2026-11-01' OR '1'='1"], ["matches no rows"]),
    ("injection in table name", ["--input-table", "lake.features; DROP TABLE lake.features"],
     ["not a valid table name"]),
    ("input is output", ["--output-table", "LAKE.Features"], ["is the input table"]),
    ("bad partition flag", ["--partition", "ds"], ["must look like COLUMN=VALUE"]),
    ("batch size over Spark's limit", ["--batch-size", "99999999999"], ["batch size 99999999999", "2147483647"]),
    ("selected partition whose file holds no rows", ["--input-table", "lake.empty_file"],
     ["matches no rows", "lake.empty_file", "its files are empty"]),
    ("view without that partition column", ["--input-table", "lake.features_by_day", "--partition-columns", "day"],
     ["--partition-columns", "view lake.features_by_day has no column day"]),
    ("partition columns for a table", ["--partition-columns", "segment"],
     ["--partition-columns is for a view", "partitioned by ds"]),
    ("transform that does not parse", ["--transform", "t=tenure +"], ["transform 't' is not a Spark SQL expression"]),
    ("transform over an unknown column", ["--transform", "t=nope + 1"], ["transform 't'", "`nope`"]),
    ("transform that aggregates", ["--transform", "t=max(tenure)"], ["transform 't'", "aggregate"]),
    ("transform with a window", ["--transform", "t=sum(tenure) OVER ()"], ["transform 't' is a window function"]),
    ("transform with a generator", ["--transform", "t=explode(array(1, 2))"], ["transform 't'", "generator"]),
    ("transform with a subquery", ["--transform", "t=(SELECT max(tenure) FROM lake.features)"],
     ["transform 't' contains a subquery"]),
    ("non-deterministic transform", ["--transform", "t=rand()"], ["transform 't' is not deterministic"]),
    ("transform of a partition column", ["--transform", "ds=upper(ds)"],
     ["transform 'ds' would replace a partition column"]),
    ("transform over a later transform", ["--transform", "a=b + 1", "--transform", "b=tenure"],
     ["transform 'a'", "`b`"]),
    ("injection in a transform's name", ["--transform", "t; DROP TABLE lake.features=1"],
     ["transform 't; DROP TABLE lake.features'", "letters, digits and underscores"]),
    ("injection in a transform", ["--transform", "t=1; DROP TABLE lake.features"],
     ["transform 't' is not a Spark SQL expression"]),
]


@pytest.mark.parametrize(("case", "overrides", "fragments"), USAGE_ERRORS, ids=[c[0] for c in USAGE_ERRORS])
def test_usage_errors_exit_2_and_write_nothing(spark: SparkSession, model: dict[str, str], odd_tables: Any,
                                               output: str, capsys: pytest.CaptureFixture[str], case: str,
                                               overrides: list[str], fragments: list[str]) -> None:
    args = dict(zip(BASE[::2], BASE[1::2], strict=True))
    extra: list[str] = []
    for flag, value in zip(overrides[::2], overrides[1::2], strict=True):
        if flag in ("--partition", "--transform"):
            extra += [flag, value]
        else:
            args[flag] = value
    args.setdefault("--output-table", output)
    code, err = run_main(capsys, *[x for kv in args.items() for x in kv], *extra)
    assert code == 2, err
    assert_one_line_error(err, *fragments)
    assert not spark.catalog.tableExists(output) and not spark.catalog.tableExists(f"{output}_runs")
    assert spark.catalog.tableExists("lake.features")


@pytest.mark.parametrize(("table", "fragments"), [
    ("lake.out_by_segment", ["lake.out_by_segment is partitioned by (segment)", "(ds)"]),
    ("lake.out_other_schema", ["lake.out_other_schema has a different schema", "score: table has double"]),
])
def test_conflicting_output_table_is_left_alone(spark: SparkSession, model: dict[str, str], odd_tables: Any,
                                                capsys: pytest.CaptureFixture[str], table: str,
                                                fragments: list[str]) -> None:
    before = snapshot(spark.table(table))
    code, err = run_main(capsys, *BASE, "--output-table", table)
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert_df_equality(spark.table(table), before, ignore_row_order=True)


def test_unknown_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("batch_size: 100\nbatchsize: 5\n")
    code, err = run_main(capsys, "--config", str(profile), *BASE, "--output-table", "lake.x")
    assert code == 2
    assert_one_line_error(err, "unknown key(s) batchsize")


class Exploding(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.Series:
        raise ValueError("feature drift detector tripped")


def test_model_failure_while_scoring_exits_1_with_the_models_message(
        spark: SparkSession, source: str, output: str, tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package
    X = pd.DataFrame({"tenure": [1.0], "spend": [2.0], "visits": [3.0]})
    uri = log_model(Exploding(), infer_signature(X, pd.Series([0.0])), "exploding")
    code, err = run_main(capsys, "--model-uri", uri, "--input-table", source, "--output-table", output)
    assert code == 1
    assert_one_line_error(err, "ValueError: feature drift detector tripped")
    assert "Traceback" not in err
    assert spark.table(output).collect() == []  # created empty before staging; nothing published


def test_a_java_failure_is_reported_by_its_cause_without_secrets(spark: SparkSession) -> None:
    """py4j says 'An error occurred while calling o493.jdbc.'; the user must read the Java cause instead."""
    from py4j.protocol import Py4JJavaError

    from spark_jobs import fs
    from spark_jobs.errors import one_line

    with pytest.raises(Py4JJavaError) as missing:
        fs.parquet_rows(spark, "file:/no/such/file.parquet")
    assert one_line(missing.value).startswith("java.io.FileNotFoundException: ")
    assert "/no/such/file.parquet" in one_line(missing.value)

    url = "jdbc:postgresql://scorer:hunter2@127.0.0.1:1/x?user=scorer&password=hunter2"
    with pytest.raises(Py4JJavaError) as jdbc:
        spark.sparkContext._jvm.java.sql.DriverManager.getConnection(url)  # type: ignore[union-attr]
    line = one_line(jdbc.value)
    assert line.startswith("java.sql.SQLException: No suitable driver") and "hunter2" not in line
    assert "password=***" in line and "An error occurred" not in line


@pytest.mark.parametrize(("text", "secret"), [
    ("jdbc:postgresql://scorer:p@ss@db:5432/x", "p@ss"), ('password="two words" and more', "two words"),
    ('{"password": "x y"}', "x y"), ("PASSWORD = hunter2 next", "hunter2"), ("token=abc;x", "abc"),
])
def test_secrets_are_masked_in_error_lines(text: str, secret: str) -> None:
    from spark_jobs.errors import mask

    assert secret not in mask(text) and "***" in mask(text)


def test_a_model_from_another_environment_is_named_once_on_the_driver(tmp_path: Path) -> None:
    """Each requirement of a saved model that this environment does not satisfy, and only those: an older pin
    of an installed package, a package not installed; a satisfied pin, a requirement for another platform and
    an option line are not differences. The expectations come from importlib.metadata, independently."""
    import importlib.metadata

    from mlflow.models import Model
    from sklearn.linear_model import LinearRegression

    from spark_jobs.model.model_ref import environment_differences

    pandas_now, numpy_now = importlib.metadata.version("pandas"), importlib.metadata.version("numpy")
    requirements = [f"pandas=={pandas_now}", "numpy==1.0.0", "surely-not-installed-xyz==1.2",
                    'pywin32==306; sys_platform == "win32" and sys_platform == "linux"']
    path = tmp_path / "model"
    mlflow.sklearn.save_model(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), str(path),
                              pip_requirements=requirements)
    with (path / "requirements.txt").open("a") as f:
        f.write("\n-c constraints.txt  # an option line\n")
    found = environment_differences(str(path), Model.load(str(path)))
    assert found == [f"numpy==1.0.0 (installed: {numpy_now})", "surely-not-installed-xyz==1.2 (not installed)"]
