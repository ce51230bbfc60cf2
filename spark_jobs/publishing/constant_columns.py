"""Columns that hold one value in every row a write stages: a run's lineage (model version, run, time); and one
that holds one value per partition, the input's fingerprint (written per partition folder).

As expressions, every row carries them through Spark's Parquet writer, which hashes, compares and encodes each
value: 2.5-3.3 s of a warm 4M-row write for the five lineage columns (benchmarks/RESULTS.md, eleventh pass).
Where this package's JVM writer runs (udfs/jvm/src/scoretable/ConstantColumns.java), the rows do not carry
them: Spark's writer writes the rows' columns, and each row group gets the constant columns as pages that
Parquet's own column writer encoded once (a one-value dictionary, runs of its index, their statistics), repeated
for as many rows as the group holds. The files are the ones Spark writes for the whole schema, column order,
statistics and Spark's schema metadata included (tests/test_constant_columns.py compares them). Elsewhere (no
jar, Spark Connect, a Parquet writer it does not know) they are expressions, with the same files as a result."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, DataFrameWriter, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from udfs import jvm_jar

log = logging.getLogger("score_table")
CLASS = "scoretable.ConstantColumns"
_SCHEMA, _NAMES, _VALUES = "scoretable.constants.schema", "scoretable.constants.names", "scoretable.constants.values"
_FOLDERS = "scoretable.constants.folders"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_runs: dict[int, Any] = {}  # per JVM gateway: the JVM writer's `save` method, or None where it does not run


@dataclass(frozen=True)
class PerPartition:
    """A text column of one value per partition (the input's fingerprint), after the constant columns: in the
    files, one value per partition folder. `folders`: the value of each folder as Spark names it
    (`ds=2026-11-01`, relative to the outcome's folder); `expression`: the value of each row."""

    name: str
    expression: Column
    folders: Mapping[str, str]


@dataclass(frozen=True)
class ConstantColumns:
    """Columns of one value each (None: null), placed before the column `before`; and, after them, a column of
    one value per partition."""

    fields: T.StructType
    values: tuple[Any, ...]
    before: str
    per_partition: PerPartition | None = None

    def add(self, df: DataFrame) -> DataFrame:
        """`df` with the columns as expressions, in their place."""
        at = df.columns.index(self.before)
        added = df.withColumns({f.name: F.lit(v).cast(f.dataType)
                                for f, v in zip(self.fields.fields, self.values, strict=True)})
        names = self.fields.fieldNames()
        if self.per_partition is not None:
            added = added.withColumn(self.per_partition.name, self.per_partition.expression)
            names = [*names, self.per_partition.name]
        return added.select(*df.columns[:at], *names, *df.columns[at:])

    def writer_options(self, df: DataFrame, partition_columns: Sequence[str]) -> dict[str, str] | None:
        """The JVM writer's options for writing `df` (without the columns) partitioned by `partition_columns`,
        with the columns in every file; None where it does not run in `df`'s session, `df` has variant columns,
        or a value is not one it takes (strings, integers, zone-aware timestamps)."""
        texts = [_text(v, f.dataType) for f, v in zip(self.fields.fields, self.values, strict=True)]
        if any(t is None for t in texts) or any("," in n for n in self.fields.fieldNames()) \
                or "variant" in df.schema.simpleString() or not runs_in(df.sparkSession):
            return None  # (Spark 4 may write variant columns with a Parquet writer of another kind)
        names = self.fields.fieldNames()
        files = self.add(df).drop(*partition_columns).schema  # the schema Spark would write the files with
        options = {_SCHEMA: files.json(), _VALUES: ",".join(t for t in texts if t is not None)}
        if self.per_partition is not None:
            names = [*names, self.per_partition.name]
            options[_FOLDERS] = ",".join(f"{_base64(k)}:{_base64(v)}" for k, v in self.per_partition.folders.items())
        return {**options, _NAMES: ",".join(names)}


def _text(value: Any, kind: T.DataType) -> str | None:
    """A value as the JVM writer reads it: Base64 of its text ("-" for null); None where it takes no such
    value."""
    if value is None:
        return "-"
    if isinstance(kind, T.StringType) and isinstance(value, str):
        text = value
    elif isinstance(kind, T.TimestampType) and isinstance(value, dt.datetime) and value.tzinfo is not None:
        text = str((value - _EPOCH) // dt.timedelta(microseconds=1))  # exact: what F.lit gives Spark
    elif isinstance(kind, T.IntegerType | T.LongType) and isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        return None
    return _base64(text)


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def runs_in(spark: SparkSession) -> bool:
    """Whether the JVM writer runs in `spark`: its class loaded, and this Spark's Parquet writer the one it
    reaches into. Not on Databricks, whose runtime has a Parquet writer of its own."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return False
    gateway = getattr(spark.sparkContext, "_gateway", None) if hasattr(spark, "_jsparkSession") else None
    if gateway is None:
        return False
    if id(gateway) not in _runs:
        _runs[id(gateway)] = _load(spark)
    return _runs[id(gateway)] is not None


def save(writer: DataFrameWriter, path: str, options: Mapping[str, str]) -> None:
    """`writer`'s rows saved at `path` by the JVM writer, with `writer_options`' `options` (in a session where
    it `runs_in`)."""
    gateway = writer._spark.sparkContext._gateway
    assert gateway is not None and _runs.get(id(gateway)) is not None, "constant_columns.runs_in(spark) first"
    args = gateway.new_array(gateway.jvm.java.lang.Object, 2)
    args[0] = writer.options(**options)._jwrite
    args[1] = path
    _runs[id(gateway)].invoke(None, args)


def _load(spark: SparkSession) -> Any:
    try:
        loaded = jvm_jar.load_class(spark, CLASS)
        if loaded is not None:
            gateway = spark.sparkContext._gateway
            assert gateway is not None
            methods = {m.getName(): m for m in loaded.getMethods()}
            if methods["supported"].invoke(None, gateway.new_array(gateway.jvm.java.lang.Object, 0)):
                return methods["save"]
    except Exception as e:  # an old or foreign jar
        log.debug("the constant-column writer does not load: %s", e)
    log.info("the lineage columns are written in every row (this package's JVM writer does not run here)")
    return None
