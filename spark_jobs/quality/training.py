"""`score-table baseline`: the profile of a model's inputs over its training table, stored with the model
version as an MLflow artifact of its run (`--baseline training` compares every scoring run with it). The same
profile code as a run's, over the table's rows as read."""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from spark_jobs.config import BaselineConfig
from spark_jobs.errors import UsageError
from spark_jobs.model import model_ref
from spark_jobs.planning import plan, tables
from spark_jobs.quality import assess, baseline

log = logging.getLogger("score_table.quality")


def make_baseline(spark: SparkSession, cfg: BaselineConfig) -> str:
    model_ref.connect(cfg.tracking_uri, cfg.registry_uri)
    model = model_ref.download(model_ref.resolve(cfg.model_uri))
    if not model.ref.run_id:
        raise UsageError(f"{cfg.model_uri} has no MLflow run to store its training profile in")
    source = tables.source(spark, cfg.input_table, (), {})
    scoring = plan.build(source, plan.ModelFacts(model.signature, model.output_names), cfg.partitions,
                         case_sensitive=spark.conf.get("spark.sql.caseSensitive", "false") == "true")
    by_name = {f.name: f for f in source.schema.fields}
    columns = [by_name[c] for c in dict.fromkeys(f.column for f in scoring.features)]
    rows = source.read(spark, scoring.selection.condition)
    found = assess.profile_table(rows, columns)
    if not any(p.count for p in found):
        raise UsageError(f"{cfg.input_table} ({scoring.selection.text}) has no rows to profile")
    uri = baseline.log_training(model.ref.run_id, found)
    return "\n".join([f"profiled {len(columns)} input column(s) of {cfg.input_table} ({scoring.selection.text}), "
                      f"{found[0].count} rows",
                      f"stored with {model.ref.name} version {model.ref.version}: {uri}"])
