"""Plan a run from metadata alone (table schema, partition columns, model signature, partition flags):
every mismatch is found here, before any data is read."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import DataType as MlType
from mlflow.types.schema import ColSpec, TensorSpec
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.errors import UsageError
from spark_jobs.planning.tables import TableInfo
from udfs import FeatureColumn
from udfs.compat import col
from udfs.model_udf import TensorInput

PREDICTION = "prediction"
REJECT_REASON = "reject_reason"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # Hive's folder name, and --partition value, for NULL
FINGERPRINT = "input_fingerprint"  # of the input partition a row was scored from: incremental runs compare it
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
    "str": T.StringType(),  # infer_signature on string labels: Tensor('str')
}
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_NUMERIC = (*_INTEGRAL, T.FloatType, T.DoubleType, T.DecimalType)
_INT_WIDTH = {T.ByteType: 1, T.ShortType: 2, T.IntegerType: 4, T.LongType: 8}


@dataclass(frozen=True)
class Selection:
    """The partitions a run scores: a column filter (typed literals, never SQL text) and its description."""

    condition: Column | None
    text: str  # e.g. "ds=2024-01-01 or ds=2024-01-02"
    # the same filter as typed values per column (any of them; all columns), so the driver can apply it to the
    # catalog's partition list without a Spark job; None where only the condition says it
    accepted: Mapping[str, tuple[Any, ...]] | None = None

    def keeps(self, columns: Sequence[str], values: Sequence[Any]) -> bool | None:
        """Whether a partition passes, decided on the driver (null-safe equality); None: only Spark can say."""
        if self.accepted is None:
            return None
        given = {c.lower(): v for c, v in zip(columns, values, strict=True)}
        return all(any(_same(given[c.lower()], v) for v in vs) for c, vs in self.accepted.items())


@dataclass(frozen=True)
class ScoringPlan:
    features: tuple[FeatureColumn, ...]
    outputs: T.StructType
    output_schema: T.StructType  # the scored table: input data columns, outputs, lineage, partition columns
    partition_columns: tuple[str, ...]
    selection: Selection
    tensor: TensorInput | None = None
    checked: tuple[str, ...] = ()  # feature columns whose values may fail to cast (strings, say)


@dataclass(frozen=True)
class ModelFacts:
    """What the plan needs to know of the model beyond its signature."""

    signature: ModelSignature | None
    output_names: tuple[str, ...] | None = None  # e.g. proba_0, proba_1 for a predict_proba classifier


def build(
    table: TableInfo,
    model: ModelFacts,
    partitions: Mapping[str, Sequence[str]],
    case_sensitive: bool = False,
    feature_columns: Sequence[str] = (),
    result_type: T.DataType | None = None,
) -> ScoringPlan:
    signature = model.signature
    if signature is not None and signature.inputs is not None and signature.inputs.is_tensor_spec():
        features, tensor = match_tensor(table, signature, feature_columns, case_sensitive)
    else:
        if feature_columns:
            raise UsageError("--feature-columns is for models with one tensor input; this model takes named columns")
        features, tensor = match_features(table, signature, case_sensitive), None
    outputs = output_fields(signature, model.output_names, result_type)
    source_types = {f.name: f.dataType for f in table.schema.fields}
    return ScoringPlan(
        features=features,
        outputs=outputs,
        output_schema=output_schema(table, outputs),
        partition_columns=table.partition_columns,
        selection=select_partitions(table, partitions, case_sensitive),
        tensor=tensor,
        checked=tuple(f.column for f in features if cast_kind(source_types[f.column], f.spark_type) == "checked"),
    )


def match_features(
    table: TableInfo, signature: ModelSignature | None, case_sensitive: bool
) -> tuple[FeatureColumn, ...]:
    if signature is None or signature.inputs is None:
        raise UsageError("the model has no input signature: log it with one (mlflow.models.infer_signature)")
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
        features.append(_feature(table, field, spec.name, target))
    return tuple(features)


def match_tensor(
    table: TableInfo, signature: ModelSignature, feature_columns: Sequence[str], case_sensitive: bool
) -> tuple[tuple[FeatureColumn, ...], TensorInput]:
    """One ndarray input: fed from ordered numeric columns (--feature-columns) or from one array column."""
    assert signature.inputs is not None
    specs = signature.inputs.inputs
    if len(specs) != 1:
        raise UsageError("the model takes several tensor inputs; this job feeds one (--feature-columns)")
    (spec,) = specs
    assert isinstance(spec, TensorSpec)
    dtype = str(spec.type)
    elem = _NUMPY_TO_SPARK.get(dtype)
    if elem is None or not isinstance(elem, _NUMERIC):
        raise UsageError(f"the model's tensor input has dtype {dtype}, which this job cannot feed")
    shape = tuple(int(d) for d in spec.shape)
    if feature_columns:
        fields = []
        for name in feature_columns:
            found = find_column(table.schema, name, case_sensitive)
            if found is None:
                raise UsageError(f"--feature-columns: input table {table.name} has no column '{name}'")
            fields.append(_feature(table, found, found.name, elem))
        width = shape[-1] if len(shape) == 2 else -1
        if width not in (-1, len(fields)):
            raise UsageError(f"the model's tensor input takes {width} features; --feature-columns gives {len(fields)}")
        return tuple(fields), TensorInput(dtype, shape)
    arrays = [f for f in table.schema.fields if isinstance(f.dataType, T.ArrayType)
              and (spec.name is None or f.name.lower() == spec.name.lower())]
    if len(arrays) != 1:
        raise UsageError(
            "the model takes one tensor input: give its columns in order with --feature-columns a,b,c"
            + (f", or an array column named '{spec.name}'" if spec.name else ", or have exactly one array column")
        )
    (array,) = arrays
    assert isinstance(array.dataType, T.ArrayType)
    if cast_kind(array.dataType.elementType, elem) != "exact":
        raise UsageError(f"column '{array.name}' has type {array.dataType.simpleString()}, which cannot be cast "
                         f"safely to array<{elem.simpleString()}> as the model's tensor input requires")
    return (FeatureColumn(array.name, array.name, T.ArrayType(elem)),), TensorInput(dtype, shape, True)


def _feature(table: TableInfo, field: T.StructField, name: str, target: T.DataType) -> FeatureColumn:
    if cast_kind(field.dataType, target) is None:
        raise UsageError(
            f"column '{field.name}' of {table.name} has type {field.dataType.simpleString()}, which cannot be "
            f"cast safely to {target.simpleString()} as the model's input '{name}' requires"
        )
    return FeatureColumn(name=name, column=field.name, spark_type=target)


def cast_kind(source: T.DataType, target: T.DataType) -> str | None:
    """'exact' for casts that keep every value (numeric widening, booleans to numbers, dates to timestamps,
    integers to strings); 'checked' for text parsed into a number, boolean, date or timestamp, where a value
    may not parse (that row is then a bad row); None where no safe cast exists."""
    if source == target:
        return "exact"
    if isinstance(source, T.StringType) and isinstance(target, (*_NUMERIC, T.BooleanType, T.TimestampType)):
        return "checked"
    if isinstance(target, (T.DoubleType, T.FloatType)):
        return "exact" if isinstance(source, (*_NUMERIC, T.BooleanType)) else None
    if isinstance(target, _INTEGRAL):
        if isinstance(source, T.BooleanType):
            return "exact"
        widening = isinstance(source, _INTEGRAL) and _INT_WIDTH[type(source)] <= _INT_WIDTH[type(target)]
        return "exact" if widening else None
    if isinstance(target, T.TimestampType):
        return "exact" if isinstance(source, (T.DateType, T.TimestampNTZType)) else None
    if isinstance(target, T.StringType):
        return "exact" if isinstance(source, _INTEGRAL) else None
    return None


def safe_cast(source: T.DataType, target: T.DataType) -> bool:
    return cast_kind(source, target) is not None


def output_fields(
    signature: ModelSignature | None,
    output_names: Sequence[str] | None = None,
    result_type: T.DataType | None = None,
) -> T.StructType:
    """One `prediction` for a scalar output; one column per name for named outputs (or predict_proba classes);
    an array for a tensor; `result_type` where the model declares no output."""
    outputs = signature.outputs if signature is not None else None
    if outputs is None:
        if result_type is None:
            return T.StructType([T.StructField(PREDICTION, T.DoubleType())])
        if isinstance(result_type, T.StructType):
            return T.StructType([T.StructField(f.name, f.dataType) for f in result_type.fields])
        return T.StructType([T.StructField(PREDICTION, result_type)])
    specs = outputs.inputs
    if outputs.is_tensor_spec():
        (tensor,) = specs
        assert isinstance(tensor, TensorSpec)
        elem = _NUMPY_TO_SPARK.get(str(tensor.type), T.DoubleType())
        shape = tuple(tensor.shape)
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            return T.StructType([T.StructField(PREDICTION, elem)])
        if output_names and len(shape) == 2 and shape[1] == len(output_names):
            return T.StructType([T.StructField(n, elem) for n in output_names])
        return T.StructType([T.StructField(PREDICTION, T.ArrayType(elem))])
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


def typed_params(signature: ModelSignature | None, raw: Mapping[str, str]) -> dict[str, Any]:
    """--param values typed by the model's params schema; a name the model does not declare is an error."""
    if not raw:
        return {}
    schema = signature.params if signature is not None else None
    if schema is None:
        raise UsageError(f"--param {', '.join(raw)}: the model declares no params in its signature")
    specs = {p.name: p for p in schema.params}
    typed: dict[str, Any] = {}
    for name, text in raw.items():
        spec = specs.get(name)
        if spec is None:
            raise UsageError(f"--param {name}: the model has no such param (it has: {', '.join(specs)})")
        parse = _PARAM_PARSERS.get(spec.dtype) if isinstance(spec.dtype, MlType) else None
        if parse is None or spec.shape is not None:
            raise UsageError(f"--param {name}: params of type {spec.dtype} are not supported on the command line")
        try:
            typed[name] = parse(text)
        except ValueError:
            raise UsageError(f"--param {name}={text!r}: not a valid {spec.dtype}") from None
    return typed


def infer_outputs(prediction: Any) -> T.StructType:
    """Output columns from what the model returned for a few rows (a model logged without output signature)."""
    if isinstance(prediction, dict):
        prediction = pd.DataFrame(prediction)
    if isinstance(prediction, pd.DataFrame):
        if prediction.shape[1] == 1:
            return T.StructType([T.StructField(PREDICTION, _spark_type_of(prediction.iloc[:, 0]))])
        return T.StructType([T.StructField(str(c), _spark_type_of(prediction[c])) for c in prediction.columns])
    arr = np.asarray(prediction)
    if arr.ndim == 2 and arr.shape[1] > 1:
        return T.StructType([T.StructField(PREDICTION, T.ArrayType(_NUMPY_TO_SPARK.get(str(arr.dtype),
                                                                                       T.DoubleType())))])
    return T.StructType([T.StructField(PREDICTION, _spark_type_of(pd.Series(arr.reshape(len(arr)))))])


def _spark_type_of(values: pd.Series) -> T.DataType:
    return _NUMPY_TO_SPARK.get(str(values.dtype), T.StringType())


def rejects_schema(table: TableInfo) -> T.StructType:
    """Rejected rows: the row's stored input columns (before any transform), why, and which run; partitioned
    like the input."""
    by_name = {f.name: f for f in table.schema.fields}
    stored = {f.name: f for f in (table.input_schema or table.schema).fields}
    return T.StructType([
        *[stored[c] for c in table.input_data_columns],
        T.StructField(REJECT_REASON, T.StringType()),
        *[f for f in LINEAGE.fields],
        *[by_name[c] for c in table.partition_columns],
    ])


def output_schema(table: TableInfo, outputs: T.StructType) -> T.StructType:
    by_name = {f.name: f for f in table.schema.fields}
    added = [*outputs.fields, *LINEAGE.fields]
    taken = {c.lower() for c in by_name}
    clashes = [n for n in [f.name for f in added] + [REJECT_REASON, FINGERPRINT] if n.lower() in taken]
    if clashes:
        raise UsageError(
            f"input table {table.name} already has column(s) {', '.join(clashes)} that the scored table adds"
        )
    return T.StructType([
        *[by_name[c] for c in table.data_columns],
        *added,
        T.StructField(FINGERPRINT, T.StringType()),
        *[by_name[c] for c in table.partition_columns],
    ])


def select_partitions(table: TableInfo, partitions: Mapping[str, Sequence[str]], case_sensitive: bool) -> Selection:
    if not partitions:
        return Selection(None, "all partitions")
    by_field: dict[str, tuple[T.StructField, list[str]]] = {}
    for name, values in partitions.items():
        field = find_column(table.schema, name, case_sensitive)
        if field is None or field.name not in table.partition_columns:
            raise UsageError(
                f"--partition column '{name}' is not a partition column of {table.name} "
                f"(partition columns: {', '.join(table.partition_columns) or 'none'})"
            )
        merged = by_field.setdefault(field.name, (field, []))[1]  # ds=a and DS=b name one column: OR them
        merged += [v for v in values if v not in merged]
    condition: Column | None = None
    texts = []
    accepted: dict[str, tuple[Any, ...]] = {}
    for field, values in by_field.values():
        literals = [partition_literal(field, v) for v in values]
        accepted[field.name] = tuple(literals)
        term = functools.reduce(Column.__or__, [partition_equals(field.name, v) for v in literals])
        condition = term if condition is None else condition & term
        texts.append(" or ".join(f"{field.name}={v}" for v in values))
    return Selection(condition, " and ".join(f"({t})" if " or " in t and len(texts) > 1 else t for t in texts),
                     accepted)


def _same(a: Any, b: Any) -> bool:
    """Spark's `<=>` on two typed partition values: nulls equal each other, a float NaN equals NaN."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b) and type(a) is type(b)


def partition_equals(column: str, value: Any) -> Column:
    """The partition column holds this value (None: the NULL partition), as a filter (null counts as false,
    as for `<=>`) that Spark hands to the metastore: `=` reaches it and `<=>` does not, so with `<=>` a run
    of one partition fetched every partition of the table (`get_partitions`), a cost that grows with the
    table's history."""
    return col(column).isNull() if value is None else col(column) == F.lit(value)


def partition_literal(field: T.StructField, value: str) -> Any:
    """The flag's text as a value of the column's type, so it is compared as data, never parsed as SQL.
    Hive's name for the NULL partition stands for NULL."""
    if value == NULL_PARTITION:
        return None
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


_PARAM_PARSERS: dict[MlType, Callable[[str], Any]] = {
    MlType.string: str, MlType.integer: int, MlType.long: int, MlType.float: float, MlType.double: float,
    MlType.boolean: _parse_bool, MlType.datetime: dt.datetime.fromisoformat,
}
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
