"""The scoring job end to end, in process: real Spark, real Hive metastore, real MLflow registry."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from chispa import assert_df_equality
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs import compat
from spark_jobs.cli import main
from spark_jobs.publishing import encoding
from spark_jobs.publishing import output as output_tables
from tests.support import (
    DAYS,
    FEATURES,
    RUN_COLUMNS,
    SCHEMA,
    base,
    create_table,
    expected_scored,
    fit,
    register_sklearn,
    score,
    snapshot,
)


def days(source: DataFrame, *selected: str) -> DataFrame:
    return source.where(F.col("ds").isin(list(selected)))


def run_id(model_name: str, version: str) -> str:
    return str(MlflowClient().get_model_version(model_name, version).run_id)


@pytest.mark.spark35
@pytest.mark.parametrize("uri, version, day", [("models:/churn_lr@champion", "v1", DAYS[0]),
                                                ("models:/churn_lr/{v2}", "v2", DAYS[1])])
def test_alias_or_version_uri_scores_the_selected_partition_with_that_versions_predictions(
        spark: SparkSession, source: str, output: str, model: dict[str, str], uri: str, version: str,
        day: str) -> None:
    result = score(spark, "--model-uri", uri.format(**model), "--input-table", source, "--output-table", output,
                   "--partition", f"ds={day}")
    assert (result.lineage.model_name, result.lineage.model_version) == ("churn_lr", model[version])
    assert result.lineage.model_run_id == run_id("churn_lr", model[version])
    actual = spark.table(output)
    expected = expected_scored(spark, days(spark.table(source), day), actual,
                               f"models:/churn_lr/{model[version]}", FEATURES, result.lineage)
    assertDataFrameEqual(actual, expected)


def test_output_keeps_input_columns_and_partitioning(spark: SparkSession, source: str, output: str,
                                                     model: dict[str, str]) -> None:
    score(spark, "--model-uri", "models:/churn_lr@champion", "--input-table", source, "--output-table", output,
          "--partition", f"ds={DAYS[0]}")
    columns = spark.catalog.listColumns(output)
    assert [(c.name, c.dataType, c.isPartition) for c in columns] == [
        ("customer_id", "bigint", False), ("tenure", "int", False), ("spend", "decimal(10,2)", False),
        ("visits", "bigint", False), ("segment", "string", False), ("prediction", "double", False),
        ("model_name", "string", False), ("model_version", "string", False), ("model_run_id", "string", False),
        ("scored_at", "timestamp", False), ("scoring_run_id", "string", False), ("input_fingerprint", "string", False),
        ("ds", "string", True),
    ]


def _dictionary_pages(folder: str) -> dict[str, bool]:
    """Per top-level column: whether every Parquet file in the folder stores it with a dictionary page."""
    import pyarrow.parquet as pq

    found: dict[str, bool] = {}
    for f in Path(folder.removeprefix("file:")).glob("*.parquet"):
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                chunk = meta.row_group(g).column(c)
                found[chunk.path_in_schema] = found.get(chunk.path_in_schema, True) and chunk.has_dictionary_page
    return found


def test_columns_the_input_stores_without_a_dictionary_are_written_without_one(
        spark: SparkSession, source: str, output: str, model: dict[str, str]) -> None:
    """The input's writer gave up tenure's dictionary (here: told to): the scored table's files skip it too,
    keep the others' dictionaries, and hold the same rows as a run over an input with every dictionary."""
    plain, dictionaries = "lake.features_plain_tenure", "lake.features_dictionaries"
    # repeated values: Parquet keeps a dictionary where it makes the column smaller
    rows = [(i, i % 5, Decimal(f"{i % 9}.25"), i % 7, f"s{i % 2}", DAYS[0]) for i in range(300)]
    create_table(spark, dictionaries, rows, SCHEMA)
    (spark.table(dictionaries).write.mode("overwrite").partitionBy("ds").format("parquet")
     .option("parquet.enable.dictionary#tenure", "false").saveAsTable(plain))
    assert _dictionary_pages(output_tables.location(spark, plain, {"ds": DAYS[0]}))["tenure"] is False
    assert _dictionary_pages(output_tables.location(spark, dictionaries, {"ds": DAYS[0]}))["tenure"] is True
    other = f"{output}_all_dictionaries"
    try:
        score(spark, *base(plain, output), "--partition", f"ds={DAYS[0]}")
        score(spark, *base(dictionaries, other), "--partition", f"ds={DAYS[0]}")
        pages = _dictionary_pages(output_tables.location(spark, output, {"ds": DAYS[0]}))
        assert pages["tenure"] is False
        assert all(pages[c] for c in ("visits", "segment", "model_name"))
        assert _dictionary_pages(output_tables.location(spark, other, {"ds": DAYS[0]}))["tenure"] is True
        assert_df_equality(spark.table(output).drop(*RUN_COLUMNS, "input_fingerprint"),
                           spark.table(other).drop(*RUN_COLUMNS, "input_fingerprint"), ignore_row_order=True)
    finally:
        for table in (plain, dictionaries, other):
            spark.catalog.dropTable(table, ifExists=True)


def test_a_dictionary_setting_of_the_users_own_decides(spark: SparkSession) -> None:
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    assert encoding.writer_options(spark, {"Tenure", "spend"}, ["tenure", "visits"]) == {
        "parquet.enable.dictionary#tenure": "false"}
    for key in ("parquet.enable.dictionary", "parquet.enable.dictionary#tenure"):
        conf.set(key, "true")
        try:
            assert encoding.writer_options(spark, {"tenure"}, ["tenure"]) == {}
        finally:
            conf.unset(key)


def test_no_partition_flag_scores_whole_table(spark: SparkSession, source: str, output: str,
                                              model: dict[str, str]) -> None:
    result = score(spark, "--model-uri", "models:/churn_lr@champion", "--input-table", source,
                   "--output-table", output)
    assert [p.values for p in result.staged if p.outcome == "scored"] == [(d,) for d in DAYS]
    actual = spark.table(output)
    expected = expected_scored(spark, spark.table(source), actual, f"models:/churn_lr/{model['v1']}",
                               FEATURES, result.lineage)
    assertDataFrameEqual(actual, expected)


def test_rerun_replaces_partition_without_duplicates(spark: SparkSession, source: str, output: str,
                                                     model: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("--model-uri", "models:/churn_lr@champion", "--input-table", source, "--output-table", output,
            "--partition", f"ds={DAYS[2]}")
    first = score(spark, *args)
    before = snapshot(spark.table(output))
    statements: list[str] = []
    run_sql = compat.sql
    monkeypatch.setattr(compat, "sql", lambda s, text, a=None: statements.append(text) or run_sql(s, text, a))
    second = score(spark, *args)
    # the catalog has the partition: it is moved with one statement (not an ADD that fails first)
    assert [t for t in statements if t.startswith("ALTER TABLE") and "PARTITION (`ds`" in t] == [
        "ALTER TABLE IDENTIFIER(:table) PARTITION (`ds` = :p0) SET LOCATION :location"]
    assert second.lineage.scoring_run_id != first.lineage.scoring_run_id
    actual = spark.table(output)
    assert_df_equality(actual, before, ignore_row_order=True, ignore_columns=RUN_COLUMNS)
    assert actual.select("scoring_run_id").distinct().collect() == [(second.lineage.scoring_run_id,)]


def test_second_partition_leaves_first_untouched(spark: SparkSession, source: str, output: str,
                                                 model: dict[str, str]) -> None:
    base = ("--model-uri", "models:/churn_lr@champion", "--input-table", source, "--output-table", output)
    score(spark, *base, "--partition", f"ds={DAYS[0]}")
    first = spark.table(output).collect()
    second = score(spark, *base, "--partition", f"ds={DAYS[1]}")
    actual = spark.table(output)
    assertDataFrameEqual(actual.where(F.col("ds") == DAYS[0]), first)
    expected = expected_scored(spark, days(spark.table(source), DAYS[1]), actual,
                               f"models:/churn_lr/{model['v1']}", FEATURES, second.lineage)
    assertDataFrameEqual(actual.where(F.col("ds") == DAYS[1]), expected)


def test_alias_is_resolved_once_per_run(spark: SparkSession, source: str, output: str, tracking_uri: str) -> None:
    """Moving the alias between runs changes the next run's version, never the rows already published."""
    v1 = register_sklearn(*fit((1.0, 1.0, 1.0), seed=3), "churn_moving", alias="champion")
    base = ("--model-uri", "models:/churn_moving@champion", "--input-table", source, "--output-table", output)
    score(spark, *base, "--partition", f"ds={DAYS[0]}")
    v2 = register_sklearn(*fit((5.0, -1.0, 0.0), seed=4), "churn_moving", alias="champion")
    second = score(spark, *base, "--partition", f"ds={DAYS[1]}")
    assert second.lineage.model_version == v2 != v1
    versions = spark.table(output).groupBy("ds").agg(F.collect_set("model_version").alias("v"))
    assertDataFrameEqual(versions, [(DAYS[0], [v1]), (DAYS[1], [v2])])
    expected = expected_scored(spark, days(spark.table(source), DAYS[1]), spark.table(output),
                               f"models:/churn_moving/{v2}", FEATURES, second.lineage)
    assertDataFrameEqual(spark.table(output).where(F.col("ds") == DAYS[1]), expected)


@pytest.fixture(scope="module")
def regional(spark: SparkSession) -> str:
    spark.catalog.createDatabase("lake", ifNotExists=True)
    rows = [(i, i, Decimal(i), i, "s", DAYS[i % 3], ["eu", "us"][i % 2]) for i in range(18)]
    create_table(spark, "lake.regional", rows, SCHEMA + ", region string", partition_by=("ds", "region"))
    return "lake.regional"


@pytest.mark.spark35
def test_partition_values_or_and_columns_and(spark: SparkSession, regional: str, output: str,
                                             model: dict[str, str]) -> None:
    result = score(spark, "--model-uri", "models:/churn_lr@champion", "--input-table", regional,
                   "--output-table", output, "--partition", f"ds={DAYS[0]}", "--partition", f"ds={DAYS[2]}",
                   "--partition", "region=eu")
    assert result.selection == f"(ds={DAYS[0]} or ds={DAYS[2]}) and region=eu"
    wanted = spark.table(regional).where(F.col("ds").isin(DAYS[0], DAYS[2]) & (F.col("region") == "eu"))
    actual = spark.table(output)
    expected = expected_scored(spark, wanted, actual, f"models:/churn_lr/{model['v1']}", FEATURES, result.lineage)
    assertDataFrameEqual(actual, expected)


def test_small_batches_score_every_row_and_leave_the_sessions_arrow_settings(spark: SparkSession, source: str,
                                                                           output: str, model: dict[str, str]) -> None:
    """Many Arrow batches per partition give MLflow's predictions row for row; the run's batch settings apply
    to its own write only (a Databricks job shares its session with whatever else runs in it)."""
    rows_key, bytes_key = "spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.execution.arrow.maxBytesPerBatch"
    spark.conf.set(rows_key, "777")
    before = (spark.conf.get(rows_key), spark.conf.get(bytes_key))
    try:
        result = score(spark, "--model-uri", "models:/churn_lr@champion", "--input-table", source,
                       "--output-table", output, "--batch-size", "3")
        assert (spark.conf.get(rows_key), spark.conf.get(bytes_key)) == before
    finally:
        spark.conf.unset(rows_key)
    actual = spark.table(output)
    expected = expected_scored(spark, spark.table(source), actual, f"models:/churn_lr/{model['v1']}", FEATURES,
                               result.lineage)
    assertDataFrameEqual(actual, expected)


def test_main_prints_summary_and_exits_0(spark: SparkSession, source: str, output: str, model: dict[str, str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--model-uri", "models:/churn_lr@champion", "--input-table", source, "--output-table", output,
                 "--partition", f"ds={DAYS[1]}"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"scored {source} (ds={DAYS[1]}) -> {output}" in out
    assert f"churn_lr version {model['v1']}" in out
    assert f"ds={DAYS[1]}: 4 scored, 0 rejected" in out
    assert "rows read: 4, scored: 4, rejected: 0" in out


def test_case_sensitive_session_does_not_match_other_case(spark: SparkSession, source: str, output: str,
                                                          model: dict[str, str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spark.conf.set("spark.sql.caseSensitive", "true")
    try:
        code = main(["--model-uri", "models:/churn_lr@champion", "--input-table", source, "--output-table", output])
    finally:
        spark.conf.set("spark.sql.caseSensitive", "false")
    assert code == 2
    assert "has no column 'Tenure'" in capsys.readouterr().err
    assert not spark.catalog.tableExists(output)




@pytest.mark.spark35
def test_unpartitioned_table_is_replaced_whole_on_each_run(spark: SparkSession, source: str, output: str,
                                                           model: dict[str, str]) -> None:
    spark.table(source).drop("ds").write.mode("overwrite").saveAsTable("lake.flat")
    args = ("--model-uri", "models:/churn_lr@champion", "--input-table", "lake.flat", "--output-table", output)
    for _ in range(2):  # the third run prunes the first run's folder: the published one must survive
        score(spark, *args)
    third = score(spark, *args)
    actual = spark.table(output)
    expected = expected_scored(spark, spark.table("lake.flat"), actual, f"models:/churn_lr/{model['v1']}",
                               FEATURES, third.lineage)
    assertDataFrameEqual(actual, expected)
