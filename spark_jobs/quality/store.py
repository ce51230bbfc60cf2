"""The profiles table, `<output>_profiles`: one row per run, partition, column and kind, partitioned like the
output. Each run writes one Parquet file per partition from the driver (`part-<scoring_run_id>.parquet` in the
partition's folder) and adds the partition to the catalog; a baseline is read back the same way, by run id,
with no Spark job. The same rows as JSON are the training baseline stored with a model version."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from spark_jobs import compat, fs, parquet_rows
from spark_jobs.publishing import output
from spark_jobs.quality.records import Bin, ColumnProfile, Drift

BIN = T.StructType([T.StructField("label", T.StringType()), T.StructField("count", T.LongType()),
                    T.StructField("lower", T.DoubleType()), T.StructField("upper", T.DoubleType())])
SCHEMA = T.StructType([
    T.StructField("column_name", T.StringType()),
    T.StructField("kind", T.StringType()),  # input | output | challenger
    T.StructField("data_type", T.StringType()),
    T.StructField("numeric", T.BooleanType()),
    T.StructField("rows", T.LongType()),
    # rows the statistics below were computed on: a sample of a large partition (nulls, nans and the
    # histogram count these rows); null when every row was profiled
    T.StructField("profiled_rows", T.LongType()),
    T.StructField("nulls", T.LongType()),
    T.StructField("nans", T.LongType()),
    T.StructField("min", T.DoubleType()),
    T.StructField("max", T.DoubleType()),
    T.StructField("mean", T.DoubleType()),
    T.StructField("stddev", T.DoubleType()),
    T.StructField("quantiles", T.MapType(T.StringType(), T.DoubleType())),
    T.StructField("histogram", T.ArrayType(BIN)),
    T.StructField("baseline", T.StringType()),  # what drift was measured against; null: no baseline
    T.StructField("psi", T.DoubleType()),
    T.StructField("js", T.DoubleType()),
    T.StructField("ks", T.DoubleType()),
    T.StructField("profiled_at", T.TimestampType()),
    T.StructField("scoring_run_id", T.StringType()),
])


def table_schema(partition_fields: Sequence[T.StructField]) -> T.StructType:
    return T.StructType([*SCHEMA.fields, *partition_fields])


def location(spark: SparkSession, table: str) -> str | None:
    """The table's folder (a Hadoop path), or None when there is no such table yet."""
    found = output.existing_location(spark, table)
    return fs.path_of(spark, found) if found is not None else None


def write(spark: SparkSession, table: str, run_id: str, partition_fields: Sequence[T.StructField],
          profiles: Mapping[tuple[Any, ...], tuple[str, Sequence[ColumnProfile]]], root: str | None = None) -> None:
    """The run's profiles: per partition (values -> (its Hive partition path, as Spark wrote the staged
    rows, and its profiles)) one file in `<table>/<partition path>/`, the partition added where missing.
    `root`: the table's folder as `location` gave it to the caller (None: no table then; made here)."""
    names = [f.name for f in partition_fields]
    if root is None:
        if not spark.catalog.tableExists(table):
            output.create_empty(spark, table, table_schema(partition_fields), names, "parquet")
        root = location(spark, table)
        assert root is not None
    have = set(compat.list_partitions(spark, table)) if names else set()
    now = dt.datetime.now(dt.timezone.utc)
    for values, (path, found) in profiles.items():
        folder = f"{root}/{path}" if path else root
        rows = [{**_row(p), "profiled_at": now, "scoring_run_id": run_id} for p in found]
        fs.replace_bytes(spark, f"{folder}/{_file(run_id)}", parquet_rows.to_parquet(SCHEMA, rows))
        if names and path not in have:
            spec = output.partition_spec(dict(zip(names, values, strict=True)))
            compat.sql(spark, f"ALTER TABLE IDENTIFIER(:table) ADD IF NOT EXISTS{spec.sql} LOCATION :location",
                       {"table": table, **spec.args, "location": folder})
    if names:
        spark.catalog.refreshTable(table)


def read(spark: SparkSession, root: str, partition_path: str, run_id: str) -> list[ColumnProfile] | None:
    """The profiles one run stored for one partition (by its Hive partition path under the table's folder
    `root`); None when it stored none. A file read, no catalog call."""
    path = f"{root}/{partition_path}/{_file(run_id)}" if partition_path else f"{root}/{_file(run_id)}"
    if not fs.exists(spark, path):
        return None
    return [_profile(r) for r in parquet_rows.from_parquet(fs.read_bytes(spark, path))]


def _file(run_id: str) -> str:
    if not run_id.isalnum():
        raise ValueError(f"not a scoring run id: {run_id!r}")
    return f"part-{run_id}.parquet"


def _row(p: ColumnProfile) -> dict[str, Any]:
    d = p.drift
    return {"column_name": p.column, "kind": p.kind, "data_type": p.dtype, "numeric": p.numeric, "rows": p.count,
            "profiled_rows": p.profiled, "nulls": p.nulls, "nans": p.nans, "min": p.min, "max": p.max,
            "mean": p.mean, "stddev": p.stddev,
            "quantiles": dict(p.quantiles), "histogram": [asdict(b) for b in p.histogram],
            "baseline": d.baseline if d else None, "psi": d.psi if d else None, "js": d.js if d else None,
            "ks": d.ks if d else None}


def _profile(r: Mapping[str, Any]) -> ColumnProfile:
    """A stored row back as a profile (its drift's baseline histogram is not stored: the baseline's own row
    holds it)."""
    drift = Drift(r["baseline"], r["psi"], r["js"], r["ks"], ()) if r.get("baseline") is not None else None
    return ColumnProfile(
        column=r["column_name"], kind=r["kind"], dtype=r["data_type"], numeric=bool(r["numeric"]), count=r["rows"],
        nulls=r["nulls"], nans=r["nans"], min=r["min"], max=r["max"], mean=r["mean"], stddev=r["stddev"],
        quantiles=dict(r["quantiles"] or {}), histogram=tuple(Bin(**b) for b in r["histogram"] or ()), drift=drift,
        profiled=r.get("profiled_rows"))


def to_json(profiles: Sequence[ColumnProfile]) -> str:
    """A training baseline, as stored with a model version (an MLflow artifact)."""
    return json.dumps({"format": "score-table-profile/1", "profiles": [_row(p) for p in profiles]}, indent=1)


def from_json(text: str) -> list[ColumnProfile]:
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != "score-table-profile/1":
        raise ValueError("not a score-table profile (format score-table-profile/1)")
    return [_profile(r) for r in data["profiles"]]
