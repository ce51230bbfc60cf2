"""Catalog look-ups by the catalog API (never SQL text built from user input), and the run's input as the
model sees it (a table or a view, with the profile's transforms): no data is read here."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import types as T

from spark_jobs import compat
from spark_jobs.errors import UsageError
from spark_jobs.planning import transforms as row_transforms
from udfs.compat import col

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


ORIGINAL = "__input_"  # prefix of the copy of an input column that a transform replaces (rejects keep it)


@dataclass(frozen=True)
class TableInfo:
    """A table or view as a run reads it. `schema`: after the transforms (what the model and the scored
    table see); `input_schema`: the stored columns (what a rejected row carries)."""

    name: str
    schema: T.StructType
    partition_columns: tuple[str, ...]
    view: bool = False
    transforms: tuple[tuple[str, str], ...] = ()
    input_schema: T.StructType | None = None
    # the stored rows, analyzed once: every `spark.table` is a look-up of the table in the metastore, and a
    # run's first ones cost 0.2-0.5 s each (the metastore client and the parser of column types are cold)
    stored: DataFrame | None = field(default=None, compare=False, repr=False)

    def rows(self, spark: SparkSession) -> DataFrame:
        """The stored rows, every column, no transform."""
        return self.stored if self.stored is not None else spark.table(self.name)

    @property
    def data_columns(self) -> tuple[str, ...]:
        return _data_columns(self.schema, self.partition_columns)

    @property
    def input_data_columns(self) -> tuple[str, ...]:
        return _data_columns(self.input_schema or self.schema, self.partition_columns)

    @property
    def replaced(self) -> tuple[str, ...]:
        """Input columns that a transform replaces: their stored values travel beside as `__input_<name>`."""
        keys = {k.lower() for k, _ in self.transforms}
        return tuple(c for c in self.input_data_columns if c.lower() in keys)

    def read(self, spark: SparkSession, condition: Column | None = None) -> DataFrame:
        """The selected rows as the model sees them: the partition filter on the stored columns (so it
        reaches the files' partition pruning, through a view too), then the transforms."""
        df = self.rows(spark)
        if condition is not None:
            df = df.where(condition)
        if self.replaced:
            df = df.withColumns({f"{ORIGINAL}{c}": col(c) for c in self.replaced})
        return row_transforms.apply(df, dict(self.transforms))


def _data_columns(schema: T.StructType, partition_columns: Sequence[str]) -> tuple[str, ...]:
    parts = {c.lower() for c in partition_columns}
    return tuple(f.name for f in schema.fields if f.name.lower() not in parts and not f.name.startswith(ORIGINAL))


def describe(spark: SparkSession, name: str) -> TableInfo | None:
    """The table or view, None when there is none: its rows analyzed (no data read) and its kind. Asked first
    whether it exists: Spark 4 resolves a `db.table` it cannot find as a file read of data source `db`, and
    looking `db` up among Python data sources starts a Python worker (a second or more on a first run)."""
    if not spark.catalog.tableExists(name):
        return None
    stored = spark.table(name)
    view, partition_columns = compat.table_kind(spark, name)
    return TableInfo(name, stored.schema, partition_columns, view, stored=stored)


def source(spark: SparkSession, name: str, partition_columns: Sequence[str],
           transforms: Mapping[str, str]) -> TableInfo:
    """The run's input: a table (its own partition columns) or a view (`partition_columns` name them), with
    the transforms checked on its plan. Every problem is a UsageError before any data is read."""
    info = require(spark, name, "input table")
    parts = info.partition_columns
    if info.view and partition_columns:
        found = [next((f.name for f in info.schema.fields if f.name.lower() == c.lower()), None)
                 for c in partition_columns]
        missing = [c for c, f in zip(partition_columns, found, strict=True) if f is None]
        if missing:
            raise UsageError(f"--partition-columns: view {name} has no column {', '.join(missing)} "
                             f"(columns: {', '.join(info.schema.fieldNames())})")
        parts = tuple(f for f in found if f is not None)
    elif partition_columns and [c.lower() for c in partition_columns] != [c.lower() for c in parts]:
        raise UsageError(f"--partition-columns is for a view; table {name} is partitioned by "
                         f"{', '.join(parts) or 'nothing'}")
    for c in parts:
        require_identifier(c)
    clash = [k for k, _ in transforms.items() if k.startswith(ORIGINAL)]
    if clash:
        raise UsageError(f"transform '{clash[0]}': names starting with {ORIGINAL} are the job's own")
    checked = row_transforms.check(info.rows(spark), transforms, parts)
    return TableInfo(name, checked.schema, parts, info.view, tuple(transforms.items()), info.schema, info.stored)


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
