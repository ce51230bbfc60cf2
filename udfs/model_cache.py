"""Model files travel with the job (SparkContext.addFile) and are loaded once per Python worker: executors
never call the registry, and a reused worker never loads a model twice."""

from __future__ import annotations

import os
from typing import Any

from pyspark import SparkFiles
from pyspark.sql import SparkSession

_LOADED: dict[str, Any] = {}


def ship(spark: SparkSession, local_dir: str) -> str:
    """Send a model directory to every executor; returns the name workers pass to `load`."""
    spark.sparkContext.addFile(local_dir, recursive=True)
    return os.path.basename(os.path.normpath(local_dir))


def load(name: str) -> Any:
    model = _LOADED.get(name)
    if model is None:
        import mlflow.pyfunc  # imported here: only Python workers that score pay for it

        path = name if os.path.isabs(name) else SparkFiles.get(name)
        model = _LOADED[name] = mlflow.pyfunc.load_model(path)
    return model
