"""Custom pyfunc models for the tests. Pickled by value: Spark's Python workers cannot import `tests`."""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pandas as pd

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class LabelAndScore(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Returns a frame with two named columns."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        score = model_input["tenure"].to_numpy(dtype=float) / 100.0
        return pd.DataFrame({"label": np.where(score > 0.15, "stay", "churn"), "score": score})


class Thresholded(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Output depends on a predict param."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.Series:
        threshold = (params or {}).get("threshold", 0.5)
        return pd.Series((model_input["tenure"].to_numpy(dtype=float) / 30.0 > threshold).astype("int64"))


class RaisesOnNegative(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Raises when a batch holds a negative tenure: the rows that make it raise must be isolated."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.Series:
        tenure = model_input["tenure"].to_numpy(dtype=float)
        if (tenure < 0).any():
            raise ValueError(f"negative tenure {tenure[tenure < 0][0]:g}")
        return pd.Series(tenure * 2.0)


class Echo(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Describes what it received, one string per row: proves types and values arrive as declared."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.Series:
        return pd.Series([
            "|".join(f"{c}={_show(v)}" for c, v in row.items()) for _, row in model_input.iterrows()
        ])


def _show(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return repr(value.item() if hasattr(value, "item") else value)


class Embedder(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Returns a float32 vector per row: an embedding."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        t = model_input["tenure"].to_numpy(dtype=np.float32)
        return np.stack([t, t * 2, -t, np.ones_like(t)], axis=1)
