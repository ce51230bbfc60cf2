"""What a partition's profile is compared with. `previous` (default): the profile of the run that published
the partition's current version, else of the latest earlier partition (published, or profiled earlier in this
run: a backfill compares each day with the day before). `training`: the profile stored with the model version
(`score-table baseline` logs it to the model's MLflow run), the same for every partition."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from spark_jobs import fs
from spark_jobs.planning import partitions
from spark_jobs.publishing import output
from spark_jobs.publishing.staging import split_location
from spark_jobs.quality import profiles, store
from spark_jobs.quality.profiles import Key
from spark_jobs.quality.records import ColumnProfile

log = logging.getLogger("score_table.quality")
ARTIFACT = "score_table/baseline_profile.json"  # in the model version's MLflow run
Values = tuple[Any, ...]


def training(model_run_id: str | None) -> list[ColumnProfile] | None:
    """The training profile stored with the model version, or None when it has none."""
    if not model_run_id:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=model_run_id, artifact_path=ARTIFACT, dst_path=tmp)
        except (MlflowException, OSError):
            log.debug("no training profile in run %s", model_run_id, exc_info=True)
            return None
        with open(path, encoding="utf-8") as f:
            return store.from_json(f.read())


def log_training(model_run_id: str, profiles: Sequence[ColumnProfile]) -> str:
    """Store a training profile with the model version (an artifact of its run; the registry is not
    written). Returns the artifact's URI."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        folder, name = os.path.split(ARTIFACT)
        local = os.path.join(tmp, name)
        with open(local, "w", encoding="utf-8") as f:
            f.write(store.to_json(profiles))
        client = MlflowClient()
        client.log_artifact(model_run_id, local, folder)
        return f"runs:/{model_run_id}/{ARTIFACT}"


class Previous:
    """`previous` baselines of one run's partitions. The output's published versions come from its
    `_published.jsonl` (one file: each partition's folder, which names the run that wrote it), their profiles
    from that run's file in the profiles table: no catalog call per partition. Delta outputs keep no manifest:
    there only this run's earlier partitions serve."""

    def __init__(self, spark: SparkSession, output_location: str, profiles_root: str | None,
                 partition_fields: Sequence[T.StructField], run_paths: Mapping[Values, str]) -> None:
        self.spark, self.root = spark, profiles_root
        self.columns = tuple(f.name for f in partition_fields)
        self.run_paths = dict(run_paths)  # this run's partitions -> their Hive partition paths
        self.published = _published(spark, output_location, partition_fields)  # values -> (run id, path)

    def __call__(self, values: Values) -> profiles.Baseline | None:
        own = self._stored(values)
        if own is not None:
            return own
        earlier = {v for v in [*self.published, *self.run_paths] if _order(v) < _order(values)}
        for v in sorted(earlier, key=_order, reverse=True):
            if v in self.run_paths:  # rescored by this run: its new profile is what gets published
                return profiles.Baseline(f"this run's {self._describe(v)}", earlier=v)
            found = self._stored(v)
            if found is not None:
                return found
        return None

    def _stored(self, values: Values) -> profiles.Baseline | None:
        """The profile of the run that published this partition's current version."""
        if values not in self.published or self.root is None:
            return None
        run_id, path = self.published[values]
        found = store.read(self.spark, self.root, path, run_id)
        if not found:
            return None
        return profiles.Baseline(f"published {self._describe(values)} (run {run_id})", _keyed(found))

    def _describe(self, values: Values) -> str:
        return partitions.describe(self.columns, values) if self.columns else "table"


def _published(spark: SparkSession, output_location: str, fields: Sequence[T.StructField]
               ) -> dict[Values, tuple[str, str]]:
    """Published partitions (typed from their folder's Hive path) -> the run that wrote the version, and
    that path."""
    path = f"{output_location.rstrip('/')}/{output.MANIFEST}"
    if not fs.exists(spark, path):
        return {}
    found: dict[Values, tuple[str, str]] = {}
    for line in fs.read_text(spark, path).splitlines():
        if not line.strip():
            continue
        where = split_location(json.loads(line)["folder"])
        if where is not None:
            found[partitions.from_path(fields, where[2])] = (where[1], where[2])
    return found


def fixed(found: Sequence[ColumnProfile], name: str) -> Callable[[Values], profiles.Baseline | None]:
    keyed = _keyed(found)
    return lambda _values: profiles.Baseline(name, keyed)


def _keyed(found: Sequence[ColumnProfile]) -> dict[Key, ColumnProfile]:
    return {(p.kind, p.column): p for p in found}


def _order(values: Values) -> tuple[tuple[int, str, Any], ...]:
    """Partitions in value order, nulls first (values of one column share a type)."""
    return tuple((0, "", "") if v is None else (1, type(v).__name__, v) for v in values)
