"""The model as a vectorized UDF: an iterator over Arrow batches, handed to the pyfunc model as pandas.

Only the feature columns cross into Python, each as its own top-level Arrow column (cast in the JVM
beforehand); every other column stays in the JVM, so passthrough keys cost nothing. Fixed-width features
(numbers, booleans) go through an Arrow UDF and become the model's DataFrame in one copy; other types go
through a pandas UDF and pyspark's own conversions. The UDF returns the model's output (a struct for
several outputs); with `isolate_errors` it adds `__model_error`: a batch the model raises on is bisected
down to the rows that raise, those rows get the model's message and no prediction, and the rest of the
batch is scored."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_type

from udfs import model_cache
from udfs.compat import ARROW_UDF, try_cast

MODEL_ERROR = "__model_error"
MODEL_ERROR_PREFIX = "model error: "  # of the message in MODEL_ERROR (and of a rejected row's reason)
_SKIP = "__skip"
_RESULT = "__result"
_NUMPY_DTYPES: dict[type[T.DataType], str] = {
    T.DoubleType: "float64",
    T.FloatType: "float32",
    T.LongType: "int64",
    T.IntegerType: "int32",
    T.ShortType: "int16",
    T.ByteType: "int8",
    T.BooleanType: "bool",
}
_FIXED_WIDTH = tuple(_NUMPY_DTYPES)


@dataclass(frozen=True)
class FeatureColumn:
    name: str  # the model's input name
    column: str  # the DataFrame column that feeds it
    spark_type: T.DataType  # cast to this in the JVM before the batch reaches Python


@dataclass(frozen=True)
class TensorInput:
    """A model with one ndarray input: the features, in order, become one (rows, ...) array."""

    dtype: str
    shape: tuple[int, ...]  # the signature's shape, -1 for the batch dimension
    from_array_column: bool = False  # one array column instead of several numeric columns


@dataclass(frozen=True)
class ModelSpec:
    model_file: str  # a name returned by model_cache.ship, or an absolute local path
    features: tuple[FeatureColumn, ...]
    outputs: T.StructType  # one field per output column
    tensor: TensorInput | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    isolate_errors: bool = False


def score(df: DataFrame, spec: ModelSpec, skip: Column | None = None) -> DataFrame:
    """Append the model's output columns (and `__model_error` when isolating errors); rows where `skip` is
    true are not sent to the model and get nulls. Every input column passes through."""
    fields = result_fields(spec)
    single = len(fields) == 1  # a plain column crosses Arrow faster than a struct of one
    arrow = arrow_native(spec)
    make = F.arrow_udf if arrow else F.pandas_udf  # type: ignore[attr-defined]
    udf = make(_predict_batches(spec, single, skip is not None, arrow),
               fields[0].dataType if single else T.StructType(fields))
    inputs = [try_cast(f.column, f.spark_type).alias(f.name) for f in spec.features]
    if skip is not None:
        inputs.append(F.coalesce(skip, F.lit(False)).alias(_SKIP))
    result = udf(*inputs)  # separate columns: no struct to build per row in the JVM
    if single:
        return df.withColumn(fields[0].name, result)
    return df.withColumn(_RESULT, result).select(
        "*", *[F.col(_RESULT)[f.name].alias(f.name) for f in fields]
    ).drop(_RESULT)


def fixed_width_inputs(spec: ModelSpec) -> bool:
    """Every value sent to the model has a fixed width, so a batch's bytes are bounded by its row count."""
    return all(isinstance(f.spark_type, _FIXED_WIDTH) for f in spec.features)


def arrow_native(spec: ModelSpec) -> bool:
    """Inputs and outputs whose pandas form pyarrow gives exactly as pyspark's pandas UDF would: numbers and
    booleans in, numbers, booleans and strings out (no time zones, decimals or nested values to convert).
    Arrow UDFs came with Spark 4.1; on 3.5 and 4.0 every model goes through the pandas UDF."""
    return ARROW_UDF and fixed_width_inputs(spec) and all(
        isinstance(f.dataType, (*_FIXED_WIDTH, T.StringType)) for f in result_fields(spec))


def result_fields(spec: ModelSpec) -> list[T.StructField]:
    error = [T.StructField(MODEL_ERROR, T.StringType())] if spec.isolate_errors else []
    return [*spec.outputs.fields, *error]


def _predict_batches(spec: ModelSpec, single: bool, has_skip: bool, arrow: bool) -> Any:
    names = [f.name for f in spec.features] + ([_SKIP] if has_skip else [])
    fields = result_fields(spec)
    arrow_fields = [pa.field(f.name, to_arrow_type(f.dataType)) for f in fields] if arrow else []

    def outputs(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = model_cache.load(spec.model_file)
        for batch in batches:
            yield predict_batch(model, batch, spec)

    def pandas_column(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        for out in outputs(pandas_frame(b, names) for b in batches):
            yield out.iloc[:, 0]

    def pandas_frames(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        return outputs(pandas_frame(b, names) for b in batches)

    def arrow_column(batches: Iterator[tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        for out in outputs(arrow_frame(b, names) for b in batches):
            yield _to_arrow(out.iloc[:, 0], arrow_fields[0].type)

    def arrow_struct(batches: Iterator[tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        for out in outputs(arrow_frame(b, names) for b in batches):
            yield pa.StructArray.from_arrays([_to_arrow(out[f.name], f.type) for f in arrow_fields],
                                             fields=arrow_fields)

    if arrow:
        return arrow_column if single else arrow_struct
    return pandas_column if single else pandas_frames


def pandas_frame(columns: pd.Series | tuple[pd.Series, ...], names: list[str]) -> pd.DataFrame:
    """A pandas UDF's arguments (one Series, or a tuple of them) as one DataFrame named like the model's inputs."""
    series = (columns,) if isinstance(columns, pd.Series) else columns
    return pd.concat(series, axis=1, keys=names)


def arrow_frame(columns: pa.Array | tuple[pa.Array, ...], names: list[str]) -> pd.DataFrame:
    """An Arrow UDF's arguments as the DataFrame the model gets: features of one dtype and no nulls become one
    (features, rows) block, as pandas holds them (one copy, no per-column consolidation)."""
    arrays = (columns,) if isinstance(columns, pa.Array) else columns
    features = [a for a, n in zip(arrays, names, strict=True) if n != _SKIP]
    if len({a.type for a in features}) == 1 and not any(a.null_count for a in features) \
            and not pa.types.is_boolean(features[0].type):
        block = np.stack([a.to_numpy() for a in features])
        frame = pd.DataFrame(block.T, columns=names[:len(features)], copy=False)
        if len(arrays) > len(features):
            frame[_SKIP] = arrays[-1].to_numpy(zero_copy_only=False)
        return frame
    return pd.concat([a.to_pandas() for a in arrays], axis=1, keys=names)


def _to_arrow(values: pd.Series, arrow_type: pa.DataType) -> pa.Array:
    """As pyspark converts a pandas UDF's result: NaN and None become null, and values must fit the type."""
    return pa.Array.from_pandas(values, mask=values.isna().to_numpy(), type=arrow_type, safe=True)


def predict_batch(model: Any, batch: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The batch's outputs, one column per result field, in order."""
    if _SKIP not in batch.columns or not batch[_SKIP].any():
        return _predict(model, batch.drop(columns=[_SKIP], errors="ignore"), spec)
    keep = ~batch[_SKIP].to_numpy(dtype=bool)
    out = pd.DataFrame({f.name: pd.Series([None] * len(batch), dtype=object) for f in result_fields(spec)})
    if keep.any():
        scored = _predict(model, batch.loc[keep].drop(columns=[_SKIP]), spec)
        for n in scored.columns:
            column = out[n].to_numpy(dtype=object)
            column[keep] = scored[n].to_numpy(dtype=object)
            out[n] = column
    return out


def _predict(model: Any, batch: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    def run(frame: pd.DataFrame) -> pd.DataFrame:
        data = to_model_input(frame, spec.tensor)
        raw = model.predict(data, params=dict(spec.params)) if spec.params else model.predict(data)
        return to_output(raw, spec.outputs, len(frame))

    if not spec.isolate_errors:
        return run(batch)
    return _bisect(run, batch.reset_index(drop=True), spec.outputs)


def _bisect(run: Any, batch: pd.DataFrame, outputs: T.StructType) -> pd.DataFrame:
    """Score a batch; if the model raises, score each half, down to the single rows that raise. An empty batch
    (a verification whose rows were all rejected for their inputs) scores to no rows: a model may raise on
    zero rows, and halving nothing never ends."""
    if batch.empty:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in [*outputs.fieldNames(), MODEL_ERROR]})
    try:
        out = run(batch)
        out[MODEL_ERROR] = None
        return out
    except Exception as e:
        if len(batch) == 1:
            row: dict[str, Any] = {f.name: [None] for f in outputs.fields}
            row[MODEL_ERROR] = [f"{MODEL_ERROR_PREFIX}{type(e).__name__}: {_first_line(e)}"]
            return pd.DataFrame(row, dtype=object)
    mid = len(batch) // 2
    halves = [_bisect(run, batch.iloc[:mid].reset_index(drop=True), outputs),
              _bisect(run, batch.iloc[mid:].reset_index(drop=True), outputs)]
    return pd.concat([h.astype(object) for h in halves], ignore_index=True)


def to_model_input(batch: pd.DataFrame, tensor: TensorInput | None) -> Any:
    if tensor is None:
        return batch
    if tensor.from_array_column:
        arr = np.stack(batch.iloc[:, 0].to_numpy()).astype(tensor.dtype, copy=False)
    else:
        arr = batch.to_numpy(dtype=tensor.dtype)
    return arr.reshape((len(batch), *tensor.shape[1:])) if len(tensor.shape) > 2 else arr


def to_output(pred: Any, outputs: T.StructType, rows: int) -> pd.DataFrame:
    """Shape whatever pyfunc returned (ndarray, Series, DataFrame, dict, list) into one column per output."""
    fields = outputs.fields
    if isinstance(pred, dict):
        pred = pd.DataFrame(pred)
    if len(pred) != rows:
        raise ValueError(f"model returned {len(pred)} predictions for a batch of {rows} rows")
    if len(fields) == 1:
        return pd.DataFrame({fields[0].name: _single(pred, fields[0])})
    if isinstance(pred, pd.DataFrame):
        if all(f.name in pred.columns for f in fields):
            frame = pred[[f.name for f in fields]]
        elif pred.shape[1] == len(fields):
            frame = pred
        else:
            raise ValueError(f"model returned columns {list(pred.columns)}, expected {[f.name for f in fields]}")
        arrays = [frame.iloc[:, i].to_numpy() for i in range(len(fields))]
    else:
        matrix = np.asarray(pred)
        if matrix.ndim != 2 or matrix.shape[1] != len(fields):
            raise ValueError(f"model returned shape {matrix.shape}, expected (rows, {len(fields)})")
        arrays = [matrix[:, i] for i in range(len(fields))]
    return pd.DataFrame({f.name: _as_dtype(pd.Series(a), f.dataType) for f, a in zip(fields, arrays, strict=True)})


def _single(pred: Any, out: T.StructField) -> pd.Series:
    if isinstance(pred, pd.DataFrame):
        if out.name in pred.columns:
            pred = pred[out.name]
        elif pred.shape[1] == 1:
            pred = pred.iloc[:, 0]
        elif not isinstance(out.dataType, T.ArrayType):
            raise ValueError(f"model returned {pred.shape[1]} columns where one output was expected")
    if isinstance(out.dataType, T.ArrayType):
        return pd.Series(list(np.asarray(pred)))
    arr = np.asarray(pred)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    return _as_dtype(pd.Series(arr), out.dataType)


def _as_dtype(values: pd.Series, spark_type: T.DataType) -> pd.Series:
    dtype = _NUMPY_DTYPES.get(type(spark_type))
    if dtype is not None and values.dtype != dtype and not values.isna().any():
        return values.astype(dtype)
    if isinstance(spark_type, T.StringType) and values.dtype != object:
        return values.astype(str)
    return values.reset_index(drop=True)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:500]
