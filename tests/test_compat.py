"""The Spark 3.5 / 4.x seams (udfs.compat, spark_jobs.compat) give the same results on both lines: `make test`
runs these on PySpark 4 and on PySpark 3.5, where the fallbacks are the code that runs."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from spark_jobs import compat
from udfs.compat import ARROW_UDF, limitations, sql_type, try_cast, type_from_ddl

pytestmark = pytest.mark.spark35

# Values that would end or bend a SQL string literal if written into one carelessly.
HOSTILE = ["it's", "back\\slash", "ends with \\", "\\'); DROP TABLE lake.features; --", "uni \\u0041 code", "50%_"]


def test_bind_writes_values_as_literals_and_keeps_names_as_parameters() -> None:
    text, bound = compat.bind("ALTER TABLE IDENTIFIER(:table) PARTITION (`ds` = :p0) SET LOCATION :location",
                              {"table": "lake.t", "p0": "2026-11-23", "location": "file:/w/it's"})
    assert text == "ALTER TABLE IDENTIFIER(:table) PARTITION (`ds` = '2026-11-23') SET LOCATION 'file:/w/it\\'s'"
    assert bound == {"table": "lake.t"}


def test_bind_leaves_quoted_text_and_casts_alone() -> None:
    assert compat.bind("SELECT ':x', `a:b`, c::int, :x", {"x": 1}) == ("SELECT ':x', `a:b`, c::int, 1", {})


def test_literals_read_back_as_the_values(spark: SparkSession) -> None:
    values: list[Any] = [*HOSTILE, 7, -(2**40), 1.5, Decimal("-12.340"), True, None, dt.date(2026, 11, 23)]
    row = spark.sql("SELECT " + ", ".join(f"{compat.literal(v)} AS c{i}" for i, v in enumerate(values))).first()
    assert row is not None and list(row) == values


def test_partition_statements_keep_a_hostile_value_whole(spark: SparkSession, source: str, tmp_path: Path) -> None:
    """The statements write-audit-publish runs, with values bound (Spark 4.1+) or written as literals (3.5)."""
    table = "lake.compat_partitions"
    compat.create_database(spark, "lake")
    compat.drop_table(spark, table)
    spark.createDataFrame([(1, "a")], "id int, s string").write.partitionBy("s").format("parquet").saveAsTable(table)
    try:
        for i, value in enumerate(HOSTILE):
            folder = (tmp_path / f"p{i}").as_uri()
            compat.sql(spark, "ALTER TABLE IDENTIFIER(:table) ADD IF NOT EXISTS PARTITION (`s` = :p0) LOCATION :loc",
                       {"table": table, "p0": value, "loc": folder})
            rows = compat.sql(spark, "DESCRIBE TABLE EXTENDED IDENTIFIER(:table) PARTITION (`s` = :p0)",
                              {"table": table, "p0": value}).collect()
            assert next(r.data_type for r in rows if r.col_name == "Location").rstrip("/").endswith(f"/p{i}")
        listed = {unquote(p.split("=", 1)[1]) for p in compat.list_partitions(spark, table)}
        assert listed == {"a", *HOSTILE}
        compat.sql(spark, "ALTER TABLE IDENTIFIER(:table) DROP IF EXISTS PARTITION (`s` = :p0)",
                   {"table": table, "p0": HOSTILE[3]})
        assert spark.table(source).count() == 12  # the value dropped one partition, nothing else
        assert {unquote(p.split("=", 1)[1]) for p in compat.list_partitions(spark, table)} == listed - {HOSTILE[3]}
    finally:
        compat.drop_table(spark, table)


def test_try_cast_gives_null_where_a_value_does_not_convert(spark: SparkSession) -> None:
    name = "odd `name"
    df = spark.createDataFrame([("7",), ("1.5",), ("x",), (None,)], T.StructType([T.StructField(name, T.StringType())]))
    rows = df.select(try_cast(name, T.IntegerType()).alias("i"), try_cast(name, T.DoubleType()).alias("d"),
                     try_cast(name, T.BooleanType()).alias("b")).collect()
    assert [tuple(r) for r in rows] == [(7, 7.0, None), (None, 1.5, None), (None, None, None), (None, None, None)]


def test_types_from_ddl_and_back(spark: SparkSession) -> None:
    assert type_from_ddl("double") == T.DoubleType()
    assert type_from_ddl("label string, score double") == T.StructType(
        [T.StructField("label", T.StringType()), T.StructField("score", T.DoubleType())])
    nested = T.StructType([T.StructField("a`b c", T.ArrayType(T.DecimalType(10, 2))),
                           T.StructField("m", T.MapType(T.StringType(), T.LongType()))])
    assert type_from_ddl(sql_type(nested)) == nested


def test_what_this_spark_lacks_is_said_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark 3.5 and 4.0 have no Arrow UDFs: the run's log says so, once per process; 4.1+ says nothing."""
    lines = limitations()
    assert ["Arrow UDFs need Spark 4.1" in line for line in lines] == ([] if ARROW_UDF else [True])
    monkeypatch.setattr(compat, "_noted", False)
    with caplog.at_level(logging.INFO, logger="score_table"):
        for _ in range(2):
            compat.note_limitations(logging.getLogger("score_table"))
    assert [r.getMessage() for r in caplog.records if r.name == "score_table"] == lines


def test_table_location_is_the_one_describe_prints(spark: SparkSession, source: str, tmp_path: Path) -> None:
    """From the session catalog's metadata, as DESCRIBE TABLE EXTENDED gives it: a path the URI escapes too."""
    odd = tmp_path / "a dir with 50% & spaces"
    spark.sql("CREATE TABLE lake.located (x int) USING parquet LOCATION :where", args={"where": str(odd)}) \
        if compat.PARAMETERS_EVERYWHERE else \
        spark.sql(f"CREATE TABLE lake.located (x int) USING parquet LOCATION {compat.literal(str(odd))}")
    try:
        for table in (source, "lake.located"):
            described = spark.sql("DESCRIBE TABLE EXTENDED IDENTIFIER(:t)", args={"t": table}).collect()
            assert compat.table_location(spark, table) == next(str(r.data_type) for r in described
                                                               if r.col_name == "Location")
        assert compat.table_location(spark, "lake.no_such_table") is None
    finally:
        spark.catalog.dropTable("lake.located", ifExists=True)


def test_partition_location_is_the_one_describe_prints(spark: SparkSession, source: str, tmp_path: Path) -> None:
    """From the session catalog's partition metadata: values Hive escapes in the name, a partition with a
    location of its own (escaped in the URI), a null partition; None for a partition or table not there."""
    spark.createDataFrame([(1, "50%_/x"), (2, "it's"), (3, None)], "x int, p string") \
        .write.partitionBy("p").saveAsTable("lake.parted")
    own = tmp_path / "its own 50% place"
    compat.sql(spark, "ALTER TABLE IDENTIFIER(:t) ADD PARTITION (p = :v) LOCATION :where",
               {"t": "lake.parted", "v": "elsewhere", "where": str(own)})
    try:
        names = compat.list_partitions(spark, "lake.parted")
        assert len(names) == 4
        for name in names:
            value = unquote(name.split("=", 1)[1])
            found = compat.partition_location(spark, "lake.parted", name)
            if value == "__HIVE_DEFAULT_PARTITION__":
                assert found is not None and found.endswith("/p=__HIVE_DEFAULT_PARTITION__")
                continue
            described = compat.sql(spark, "DESCRIBE TABLE EXTENDED IDENTIFIER(:t) PARTITION (p = :v)",
                                   {"t": "lake.parted", "v": value}).collect()
            assert found == next(str(r.data_type) for r in described if r.col_name == "Location")
        assert compat.partition_location(spark, "lake.parted", "p=nowhere") is None
        assert compat.partition_location(spark, "lake.no_such_table", "p=x") is None
        # all of them in one read: the same locations, by the same names
        assert compat.partition_locations(spark, "lake.parted", ["p"]) == \
            {name: compat.partition_location(spark, "lake.parted", name) for name in names}
        assert compat.partition_locations(spark, "lake.no_such_table", ["p"]) == {}
    finally:
        spark.catalog.dropTable("lake.parted", ifExists=True)


def test_observed_numbers_are_the_observations_own(spark: SparkSession, tmp_path: Path) -> None:
    """The counts read from the JVM's row are the ones `Observation.get` gives, beside a collected list that
    stays in the JVM until asked for; and an independent count of the same rows."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    df = spark.range(0, 1000).withColumn("x", F.when(F.col("id") % 7 == 0, F.lit(None)).otherwise(F.col("id")))
    observed = Observation("counts")
    df.observe(observed, F.count(F.lit(1)).alias("rows"), F.count("x").alias("seen"),
               F.collect_list(F.when(F.col("id") < 3, F.struct("id", "x"))).alias("sample")
               ).write.parquet(str(tmp_path / "out"))
    found = compat.observed_numbers(observed, ("rows", "seen"))
    assert found == {"rows": 1000, "seen": df.where(F.col("x").isNotNull()).count()}
    everything = observed.get
    assert found == {"rows": everything["rows"], "seen": everything["seen"]}
    if compat.OBSERVED_IN_PYTHON:  # Spark 3.5's get gives the collected list as a Java object
        assert sorted(r["id"] for r in everything["sample"]) == [0, 1, 2]


def test_partition_locations_name_partitions_of_two_columns_as_hive_does(spark: SparkSession) -> None:
    """The names of one read of all the partitions follow the partition columns' order and Hive's escaping,
    as `list_partitions` gives them."""
    spark.createDataFrame([(1, "a/b", 7), (2, "c d", None)], "x int, p string, q int") \
        .write.partitionBy("p", "q").saveAsTable("lake.parted2")
    try:
        names = compat.list_partitions(spark, "lake.parted2")
        assert len(names) == 2 and all(n.startswith("p=") and "/q=" in n for n in names)
        assert compat.partition_locations(spark, "lake.parted2", ["p", "q"]) == \
            {name: compat.partition_location(spark, "lake.parted2", name) for name in names}
    finally:
        spark.catalog.dropTable("lake.parted2", ifExists=True)
