"""Output tables in the catalog: checked before any data is read, created empty, and switched partition by
partition to a run's staged folders (see `staging`), a metadata operation per partition, so readers see a
partition's old rows or its new rows, never a mix and never a half-written folder. Also the table's
`_published.jsonl` manifest for readers without the metastore, and the `_latest` view."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from spark_jobs import compat, fs
from spark_jobs.errors import UsageError
from spark_jobs.planning import tables
from spark_jobs.planning.partitions import listed
from spark_jobs.publishing.staging import RUNS_DIR, StagedPartition, split_location, table_location_of
from udfs.compat import quote, sql_type

MANIFEST = "_published.jsonl"  # for readers without the metastore: one line per published partition


def check_compatible(spark: SparkSession, name: str, schema: T.StructType, partition_columns: Sequence[str],
                     what: str = "output table") -> bool:
    """True when the table exists and matches; a conflict is a usage error, found before reading."""
    existing = tables.describe(spark, name)
    if existing is None:
        return False
    want_parts = [c.lower() for c in partition_columns]
    have_parts = [c.lower() for c in existing.partition_columns]
    if want_parts != have_parts:
        raise UsageError(
            f"{what} {name} is partitioned by ({', '.join(have_parts) or 'nothing'}), "
            f"but the input is partitioned by ({', '.join(want_parts) or 'nothing'})"
        )
    want, have = _columns(schema), _columns(existing.schema)
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        detail = "; ".join(
            f"{c}: table has {have.get(c, 'no such column')}, run writes {want.get(c, 'no such column')}"
            for c in dict(diff)
        )
        raise UsageError(f"{what} {name} has a different schema than this run writes ({detail})")
    return True


def ensure_table(spark: SparkSession, name: str, schema: T.StructType, partition_columns: Sequence[str],
                 output_format: str) -> str:
    """Create the (empty) table if it is missing; return its location."""
    found = existing_location(spark, name)
    if found is not None:
        return found
    create_empty(spark, name, schema, partition_columns, output_format)
    return location(spark, name)


def existing_location(spark: SparkSession, name: str) -> str | None:
    """The table's location, None when there is no such table: one metastore read where the session catalog
    holds the name (the table's metadata), else whether it exists and DESCRIBE."""
    found = compat.table_location(spark, name)
    if found is not None:
        return found
    return location(spark, name) if spark.catalog.tableExists(name) else None


def create_empty(spark: SparkSession, name: str, schema: T.StructType, partition_columns: Sequence[str],
                 output_format: str) -> None:
    """CREATE TABLE, a catalog call: no Spark job writes an empty DataFrame (about 0.3 s a table, and every
    run's first write of its history needs a table). Names go in quoted, types as Spark writes them."""
    columns = ", ".join(f"{quote(f.name)} {sql_type(f.dataType)}" for f in schema.fields)
    by = f" PARTITIONED BY ({', '.join(quote(c) for c in partition_columns)})" if partition_columns else ""
    if output_format not in ("parquet", "delta"):
        raise ValueError(f"unknown output format {output_format!r}")
    compat.sql(spark, f"CREATE TABLE IDENTIFIER(:table) ({columns}) USING {output_format}{by}", {"table": name})


def location(spark: SparkSession, name: str, partition: dict[str, Any] | None = None) -> str:
    """A table's (or a partition's) location, as DESCRIBE TABLE EXTENDED gives it."""
    if not partition:
        found = compat.table_location(spark, name)
        if found is not None:
            return found
    spec = partition_spec(partition or {})
    rows = compat.sql(spark, f"DESCRIBE TABLE EXTENDED IDENTIFIER(:table){spec.sql}",
                      {"table": name, **spec.args}).collect()
    return next(str(r.data_type) for r in rows if r.col_name == "Location")


def publish(spark: SparkSession, name: str, partition_columns: Sequence[str], staged: Iterable[StagedPartition],
            run_partitions: Iterable[tuple[Any, ...]], between: Callable[[], None] = lambda: None,
            manifest_in: str | None = None) -> None:
    """Point each partition the run scored at its staged folder; a partition left with no rows is dropped.
    With `manifest_in` (the table's location), `_published.jsonl` follows each switch as it happens, so a
    crash between two partitions leaves the manifest and the metastore agreeing."""
    by_values = {p.values: p for p in staged}
    # which partitions the catalog has (one call), so that each switch is the one statement it needs: a
    # rerun's partitions exist, a nightly run's new one does not
    existing = set(compat.list_partitions(spark, name)) if partition_columns else set()
    for i, values in enumerate(sorted(set(run_partitions), key=lambda v: [str(x) for x in v])):
        if i:
            between()
        target = by_values.get(values)
        folder = target.location if target is not None else None
        found = split_location(folder) if folder is not None else None
        point_at(spark, name, dict(zip(partition_columns, values, strict=True)), folder,
                 exists=found is not None and found[2] in existing)
        if manifest_in is not None:
            update_manifest(spark, manifest_in, partition_columns, {values: folder})
    spark.catalog.refreshTable(name)


def reconcile_manifest(spark: SparkSession, name: str) -> None:
    """Rewrite `_published.jsonl` from the metastore (one call per partition): after a run crashed between
    switching a partition and recording it, the next holder of the lock puts the two back in step."""
    info = tables.describe(spark, name)
    if info is None:
        return
    table_location = table_location_of(location(spark, name))  # unpartitioned: it points into _runs/ itself
    if not fs.exists(spark, f"{table_location}/{RUNS_DIR}"):
        return  # not published by write-audit-publish (Delta keeps its own log)
    folders: dict[tuple[Any, ...], str | None] = {}
    for values in listed(spark, info):
        spec = dict(zip(info.partition_columns, values, strict=True))
        folder = location(spark, name, spec) if spec else location(spark, name)
        folders[values] = folder if f"/{RUNS_DIR}/" in folder else None
    write_manifest(spark, table_location, info.partition_columns, folders)


def point_at(spark: SparkSession, name: str, partition: dict[str, Any], folder: str | None,
             exists: bool = False) -> None:
    """Publish one partition: point it at `folder` (one metastore update), or drop it when None. `exists`:
    whether the partition is expected in the catalog already (a rollback's is; a nightly run's usually is
    not). The expected statement goes first, the other only when Spark says the guess was wrong, so a
    wrong guess costs a second update, never a wrong result."""
    spec = partition_spec(partition)
    args = {"table": name, **spec.args}
    if not partition:
        if folder is not None:
            compat.sql(spark, "ALTER TABLE IDENTIFIER(:table) SET LOCATION :location", {**args, "location": folder})
        return
    if folder is None:
        compat.sql(spark, f"ALTER TABLE IDENTIFIER(:table) DROP IF EXISTS{spec.sql}", args)
        return
    add = (f"ALTER TABLE IDENTIFIER(:table) ADD{spec.sql} LOCATION :location", "PARTITIONS_ALREADY_EXIST")
    move = (f"ALTER TABLE IDENTIFIER(:table){spec.sql} SET LOCATION :location", "PARTITIONS_NOT_FOUND")
    (first, wrong_guess), (second, _) = (move, add) if exists else (add, move)
    try:
        compat.sql(spark, first, {**args, "location": folder})
    except AnalysisException as e:
        if compat.error_class(e) != wrong_guess:
            raise
        compat.sql(spark, second, {**args, "location": folder})


def update_manifest(spark: SparkSession, table_location: str, partition_columns: Sequence[str],
                    folders: dict[tuple[Any, ...], str | None]) -> None:
    """Record the published folder of each partition (None: dropped) in `_published.jsonl` beside `_runs/`,
    so a reader without the metastore can read exactly the published version."""
    path = f"{table_location.rstrip('/')}/{MANIFEST}"
    entries: dict[str, dict[str, Any]] = {}
    if fs.exists(spark, path):
        for line in fs.read_text(spark, path).splitlines():
            if line.strip():
                entry = json.loads(line)
                entries[json.dumps(entry["partition"], sort_keys=True, default=str)] = entry
    _write_manifest(spark, path, partition_columns, folders, entries)


def write_manifest(spark: SparkSession, table_location: str, partition_columns: Sequence[str],
                   folders: dict[tuple[Any, ...], str | None]) -> None:
    """`_published.jsonl` with exactly these partitions."""
    _write_manifest(spark, f"{table_location.rstrip('/')}/{MANIFEST}", partition_columns, folders, {})


def _write_manifest(spark: SparkSession, path: str, partition_columns: Sequence[str],
                    folders: dict[tuple[Any, ...], str | None], entries: dict[str, dict[str, Any]]) -> None:
    """Replaced whole (see fs.replace_text for what a reader can see meanwhile on each kind of storage)."""
    for values, folder in folders.items():
        partition = {c: _param(v) for c, v in zip(partition_columns, values, strict=True)}
        key = json.dumps(partition, sort_keys=True, default=str)
        if folder is None:
            entries.pop(key, None)
        else:
            entries[key] = {"partition": partition, "folder": folder}
    fs.replace_text(spark, path, "".join(json.dumps(e, default=str) + "\n" for _, e in sorted(entries.items())))


def create_latest_view(spark: SparkSession, view: str, table: str, schema: T.StructType, keys: Sequence[str],
                       partition_columns: Sequence[str]) -> None:
    """`<output>_latest`: the newest score per key, for BI. A view is stored as SQL text, so the names go in
    as text: table names passed the identifier check, and every name is backtick-quoted."""
    tables.validate_names(view, table, *keys)
    order = ", ".join([*[f"{_quote(c)} DESC" for c in partition_columns], "`scored_at` DESC"])
    columns = ", ".join(_quote(f.name) for f in schema.fields)
    spark.sql(
        f"CREATE OR REPLACE VIEW {_qualified(view)} AS SELECT {columns} FROM (SELECT *, row_number() OVER "
        f"(PARTITION BY {', '.join(_quote(k) for k in keys)} ORDER BY {order}) AS `__rank` "
        f"FROM {_qualified(table)}) WHERE `__rank` = 1"
    )


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _qualified(table: str) -> str:
    return ".".join(_quote(p) for p in table.split("."))


def publish_copy(spark: SparkSession, name: str, rows: DataFrame) -> None:
    """Delta: Delta's own atomic overwrite of the run's partitions (dynamic partition overwrite)."""
    rows.writeTo(name).overwritePartitions()


@dataclass(frozen=True)
class PartitionSpec:
    sql: str  # " PARTITION (`ds` = :p0, ...)": column names from the catalog, values as parameters
    args: dict[str, Any]


def partition_spec(values: dict[str, Any]) -> PartitionSpec:
    if not values:
        return PartitionSpec("", {})
    for name in values:
        tables.require_identifier(name)
    terms = ", ".join(f"`{name}` = :p{i}" for i, name in enumerate(values))
    return PartitionSpec(f" PARTITION ({terms})", {f"p{i}": _param(v) for i, v in enumerate(values.values())})


def _param(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value


def _columns(schema: T.StructType) -> dict[str, str]:
    return {f.name.lower(): f.dataType.simpleString() for f in schema.fields}
