"""Model files travel with the job (SparkContext.addArchive) and are loaded once per Python worker: executors
never call the registry, and a reused worker never loads a model twice."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any

from pyspark import SparkFiles
from pyspark.sql import SparkSession

_LOADED: dict[str, Any] = {}


def ship(spark: SparkSession, local_dir: str) -> str:
    """Send a model directory to every executor, as one zip that Spark unpacks there (a directory itself
    can only be added in local mode); returns the name workers pass to `load`. The name is unique: Spark
    keeps the first file of a name, and a reused Python worker its model, so two models shipped in one
    session (two runs in one process) must never share one (a `runs:/ID/model` folder is always `model`)."""
    base = os.path.join(tempfile.mkdtemp(prefix="score-model-zip-"), f"model-{uuid.uuid4().hex}")
    archive = shutil.make_archive(base, "zip", root_dir=os.path.normpath(local_dir))
    spark.sparkContext.addArchive(archive)
    return os.path.basename(archive)


def load(name: str) -> Any:
    """The pyfunc model, loaded once per process, without MLflow's check of the model's requirements: the
    driver compared them with its environment once, by name, as it downloaded the model
    (spark_jobs.model.model_ref.environment_differences; MLflow's check costs 0.7 CPU-seconds per process)."""
    model = _LOADED.get(name)
    if model is None:
        import mlflow.pyfunc  # imported here: only Python workers that score pay for it

        path = name if os.path.isabs(name) else SparkFiles.get(name)
        model = _LOADED[name] = mlflow.pyfunc.load_model(path, suppress_warnings=True)
    return model
