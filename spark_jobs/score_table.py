"""Score partitions of a warehouse table with a registered MLflow model and publish a scored table.

    spark-submit spark_jobs/score_table.py \\
        --model-uri models:/churn@champion \\
        --input-table lake.customer_features --output-table lake.customer_features_scored \\
        --partition ds=2026-11-23

Also `score-table ...` (console script) and `python -m spark_jobs.score_table ...`, with the same flags.
Exit codes: 0 success; 2 bad input or usage, found before any data is read; 1 failure while running.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from spark_jobs import audit, bad_rows, model_ref, output, plan, tables
from spark_jobs.config import JobConfig, parse_args
from spark_jobs.errors import ScoringError, UsageError
from spark_jobs.lineage import RunLineage, with_lineage
from spark_jobs.session import get_session
from udfs import ModelSpec, model_cache, score
from udfs.model_udf import col, to_model_input

log = logging.getLogger("score_table")


@dataclass(frozen=True)
class RunResult:
    lineage: RunLineage
    selection: str
    partition_columns: tuple[str, ...]
    staged: list[output.StagedPartition]
    counts: audit.Counts
    rejects_table: str | None
    seconds: float


def run(spark: SparkSession, cfg: JobConfig) -> RunResult:
    """Resolve the model -> plan and validate (metadata only) -> score -> stage -> audit -> publish."""
    started = time.monotonic()
    source = tables.require(spark, cfg.input_table, "input table")
    model_ref.connect(cfg.tracking_uri, cfg.registry_uri)
    ref = model_ref.resolve(cfg.model_uri)
    model = model_ref.download(ref)
    scoring = plan.build(
        source, plan.ModelFacts(model.signature, model.output_names), cfg.partitions,
        case_sensitive=spark.conf.get("spark.sql.caseSensitive", "false") == "true",
        feature_columns=cfg.feature_columns, result_type=_ddl(cfg.result_type),
    )
    params = plan.typed_params(model.signature, cfg.params)
    keys = _key_columns(cfg, source)
    quarantine = cfg.on_bad_rows == "quarantine"
    selected = spark.table(cfg.input_table)
    if scoring.selection.condition is not None:
        selected = selected.where(scoring.selection.condition)
    if not selected.inputFiles():  # partition pruning on metadata: lists files, reads none
        raise UsageError(f"partition selection {scoring.selection.text} matches no rows in {cfg.input_table}")
    if _needs_inferred_outputs(model.signature, cfg.result_type):
        scoring = _with_inferred_outputs(source, scoring, selected, model.path, params)
    output.check_compatible(spark, cfg.output_table, scoring.output_schema, scoring.partition_columns)
    rejects_schema = plan.rejects_schema(source)
    if quarantine:
        output.check_compatible(spark, cfg.rejects, rejects_schema, scoring.partition_columns, "rejects table")

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.batch_size))
    spec = ModelSpec(model_cache.ship(spark, model.path), scoring.features, scoring.outputs, tensor=scoring.tensor,
                     params=params, isolate_errors=quarantine)
    lineage = RunLineage.start(model.ref)
    log.info("scoring %s (%s) with %s = version %s", cfg.input_table, scoring.selection.text, ref.requested_uri,
             ref.version)
    reasons = bad_rows.reasons(scoring) if cfg.on_bad_rows != "pass" else None
    skip = reasons.isNotNull() if reasons is not None else None
    rows = (selected.transform(score, spec, skip).transform(with_lineage, lineage)
            .transform(bad_rows.with_outcome, reasons))

    table_location = output.ensure_table(spark, cfg.output_table, scoring.output_schema, scoring.partition_columns,
                                         "parquet" if cfg.output_format == "parquet" else cfg.output_format)
    root = f"{table_location.rstrip('/')}/{output.RUNS_DIR}/{lineage.scoring_run_id}"
    output.stage(rows, root, scoring.partition_columns)
    staged = output.staged_partitions(spark, root, _staged_schema(scoring, rejects_schema), scoring.partition_columns)
    counts = audit.count(selected.count(), staged)  # the count reads Parquet footers only
    example = _example(spark, root, keys) if counts.rejected and cfg.on_bad_rows == "fail" else None
    audit.check(counts, cfg.on_bad_rows, cfg.max_bad_fraction, example)

    run_partitions = {p.values for p in staged}
    _publish(spark, cfg, cfg.output_table, root, scoring.output_schema, scoring.partition_columns,
             [p for p in staged if p.outcome == "scored"], run_partitions)
    if quarantine:
        output.ensure_table(spark, cfg.rejects, rejects_schema, scoring.partition_columns, cfg.output_format)
        _publish(spark, cfg, cfg.rejects, root, rejects_schema, scoring.partition_columns,
                 [p for p in staged if p.outcome == "rejected"], run_partitions)
    return RunResult(lineage, scoring.selection.text, scoring.partition_columns, staged, counts,
                     cfg.rejects if quarantine else None, time.monotonic() - started)


def _publish(spark: SparkSession, cfg: JobConfig, table: str, root: str, schema: T.StructType,
             partition_columns: tuple[str, ...], staged: list[output.StagedPartition],
             run_partitions: set[tuple[object, ...]]) -> None:
    if cfg.output_format == "delta":
        outcome = "scored" if table == cfg.output_table else "rejected"
        output.publish_copy(spark, table, root, outcome, schema, partition_columns)
    else:
        output.publish(spark, table, partition_columns, staged, run_partitions)


def _staged_schema(scoring: plan.ScoringPlan, rejects_schema: T.StructType) -> T.StructType:
    """The staged files hold the scored table's columns plus reject_reason."""
    data = [f for f in scoring.output_schema.fields if f.name not in scoring.partition_columns]
    parts = [f for f in scoring.output_schema.fields if f.name in scoring.partition_columns]
    return T.StructType([*data, T.StructField(plan.REJECT_REASON, T.StringType()), *parts])


def _key_columns(cfg: JobConfig, source: tables.TableInfo) -> tuple[str, ...]:
    keys = cfg.key_columns or source.data_columns[:1]
    for k in keys:
        if plan.find_column(source.schema, k, case_sensitive=False) is None:
            raise UsageError(f"key column '{k}' is not a column of {source.name}")
    return (*keys, *source.partition_columns)


def _example(spark: SparkSession, root: str, keys: tuple[str, ...]) -> str:
    """One rejected row, by its key, for the failure message."""
    row = (spark.read.option("basePath", root).parquet(f"{root}/{bad_rows.OUTCOME}=rejected")
           .select(*[col(k) for k in keys], col(plan.REJECT_REASON)).first())
    if row is None:
        return "-"
    return ", ".join(f"{k}={row[k]}" for k in keys) + f": {row[plan.REJECT_REASON]}"


def _ddl(text: str | None) -> T.DataType | None:
    if text is None:
        return None
    try:
        return T.DataType.fromDDL(text)
    except Exception as e:
        raise UsageError(f"--result-type {text!r} is not a Spark DDL type: {one_line(e)}") from None


def _needs_inferred_outputs(signature: object, result_type: str | None) -> bool:
    return result_type is None and getattr(signature, "outputs", None) is None


def _with_inferred_outputs(source: tables.TableInfo, scoring: plan.ScoringPlan, selected: DataFrame,
                           model_path: str, params: dict[str, object]) -> plan.ScoringPlan:
    """A model without output signature or --result-type: predict a few rows on the driver and take the
    types of what comes back."""
    import mlflow.pyfunc

    sample = selected.select(*[col(f.column).try_cast(f.spark_type).alias(f.name) for f in scoring.features])
    batch = sample.dropna().limit(20).toPandas()
    if len(batch) == 0:
        raise UsageError("cannot infer the model's output type: no complete rows to try; give --result-type")
    model = mlflow.pyfunc.load_model(model_path)
    data = to_model_input(batch, scoring.tensor)
    outputs = plan.infer_outputs(model.predict(data, params=params) if params else model.predict(data))
    log.info("model has no output signature: inferred output columns %s from %d rows", outputs.simpleString(),
             len(batch))
    return replace(scoring, outputs=outputs, output_schema=plan.output_schema(source, outputs))


def summary(cfg: JobConfig, result: RunResult) -> str:
    lin, counts = result.lineage, result.counts
    version = f"version {lin.model_version}" if lin.model_version else "no registry version"
    lines = [
        f"scored {cfg.input_table} ({result.selection}) -> {cfg.output_table}",
        f"model: {cfg.model_uri} = {lin.model_name} {version} (run {lin.model_run_id or '-'})",
        f"scoring_run_id: {lin.scoring_run_id}",
    ]
    per_partition: dict[tuple[object, ...], dict[str, int]] = {}
    for p in result.staged:
        per_partition.setdefault(p.values, {"scored": 0, "rejected": 0})[p.outcome] = p.rows
    for values, n in sorted(per_partition.items(), key=lambda kv: [str(v) for v in kv[0]]):
        name = ", ".join(f"{c}={v}" for c, v in zip(result.partition_columns, values, strict=True)) or "table"
        lines.append(f"  {name}: {n['scored']} scored, {n['rejected']} rejected")
    rate = counts.read / result.seconds if result.seconds > 0 else 0.0
    lines.append(f"rows read: {counts.read}, scored: {counts.scored}, rejected: {counts.rejected} "
                 f"in {result.seconds:.1f} s ({rate:,.0f} rows/s)")
    if counts.rejected and result.rejects_table:
        lines.append(f"quarantined {counts.rejected} rows in {result.rejects_table} "
                     f"(SELECT * FROM {result.rejects_table} WHERE scoring_run_id = '{lin.scoring_run_id}')")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    verbose = "--verbose" in (argv if argv is not None else sys.argv[1:])
    try:
        cfg = parse_args(argv)
        spark = get_session(cfg)
        result = run(spark, cfg)
    except SystemExit as e:  # argparse has printed its usage line
        return int(e.code or 0) and 2
    except ScoringError as e:
        _fail(e, verbose)
        return e.exit_code
    except Exception as e:
        _fail(e, verbose)
        return 1
    print(summary(cfg, result))
    return 0


def _fail(e: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exception(e)
    print(f"score-table: error: {one_line(e)}", file=sys.stderr)


_PY_ERROR = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception): .+")


def one_line(e: BaseException) -> str:
    """The line that says what went wrong: for a failure in a Python worker, the worker's exception line
    (Spark's own message starts with a generic sentence and a JVM stack)."""
    text = str(e).strip()
    if "Traceback (most recent call last)" in text:
        raised = [line for line in text.splitlines() if _PY_ERROR.fullmatch(line)
                  and not line.startswith(("org.", "java.", "scala."))]
        if raised:
            return f"scoring failed in a Python worker: {raised[-1]}"
    return (text.splitlines() or [type(e).__name__])[0]


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
