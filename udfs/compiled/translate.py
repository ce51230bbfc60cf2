"""Which translator a model gets, from its MLflow flavor: the pyfunc loader module names the library, the
pyfunc `predict_fn` names the output (`predict`, `predict_proba`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import types as T

from udfs.compiled.program import Feature, Program, Unsupported


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
    return loader, pyfunc, loader == "mlflow.sklearn" and "sklearn" in meta.flavors


def translate(model_path: str, features: Sequence[Feature], outputs: T.StructType,
              inputs_finite: bool = False, max_size: int | None = None) -> Program:
    """The model in `model_path` (an MLflow model folder) as a Program whose outputs fill `outputs`;
    `inputs_finite`: the caller rejects rows with a null, NaN or infinite input before the model sees them;
    `max_size`: the most tree nodes taken (a larger ensemble is Unsupported)."""
    loader, pyfunc, translatable = _flavor(model_path)
    if translatable:
        import mlflow.sklearn

        from udfs.compiled import sklearn

        model: Any = mlflow.sklearn.load_model(model_path)
        return sklearn.translate(model, features, outputs, pyfunc.get("predict_fn", "predict"), inputs_finite,
                                 max_size)
    raise Unsupported(f"flavor {loader or 'unknown'}"
                      + (" (a custom PythonModel)" if loader == "mlflow.pyfunc.model" else "")
                      + ": only scikit-learn models translate")
