"""What a partition's profile is compared with. `previous` (default): the profile of the run that published
the partition's current version, else of the latest earlier partition (published, or profiled earlier in this
run: a backfill compares each day with the day before). `training`: the profile stored with the model version
(`score-table baseline` logs it to the model's MLflow run), the same for every partition."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from spark_jobs.planning import partitions, tables
from spark_jobs.publishing import output
from spark_jobs.publishing.staging import split_location
from spark_jobs.quality import store
from spark_jobs.quality.profiles import Key
from spark_jobs.quality.records import ColumnProfile

log = logging.getLogger("score_table.quality")
ARTIFACT = "score_table/baseline_profile.json"  # in the model version's MLflow run
Values = tuple[Any, ...]


@dataclass(frozen=True)
class Found:
    profiles: Mapping[Key, ColumnProfile]
    name: str  # for people: what the partition is compared with


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
    """`previous` baselines of one run's partitions, taken in partition order (call `of` in that order and
    `add` each partition's profile once made)."""

    def __init__(self, spark: SparkSession, output_table: str, profiles_table: str,
                 partition_columns: Sequence[str]) -> None:
        self.spark, self.output_table, self.profiles_table = spark, output_table, profiles_table
        self.columns = tuple(partition_columns)
        info = tables.describe(spark, output_table)
        self.published: list[Values] = partitions.listed(spark, info) if info is not None else []
        self.this_run: dict[Values, list[ColumnProfile]] = {}

    def add(self, values: Values, found: list[ColumnProfile]) -> None:
        self.this_run[values] = found

    def __call__(self, values: Values) -> Found | None:
        return self.of(values)

    def of(self, values: Values) -> Found | None:
        if values in self.published:
            found = self._published(values)
            if found is not None:
                return found
        earlier = [v for v in [*self.published, *self.this_run] if _order(v) < _order(values)]
        for v in sorted(set(earlier), key=_order, reverse=True):
            if v in self.this_run:
                return Found(_keyed(self.this_run[v]), f"this run's {self._describe(v)}")
            found = self._published(v)
            if found is not None:
                return found
        return None

    def _published(self, values: Values) -> Found | None:
        """The profile of the run that published this partition's current version."""
        spec = dict(zip(self.columns, values, strict=True))
        where = split_location(output.location(self.spark, self.output_table, spec or None))
        if where is None:
            return None
        run_id = where[1]
        found = store.read(self.spark, self.profiles_table, spec, run_id)
        if not found:
            return None
        return Found(_keyed(found), f"published {self._describe(values)} (run {run_id})")

    def _describe(self, values: Values) -> str:
        return partitions.describe(self.columns, values) if self.columns else "table"


def fixed(found: Sequence[ColumnProfile], name: str) -> Callable[[Values], Found | None]:
    keyed = _keyed(found)
    return lambda _values: Found(keyed, name)


def _keyed(found: Sequence[ColumnProfile]) -> dict[Key, ColumnProfile]:
    return {(p.kind, p.column): p for p in found}


def _order(values: Values) -> tuple[tuple[int, str, Any], ...]:
    """Partitions in value order, nulls first (values of one column share a type)."""
    return tuple((0, "", "") if v is None else (1, type(v).__name__, v) for v in values)
