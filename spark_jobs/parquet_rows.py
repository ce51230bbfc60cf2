"""Small tables written as one Parquet file from the driver, typed as Spark reads them back: the run-history
row and the profiles of a run are a few rows each, and a Spark job per write would cost more than the data."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from spark_jobs import fs

_SIMPLE: dict[type[T.DataType], pa.DataType] = {
    T.StringType: pa.string(), T.TimestampType: pa.timestamp("us", tz="UTC"), T.LongType: pa.int64(),
    T.DoubleType: pa.float64(), T.BooleanType: pa.bool_(), T.IntegerType: pa.int32(),
}


def arrow_type(data_type: T.DataType) -> pa.DataType:
    if isinstance(data_type, T.ArrayType):
        return pa.list_(arrow_type(data_type.elementType))
    if isinstance(data_type, T.MapType):
        return pa.map_(arrow_type(data_type.keyType), arrow_type(data_type.valueType))
    if isinstance(data_type, T.StructType):
        return pa.struct([pa.field(f.name, arrow_type(f.dataType)) for f in data_type.fields])
    return _SIMPLE[type(data_type)]


def to_parquet(schema: T.StructType, rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The rows (dicts by column name; maps as dicts, structs as dicts) as one Parquet file of `schema`."""
    arrow = pa.schema([pa.field(f.name, arrow_type(f.dataType)) for f in schema.fields])
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema.fields} for r in rows], schema=arrow)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def read_columns(spark: SparkSession, path: str, columns: Sequence[str]) -> pa.Table:
    """Some columns of one Parquet file (a path as Hadoop prints it): straight from a local disk, else its
    bytes through Hadoop's file system. INT96 timestamps (Spark's default) in microseconds, as Spark reads them
    (nanoseconds overflow outside the years 1678-2261)."""
    local = fs.local_path(path)
    source: Any = local if local is not None else io.BytesIO(fs.read_bytes(spark, path))
    return pq.ParquetFile(source, coerce_int96_timestamp_unit="us").read(columns=list(columns))


def from_parquet(data: bytes, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of a Parquet file as dicts (maps as dicts: pyarrow gives them as lists of pairs)."""
    table = pq.ParquetFile(io.BytesIO(data)).read(columns=list(columns) if columns is not None else None)
    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    rows: list[dict[str, Any]] = table.to_pylist()
    for r in rows:
        for name in maps:
            if r[name] is not None:
                r[name] = dict(r[name])
    return rows
