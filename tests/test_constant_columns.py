"""The staging write's constant columns (spark_jobs.publishing.constant_columns): the files this package's JVM
writer makes, with the columns written per page, against the files Spark makes with them in every row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pyspark
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from spark_jobs.publishing import constant_columns
from spark_jobs.publishing.constant_columns import ConstantColumns

# Small row groups and pages, so that files have several of each and row groups end partway through a page.
SMALL = {"parquet.block.size": str(32 * 1024), "parquet.page.row.count.limit": "1000",
         "parquet.page.size.row.check.min": "10", "parquet.page.size.row.check.max": "100"}
AT = dt.datetime(2026, 12, 7, 9, 23, 9, 482486, tzinfo=dt.timezone.utc)
CONSTANTS = ConstantColumns(
    T.StructType([T.StructField("model_name", T.StringType()), T.StructField("model_version", T.StringType()),
                  T.StructField("scored_at", T.TimestampType()), T.StructField("model_run_id", T.StringType()),
                  T.StructField("rank", T.LongType())]),
    ("modèle ✓, \"quoted\"", None, AT, "a779e06c49c54beab645cab252f14af5", -7), before="fingerprint")


def _rows(spark: SparkSession, n: int) -> pyspark.sql.DataFrame:
    return (spark.range(n, numPartitions=3)
            .select(F.col("id"), (F.col("id") * 0.5).alias("x"),
                    F.when(F.col("id") % 7 == 0, None).otherwise(F.concat(F.lit("k"), F.col("id"))).alias("key"),
                    F.lit("files=8").alias("fingerprint"), (F.col("id") % 2).cast("int").alias("part"))
            .sortWithinPartitions("part"))


def _files(root: Path, part: int) -> list[Path]:
    return sorted((root / f"part={part}").glob("*.parquet"))


def _written_both_ways(spark: SparkSession, rows: pyspark.sql.DataFrame, constants: ConstantColumns,
                       tmp_path: Path) -> tuple[Path, Path]:
    """`rows` written by the JVM writer (the columns per page) and by Spark with them in every row; both read
    back by Spark as the same rows. The two folders."""
    options = constants.writer_options(rows, ["part"])
    assert options is not None, "the JVM writer does not run here: is the jar built (make jar)?"
    paged, expressed = tmp_path / "paged", tmp_path / "expressed"
    constant_columns.save(rows.write.partitionBy("part").options(**SMALL), str(paged), options)
    rows.transform(constants.add).write.partitionBy("part").options(**SMALL).parquet(str(expressed))
    assertDataFrameEqual(spark.read.parquet(str(paged)), spark.read.parquet(str(expressed)), checkRowOrder=False)
    return paged, expressed


def test_the_jvm_writer_makes_the_files_spark_makes_with_the_columns_in_every_row(spark: SparkSession,
                                                                                    tmp_path: Path) -> None:
    # what Spark reads: every row with its own values and the constants, in the same schema
    paged, expressed = _written_both_ways(spark, _rows(spark, 30_000), CONSTANTS, tmp_path)
    for part in (0, 1):
        a, b = _files(paged, part), _files(expressed, part)
        # what another reader sees: the same columns, types and Spark metadata; each row group's constants
        # have the value, null counts and min/max statistics they would have had in every row
        assert [pq.ParquetFile(f).schema_arrow for f in a] == [pq.ParquetFile(f).schema_arrow for f in b]
        assert [pq.ParquetFile(f).metadata.metadata for f in a] == [pq.ParquetFile(f).metadata.metadata for f in b]
        ta, tb = pq.read_table(a).sort_by("id"), pq.read_table(b).sort_by("id")
        assert ta.equals(tb)
        groups = [m.row_group(g) for m in (pq.ParquetFile(f).metadata for f in a) for g in range(m.num_row_groups)]
        assert len(groups) > len(a), "several row groups per file"
        names = [groups[0].column(c).path_in_schema for c in range(groups[0].num_columns)]
        for group in groups:
            for name, value in zip(CONSTANTS.fields.fieldNames(), CONSTANTS.values, strict=True):
                stats = group.column(names.index(name)).statistics
                assert stats.null_count == (group.num_rows if value is None else 0)
                if isinstance(value, str):
                    assert (stats.min, stats.max) == (value, value)
        # DuckDB reads the page index and the dictionary pages too
        read = duckdb.sql("SELECT model_name, model_version, scored_at, model_run_id, rank, count(*) AS n "
                          "FROM read_parquet(?) GROUP BY ALL", params=[[str(f) for f in a]]).fetchall()
        assert read == [(CONSTANTS.values[0], None, AT.replace(tzinfo=None), CONSTANTS.values[3], -7,
                         sum(g.num_rows for g in groups))]


@pytest.mark.parametrize("value", [dt.datetime(2026, 12, 7), 1.5, True])
def test_values_the_jvm_writer_takes_not_go_in_the_rows(spark: SparkSession, value: object) -> None:
    """A naive time (its zone would be the session's), a double, a boolean: the columns go in every row."""
    kind = {dt.datetime: T.TimestampType(), float: T.DoubleType(), bool: T.LongType()}[type(value)]
    odd = ConstantColumns(T.StructType([T.StructField("c", kind)]), (value,), before="fingerprint")
    assert odd.writer_options(_rows(spark, 10), ["part"]) is None


def test_a_column_of_one_value_per_partition_is_written_per_folder(spark: SparkSession, tmp_path: Path) -> None:
    """The input fingerprint: one value per partition folder, after the constants, in the files the JVM writer
    makes as in those Spark makes with it in every row; a folder without a value fails the write."""
    from py4j.protocol import Py4JJavaError

    from spark_jobs.publishing.constant_columns import PerPartition

    prints = {0: "files=8;bytes=100;newest=1.000", 1: "files=3;bytes=7;newest=2.500"}
    column = F.when(F.col("part") == 0, F.lit(prints[0])).when(F.col("part") == 1, F.lit(prints[1]))
    per = PerPartition("fingerprint", column, {f"part={k}": v for k, v in prints.items()})
    constants = ConstantColumns(CONSTANTS.fields, CONSTANTS.values, before="part", per_partition=per)
    rows = _rows(spark, 30_000).drop("fingerprint")
    paged, expressed = _written_both_ways(spark, rows, constants, tmp_path)
    assert spark.read.parquet(str(paged)).columns[-3:] == ["rank", "fingerprint", "part"]
    for part in (0, 1):
        a, b = _files(paged, part), _files(expressed, part)
        assert [pq.ParquetFile(f).schema_arrow for f in a] == [pq.ParquetFile(f).schema_arrow for f in b]
        assert pq.read_table(a).sort_by("id").equals(pq.read_table(b).sort_by("id"))
        for f in a:
            meta = pq.ParquetFile(f).metadata
            at = meta.schema.names.index("fingerprint")
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(at).statistics
                assert (stats.min, stats.max, stats.null_count) == (prints[part], prints[part], 0)

    missing = ConstantColumns(CONSTANTS.fields, CONSTANTS.values, before="part",
                              per_partition=PerPartition("fingerprint", column, {"part=0": prints[0]}))
    options = missing.writer_options(rows, ["part"])
    assert options is not None
    with pytest.raises(Py4JJavaError, match="no value of the per-partition column"):
        constant_columns.save(rows.write.partitionBy("part"), str(tmp_path / "missing"), options)
