"""Catalog look-ups by the catalog API (never SQL text built from user input): no data is read here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from spark_jobs.errors import UsageError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class TableInfo:
    name: str
    schema: T.StructType
    partition_columns: tuple[str, ...]

    @property
    def data_columns(self) -> tuple[str, ...]:
        parts = {c.lower() for c in self.partition_columns}
        return tuple(f.name for f in self.schema.fields if f.name.lower() not in parts)


def describe(spark: SparkSession, name: str) -> TableInfo | None:
    if not spark.catalog.tableExists(name):
        return None
    columns = spark.catalog.listColumns(name)
    schema = spark.table(name).schema  # analysis only
    return TableInfo(name, schema, tuple(c.name for c in columns if c.isPartition))


def require(spark: SparkSession, name: str, what: str) -> TableInfo:
    info = describe(spark, name)
    if info is None:
        raise UsageError(f"{what} {name} not found")
    return info


def require_identifier(name: str) -> str:
    """Column names that go into SQL text (partition specs) come from the catalog; refuse anything odd anyway."""
    if not _IDENT.fullmatch(name):
        raise UsageError(f"column name {name!r} cannot be used in a partition spec")
    return name


def validate_names(*names: str) -> None:
    """Table and column names about to be written into SQL text (a view's definition): plain identifiers only."""
    for name in names:
        for part in name.split("."):
            require_identifier(part)
