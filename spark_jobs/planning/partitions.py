"""Input partitions and their fingerprints (file count, total size, newest modification time), read from
the catalog and the file system only, so an incremental run can tell which partitions changed."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs import compat, fs
from spark_jobs.background import each
from spark_jobs.planning.plan import (
    FINGERPRINT,
    NULL_PARTITION,
    Selection,
    find_column,
    partition_equals,
    partition_literal,
)
from spark_jobs.planning.tables import TableInfo
from udfs.compat import col

_CASE_LIMIT = 32  # partitions per run up to which fingerprints are a CASE rather than a join
_FOOTERS = 16  # Parquet footers read per partition for its row estimate
# The chosen partitions' locations come from one read of all the table's partitions when the table has at most
# _ONE_READ_MIN partitions, or at most _ONE_READ_SHARE times as many as the run chose: four partitions of four
# took 0.18-0.19 s in one read against 0.46-0.53 s in four (a run's first metastore reads, measured).
_ONE_READ_MIN = 64
_ONE_READ_SHARE = 8
Values = tuple[Any, ...]


def listed(spark: SparkSession, table: TableInfo, condition: Column | None = None) -> list[Values]:
    """Every partition of the table, as typed values in partition-column order. A view has no partition
    metadata: its partitions are the distinct values of its partition columns, read with the selection's
    filter (which reaches the underlying tables' partition pruning, so only the selected files are opened)."""
    if not table.partition_columns:
        return [()]
    if table.view:
        df = table.rows(spark)
        if condition is not None:
            df = df.where(condition)
        return [tuple(r) for r in df.select(*[col(c) for c in table.partition_columns]).distinct().collect()]
    fields = [f for f in (find_column(table.schema, c, True) for c in table.partition_columns) if f is not None]
    return [from_path(fields, p) for p in compat.list_partitions(spark, table.name)]


def from_path(fields: Sequence[T.StructField], path: str) -> Values:
    """Typed partition values from a Hive-style path (`ds=2026-11-01/country=NL`), as Spark escapes it."""
    texts = dict(part.split("=", 1) for part in path.strip("/").split("/") if "=" in part)
    return tuple(None if texts[f.name] == NULL_PARTITION else partition_literal(f, unquote(texts[f.name]))
                 for f in fields)


def matches(partition_columns: Sequence[str], values: Values) -> Column:
    condition = F.lit(True)
    for c, v in zip(partition_columns, values, strict=True):
        condition = condition & partition_equals(c, v)
    return condition



def selected(spark: SparkSession, table: TableInfo, selection: Selection) -> list[Values]:
    """The partitions a selection keeps, decided on the catalog's partition values (no data read)."""
    all_values = listed(spark, table, selection.condition)
    if table.view or selection.condition is None or not all_values or all_values == [()]:
        return all_values
    if selection.accepted is not None:  # the flags' typed values against the catalog's: no Spark job
        return [v for v in all_values if selection.keeps(table.partition_columns, v)]
    probe = spark.createDataFrame([list(v) for v in all_values], _schema(table))
    return [tuple(r) for r in probe.where(selection.condition).collect()]


@dataclass(frozen=True)
class Scanned:
    """What a partition's files tell before any row is read."""

    fingerprint: str
    rows: int | None  # as the Parquet footers tell (None: a view, files of another format, a footer unread)
    plain: frozenset[str] | None = None  # columns its first file stores without a dictionary (None: not known)


def scan(spark: SparkSession, table: TableInfo, chosen: Sequence[Values]) -> dict[Values, Scanned]:
    """What the chosen partitions' files tell (`Scanned`), from the locations the session catalog gives (one
    metastore call a partition), one listing of each and the footers of all in one call: 1.7-2.1 s of 4
    partitions' prepare in a fresh JVM became 0.8-1.0 s. A view, or a table whose locations the session catalog
    does not give: Spark's own listing of each partition's files (`fingerprint`)."""
    located = _locations(spark, table, chosen)
    if located is None:
        return dict(zip(chosen, each(lambda v: fingerprint(spark, table, v), list(chosen), threads=4), strict=True))
    listed_files = [sorted(files, key=lambda f: f.name) for files in fs.data_files_in(spark, located)]
    parquet = [bool(files) and all(f.name.endswith(".parquet") for f in files)
               for files in listed_files]
    flat: list[Any] = []
    firsts = set()  # each partition's first file tells its columns stored without a dictionary
    for files, p in zip(listed_files, parquet, strict=True):
        if p:
            firsts.add(len(flat))
            flat.extend(files[:_FOOTERS])
    read = iter(fs.parquet_facts(spark, flat, len(flat), plain_of=firsts))
    found = {}
    for v, files, p in zip(chosen, listed_files, parquet, strict=True):
        footers = [next(read) for _ in files[:_FOOTERS]] if p else []
        facts = [*footers, *fs.parquet_facts(spark, files[len(footers):])]
        found[v] = _scanned(facts, p)
    return found


def _locations(spark: SparkSession, table: TableInfo, chosen: Sequence[Values]) -> list[str] | None:
    """Each chosen partition's location (a table's own where it has no partitions); None where one is not
    known (a view, another catalog)."""
    if table.view:
        return None
    if not table.partition_columns:
        where = compat.table_location(spark, table.name)
        return [where] * len(chosen) if where is not None else None
    fields = [f for f in (find_column(table.schema, c, True) for c in table.partition_columns) if f is not None]
    names = {from_path(fields, name): name for name in compat.list_partitions(spark, table.name)}
    if any(v not in names for v in chosen):
        return None
    # one read of every partition where the run's are a good share of them (a run over all the partitions of a
    # small table: one metastore call where it was one each), else a read of each
    every = compat.partition_locations(spark, table.name, table.partition_columns) \
        if len(chosen) > 1 and len(names) <= max(_ONE_READ_MIN, _ONE_READ_SHARE * len(chosen)) else {}
    found = each(lambda v: every[names[v]] if names[v] in every else
                 compat.partition_location(spark, table.name, names[v]), list(chosen), threads=4)
    return None if any(where is None for where in found) else [w for w in found if w is not None]


def fingerprint(spark: SparkSession, table: TableInfo, values: Values) -> Scanned:
    """`scan` of one partition through Spark's own listing of its files (a view's are its tables')."""
    files = sorted(table.rows(spark).where(matches(table.partition_columns, values)).inputFiles(),
                   key=lambda f: f.rsplit("/", 1)[-1])
    # inputFiles() gives URIs (a Hive-escaped `%` is `%25` there): read back as URIs
    parquet = not table.view and bool(files) and all(f.endswith(".parquet") for f in files)
    return _scanned(fs.parquet_files(spark, files, _FOOTERS if parquet else 0), parquet)


def _scanned(facts: Sequence[fs.FileFacts], parquet: bool) -> Scanned:
    """The fingerprint (file count, bytes, newest modification), the rows and the columns stored without a
    dictionary, from a partition's files (in the order of their names): every file's rows up to _FOOTERS files,
    else the first ones' rows per byte times all the bytes (an estimate is all the sample needs)."""
    sizes = [f.size for f in facts]
    found = f"files={len(facts)};bytes={sum(sizes)};newest={max((f.modified for f in facts), default=0.0):.3f}"
    plain = facts[0].plain if parquet else None
    rows = [f.rows for f in facts[:_FOOTERS]]
    if not parquet or any(r is None for r in rows):
        return Scanned(found, None, plain)
    counted = sum(r for r in rows if r is not None)
    if len(facts) <= _FOOTERS:
        return Scanned(found, counted, plain)
    read = sum(sizes[:_FOOTERS])
    return Scanned(found, round(counted / read * sum(sizes)) if read else None, plain)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # characters Spark never escapes in a partition folder's name


def folder_of(table: TableInfo, values: Values) -> str | None:
    """The folder Spark writes a partition with these values in (`ds=2026-11-01/country=NL`), where that is
    certain without Spark's own escaping and casting: names and values of plain characters, and values of
    text, integer and four-digit-year date columns; None otherwise (and for the NULL partition)."""
    parts = []
    for field, value in zip(_schema(table).fields, values, strict=True):
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, str) and isinstance(field.dataType, T.StringType):
            text = value
        elif isinstance(value, int) and isinstance(field.dataType, T.ByteType | T.ShortType | T.IntegerType
                                                   | T.LongType):
            text = str(value)
        elif type(value) is dt.date and isinstance(field.dataType, T.DateType) and value.year >= 1000:
            text = value.isoformat()
        else:
            return None
        if not _PLAIN_NAME.fullmatch(field.name) or not _PLAIN_NAME.fullmatch(text) or text == NULL_PARTITION:
            return None
        parts.append(f"{field.name}={text}")
    return "/".join(parts)


def fingerprint_column(table: TableInfo, fingerprints: dict[Values, str]) -> Column | None:
    """Each row's partition fingerprint as a CASE over the run's partitions; None when they are too many for
    one (`with_fingerprints` joins then)."""
    if table.partition_columns and len(fingerprints) > _CASE_LIMIT:
        return None
    value: Column | None = None
    for v, fp in fingerprints.items():
        if not table.partition_columns:
            return F.lit(fp)
        cond = matches(table.partition_columns, v)
        value = F.when(cond, F.lit(fp)) if value is None else value.when(cond, F.lit(fp))
    return value if value is not None else F.lit(None).cast("string")


def with_fingerprints(df: DataFrame, table: TableInfo, fingerprints: dict[Values, str]) -> DataFrame:
    """Attach each row's partition fingerprint: a CASE over the run's partitions when they are few (no join
    in the scoring stage), a broadcast join when there are many."""
    if table.partition_columns and (column := fingerprint_column(table, fingerprints)) is not None:
        return df.withColumn(FINGERPRINT, column)
    spark = df.sparkSession
    keys = [f"__fp_{c}" for c in table.partition_columns]
    schema = T.StructType([*[T.StructField(k, f.dataType) for k, f in zip(keys, _schema(table).fields,
                                                                              strict=True)],
                           T.StructField(FINGERPRINT, T.StringType())])
    prints = spark.createDataFrame([[*v, fp] for v, fp in fingerprints.items()], schema)
    if not table.partition_columns:
        return df.withColumn(FINGERPRINT, F.lit(next(iter(fingerprints.values()))))
    condition = None
    for c, k in zip(table.partition_columns, keys, strict=True):
        term = col(c).eqNullSafe(prints[k])
        condition = term if condition is None else condition & term
    return df.join(F.broadcast(prints), on=condition, how="inner").drop(*keys)


def published(
    spark: SparkSession, output_table: str, partition_columns: Sequence[str]
) -> dict[Values, tuple[str | None, ...]]:
    """What each published output partition was scored from: model name, version and run id, and the input
    fingerprint. An incremental run skips a partition only when all four are the ones it would write."""
    if not spark.catalog.tableExists(output_table):
        return {}
    identity = ("model_name", "model_version", "model_run_id", FINGERPRINT)
    rows = (spark.table(output_table).groupBy(*[col(c) for c in partition_columns])
            .agg(*[F.max(col(c)).alias(c) for c in identity]).collect())
    return {tuple(r[c] for c in partition_columns): tuple(r[c] for c in identity) for r in rows}


def selection_of(partition_columns: Sequence[str], values: Sequence[Values], text: str) -> Selection:
    condition = F.lit(False)
    for v in values:
        condition = condition | matches(partition_columns, v)
    return Selection(condition, text)


def describe(partition_columns: Sequence[str], values: Values) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(partition_columns, values, strict=True)) or "table"


def _schema(table: TableInfo) -> T.StructType:
    by_name = {f.name: f for f in table.schema.fields}
    return T.StructType([T.StructField(c, by_name[c].dataType) for c in table.partition_columns])
