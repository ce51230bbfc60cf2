"""The model as a vectorized UDF: an iterator over Arrow batches, as pandas, through the pyfunc model.

Only the feature columns cross into Python (cast in the JVM beforehand); every other column stays in the
JVM, so passthrough keys cost nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from udfs import model_cache

_NUMPY_DTYPES: dict[type[T.DataType], str] = {
    T.DoubleType: "float64",
    T.FloatType: "float32",
    T.LongType: "int64",
    T.IntegerType: "int32",
    T.ShortType: "int16",
    T.ByteType: "int8",
    T.BooleanType: "bool",
}


@dataclass(frozen=True)
class FeatureColumn:
    name: str  # the model's input name
    column: str  # the DataFrame column that feeds it
    spark_type: T.DataType  # cast to this in the JVM before the batch reaches Python


@dataclass(frozen=True)
class ModelSpec:
    model_file: str  # a name returned by model_cache.ship, or an absolute local path
    features: tuple[FeatureColumn, ...]
    outputs: T.StructType  # one field: one column; several: one column each


def col(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def score(df: DataFrame, spec: ModelSpec) -> DataFrame:
    """Append the model's output column(s) to `df`; every input column passes through."""
    fields = spec.outputs.fields
    single = len(fields) == 1
    return_type = fields[0].dataType if single else spec.outputs
    udf = F.pandas_udf(_predict_batches(spec), return_type)  # type: ignore[attr-defined]
    features = F.struct(*[col(f.column).cast(f.spark_type).alias(f.name) for f in spec.features])
    if single:
        return df.withColumn(fields[0].name, udf(features))
    tmp = "__score_outputs"
    return df.withColumn(tmp, udf(features)).select(
        "*", *[F.col(tmp)[f.name].alias(f.name) for f in fields]
    ).drop(tmp)


def _predict_batches(spec: ModelSpec) -> Any:
    model_file, outputs = spec.model_file, spec.outputs

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        model = model_cache.load(model_file)
        for batch in batches:
            yield to_output(model.predict(batch), outputs, len(batch))

    return predict


def to_output(pred: Any, outputs: T.StructType, rows: int) -> Any:
    """Shape whatever pyfunc returned into the declared Spark output: a Series for one output, else a frame."""
    fields = outputs.fields
    if isinstance(pred, dict):
        pred = pd.DataFrame(pred)
    if len(fields) > 1:
        frame = pred if isinstance(pred, pd.DataFrame) else pd.DataFrame(np.asarray(pred))
        missing = [f.name for f in fields if f.name not in frame.columns]
        if missing:
            frame = frame.set_axis([f.name for f in fields][: frame.shape[1]], axis=1)
        out = pd.DataFrame({f.name: _as_dtype(frame[f.name], f.dataType) for f in fields})
        return _check_rows(out.reset_index(drop=True), rows)
    (field,) = fields
    if isinstance(pred, pd.DataFrame):
        if field.name in pred.columns:
            pred = pred[field.name]
        elif pred.shape[1] == 1:
            pred = pred.iloc[:, 0]
        else:
            raise ValueError(f"model returned {pred.shape[1]} columns where one output was expected")
    if isinstance(field.dataType, T.ArrayType):
        series = pd.Series(list(np.asarray(pred)) if not isinstance(pred, pd.Series) else pred.tolist())
    else:
        arr = np.asarray(pred)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        series = _as_dtype(pd.Series(arr), field.dataType)
    return _check_rows(series.reset_index(drop=True), rows)


def _as_dtype(values: pd.Series, spark_type: T.DataType) -> pd.Series:
    dtype = _NUMPY_DTYPES.get(type(spark_type))
    if dtype is not None and values.dtype != dtype and not values.isna().any():
        return values.astype(dtype)
    if isinstance(spark_type, T.StringType) and values.dtype != object:
        return values.astype(str)
    return values


def _check_rows(out: Any, rows: int) -> Any:
    if len(out) != rows:
        raise ValueError(f"model returned {len(out)} predictions for a batch of {rows} rows")
    return out
