"""Plan a run from metadata alone (table schema, partition columns, model signature, partition flags):
every mismatch is found here, before any data is read."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow.models import ModelSignature
from mlflow.types import DataType as MlType
from mlflow.types.schema import ColSpec, TensorSpec
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.errors import UsageError
from spark_jobs.tables import TableInfo
from udfs import FeatureColumn
from udfs.model_udf import col

PREDICTION = "prediction"
LINEAGE = T.StructType([
    T.StructField("model_name", T.StringType()),
    T.StructField("model_version", T.StringType()),
    T.StructField("model_run_id", T.StringType()),
    T.StructField("scored_at", T.TimestampType()),
    T.StructField("scoring_run_id", T.StringType()),
])

_ML_TO_SPARK: dict[MlType, T.DataType] = {
    MlType.boolean: T.BooleanType(),
    MlType.integer: T.IntegerType(),
    MlType.long: T.LongType(),
    MlType.float: T.FloatType(),
    MlType.double: T.DoubleType(),
    MlType.string: T.StringType(),
    MlType.binary: T.BinaryType(),
    MlType.datetime: T.TimestampType(),
}
_NUMPY_TO_SPARK = {
    "float64": T.DoubleType(), "float32": T.FloatType(), "int64": T.LongType(), "int32": T.IntegerType(),
    "int16": T.ShortType(), "int8": T.ByteType(), "bool": T.BooleanType(), "object": T.StringType(),
}
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_NUMERIC = (*_INTEGRAL, T.FloatType, T.DoubleType, T.DecimalType)
_INT_WIDTH = {T.ByteType: 1, T.ShortType: 2, T.IntegerType: 4, T.LongType: 8}


@dataclass(frozen=True)
class Selection:
    """The partitions a run scores: a column filter (typed literals, never SQL text) and its description."""

    condition: Column | None
    text: str  # e.g. "ds=2024-01-01 or ds=2024-01-02"


@dataclass(frozen=True)
class ScoringPlan:
    features: tuple[FeatureColumn, ...]
    outputs: T.StructType
    output_schema: T.StructType  # the scored table: input data columns, outputs, lineage, partition columns
    partition_columns: tuple[str, ...]
    selection: Selection


def build(
    table: TableInfo,
    signature: ModelSignature | None,
    partitions: Mapping[str, Sequence[str]],
    case_sensitive: bool = False,
) -> ScoringPlan:
    features = match_features(table, signature, case_sensitive)
    outputs = output_fields(signature)
    return ScoringPlan(
        features=features,
        outputs=outputs,
        output_schema=output_schema(table, outputs),
        partition_columns=table.partition_columns,
        selection=select_partitions(table, partitions, case_sensitive),
    )


def match_features(
    table: TableInfo, signature: ModelSignature | None, case_sensitive: bool
) -> tuple[FeatureColumn, ...]:
    if signature is None or signature.inputs is None:
        raise UsageError("the model has no input signature: log it with one (mlflow.models.infer_signature)")
    if signature.inputs.is_tensor_spec():
        raise UsageError("the model takes a tensor input; this job feeds models with a column-based signature")
    features = []
    for spec in signature.inputs.inputs:
        assert isinstance(spec, ColSpec)
        if spec.name is None:
            raise UsageError("the model's input signature has unnamed columns; columns are matched by name")
        field = find_column(table.schema, spec.name, case_sensitive)
        if field is None:
            if not spec.required:
                continue
            raise UsageError(
                f"input table {table.name} has no column '{spec.name}' required by the model "
                f"(table columns: {', '.join(table.schema.fieldNames())})"
            )
        target = _ML_TO_SPARK.get(spec.type) if isinstance(spec.type, MlType) else None
        if target is None:
            raise UsageError(f"model input '{spec.name}' has type {spec.type}, which this job cannot feed")
        if not safe_cast(field.dataType, target):
            raise UsageError(
                f"column '{field.name}' of {table.name} has type {field.dataType.simpleString()}, which cannot be "
                f"cast safely to {target.simpleString()} as the model's input '{spec.name}' requires"
            )
        features.append(FeatureColumn(name=spec.name, column=field.name, spark_type=target))
    return tuple(features)


def safe_cast(source: T.DataType, target: T.DataType) -> bool:
    """Casts that keep every value meaningful: numeric widening, exact integer widening, dates to timestamps."""
    if source == target:
        return True
    if isinstance(target, (T.DoubleType, T.FloatType)):
        return isinstance(source, _NUMERIC)
    if isinstance(target, _INTEGRAL):
        return isinstance(source, _INTEGRAL) and _INT_WIDTH[type(source)] <= _INT_WIDTH[type(target)]
    if isinstance(target, T.TimestampType):
        return isinstance(source, (T.DateType, T.TimestampNTZType))
    return False


def output_fields(signature: ModelSignature | None) -> T.StructType:
    outputs = signature.outputs if signature is not None else None
    if outputs is None:
        return T.StructType([T.StructField(PREDICTION, T.DoubleType())])
    specs = outputs.inputs
    if outputs.is_tensor_spec():
        (tensor,) = specs
        assert isinstance(tensor, TensorSpec)
        elem = _NUMPY_TO_SPARK.get(str(tensor.type), T.DoubleType())
        scalar = len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)
        return T.StructType([T.StructField(PREDICTION, elem if scalar else T.ArrayType(elem))])
    types = []
    for spec in specs:
        spark_type = _ML_TO_SPARK.get(spec.type) if isinstance(spec.type, MlType) else None
        if spark_type is None:
            raise UsageError(f"model output '{spec.name}' has type {spec.type}, which this job cannot store")
        types.append((spec.name, spark_type))
    if len(types) == 1:
        return T.StructType([T.StructField(PREDICTION, types[0][1])])
    if any(name is None for name, _ in types):
        raise UsageError("the model's output signature has several unnamed columns")
    return T.StructType([T.StructField(str(name), t) for name, t in types])


def output_schema(table: TableInfo, outputs: T.StructType) -> T.StructType:
    by_name = {f.name: f for f in table.schema.fields}
    added = [*outputs.fields, *LINEAGE.fields]
    taken = {c.lower() for c in by_name}
    clashes = [f.name for f in added if f.name.lower() in taken]
    if clashes:
        raise UsageError(
            f"input table {table.name} already has column(s) {', '.join(clashes)} that the scored table adds"
        )
    return T.StructType([
        *[by_name[c] for c in table.data_columns],
        *added,
        *[by_name[c] for c in table.partition_columns],
    ])


def select_partitions(table: TableInfo, partitions: Mapping[str, Sequence[str]], case_sensitive: bool) -> Selection:
    if not partitions:
        return Selection(None, "all partitions")
    condition: Column | None = None
    texts = []
    for name, values in partitions.items():
        field = find_column(table.schema, name, case_sensitive)
        if field is None or field.name not in table.partition_columns:
            raise UsageError(
                f"--partition column '{name}' is not a partition column of {table.name} "
                f"(partition columns: {', '.join(table.partition_columns) or 'none'})"
            )
        literals = [partition_literal(field, v) for v in values]
        term = col(field.name).isin([F.lit(v) for v in literals])
        condition = term if condition is None else condition & term
        texts.append(" or ".join(f"{field.name}={v}" for v in values))
    return Selection(condition, " and ".join(f"({t})" if " or " in t and len(texts) > 1 else t for t in texts))


def partition_literal(field: T.StructField, value: str) -> Any:
    """The flag's text as a value of the column's type, so it is compared as data, never parsed as SQL."""
    for types, parse in _PARSERS:
        if isinstance(field.dataType, types):
            try:
                return parse(value)
            except (ValueError, decimal.InvalidOperation):
                raise UsageError(
                    f"--partition {field.name}={value!r}: not a valid {field.dataType.simpleString()} value"
                ) from None
    raise UsageError(
        f"partition column '{field.name}' has type {field.dataType.simpleString()}, not supported in --partition"
    )


def _parse_bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(value)
    return value.lower() == "true"


_PARSERS: tuple[tuple[Any, Callable[[str], Any]], ...] = (
    (T.StringType, str),
    (_INTEGRAL, int),
    ((T.DoubleType, T.FloatType), float),
    (T.DecimalType, decimal.Decimal),
    (T.DateType, dt.date.fromisoformat),
    ((T.TimestampType, T.TimestampNTZType), dt.datetime.fromisoformat),
    (T.BooleanType, _parse_bool),
)


def find_column(schema: T.StructType, name: str, case_sensitive: bool) -> T.StructField | None:
    """Match a name as Spark resolves it (spark.sql.caseSensitive); ambiguity is an error, not a guess."""
    if case_sensitive:
        return next((f for f in schema.fields if f.name == name), None)
    hits = [f for f in schema.fields if f.name.lower() == name.lower()]
    if len(hits) > 1:
        raise UsageError(f"column name '{name}' is ambiguous: {', '.join(f.name for f in hits)}")
    return hits[0] if hits else None
