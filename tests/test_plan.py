"""spark_jobs.planning.plan from metadata alone: real Spark types and MLflow signatures, no tables, no model
files."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from pyspark.sql import SparkSession
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from spark_jobs.errors import UsageError
from spark_jobs.planning.plan import (
    NULL_PARTITION,
    ModelFacts,
    Selection,
    build,
    cast_kind,
    find_column,
    match_features,
    output_fields,
    output_schema,
    select_partitions,
)
from spark_jobs.planning.tables import TableInfo, describe
from udfs import FeatureColumn

LINEAGE_NAMES = ["model_name", "model_version", "model_run_id", "scored_at", "scoring_run_id"]


def table(columns: Sequence[tuple[str, T.DataType]], partitions: Sequence[str] = ()) -> TableInfo:
    return TableInfo("lake.t", T.StructType([T.StructField(n, t) for n, t in columns]), tuple(partitions))


def signature(*inputs: ColSpec | TensorSpec, outputs: Sequence[ColSpec | TensorSpec] | None = None) -> ModelSignature:
    return ModelSignature(inputs=Schema(list(inputs)), outputs=Schema(list(outputs)) if outputs else None)


def struct(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(n, t) for n, t in fields])


FEATURES = table([("customer_id", T.LongType()), ("tenure", T.IntegerType()), ("spend", T.DecimalType(10, 2)),
                  ("ds", T.StringType())], partitions=["ds"])


# --- matching names -------------------------------------------------------------------------------------------------

def test_signature_name_matches_table_column_case_insensitively() -> None:
    features = match_features(FEATURES, signature(ColSpec("double", "Tenure"), ColSpec("double", "SPEND")), False)
    assert features == (
        FeatureColumn(name="Tenure", column="tenure", spark_type=T.DoubleType()),
        FeatureColumn(name="SPEND", column="spend", spark_type=T.DoubleType()),
    )


def test_case_sensitive_match_refuses_another_case() -> None:
    message = r"^input table lake\.t has no column 'Tenure' required by the model " \
              r"\(table columns: customer_id, tenure, spend, ds\)"
    with pytest.raises(UsageError, match=message):
        match_features(FEATURES, signature(ColSpec("double", "Tenure")), True)


def test_case_sensitive_match_takes_the_exact_name() -> None:
    info = table([("tenure", T.StringType()), ("Tenure", T.IntegerType())])
    assert match_features(info, signature(ColSpec("double", "Tenure")), True) == (
        FeatureColumn("Tenure", "Tenure", T.DoubleType()),
    )


@pytest.mark.parametrize("name", ["a", "A"])
def test_ambiguous_name_is_an_error(name: str) -> None:
    info = table([("a", T.DoubleType()), ("A", T.DoubleType())])
    with pytest.raises(UsageError, match=rf"^column name '{name}' is ambiguous: a, A$"):
        match_features(info, signature(ColSpec("double", name)), False)


def test_find_column_modes() -> None:
    schema = struct(("a", T.DoubleType()), ("B", T.LongType()))
    assert find_column(schema, "b", False) == T.StructField("B", T.LongType())
    assert find_column(schema, "b", True) is None
    assert find_column(schema, "B", True) == T.StructField("B", T.LongType())
    assert find_column(schema, "c", False) is None


# --- casts ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "ml_type", "target"), [
    (T.IntegerType(), "double", T.DoubleType()),
    (T.LongType(), "double", T.DoubleType()),
    (T.ShortType(), "double", T.DoubleType()),
    (T.DecimalType(10, 2), "double", T.DoubleType()),
    (T.FloatType(), "double", T.DoubleType()),
    (T.BooleanType(), "double", T.DoubleType()),
    (T.IntegerType(), "long", T.LongType()),
    (T.ByteType(), "integer", T.IntegerType()),
    (T.DateType(), "datetime", T.TimestampType()),
    (T.TimestampNTZType(), "datetime", T.TimestampType()),
    (T.DoubleType(), "double", T.DoubleType()),
])
def test_safe_cast_is_allowed(source: T.DataType, ml_type: str, target: T.DataType) -> None:
    info = table([("x", source)])
    assert match_features(info, signature(ColSpec(ml_type, "x")), False) == (FeatureColumn("x", "x", target),)
    assert cast_kind(source, target) == "exact"


@pytest.mark.parametrize(("source", "ml_type", "shown"), [
    (T.LongType(), "integer", ("bigint", "int")),
    (T.IntegerType(), "binary", ("int", "binary")),
    (T.DoubleType(), "long", ("double", "bigint")),
    (T.TimestampType(), "double", ("timestamp", "double")),
    (T.DateType(), "long", ("date", "bigint")),
    (T.StringType(), "binary", ("string", "binary")),
    (T.DecimalType(10, 2), "integer", ("decimal(10,2)", "int")),
])
def test_unsafe_cast_is_refused_naming_column_and_types(
    source: T.DataType, ml_type: str, shown: tuple[str, str]
) -> None:
    info = table([("id", T.LongType()), ("Feat", source)])
    message = (rf"^column 'Feat' of lake\.t has type {re.escape(shown[0])}, which cannot be cast safely to "
               rf"{shown[1]} as the model's input 'feat' requires$")
    with pytest.raises(UsageError, match=message):
        match_features(info, signature(ColSpec(ml_type, "feat")), False)


@pytest.mark.parametrize("ml_type", ["double", "long", "boolean", "datetime"])
def test_string_to_typed_input_is_a_checked_cast(ml_type: str) -> None:
    """Text is parsed in the JVM; a value that does not parse makes a bad row (not a plan error)."""
    info = table([("id", T.LongType()), ("x", T.StringType()), ("ds", T.StringType())], ["ds"])
    plan = build(info, ModelFacts(signature(ColSpec(ml_type, "x"), ColSpec("double", "id"))), {})
    assert [f.column for f in plan.features] == ["x", "id"]
    assert plan.checked == ("x",)


# --- optional and missing inputs ------------------------------------------------------------------------------------

def test_optional_input_missing_from_table_is_skipped() -> None:
    sig = signature(ColSpec("double", "tenure"), ColSpec("double", "bonus", required=False),
                    ColSpec("double", "spend", required=False))
    assert match_features(FEATURES, sig, False) == (
        FeatureColumn("tenure", "tenure", T.DoubleType()),
        FeatureColumn("spend", "spend", T.DoubleType()),  # optional but present: fed
    )


def test_required_input_missing_from_table_is_an_error() -> None:
    sig = signature(ColSpec("double", "tenure"), ColSpec("double", "bonus"))
    with pytest.raises(UsageError, match=r"has no column 'bonus' required by the model "
                                         r"\(table columns: customer_id, tenure, spend, ds\)$"):
        match_features(FEATURES, sig, False)


def test_model_without_input_signature_is_an_error() -> None:
    with pytest.raises(UsageError, match="the model has no input signature"):
        match_features(FEATURES, None, False)


# --- output fields --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("outputs", "expected"), [
    (None, struct(("prediction", T.DoubleType()))),
    ([ColSpec("long")], struct(("prediction", T.LongType()))),
    ([ColSpec("string", "label")], struct(("prediction", T.StringType()))),  # one output: always `prediction`
    ([ColSpec("double", "proba_0"), ColSpec("double", "proba_1"), ColSpec("string", "label")],
     struct(("proba_0", T.DoubleType()), ("proba_1", T.DoubleType()), ("label", T.StringType()))),
    ([TensorSpec(np.dtype("float32"), (-1,))], struct(("prediction", T.FloatType()))),
    ([TensorSpec(np.dtype("float64"), (-1, 1))], struct(("prediction", T.DoubleType()))),
    ([TensorSpec(np.dtype("float32"), (-1, 4))], struct(("prediction", T.ArrayType(T.FloatType())))),
    ([TensorSpec(np.dtype("int64"), (-1, 2))], struct(("prediction", T.ArrayType(T.LongType())))),
])
def test_output_fields(outputs: list[ColSpec | TensorSpec] | None, expected: T.StructType) -> None:
    assert output_fields(signature(ColSpec("double", "x"), outputs=outputs)) == expected


def test_output_fields_without_signature() -> None:
    assert output_fields(None) == struct(("prediction", T.DoubleType()))


def test_tensor_output_with_class_names_gives_one_column_per_name() -> None:
    sig = signature(ColSpec("double", "x"), outputs=[TensorSpec(np.dtype("float64"), (-1, 2))])
    assert output_fields(sig, ("proba_0", "proba_1")) == struct(("proba_0", T.DoubleType()),
                                                                ("proba_1", T.DoubleType()))
    # names that do not fit the width are ignored: the tensor stays one array column
    assert output_fields(sig, ("a", "b", "c")) == struct(("prediction", T.ArrayType(T.DoubleType())))


@pytest.mark.parametrize(("result_type", "expected"), [
    (T.LongType(), struct(("prediction", T.LongType()))),
    (struct(("label", T.StringType()), ("score", T.DoubleType())),
     struct(("label", T.StringType()), ("score", T.DoubleType()))),
])
def test_result_type_applies_only_without_output_signature(result_type: T.DataType, expected: T.StructType) -> None:
    assert output_fields(signature(ColSpec("double", "x")), result_type=result_type) == expected
    declared = signature(ColSpec("double", "x"), outputs=[ColSpec("integer")])
    assert output_fields(declared, result_type=result_type) == struct(("prediction", T.IntegerType()))


# --- output schema --------------------------------------------------------------------------------------------------

def test_output_schema_orders_data_outputs_lineage_then_partitions() -> None:
    info = table([("ds", T.StringType()), ("customer_id", T.LongType()), ("h", T.IntegerType()),
                  ("tenure", T.IntegerType())], partitions=["ds", "h"])
    outputs = struct(("proba_0", T.DoubleType()), ("proba_1", T.DoubleType()))
    assert output_schema(info, outputs) == struct(
        ("customer_id", T.LongType()),
        ("tenure", T.IntegerType()),
        ("proba_0", T.DoubleType()),
        ("proba_1", T.DoubleType()),
        ("model_name", T.StringType()),
        ("model_version", T.StringType()),
        ("model_run_id", T.StringType()),
        ("scored_at", T.TimestampType()),
        ("scoring_run_id", T.StringType()),
        ("input_fingerprint", T.StringType()),
        ("ds", T.StringType()),
        ("h", T.IntegerType()),
    )


@pytest.mark.parametrize("column", ["prediction", "PREDICTION", "scoring_run_id", "Model_Version", "scored_at",
                                    "reject_reason", "input_fingerprint"])
def test_output_schema_rejects_input_column_it_would_add(column: str) -> None:
    info = table([("customer_id", T.LongType()), (column, T.StringType()), ("ds", T.StringType())], ["ds"])
    with pytest.raises(UsageError, match=rf"^input table lake\.t already has column\(s\) {column.lower()} that"):
        output_schema(info, struct(("prediction", T.DoubleType())))


def test_output_schema_checks_named_outputs_too() -> None:
    info = table([("proba_1", T.DoubleType()), ("prediction", T.DoubleType())])
    outputs = struct(("proba_0", T.DoubleType()), ("proba_1", T.DoubleType()))
    with pytest.raises(UsageError, match=r"already has column\(s\) proba_1 that"):
        output_schema(info, outputs)


# --- partition selection ----------------------------------------------------------------------------------------

PARTITIONED = table([("customer_id", T.LongType()), ("ds", T.StringType()), ("h", T.IntegerType()),
                     ("day", T.DateType())], partitions=["ds", "h", "day"])


def selected(spark: SparkSession, info: TableInfo, rows: list[tuple[Any, ...]],
             partitions: dict[str, list[str]], case_sensitive: bool = False) -> list[tuple[Any, ...]]:
    """Rows of a small DataFrame with the table's schema that the selection keeps."""
    df = spark.createDataFrame(rows, info.schema)
    selection = select_partitions(info, partitions, case_sensitive)
    assert selection.condition is not None
    kept = [tuple(r) for r in df.where(selection.condition).collect()]
    assert kept == driver_kept(info, rows, selection)
    return kept


def driver_kept(info: TableInfo, rows: list[tuple[Any, ...]], selection: Selection) -> list[tuple[Any, ...]]:
    """What the driver keeps from the same rows' partition values (partitions.selected, no Spark job): it
    must agree with Spark's filter on every row."""
    at = [info.schema.fieldNames().index(c) for c in info.partition_columns]
    return [r for r in rows if selection.keeps(info.partition_columns, [r[i] for i in at])]


def assert_selects(spark: SparkSession, info: TableInfo, rows: list[tuple[Any, ...]],
                   partitions: dict[str, list[str]], expected: list[tuple[Any, ...]]) -> None:
    df = spark.createDataFrame(rows, info.schema)
    selection = select_partitions(info, partitions, False)
    assert selection.condition is not None
    assertDataFrameEqual(df.where(selection.condition), spark.createDataFrame(expected, info.schema))
    assert driver_kept(info, rows, selection) == expected


def test_no_partitions_selects_everything() -> None:
    assert select_partitions(PARTITIONED, {}, False) == Selection(None, "all partitions")


@pytest.mark.parametrize("name", ["customer_id", "nope"])
def test_non_partition_column_is_rejected(spark: SparkSession, name: str) -> None:
    with pytest.raises(UsageError, match=rf"^--partition column '{name}' is not a partition column of lake\.t "
                                         r"\(partition columns: ds, h, day\)$"):
        select_partitions(PARTITIONED, {name: ["1"]}, False)


def test_table_without_partitions_says_none(spark: SparkSession) -> None:
    with pytest.raises(UsageError, match=r"\(partition columns: none\)$"):
        select_partitions(table([("ds", T.StringType())]), {"ds": ["a"]}, False)


D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
ROWS = [
    (1, "a", 7, D1),
    (2, "a", 8, D1),
    (3, "b", 7, D2),
    (4, "c", 7, D1),
    (5, "b", 9, D2),
]


@pytest.mark.parametrize(("partitions", "expected_ids"), [
    ({"h": ["7"]}, [1, 3, 4]),
    ({"h": ["07"]}, [1, 3, 4]),  # an int compared as an int, not as text
    ({"day": ["2024-01-02"]}, [3, 5]),
    ({"ds": ["a", "b"]}, [1, 2, 3, 5]),  # values of one column OR-ed
    ({"ds": ["a", "b"], "h": ["7"]}, [1, 3]),  # columns AND-ed
    ({"ds": ["b", "c"], "h": ["7", "9"], "day": ["2024-01-02"]}, [3, 5]),
    ({"DS": ["c"]}, [4]),  # the column matched as Spark matches names
    ({"ds": ["z"]}, []),
])
@pytest.mark.spark35
def test_selection_filters_rows(spark: SparkSession, partitions: dict[str, list[str]], expected_ids: list[int]) -> None:
    assert_selects(spark, PARTITIONED, ROWS, partitions, [r for r in ROWS if r[0] in expected_ids])


@pytest.mark.parametrize(("column", "value", "type_name"), [
    ("h", "x", "int"), ("h", "7.5", "int"), ("day", "2024-13-01", "date"), ("day", "yesterday", "date"),
])
def test_value_not_of_the_column_type_is_rejected(spark: SparkSession, column: str, value: str, type_name: str) -> None:
    with pytest.raises(UsageError, match=rf"^--partition {column}={re.escape(repr(value))}: not a valid {type_name}"):
        select_partitions(PARTITIONED, {column: [value]}, False)


@pytest.mark.parametrize(("data_type", "value", "literal", "other"), [
    (T.LongType(), "-3", -3, 3),
    (T.DoubleType(), "2.5", 2.5, 2.0),
    (T.DecimalType(5, 2), "1.25", decimal.Decimal("1.25"), decimal.Decimal("1.50")),
    (T.BooleanType(), "TRUE", True, False),
    (T.TimestampType(), "2024-01-01 06:30:00", dt.datetime(2024, 1, 1, 6, 30), dt.datetime(2024, 1, 1, 6, 31)),
])
def test_typed_literals_select_by_value(
    spark: SparkSession, data_type: T.DataType, value: str, literal: Any, other: Any
) -> None:
    info = table([("id", T.LongType()), ("p", data_type)], ["p"])
    assert selected(spark, info, [(1, literal), (2, other), (3, None)], {"p": [value]}) == [(1, literal)]


TRICKY = ["a'b", "x", "a'b\" or 1=1", "a'b' OR '1'='1", "`ds`", "a\\'b"]


@pytest.mark.parametrize("value", TRICKY)
def test_value_with_quotes_is_a_literal(spark: SparkSession, value: str) -> None:
    info = table([("id", T.LongType()), ("ds", T.StringType())], ["ds"])
    rows = [(i, v) for i, v in enumerate(TRICKY)]
    assert_selects(spark, info, rows, {"ds": [value]}, [r for r in rows if r[1] == value])


def test_quoted_value_keeps_only_its_row(spark: SparkSession) -> None:
    info = table([("id", T.LongType()), ("ds", T.StringType())], ["ds"])
    rows = [(1, "a'b"), (2, "x"), (3, "a'b\" or 1=1")]
    assert_selects(spark, info, rows, {"ds": ["a'b"]}, [(1, "a'b")])


@pytest.mark.parametrize(("partitions", "text"), [
    ({"ds": ["a"]}, "ds=a"),
    ({"ds": ["a", "b"]}, "ds=a or ds=b"),
    ({"ds": ["a"], "h": ["7"]}, "ds=a and h=7"),
    ({"ds": ["a", "b"], "h": ["7"]}, "(ds=a or ds=b) and h=7"),
    ({"h": ["7", "8"], "ds": ["a", "b"]}, "(h=7 or h=8) and (ds=a or ds=b)"),
    ({"DS": ["a'b"]}, "ds=a'b"),
])
def test_selection_text(spark: SparkSession, partitions: dict[str, list[str]], text: str) -> None:
    assert select_partitions(PARTITIONED, partitions, False).text == text


def test_one_column_named_in_two_cases_is_or_ed_or_refused(spark: SparkSession) -> None:
    try:
        ids = [r[0] for r in selected(spark, PARTITIONED, ROWS, {"ds": ["a"], "DS": ["b"]})]
    except UsageError:
        return
    assert sorted(ids) == [1, 2, 3, 5]


# --- the whole plan -------------------------------------------------------------------------------------------------

def test_build_plan(spark: SparkSession) -> None:
    sig = signature(ColSpec("double", "Tenure"), ColSpec("double", "Spend"), ColSpec("string", "note", required=False),
                    outputs=[ColSpec("double")])
    plan = build(FEATURES, ModelFacts(sig), {"ds": ["2024-01-01"]})
    assert plan.features == (FeatureColumn("Tenure", "tenure", T.DoubleType()),
                             FeatureColumn("Spend", "spend", T.DoubleType()))
    assert plan.outputs == struct(("prediction", T.DoubleType()))
    assert plan.output_schema.fieldNames() == ["customer_id", "tenure", "spend", "prediction", *LINEAGE_NAMES,
                                               "input_fingerprint", "ds"]
    assert plan.partition_columns == ("ds",)
    assert plan.selection.text == "ds=2024-01-01"
    assert (plan.tensor, plan.checked) == (None, ())


@pytest.mark.parametrize("days", [3, 40])  # a CASE up to 32 partitions, a broadcast join beyond
def test_each_row_gets_its_own_partitions_fingerprint(spark: SparkSession, days: int) -> None:
    from spark_jobs.planning import partitions

    table = TableInfo("lake.t", T.StructType([T.StructField("id", T.LongType()), T.StructField("ds", T.DateType()),
                                               T.StructField("region", T.StringType())]), ("ds", "region"))
    start = dt.date(2026, 1, 1)
    rows = [(i, start + dt.timedelta(days=i % days), None if i % 2 else "eu") for i in range(2 * days + 6)]
    prints = {(start + dt.timedelta(days=d), r): f"files={d};region={r}" for d in range(days) for r in ("eu", None)}
    df = spark.createDataFrame(rows, table.schema)
    expected = spark.createDataFrame([(*r, prints[(r[1], r[2])]) for r in rows],
                                     "id bigint, ds date, region string, input_fingerprint string")
    assertDataFrameEqual(df.transform(partitions.with_fingerprints, table, prints), expected)


def test_scan_tells_what_sparks_own_listing_tells(spark: SparkSession, source: str, tmp_path: Path) -> None:
    """Files listed under the catalog's locations and their footers read in one call give each partition the
    fingerprint, rows and dictionary-less columns that Spark's own listing of its files gives: values Hive
    escapes, a null partition, more files than footers read (an estimate), a location of its own, files that
    Spark's readers skip, a file that is not Parquet; a view falls back to Spark's listing."""
    from py4j.protocol import Py4JJavaError

    from spark_jobs import compat, fs
    from spark_jobs.planning import partitions, tables

    rows = [(i, float(i) * 0.5, ("50%_/x", "it's", None)[i % 3]) for i in range(300)]
    df = spark.createDataFrame(rows, "id bigint, x double, p string")
    df.repartition(20).write.partitionBy("p").saveAsTable("lake.scanned")  # 20 files in each partition
    own = tmp_path / "its own 50% place"
    df.where("p = 'it''s'").drop("p").coalesce(1).write.parquet(str(own))
    compat.sql(spark, "ALTER TABLE IDENTIFIER(:t) ADD PARTITION (p = :v) LOCATION :where",
               {"t": "lake.scanned", "v": "elsewhere", "where": str(own)})
    (own / "_skipped.parquet").write_bytes(b"not read")
    (own / ".hidden").write_bytes(b"not read")
    spark.sql("CREATE VIEW lake.scanned_view AS SELECT * FROM lake.scanned")
    try:
        for name, declared in (("lake.scanned", ()), ("lake.scanned_view", ("p",))):
            info = tables.source(spark, name, declared, {})
            chosen = partitions.listed(spark, info)
            assert len(chosen) == 4
            spark.catalog.refreshTable(name)
            expected = {v: partitions.fingerprint(spark, info, v) for v in chosen}
            assert partitions.scan(spark, info, chosen) == expected
            assert all((s.rows is None) == bool(declared) for s in expected.values())  # a view's: not read
        (own / "not-parquet.txt").write_bytes(b"text")  # not all Parquet: no rows, no columns told
        spark.catalog.refreshTable("lake.scanned")
        info = tables.source(spark, "lake.scanned", (), {})
        chosen = partitions.listed(spark, info)
        found = partitions.scan(spark, info, chosen)
        assert found == {v: partitions.fingerprint(spark, info, v) for v in chosen}
        assert found[("elsewhere",)].rows is None and found[("elsewhere",)].fingerprint.startswith("files=2;")
        (own / "not-parquet.txt").rename(own / "broken.parquet")  # a footer that cannot be read: rows not told
        spark.catalog.refreshTable("lake.scanned")
        found = partitions.scan(spark, info, chosen)
        assert found == {v: partitions.fingerprint(spark, info, v) for v in chosen}
        assert found[("elsewhere",)].rows is None and found[("it's",)].rows == 100
        with pytest.raises(Py4JJavaError):  # counting rows (the audit's) does not pass over it
            fs.parquet_row_counts(spark, str(own))
    finally:
        spark.sql("DROP VIEW IF EXISTS lake.scanned_view")
        spark.catalog.dropTable("lake.scanned", ifExists=True)


def test_listings_and_footers_are_the_same_every_way(spark: SparkSession, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A local disk's listings and footers read by the operating system and pyarrow, the project's JVM helper
    (a listing of many folders, or many footers, in one call) and Hadoop's and Parquet's classes asked file by
    file from Python all give the same: the same files, sizes and times, less what Spark's readers skip, under
    folders Hive escapes; the same rows and dictionary-less columns; a footer that cannot be read is unknown,
    or an error where rows must be counted."""
    from py4j.protocol import Py4JJavaError

    from spark_jobs import fs

    root = tmp_path / "a 50% place"
    df = spark.createDataFrame([(i, float(i), ("50%_/x", "it's", "plain")[i % 3]) for i in range(90)],
                               "id bigint, x double, p string")
    df.repartition(3).write.partitionBy("p").parquet(str(root))
    (root / "p=plain" / "_skipped.parquet").write_bytes(b"not read")
    (root / "p=plain" / ".hidden").write_bytes(b"not read")
    (root / "p=plain" / "part-9.parquet._COPYING_").write_bytes(b"not read")
    (root / "_temporary").mkdir()
    (root / "_temporary" / "part-0.parquet").write_bytes(b"not read")
    roots = [f"file:{root}", f"file:{root}/p=plain", f"file:{tmp_path}/nothing here"]

    def every_way(what: Callable[[], Any]) -> list[Any]:
        found = [what()]
        with monkeypatch.context() as m:
            m.setattr(fs, "local_path", lambda path: None)
            assert fs._Helper.of(spark) is not None  # the jar is built for the tests
            found.append(what())
            m.setattr(fs._Helper, "of", classmethod(lambda cls, spark: None))
            found.append(what())
        return found

    listed = every_way(lambda: [sorted(files, key=lambda f: f.path) for files in fs.data_files_in(spark, roots)])
    assert listed[0] == listed[1] == listed[2]
    assert [len(files) for files in listed[0]] == [9, 3, 0]
    assert {f.path.split("/")[-2] for f in listed[0][0]} == {"p=50%25_%2Fx", "p=it%27s", "p=plain"}
    files = listed[0][0]
    read = every_way(lambda: fs.parquet_facts(spark, files, len(files), plain_of={0, 4}))
    assert read[0] == read[1] == read[2] and sum(f.rows or 0 for f in read[0]) == 90
    assert [f.plain is not None for f in read[0]] == [i in (0, 4) for i in range(9)]
    (root / "p=plain" / "broken.parquet").write_bytes(b"not a footer")
    files = sorted(fs.data_files(spark, f"file:{root}/p=plain"), key=lambda f: f.path)
    read = every_way(lambda: fs.parquet_facts(spark, files, len(files)))
    assert read[0] == read[1] == read[2] and [f.rows is None for f in read[0]] == [True, False, False, False]

    def counted() -> type[BaseException] | None:
        try:
            fs.parquet_row_counts(spark, f"file:{root}/p=plain")
        except Exception as e:
            return type(e)
        return None

    assert every_way(counted) == [Py4JJavaError] * 3


def test_describe_finds_a_missing_table_without_analysing_its_name(spark: SparkSession, source: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A table that does not exist (every first run's output) is found missing by the catalog alone: Spark 4
    analyses `db.t` it cannot find as a file read of data source `db`, whose look-up among Python data sources
    starts a Python worker. An existing table is analysed once, and its rows are that analysis's."""
    analysed: list[str] = []
    table = SparkSession.table

    def recorded(self: SparkSession, name: str) -> Any:
        analysed.append(name)
        return table(self, name)

    monkeypatch.setattr(SparkSession, "table", recorded)
    assert describe(spark, "lake.no_such_table") is None
    found = describe(spark, source)
    assert analysed == [source] and found is not None and found.rows(spark) is found.stored
    assertDataFrameEqual(found.read(spark), spark.read.table(source))


def test_a_selection_fetches_only_its_partitions_from_the_metastore(spark: SparkSession, source: str) -> None:
    """The selection's filter reaches the metastore (Spark hands it `=`, never `<=>`): a run of one day of a
    long history fetches that day's partition, not all of them, and reads exactly its rows; values Hive
    escapes and the NULL partition select as before."""
    from spark_jobs.planning import tables

    fetched = spark.sparkContext._jvm.org.apache.spark.metrics.source.HiveCatalogMetrics.METRIC_PARTITIONS_FETCHED()
    values = ["a", "it's 50%/x", "b=c", None, *[f"d{i:02d}" for i in range(12)]]
    rows = [(i, v) for i, v in enumerate(values * 2)]
    spark.createDataFrame(rows, "id bigint, p string").write.partitionBy("p").saveAsTable("lake.long_history")
    try:
        info = tables.source(spark, "lake.long_history", (), {})
        # the NULL partition's filter (`IS NULL`) Spark does not hand to the metastore: it fetches them all
        for chosen, count in ((["d03"], 1), (["it's 50%/x", "b=c"], 2), (["a", NULL_PARTITION], len(values))):
            selection = select_partitions(info, {"p": chosen}, False)
            before = fetched.getCount()
            got = info.read(spark, selection.condition)
            wanted = [r for r in rows if (r[1] if r[1] is not None else NULL_PARTITION) in chosen]
            assertDataFrameEqual(got, spark.createDataFrame(wanted, "id bigint, p string"))
            assert fetched.getCount() - before == count, chosen
    finally:
        spark.catalog.dropTable("lake.long_history", ifExists=True)


def test_folder_names_are_the_ones_spark_writes_or_none(spark: SparkSession, source: str, tmp_path: Path) -> None:
    """`partitions.folder_of` names a partition's folder only where it is the one Spark writes: plain text,
    integers and dates; values Spark escapes or casts in ways of its own, and the NULL partition, get None."""
    from spark_jobs.planning import partitions, tables

    rows = [(1, "a", 1, D1), (2, "x.y-z_9", -42, dt.date(2024, 2, 29)), (3, "it's 50%", 7, D2),
            (4, None, None, None), (5, "a=b/c", 2**40, dt.date(999, 1, 1)), (6, "b", 0, D2)]
    df = spark.createDataFrame(rows, "id int, s string, n bigint, d date")
    df.write.partitionBy("s", "n", "d").saveAsTable("lake.folders")
    try:
        info = tables.source(spark, "lake.folders", (), {})
        df.write.partitionBy("s", "n", "d").parquet(str(tmp_path / "w"))
        written = {str(p.parent.relative_to(tmp_path / "w")) for p in (tmp_path / "w").rglob("*.parquet")}
        named = {r[0]: partitions.folder_of(info, (r[1], r[2], r[3])) for r in rows}
        assert {k for k, v in named.items() if v is not None} == {1, 2, 6}
        assert all(v in written for v in named.values() if v is not None), (named, written)
    finally:
        spark.catalog.dropTable("lake.folders", ifExists=True)
