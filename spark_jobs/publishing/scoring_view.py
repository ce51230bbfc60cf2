"""`score-table view`: a view over a table whose query is the model translated into SQL, so that an analyst gets
fresh scores for any slice from spark-sql, beeline or the Thrift server without a run. BigQuery ML's
ML.PREDICT, for the models the sql engine translates (others exit 2 with the reason).

The view holds every column of the input, the model's outputs (null where the model would raise, with its
message in `model_error`), and the lineage of the model version as constants (`model_name`, `model_version`,
`model_run_id`); its properties record the same. The query text is verified before the view is created: the
text itself, run over a sample of the input, must give the model's own pyfunc predictions (the run's
verification, exit 1 on a mismatch, nothing created). Run again after the alias moved, it replaces the view."""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.config import ViewConfig
from spark_jobs.errors import UsageError
from spark_jobs.model import engine, model_ref
from spark_jobs.planning import plan, tables
from udfs import ModelSpec
from udfs.compiled import sql_text
from udfs.model_udf import MODEL_ERROR, MODEL_ERROR_PREFIX

log = logging.getLogger("score_table")
MODEL_ERROR_COLUMN = "model_error"
LINEAGE = ("model_name", "model_version", "model_run_id")
DERBY_VIEW_TEXT = 32_700  # characters of a LONG VARCHAR
PROPERTY = "score_table."  # the view's properties: model_uri, model_name, model_version, model_run_id


def create_view(spark: SparkSession, cfg: ViewConfig) -> str:
    model_ref.connect(cfg.tracking_uri, cfg.registry_uri)
    model = model_ref.download(model_ref.resolve(cfg.model_uri))
    source = tables.source(spark, cfg.input_table, (), {})
    _check_target(spark, cfg, source)
    scoring = plan.build(source, plan.ModelFacts(model.signature, model.output_names), {},
                         case_sensitive=spark.conf.get("spark.sql.caseSensitive", "false") == "true")
    # a view's query is stored as SQL text: trees as SQL expressions, never the session's JVM evaluator
    choice = engine.plan("auto", model.path, scoring, {}, inputs_checked=False, max_nodes=None)
    if choice.program is None:
        raise UsageError(f"{model.ref.name} version {model.ref.version} cannot be a view, it does not translate "
                         f"into SQL ({choice.reason.removeprefix('not translated: ')})")
    ref = model.ref
    lineage = {"model_name": ref.name, "model_version": ref.version, "model_run_id": ref.run_id}
    taken = {c.lower() for c in source.schema.fieldNames()}
    clash = [c for c in (*scoring.outputs.fieldNames(), MODEL_ERROR_COLUMN, *LINEAGE) if c.lower() in taken]
    if clash:
        raise UsageError(f"--input-table {cfg.input_table} already has a column {clash[0]!r}, which the view adds")
    tables.validate_names(*source.schema.fieldNames(), *scoring.outputs.fieldNames())
    text = _query(spark, cfg, source, choice, scoring, lineage)
    spec = ModelSpec(model.path, scoring.features, scoring.outputs, isolate_errors=True)
    sample = spark.sql(text).limit(cfg.verify_rows).withColumn(
        MODEL_ERROR, F.concat(F.lit(MODEL_ERROR_PREFIX), F.col(MODEL_ERROR_COLUMN)))
    _check_length(spark, text)
    checked = engine.check(spark, choice, sample, spec, cfg.engine_tolerance, "sql")
    properties = {f"{PROPERTY}model_uri": cfg.model_uri, **{f"{PROPERTY}{k}": v or "" for k, v in lineage.items()}}
    spark.sql(f"CREATE OR REPLACE VIEW {_quoted(cfg.view)} TBLPROPERTIES ({_properties(spark, properties)}) "
              f"AS {text}")
    log.info("view %s: %s", cfg.view, checked.reason)
    return "\n".join([
        f"view {cfg.view}: {ref.name} version {ref.version} over {cfg.input_table}, in SQL ({checked.reason})",
        f"outputs: {', '.join(scoring.outputs.fieldNames())}; lineage columns: {', '.join(LINEAGE)}",
        f"query it: SELECT * FROM {cfg.view} WHERE ..."])


def _check_target(spark: SparkSession, cfg: ViewConfig, source: tables.TableInfo) -> None:
    """The name must be free or a view already (a table of that name is never replaced)."""
    existing = tables.describe(spark, cfg.view)
    if existing is not None and not existing.view:
        raise UsageError(f"--view {cfg.view} is a table, not a view: choose another name")


def _check_length(spark: SparkSession, text: str) -> None:
    """A Hive metastore in Derby (the embedded default) keeps a view's text in a LONG VARCHAR: longer text
    fails inside the metastore, which retries for minutes. MySQL and PostgreSQL metastores have no such limit."""
    url = spark.sparkContext._jsc.hadoopConfiguration().get("javax.jdo.option.ConnectionURL") or ""
    if str(url).startswith("jdbc:derby:") and len(text) > DERBY_VIEW_TEXT:
        raise UsageError(f"the view's query is {len(text):,} characters; the metastore in Derby stores at most "
                         f"{DERBY_VIEW_TEXT:,} (a smaller model, or a metastore in MySQL or PostgreSQL)")


def _query(spark: SparkSession, cfg: ViewConfig, source: tables.TableInfo, choice: engine.Choice,
           scoring: plan.ScoringPlan, lineage: dict[str, str | None]) -> str:
    """The view's SELECT: input columns, outputs (null where the model raises), its error, lineage."""
    program = choice.program
    assert program is not None
    error = program.error
    outputs = []
    for value, f in zip(program.outputs, scoring.outputs.fields, strict=True):
        value = value.cast(f.dataType)
        outputs.append((value if error is None else F.when(error.isNull(), value)).alias(f.name))
    final = [F.col(c) for c in source.schema.fieldNames()] + outputs + [
        (error if error is not None else F.lit(None).cast(T.StringType())).alias(MODEL_ERROR_COLUMN),
        *[F.lit(v).cast(T.StringType()).alias(k) for k, v in lineage.items()]]
    return sql_text.query(spark.table(cfg.input_table), _quoted(cfg.input_table), program, final)


def _quoted(name: str) -> str:
    """A checked [catalog.]db.table, each part backtick-quoted (the parts are identifiers: no backticks)."""
    return ".".join(f"`{tables.require_identifier(p)}`" for p in name.split("."))


def _properties(spark: SparkSession, values: dict[str, str]) -> str:
    """'key' = 'value' pairs, each string printed by Spark as a literal it parses back to the same text."""
    literals = sql_text.literals(spark, [*values, *values.values()])
    keys, texts = literals[: len(values)], literals[len(values):]
    return ", ".join(f"{k} = {v}" for k, v in zip(keys, texts, strict=True))
