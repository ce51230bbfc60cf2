"""Everything a run needs, from metadata alone: the model, the plan, the partitions and their fingerprints.
Every usage error is raised here, before the lock is taken or any data is read."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from spark_jobs import fs
from spark_jobs.config import JobConfig
from spark_jobs.errors import UsageError, one_line
from spark_jobs.model import engine, model_ref
from spark_jobs.planning import partitions, plan, tables
from spark_jobs.publishing import output
from udfs import model_cache
from udfs.compat import try_cast, type_from_ddl
from udfs.model_udf import to_model_input

log = logging.getLogger("score_table")


@dataclass(frozen=True)
class Challenger:
    """A second model scored on the same rows: its own features, the champion's outputs."""

    model: model_ref.LocalModel
    scoring: plan.ScoringPlan
    engine: engine.Choice


@dataclass(frozen=True)
class Prepared:
    source: tables.TableInfo
    model: model_ref.LocalModel
    scoring: plan.ScoringPlan
    params: dict[str, Any]
    keys: tuple[str, ...]
    fingerprints: dict[partitions.Values, str]  # of the partitions this run scores
    skipped: int  # partitions an incremental run found up to date
    engine: engine.Choice  # translated (sql) or not (udf), before verification on the run's rows
    challenger: Challenger | None = None
    estimates: dict[partitions.Values, int] = field(default_factory=dict)  # rows, from Parquet footers
    # input columns stored without a dictionary in every scored partition's first file (publishing.encoding)
    plain: frozenset[str] = frozenset()

    @property
    def partitions(self) -> list[partitions.Values]:
        return list(self.fingerprints)

    def selected(self, spark: SparkSession) -> DataFrame:
        """The selected partitions' rows as the model sees them (after the transforms)."""
        return self.source.read(spark, self.scoring.selection.condition)


def prepare(spark: SparkSession, cfg: JobConfig, model: model_ref.LocalModel | None = None,
            challenger: model_ref.LocalModel | None = None, source: tables.TableInfo | None = None) -> Prepared:
    """`model` (and `challenger`): resolved and downloaded already (the CLI does it while Spark starts), else
    done here; `source` likewise (the CLI reads the input table while the model resolves)."""
    if source is None:
        source = tables.source(spark, cfg.input_table, cfg.input_partition_columns, cfg.transform)
    if model is None:
        model_ref.connect(cfg.tracking_uri, cfg.registry_uri)
        model = model_ref.download(model_ref.resolve(cfg.model_uri))
    scoring = plan.build(
        source, plan.ModelFacts(model.signature, model.output_names), cfg.partitions,
        case_sensitive=spark.conf.get("spark.sql.caseSensitive", "false") == "true",
        feature_columns=cfg.feature_columns, result_type=_ddl(cfg.result_type),
    )
    params = plan.typed_params(model.signature, cfg.params)
    keys = _key_columns(cfg, source)
    chosen = partitions.selected(spark, source, scoring.selection)
    scanned = partitions.scan(spark, source, chosen)
    prints = {v: s.fingerprint for v, s in scanned.items() if not s.fingerprint.startswith("files=0;")}
    estimates = {v: s.rows for v, s in scanned.items() if s.rows is not None}
    if not prints:
        raise UsageError(f"partition selection {scoring.selection.text} matches no rows in {cfg.input_table}")
    skipped = 0
    if cfg.partition_mode == "new":
        done = partitions.published(spark, cfg.output_table, source.partition_columns)
        ref = model.ref
        stale = {v: fp for v, fp in prints.items() if done.get(v) != (ref.name, ref.version, ref.run_id, fp)}
        skipped = len(prints) - len(stale)
        prints = stale
        if stale:
            text = " or ".join(partitions.describe(source.partition_columns, v) for v in stale)
            scoring = replace(scoring, selection=partitions.selection_of(source.partition_columns, list(stale),
                                                                         f"new or changed: {text}"))
    told = [s.plain for v, s in scanned.items() if v in prints and s.plain is not None]
    job = Prepared(source, model, scoring, params, keys, prints, skipped, engine.Choice("udf", "not planned"),
                   estimates={v: estimates[v] for v in prints if v in estimates},
                   plain=frozenset.intersection(*told) if told else frozenset())
    if prints and not _holds_rows(spark, job):  # files, but no rows in them
        raise UsageError(f"partition selection {scoring.selection.text} matches no rows in {cfg.input_table} "
                         "(its files are empty)")
    if prints and _needs_inferred_outputs(model.signature, cfg.result_type):
        job = replace(job, scoring=_with_inferred_outputs(job.source, job.scoring, job.selected(spark), model.path,
                                                           params))
    log.info("plan: %d partition(s) to score, %d up to date; features %s", len(prints), skipped,
             ", ".join(f.column for f in job.scoring.features))
    output.check_compatible(spark, cfg.output_table, job.scoring.output_schema, source.partition_columns)
    if prints:
        job = replace(job, engine=engine.plan(cfg.engine, model.path, job.scoring, params,
                                              inputs_checked=cfg.on_bad_rows != "pass", spark=spark))
    if cfg.on_bad_rows == "quarantine":
        output.check_compatible(spark, cfg.rejects, plan.rejects_schema(source), source.partition_columns,
                                "rejects table")
    if cfg.challenger_uri is not None:
        job = replace(job, challenger=_challenger(spark, cfg, job, challenger))
    return job


def _challenger(spark: SparkSession, cfg: JobConfig, job: Prepared, model: model_ref.LocalModel | None
                ) -> Challenger:
    """The challenger's plan: matched to the input like the champion, and with the champion's outputs
    (names and types), so that the two can be compared and its table has the same output columns."""
    from spark_jobs.quality import challenger as ch

    assert cfg.challenger_uri is not None
    if model is None:
        model = model_ref.download(model_ref.resolve(cfg.challenger_uri))
    if (model.ref.name, model.ref.version) == (job.model.ref.name, job.model.ref.version):
        raise UsageError(f"--challenger-uri {cfg.challenger_uri} is the same model version as --model-uri "
                         f"({model.ref.name} version {model.ref.version})")
    try:
        scoring = plan.build(job.source, plan.ModelFacts(model.signature, model.output_names), cfg.partitions,
                             case_sensitive=spark.conf.get("spark.sql.caseSensitive", "false") == "true",
                             feature_columns=cfg.feature_columns, result_type=_ddl(cfg.result_type))
    except UsageError as e:
        raise UsageError(f"challenger {cfg.challenger_uri}: {e}") from None
    mine, theirs = job.scoring.outputs.simpleString(), scoring.outputs.simpleString()
    if mine != theirs:
        raise UsageError(f"challenger {cfg.challenger_uri} gives {theirs}, the model gives {mine}: the two must "
                         "have the same outputs to be compared")
    scoring = replace(scoring, selection=job.scoring.selection, output_schema=job.scoring.output_schema)
    output.check_compatible(spark, cfg.challenger, ch.table_schema(job.scoring, job.keys),
                            job.source.partition_columns, "challenger table")
    choice = engine.plan(cfg.engine, model.path, scoring, {}, inputs_checked=False, spark=spark)
    log.info("challenger %s resolved to %s version %s", cfg.challenger_uri, model.ref.name, model.ref.version)
    return Challenger(model, scoring, choice)


def _holds_rows(spark: SparkSession, job: Prepared) -> bool:
    """Whether the selected partitions hold a row: from the Parquet footers of a table's selected files (no
    Spark job; the first file with rows answers), else by reading at most one row (a view, whose files
    include other tables', another format, a footer that cannot be read)."""
    if any(rows > 0 for rows in job.estimates.values()):  # the footers read for the fingerprints
        return True
    rows = job.selected(spark)
    if not job.source.view:
        files = rows.inputFiles()
        if files and all(f.endswith(".parquet") for f in files):
            try:
                return any(fs.parquet_rows(spark, f) > 0 for f in files)
            except Py4JJavaError:
                log.debug("could not read the footers of %s; reading one row instead", job.source.name)
    return not rows.isEmpty()


def _key_columns(cfg: JobConfig, source: tables.TableInfo) -> tuple[str, ...]:
    keys = cfg.key_columns or source.data_columns[:1]
    found = []
    for k in keys:
        field = plan.find_column(source.schema, k, case_sensitive=False)
        if field is None:
            raise UsageError(f"key column '{k}' is not a column of {source.name}")
        found.append(field.name)
    return (*found, *source.partition_columns)


def _ddl(text: str | None) -> T.DataType | None:
    if text is None:
        return None
    try:
        return type_from_ddl(text)
    except Exception as e:
        raise UsageError(f"--result-type {text!r} is not a Spark DDL type: {one_line(e)}") from None


def _needs_inferred_outputs(signature: object, result_type: str | None) -> bool:
    return result_type is None and getattr(signature, "outputs", None) is None


def _with_inferred_outputs(source: tables.TableInfo, scoring: plan.ScoringPlan, selected: DataFrame,
                           model_path: str, params: dict[str, Any]) -> plan.ScoringPlan:
    """A model without output signature or --result-type: predict a few rows on the driver and take the
    types of what comes back."""
    sample = selected.select(*[try_cast(f.column, f.spark_type).alias(f.name) for f in scoring.features])
    batch = sample.dropna().limit(20).toPandas()
    if len(batch) == 0:
        raise UsageError("cannot infer the model's output type: no complete rows to try; give --result-type")
    model = model_cache.load(model_path)
    data = to_model_input(batch, scoring.tensor)
    outputs = plan.infer_outputs(model.predict(data, params=params) if params else model.predict(data))
    log.info("model has no output signature: inferred output columns %s from %d rows", outputs.simpleString(),
             len(batch))
    return replace(scoring, outputs=outputs, output_schema=plan.output_schema(source, outputs))
