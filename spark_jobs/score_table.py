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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs import (
    audit,
    bad_rows,
    faults,
    fs,
    history,
    lock,
    output,
    partitions,
    plan,
    serving,
    tables,
    versions,
)
from spark_jobs.config import JobConfig, parse_args, parse_rollback_args
from spark_jobs.errors import ScoringError
from spark_jobs.lineage import RunLineage, with_lineage
from spark_jobs.prepare import Prepared, prepare
from spark_jobs.rollback import rollback
from spark_jobs.session import get_session, runtime_conf, session_for
from udfs import ModelSpec, model_cache, score
from udfs.model_udf import col, fixed_width_inputs

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
    skipped: int = 0  # partitions an incremental run found up to date


def run(spark: SparkSession, cfg: JobConfig) -> RunResult:
    """Plan and validate (metadata only) -> lock -> score -> stage -> audit -> publish, with a run-history row."""
    started = time.monotonic()
    job = prepare(spark, cfg)
    lineage = RunLineage.start(job.model.ref)
    if not job.partitions:
        log.info("every selected partition is up to date for %s version %s", job.model.ref.name,
                 job.model.ref.version)
        return RunResult(lineage, job.scoring.selection.text, job.source.partition_columns, [],
                         audit.Counts(0, 0, 0), None, time.monotonic() - started, job.skipped)
    record = history.RunRecord(
        kind="score", status="running", started_at=lineage.scored_at, ended_at=None, model_uri=cfg.model_uri,
        model_name=lineage.model_name, model_version=lineage.model_version, model_run_id=lineage.model_run_id,
        input_table=cfg.input_table, output_table=cfg.output_table, partition_selection=job.scoring.selection.text,
        scoring_run_id=lineage.scoring_run_id,
    )
    table_lock = lock.TableLock(spark, lock.lock_path(spark, cfg.output_table),
                                lock.holder(lineage.scoring_run_id, lineage.scored_at.isoformat()),
                                cfg.lock_stale_after_s)
    _abandon(spark, cfg.runs, table_lock.acquire(cfg.break_lock))
    root, publishing = None, False
    try:
        history.write(spark, cfg.runs, record)
        location = output.ensure_table(spark, cfg.output_table, job.scoring.output_schema,
                                       job.scoring.partition_columns, cfg.output_format)
        published_in = versions.split_location(location)  # an unpartitioned table points into _runs/ itself
        base = published_in[0] if published_in is not None else location.rstrip("/")
        root = f"{base}/{output.RUNS_DIR}/{lineage.scoring_run_id}"
        staged, counts = _score_and_stage(spark, cfg, job, lineage, root)
        publishing = True  # from here on partitions may point at the run's folder: it must stay
        published = _publish_all(spark, cfg, job, root, staged)
        if cfg.serve is not None:
            rows = output.staged_rows(spark, root, _staged_schema(job.scoring), "scored", job.scoring.output_schema)
            served = serving.serve(spark, rows, cfg.serve, lineage.scoring_run_id)
            log.info("served %d rows to %s", served, cfg.serve.table)
        history.write(spark, cfg.runs, record.finished(
            "succeeded", rows_read=counts.read, rows_scored=counts.scored, rows_rejected=counts.rejected,
            published_partitions=published))
    except BaseException as e:
        history.write(spark, cfg.runs, record.finished("failed", error=one_line(e)))
        if root is not None and not publishing and fs.exists(spark, root):
            fs.delete(spark, root)  # staged rows of a run that failed before publishing are never read
        raise
    else:
        try:
            _retain(spark, cfg, job, root, staged, lineage.scoring_run_id)
        except Exception:
            log.warning("retention failed; superseded versions are kept until the next run", exc_info=True)
    finally:
        table_lock.release()
    return RunResult(lineage, job.scoring.selection.text, job.source.partition_columns, staged, counts,
                     cfg.rejects if cfg.on_bad_rows == "quarantine" else None, time.monotonic() - started,
                     job.skipped)


def _score_and_stage(spark: SparkSession, cfg: JobConfig, job: Prepared, lineage: RunLineage,
                     root: str) -> tuple[list[output.StagedPartition], audit.Counts]:
    """The run's one pass over the data: score every selected row and write it, scored or rejected, under
    a run-specific folder; then audit what was written."""
    scoring, quarantine = job.scoring, cfg.on_bad_rows == "quarantine"
    spec = ModelSpec(model_cache.ship(spark, job.model.path), scoring.features, scoring.outputs,
                     tensor=scoring.tensor, params=job.params, isolate_errors=quarantine)
    arrow = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.batch_size)}
    if fixed_width_inputs(spec):  # batches are bounded by rows; Int.MaxValue stops Spark sizing every row
        arrow["spark.sql.execution.arrow.maxBytesPerBatch"] = str(2**31 - 1)
    log.info("scoring %s (%s) with %s = version %s", cfg.input_table, scoring.selection.text,
             cfg.model_uri, lineage.model_version)
    reasons = bad_rows.reasons(scoring) if cfg.on_bad_rows != "pass" else None
    read = Observation("read")  # rows entering the run, counted as they are read: no second pass
    rows = (job.selected(spark).observe(read, F.count(F.lit(1)).alias("rows"))
            .transform(bad_rows.with_reason, reasons)
            .transform(score, spec, col(plan.REJECT_REASON).isNotNull() if reasons is not None else None)
            .transform(with_lineage, lineage)
            .transform(partitions.with_fingerprints, job.source, job.fingerprints)
            .transform(bad_rows.with_outcome))
    faults.while_running_jobs(spark)
    with runtime_conf(spark, arrow):
        output.stage(rows, root, scoring.partition_columns)
    faults.point("after_stage")
    staged = output.staged_partitions(spark, root, _staged_schema(scoring), scoring.partition_columns)
    counts = audit.count(int(read.get["rows"]), staged)  # checked against the written files' footers
    example = _example(spark, root, job.keys) if counts.rejected and cfg.on_bad_rows == "fail" else None
    audit.check(counts, cfg.on_bad_rows, cfg.max_bad_fraction, example)
    if cfg.prediction_range is not None:
        audit.check_range(spark, root, _staged_schema(scoring), scoring.outputs, cfg.prediction_range)
    return staged, counts


def _publish_all(spark: SparkSession, cfg: JobConfig, job: Prepared, root: str,
                 staged: list[output.StagedPartition]) -> list[str]:
    parts = job.scoring.partition_columns
    run_partitions = set(job.partitions)
    scored = [p for p in staged if p.outcome == "scored"]
    staged_schema = _staged_schema(job.scoring)
    _publish(spark, cfg, cfg.output_table, root, staged_schema, job.scoring.output_schema, parts, scored,
             run_partitions)
    if cfg.key_columns:
        output.create_latest_view(spark, cfg.latest, cfg.output_table, job.scoring.output_schema,
                                  job.keys[:len(cfg.key_columns)], parts)
    if cfg.output_format != "delta":
        folders = {p.values: p.location for p in scored}
        output.update_manifest(spark, root.rsplit(f"/{output.RUNS_DIR}/", 1)[0], parts,
                               {v: folders.get(v) for v in run_partitions})
    if cfg.on_bad_rows == "quarantine":
        rejects_schema = plan.rejects_schema(job.source)
        output.ensure_table(spark, cfg.rejects, rejects_schema, parts, cfg.output_format)
        _publish(spark, cfg, cfg.rejects, root, staged_schema, rejects_schema, parts,
                 [p for p in staged if p.outcome == "rejected"], run_partitions)
    return [partitions.describe(parts, v) for v in sorted(run_partitions, key=lambda v: [str(x) for x in v])]


def _publish(spark: SparkSession, cfg: JobConfig, table: str, root: str, staged_schema: T.StructType,
             schema: T.StructType,
             partition_columns: tuple[str, ...], staged: list[output.StagedPartition],
             run_partitions: set[tuple[object, ...]]) -> None:
    if cfg.output_format == "delta":
        outcome = "scored" if table == cfg.output_table else "rejected"
        output.publish_copy(spark, table, output.staged_rows(spark, root, staged_schema, outcome, schema))
    else:
        output.publish(spark, table, partition_columns, staged, run_partitions,
                       between=lambda: faults.point("mid_publish"))


def _retain(spark: SparkSession, cfg: JobConfig, job: Prepared, root: str, staged: list[output.StagedPartition],
            run_id: str) -> None:
    if cfg.output_format == "delta":
        fs.delete(spark, root)  # Delta copied the rows in; its own log keeps versions
        return
    runs = history.read(spark, cfg.runs)
    succeeded = {r.scoring_run_id: r.ended_at for r in runs if r.kind == "score" and r.status == "succeeded"}
    unfinished = [r.scoring_run_id for r in runs if r.status in ("failed", "running")]
    table_location = root.rsplit(f"/{output.RUNS_DIR}/", 1)[0]
    found = [versions.split_location(p.location) for p in staged if p.outcome == "scored"]
    paths = {f[2] for f in found if f is not None}
    versions.prune(spark, table_location, paths, run_id, succeeded, unfinished, cfg.keep_versions,
                   lambda: _published_runs(spark, cfg, job.source))


def _published_runs(spark: SparkSession, cfg: JobConfig, source: tables.TableInfo) -> set[str]:
    """Runs whose folders some partition of the output or rejects table points at now (one metastore call
    per partition: only done when there is a crashed run's folder to clean up)."""
    found = set()
    for table in (cfg.output_table, cfg.rejects):
        if not spark.catalog.tableExists(table):
            continue
        for values in partitions.listed(spark, tables.require(spark, table, "table")):
            where = versions.split_location(output.location(
                spark, table, dict(zip(source.partition_columns, values, strict=True))))
            if where is not None:
                found.add(where[1])
    return found


def _abandon(spark: SparkSession, runs_table: str, previous: lock.Holder | None) -> None:
    """A run whose lock was taken over is dead: mark its history row failed, so it is not left `running`."""
    if previous is None:
        return
    for r in history.read(spark, runs_table, ["running"]):
        if r.scoring_run_id == previous.scoring_run_id:
            history.write(spark, runs_table, history.abandoned(
                r, f"abandoned: its lock was taken over by a later run (holder pid {previous.pid})"))


def _staged_schema(scoring: plan.ScoringPlan) -> T.StructType:
    """The staged files hold the scored table's columns plus reject_reason."""
    data = [f for f in scoring.output_schema.fields if f.name not in scoring.partition_columns]
    parts = [f for f in scoring.output_schema.fields if f.name in scoring.partition_columns]
    return T.StructType([*data, T.StructField(plan.REJECT_REASON, T.StringType()), *parts])


def _example(spark: SparkSession, root: str, keys: tuple[str, ...]) -> str:
    """One rejected row, by its key, for the failure message."""
    row = (spark.read.option("basePath", root).parquet(f"{root}/{bad_rows.OUTCOME}=rejected")
           .select(*[col(k) for k in keys], col(plan.REJECT_REASON)).first())
    if row is None:
        return "-"
    return ", ".join(f"{k}={row[k]}" for k in keys) + f": {row[plan.REJECT_REASON]}"


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
    if result.skipped:
        lines.append(f"up to date (skipped): {result.skipped} partition(s) already scored by this model version "
                     "from unchanged input")
    rate = counts.read / result.seconds if result.seconds > 0 else 0.0
    lines.append(f"rows read: {counts.read}, scored: {counts.scored}, rejected: {counts.rejected} "
                 f"in {result.seconds:.1f} s ({rate:,.0f} rows/s)")
    if counts.rejected and result.rejects_table:
        lines.append(f"quarantined {counts.rejected} rows in {result.rejects_table} "
                     f"(SELECT * FROM {result.rejects_table} WHERE scoring_run_id = '{lin.scoring_run_id}')")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["rollback"]:
        return _guarded(lambda: _rollback(args[1:]), "--verbose" in args)
    return _guarded(lambda: _score(args), "--verbose" in args)


def _score(args: list[str]) -> str:
    cfg = parse_args(args)
    return summary(cfg, run(get_session(cfg), cfg))


def _rollback(args: list[str]) -> str:
    cfg = parse_rollback_args(args)
    return rollback(session_for(cfg.local_defaults, cfg.local_home, cfg.spark_conf), cfg)


def _guarded(command: Callable[[], str], verbose: bool) -> int:
    """Run a command: its report on stdout and exit 0, or one line on stderr and the error's exit code."""
    try:
        report = command()
    except SystemExit as e:  # argparse has printed its usage line
        return int(e.code or 0) and 2
    except ScoringError as e:
        _fail(e, verbose)
        return e.exit_code
    except Exception as e:
        _fail(e, verbose)
        return 1
    print(report)
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
