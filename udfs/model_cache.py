"""Model files travel with the job (SparkContext.addArchive) and are loaded once per Python worker: executors
never call the registry, and a reused worker never loads a model twice."""

from __future__ import annotations

import os
import shutil
from typing import Any

from pyspark import SparkFiles
from pyspark.sql import SparkSession

_LOADED: dict[str, Any] = {}


def ship(spark: SparkSession, local_dir: str) -> str:
    """Send a model directory to every executor, as one zip that Spark unpacks there (a directory itself
    can only be added in local mode); returns the name workers pass to `load`."""
    base = os.path.normpath(local_dir)
    archive = shutil.make_archive(base, "zip", root_dir=base)
    spark.sparkContext.addArchive(archive)
    return os.path.basename(archive)


def load(name: str) -> Any:
    model = _LOADED.get(name)
    if model is None:
        import mlflow.pyfunc  # imported here: only Python workers that score pay for it

        path = name if os.path.isabs(name) else SparkFiles.get(name)
        model = _LOADED[name] = mlflow.pyfunc.load_model(path)
    return model
