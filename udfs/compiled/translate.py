"""Which translator a model gets, from its MLflow flavor: the pyfunc loader module names the library
(scikit-learn, XGBoost, LightGBM), the pyfunc `predict_fn` names the output (`predict`, `predict_proba`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from udfs.compiled.program import Feature, Program, Unsupported, as_double

_LOADERS = {"mlflow.sklearn": "sklearn", "mlflow.xgboost": "xgboost", "mlflow.lightgbm": "lightgbm"}
_FLOATS: tuple[type[T.DataType], ...] = (T.FloatType, T.DoubleType)
_NUMBERS: tuple[type[T.DataType], ...] = (T.BooleanType, T.ByteType, T.ShortType, T.IntegerType, T.LongType,
                                          *_FLOATS)


def has_translator(model_path: str) -> bool:
    """Whether the model's flavor has a translator (the model itself may still hold an unsupported part)."""
    return _flavor(model_path)[2]


def _flavor(model_path: str) -> tuple[str | None, dict[str, Any], bool]:
    """The pyfunc loader module of a model folder, the pyfunc flavor's settings, and whether a translator
    takes that flavor."""
    from mlflow.models import Model

    meta = Model.load(model_path)
    pyfunc = meta.flavors.get("python_function", {})
    loader = pyfunc.get("loader_module")
    return loader, pyfunc, loader in _LOADERS and _LOADERS[loader] in meta.flavors


def translate(model_path: str, features: Sequence[Feature], outputs: T.StructType,
              inputs_finite: bool = False, max_size: int | None = None, native: bool = False) -> Program:
    """The model in `model_path` (an MLflow model folder) as a Program whose outputs fill `outputs`;
    `inputs_finite`: the caller rejects rows with a null, NaN or infinite input before the model sees them;
    `max_size`: the most tree nodes taken as SQL expressions (a larger ensemble is Unsupported); `native`: trees
    may run as the JVM evaluator (udfs.compiled.native) where the active Spark has it, outside that budget."""
    loader, pyfunc, translatable = _flavor(model_path)
    if not translatable:
        raise Unsupported(f"flavor {loader or 'unknown'}"
                          + (" (a custom PythonModel)" if loader == "mlflow.pyfunc.model" else "")
                          + ": only scikit-learn, XGBoost and LightGBM models translate")
    if loader == "mlflow.sklearn":
        import mlflow.sklearn

        from udfs.compiled import sklearn

        model: Any = mlflow.sklearn.load_model(model_path)
        return sklearn.translate(model, features, outputs, pyfunc.get("predict_fn", "predict"), inputs_finite,
                                 max_size, native)
    return _booster(loader or "", model_path, features, outputs, inputs_finite, max_size, native)


def _booster(loader: str, model_path: str, features: Sequence[Feature], outputs: T.StructType,
             inputs_finite: bool, max_size: int | None, native: bool) -> Program:
    """An XGBoost or LightGBM model as its own flavor's pyfunc calls it: `predict` on the frame of inputs."""
    if loader == "mlflow.xgboost":
        import mlflow.xgboost
        import xgboost

        model: Any = mlflow.xgboost.load_model(model_path)
        owner, allowed = type(model).__name__, _NUMBERS
    else:
        import lightgbm
        import mlflow.lightgbm

        model = mlflow.lightgbm.load_model(model_path)
        owner, allowed = type(model).__name__, _FLOATS  # integers reach LightGBM as float32 or float64 by batch
    for f in features:
        if not isinstance(f.spark_type, allowed):
            raise Unsupported(f"{owner}: input {f.name!r} has type {f.spark_type.simpleString()}")
    program = Program(inputs_finite=inputs_finite, max_size=max_size, native=native)
    X = [program.let(_pandas_value(f, loader)) for f in features]
    program.next_stage()
    if loader == "mlflow.xgboost":
        from udfs.compiled import xgb

        if isinstance(model, xgboost.Booster):
            if model.feature_names is not None and list(model.feature_names) != [f.name for f in features]:
                raise Unsupported(f"{owner}: feature names {model.feature_names} differ from the inputs")
            columns = xgb.translate_booster(program, model, X, owner)
        else:
            columns = xgb.translate_estimator(program, model, X, "predict")
    else:
        from udfs.compiled import lgbm

        if isinstance(model, lightgbm.Booster):
            columns = lgbm.translate_booster(program, model, X, owner)
        else:
            columns = lgbm.translate_estimator(program, model, X, "predict")
    if len(columns) != len(outputs.fields):
        raise Unsupported(f"{owner}: predict gives {len(columns)} outputs where the output schema has "
                          f"{len(outputs.fields)} ({', '.join(outputs.fieldNames())})")
    program.outputs = columns
    return program


def _pandas_value(feature: Feature, loader: str) -> Column:
    """A feature as the library receives it from the pandas frame: a double, null where missing. XGBoost
    casts every column to float32 itself (an integer straight to float32, not through a double)."""
    value = feature.column
    if loader == "mlflow.xgboost" and not isinstance(feature.spark_type, _FLOATS):
        value = value.cast(T.FloatType())
    return F.nanvl(as_double(value), F.lit(None).cast(T.DoubleType()))
