"""Spark 3.5 and 4.x for the job's catalog calls, its own SQL statements and its log; column-level differences
live in `udfs.compat`. Every capability is detected once, at import.

Spark 4.1+ binds a named parameter (`:location`) wherever a literal may stand. Spark 3.5 and 4.0 bind one only
inside an expression: `IDENTIFIER(:table)` works, a PARTITION spec or a LOCATION does not ("Only literals are
allowed in the partition spec"). `sql` takes the statement as Spark 4.1 runs it and, on older Spark only,
writes those values as literals: from typed Python values, strings escaped so that nothing in them can end the
literal. Names stay parameters (`IDENTIFIER(:table)`) on every line."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from py4j.protocol import Py4JError
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql.catalog import Catalog

from udfs.compat import SPARK_VERSION, limitations

PARAMETERS_EVERYWHERE = SPARK_VERSION >= (4, 1)
CATALOG_PARTITIONS = hasattr(Catalog, "listPartitions")  # Spark 4.2+, with createDatabase and dropTable
# Observation.get gives Python values (a list of rows collected by an observation as Rows) on Spark 4; Spark
# 3.5 gives Java objects, each row a round trip per field
OBSERVED_IN_PYTHON = SPARK_VERSION >= (4, 0)

# A quoted name or a string literal (skipped whole), or a named parameter marker (not `::`, a cast).
_TOKEN = re.compile(r"`(?:[^`]|``)*`|'(?:[^'\\]|\\.)*'|(?<![\w:]):([A-Za-z_]\w*)")
_IN_IDENTIFIER = re.compile(r"IDENTIFIER\s*\(\s*$", re.IGNORECASE)
_noted = False
log = logging.getLogger("score_table")


def sql(spark: SparkSession, text: str, args: Mapping[str, Any] | None = None) -> DataFrame:
    """`spark.sql(text, args=args)` on any Spark line (see the module docstring)."""
    if PARAMETERS_EVERYWHERE or not args:
        return spark.sql(text, args=dict(args) if args else None)
    escaped = spark.conf.get("spark.sql.parser.escapedStringLiterals", "false") == "true"
    statement, bound = bind(text, args, escaped)
    return spark.sql(statement, args=bound or None)


def bind(text: str, args: Mapping[str, Any], escaped_string_literals: bool = False) -> tuple[str, dict[str, Any]]:
    """For Spark before 4.1: the statement with each value parameter written as a literal, and the parameters
    left to bind (those inside IDENTIFIER(...), which every line binds)."""
    bound: dict[str, Any] = {}

    def rewrite(m: re.Match[str]) -> str:
        name = m.group(1)
        if name is None:  # a quoted name or a string literal of the statement itself
            return m.group(0)
        if _IN_IDENTIFIER.search(text, 0, m.start()):
            bound[name] = args[name]
            return m.group(0)
        return literal(args[name], escaped_string_literals)

    return _TOKEN.sub(rewrite, text), bound


def observed_numbers(observation: Observation, names: Sequence[str]) -> dict[str, int]:
    """Some whole-number metrics of an observation, read from the JVM's row one by one: `get` brings the whole
    row to Python, a list of collected rows with it. Waits for the action, as `get` does; where there is no JVM
    row to read (Spark Connect), `get`."""
    jvm_side = getattr(observation, "_jo", None)
    if jvm_side is not None:
        try:
            row = jvm_side.getRow()
            return {name: int(row.getAs(name)) for name in names}
        except Py4JError:  # a Spark whose Observation has no getRow
            log.debug("observed metrics through Observation.get", exc_info=True)
    found = observation.get
    return {name: int(found[name]) for name in names}


def list_partitions(spark: SparkSession, table: str) -> list[str]:
    """A partitioned table's partitions as Hive names them (`ds=2026-11-23/region=eu`, values path-escaped):
    the session catalog's partition names (what SHOW PARTITIONS prints) where the table is one it holds;
    else the catalog's own call where Spark has it, else SHOW PARTITIONS. The session catalog's answer is a
    metastore call; `Catalog.listPartitions` builds a Dataset first (1.6 s on a run's first call)."""
    try:
        catalog, ident = _session_table(spark, table)
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        names = catalog.listPartitionNames(ident, jvm.scala.Option.empty())
        return [names.apply(i) for i in range(names.size())]
    except Exception:  # another catalog, Spark Connect: the public calls below
        log.debug("listing the partitions of %s through the public catalog", table, exc_info=True)
    if CATALOG_PARTITIONS:
        return [p.partition for p in spark.catalog.listPartitions(table)]  # type: ignore[attr-defined]
    return [r.partition for r in sql(spark, "SHOW PARTITIONS IDENTIFIER(:table)", {"table": table}).collect()]


def table_kind(spark: SparkSession, table: str) -> tuple[bool, tuple[str, ...]]:
    """Whether a table is a view (temporary or not), and its partition columns as the catalog names them: the
    session catalog's table metadata, one call where the name is one it holds (each metastore read of a table
    parses every column's type); else the public calls (`Catalog.listColumns`, whose first call costs about
    1.3 s: it builds the encoder of its Dataset)."""
    try:
        catalog, ident = _session_table(spark, table)
        found = catalog.getTempViewOrPermanentTableMetadata(ident)
        names = found.partitionColumnNames()
        return str(found.tableType().name()) == "VIEW", tuple(names.apply(i) for i in range(names.size()))
    except Exception:  # another catalog (a three-part name), Spark Connect: the public calls
        view = spark.catalog.getTable(table).tableType in ("VIEW", "TEMPORARY")
        return view, tuple(c.name for c in spark.catalog.listColumns(table) if c.isPartition)


def table_location(spark: SparkSession, table: str) -> str | None:
    """A table's location as DESCRIBE TABLE EXTENDED prints it, from the session catalog's table metadata (a
    few py4j calls, where the statement and its collect took 0.5-1.0 s of every run); None where the session
    catalog does not hold the name (another catalog, Spark Connect) or the table has no location."""
    found = table_location_and_columns(spark, table)
    return found[0] if found is not None else None


def table_location_and_columns(spark: SparkSession, table: str) -> tuple[str, tuple[str, ...]] | None:
    """`table_location` and the table's column names, from one metastore read; None as there."""
    try:
        catalog, ident = _session_table(spark, table)
        metadata = catalog.getTableMetadata(ident)
        storage = metadata.storage().locationUri()
        if storage.isEmpty():
            return None
        utils = getattr(spark.sparkContext._jvm, "org.apache.spark.sql.catalyst.catalog.CatalogUtils")
        names = metadata.schema().fieldNames()
        return str(utils.URIToString(storage.get())), tuple(str(n) for n in names)
    except Exception:
        log.debug("the location of %s through DESCRIBE", table, exc_info=True)
        return None


def partition_location(spark: SparkSession, table: str, name: str) -> str | None:
    """A partition's location as DESCRIBE prints it (a path, as `table_location`), from the session catalog's
    partition metadata (one metastore call); `name` as Hive gives it (`ds=2026-11-23/region=eu`, values
    path-escaped). None where the session catalog does not hold the table or the partition has no location."""
    try:
        catalog, ident = _session_table(spark, table)
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        spec = {k: unquote(v) for k, v in (part.split("=", 1) for part in name.strip("/").split("/"))}
        found = catalog.getPartition(ident, jvm.org.apache.spark.api.python.PythonUtils.toScalaMap(spec))
        storage = found.storage().locationUri()
        if storage.isEmpty():
            return None
        utils = getattr(jvm, "org.apache.spark.sql.catalyst.catalog.CatalogUtils")
        return str(utils.URIToString(storage.get()))
    except Exception:
        log.debug("no location of partition %s of %s from the session catalog", name, table, exc_info=True)
        return None


def partition_locations(spark: SparkSession, table: str, columns: Sequence[str]) -> dict[str, str | None]:
    """Every partition's location (as `partition_location` gives it) by its Hive name, from one metastore read
    of all the table's partitions (`columns`: its partition columns, in order); empty where the session catalog
    does not hold the table."""
    try:
        catalog, ident = _session_table(spark, table)
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        found = catalog.listPartitions(ident, jvm.scala.Option.empty()).iterator()
        utils = getattr(jvm, "org.apache.spark.sql.catalyst.catalog.CatalogUtils")
        names = getattr(jvm, "org.apache.spark.sql.catalyst.catalog.ExternalCatalogUtils")
        located: dict[str, str | None] = {}
        while found.hasNext():
            partition = found.next()
            spec, storage = partition.spec(), partition.storage().locationUri()
            name = "/".join(str(names.getPartitionPathString(c, spec.apply(c))) for c in columns)
            located[name] = None if storage.isEmpty() else str(utils.URIToString(storage.get()))
        return located
    except Exception:
        log.debug("no locations of the partitions of %s from the session catalog", table, exc_info=True)
        return {}


def _session_table(spark: SparkSession, table: str) -> tuple[Any, Any]:
    """The JVM session catalog and the table's identifier in it (a one- or two-part name); raises for a name
    of another catalog or where there is no JVM session (Spark Connect)."""
    session = spark._jsparkSession.sessionState()  # type: ignore[attr-defined]
    return session.catalog(), session.sqlParser().parseTableIdentifier(table)


def error_class(e: Exception) -> str | None:
    """The error class of a Spark error (`PARTITIONS_NOT_FOUND`): `getCondition` since Spark 4.0,
    `getErrorClass` before."""
    get = getattr(e, "getCondition", None) or getattr(e, "getErrorClass", None)
    return get() if get is not None else None


def create_database(spark: SparkSession, name: str) -> None:
    """CREATE DATABASE IF NOT EXISTS, the name a parameter (Spark 4.2's Catalog.createDatabase, on any line)."""
    sql(spark, "CREATE DATABASE IF NOT EXISTS IDENTIFIER(:name)", {"name": name})


def drop_table(spark: SparkSession, name: str) -> None:
    """DROP TABLE IF EXISTS, the name a parameter (Spark 4.2's Catalog.dropTable, on any line)."""
    sql(spark, "DROP TABLE IF EXISTS IDENTIFIER(:name)", {"name": name})


def literal(value: Any, escaped_string_literals: bool = False) -> str:
    """A Python value as a Spark SQL literal. A string is quoted with every backslash and quote escaped, so
    it cannot end the literal; under `spark.sql.parser.escapedStringLiterals` Spark would keep those escapes
    in the value, so a string holding either character is refused there rather than changed."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no SQL literal")
        return f"{value!r}D"
    if isinstance(value, decimal.Decimal):
        return f"{value:f}BD"
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP'{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        if escaped_string_literals and ("\\" in value or "'" in value):
            raise ValueError(f"{value!r} cannot be written as a SQL literal while "
                             "spark.sql.parser.escapedStringLiterals is true")
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise TypeError(f"no SQL literal for a {type(value).__name__}")


def note_limitations(log: logging.Logger) -> None:
    """Say once per process, in the run's log, what this Spark lacks that the job would use."""
    global _noted
    if not _noted:
        _noted = True
        for line in limitations():
            log.info("%s", line)
