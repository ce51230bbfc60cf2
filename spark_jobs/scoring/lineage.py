"""Lineage columns: which model version scored a row, and in which run."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.model.model_ref import ModelVersionRef
from spark_jobs.planning.plan import LINEAGE


@dataclass(frozen=True)
class RunLineage:
    model_name: str
    model_version: str | None
    model_run_id: str | None
    scored_at: dt.datetime  # one timestamp for the whole run, taken on the driver
    scoring_run_id: str

    @classmethod
    def start(cls, model: ModelVersionRef) -> RunLineage:
        return cls(model.name, model.version, model.run_id, dt.datetime.now(dt.timezone.utc), uuid.uuid4().hex)


def with_lineage(df: DataFrame, lineage: RunLineage) -> DataFrame:
    return df.withColumns({
        f.name: F.lit(getattr(lineage, f.name)).cast(f.dataType) for f in LINEAGE.fields
    })
