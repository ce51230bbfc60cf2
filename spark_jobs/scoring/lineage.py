"""Lineage columns: which model version scored a row, and in which run."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from spark_jobs.model.model_ref import ModelVersionRef
from spark_jobs.planning.plan import LINEAGE
from spark_jobs.publishing.constant_columns import ConstantColumns


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

    def columns(self, before: str) -> ConstantColumns:
        """The lineage columns of every row the run writes, before the column `before`."""
        return ConstantColumns(LINEAGE, tuple(getattr(self, f.name) for f in LINEAGE.fields), before)
