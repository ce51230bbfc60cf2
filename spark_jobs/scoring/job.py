"""One scoring run, in order: plan and validate (metadata only) -> lock -> score and stage -> audit -> publish
-> serving copy -> retention, with a run-history row. The SparkSession and the validated config come in; a
RunResult goes out (the CLI turns it into the summary and the exit code)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, Row, SparkSession
from pyspark.sql import functions as F

from spark_jobs import compat, faults
from spark_jobs.background import Background
from spark_jobs.config import JobConfig
from spark_jobs.model import engine, model_ref
from spark_jobs.planning import partitions, plan
from spark_jobs.planning.prepare import Prepared, prepare
from spark_jobs.planning.tables import ORIGINAL, TableInfo
from spark_jobs.publishing import encoding, output, serving
from spark_jobs.publishing.constant_columns import ConstantColumns, PerPartition
from spark_jobs.publishing.publish import Publisher, publisher_for
from spark_jobs.publishing.staging import REJECTED, SCORED, Listing, StagedPartition, StagingArea
from spark_jobs.quality import assess, challenger, profiles, report_file, sampling, tracking
from spark_jobs.runs import history
from spark_jobs.runs.locked_run import locked_run
from spark_jobs.scoring import audit, bad_rows
from spark_jobs.scoring.lineage import RunLineage
from spark_jobs.scoring.summary import summary
from spark_jobs.session import python_workers_started, runtime_conf
from udfs import ModelSpec, model_cache
from udfs.compat import col
from udfs.model_udf import fixed_width_inputs

log = logging.getLogger("score_table")
_DRAWN = "__verify"  # the rows the write collects to verify a translated model on
_COLLECTED_MAX = 50_000  # at most so many of them (measured: 0.3 s for 10,000 rows of 21 values)


@dataclass(frozen=True)
class RunResult:
    lineage: RunLineage
    selection: str
    partition_columns: tuple[str, ...]
    staged: list[StagedPartition]
    counts: audit.Counts
    rejects_table: str | None
    seconds: float
    skipped: int = 0  # partitions an incremental run found up to date
    engine: engine.Choice | None = None  # None when nothing was scored
    quality: assess.Assessed | None = None
    report_path: str | None = None
    challenger: model_ref.ModelVersionRef | None = None


def run(spark: SparkSession, cfg: JobConfig, model: model_ref.LocalModel | None = None,
        challenger_model: model_ref.LocalModel | None = None, source: TableInfo | None = None) -> RunResult:
    """Score and publish; `model` (and `challenger_model`), and the input table's `source`, when the caller
    has them already (the CLI resolves the model while Spark starts, and reads the table meanwhile)."""
    started = time.monotonic()
    job = prepare(spark, cfg, model, challenger_model, source)
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
        scoring_run_id=lineage.scoring_run_id, transforms=json.dumps(cfg.transform) if cfg.transform else None,
        challenger_uri=cfg.challenger_uri,
        challenger_version=job.challenger.model.ref.version if job.challenger is not None else None,
    )
    publisher = publisher_for(cfg.output_format)
    # the MLflow run is made while the run takes its lock and plans its write (three calls to the tracking
    # store, 0.6 s off a run's critical path); its id joins the history row once the write is done
    tracking_run = None if cfg.no_mlflow_run else Background(lambda: tracking.start(spark, cfg, job, lineage),
                                                            "mlflow-run")
    try:
        result = _locked(spark, cfg, job, lineage, record, publisher, started, tracking_run)
    except BaseException as e:
        tracked = tracking_run.result() if tracking_run is not None else None
        if tracked is not None:
            tracked.failed(e)
        raise
    tracked = tracking_run.result() if tracking_run is not None else None
    if tracked is not None:
        tracked.succeeded(result)
    return result


def _locked(spark: SparkSession, cfg: JobConfig, job: Prepared, lineage: RunLineage, record: history.RunRecord,
            publisher: Publisher, started: float,
            tracking_run: Background[tracking.TrackedRun | None] | None) -> RunResult:
    """The run under the output table's lock: score and stage, audit, assess, publish, retain."""
    with locked_run(spark, cfg.output_table, cfg.runs, record, cfg.lock_stale_after_s, cfg.break_lock,
                    manifest=cfg.output_format != "delta") as this:
        location = output.ensure_table(spark, cfg.output_table, job.scoring.output_schema,
                                       job.scoring.partition_columns, cfg.output_format)
        stored = {f.name: f for f in job.source.input_schema.fields} if job.source.input_schema else {}
        staging = StagingArea.for_run(location, lineage.scoring_run_id, job.scoring,
                                      [stored[c] for c in job.source.replaced])
        try:
            first = _score_and_stage(spark, cfg, job, lineage, staging)
            tracked = tracking_run.result() if tracking_run is not None else None
            if tracked is not None:  # a failure before this point is recorded without it (the MLflow run
                this.record = replace(this.record, mlflow_run_id=tracked.run_id)  # has the scoring_run_id)
            try:  # the quality step runs while `auto` verifies the translation on the rows it wrote
                quality = _assess(spark, cfg, job, lineage, staging, first.listing, first.counts)
            except BaseException:
                first.settle()
                raise
            chosen = first.choice()
            listing, counts = first.listing, first.counts
            if chosen.engine != first.wrote:  # the translation did not verify: scored again with the UDF
                listing, counts = _rescore(spark, cfg, job, lineage, staging, first, chosen)
                quality = _assess(spark, cfg, job, lineage, staging, listing, counts)
            staged = listing.partitions
            staging.drop_samples(spark)
            partial = RunResult(lineage, job.scoring.selection.text, job.source.partition_columns, staged, counts,
                                cfg.rejects if cfg.on_bad_rows == "quarantine" else None,
                                time.monotonic() - started, job.skipped, chosen, quality,
                                report_file.path(staging, lineage.scoring_run_id),
                                job.challenger.model.ref if job.challenger is not None else None)
            report_file.write(spark, partial, summary(cfg, partial))
            if tracked is not None:
                tracked.report_path = partial.report_path
            this.record = replace(this.record, report_path=partial.report_path, max_drift=quality.max_psi,
                                  drift_baseline=quality.baseline_note, challenger=_comparisons(quality))
            if quality.crossed and cfg.drift_action == "fail":
                raise assess.drift_error(quality.crossed)
            if cfg.on_bad_rows == "quarantine" and counts.rejected and job.source.replaced:
                staging = staging.with_stored_rejects(spark, job.source.replaced)
        except BaseException:
            _discard(spark, staging)
            raise
        this.start_publishing()  # from here on partitions may point at the run's folder: it stays
        published = _publish_all(spark, cfg, job, publisher, staging, staged)
        if cfg.serve is not None:
            served = serving.serve(spark, staging.rows(spark, SCORED, job.scoring.output_schema), cfg.serve,
                                   lineage.scoring_run_id)
            log.info("served %d rows to %s", served, cfg.serve.table)
        this.succeeded(rows_read=counts.read, rows_scored=counts.scored, rows_rejected=counts.rejected,
                       published_partitions=published, engine=chosen.engine, engine_max_diff=chosen.max_diff)
        try:
            publisher.retain(spark, staging, staged, cfg.runs, cfg.keep_versions,
                             [cfg.output_table, cfg.rejects, cfg.challenger])
        except Exception:
            log.warning("retention failed; superseded versions are kept until the next run", exc_info=True)
    return replace(partial, seconds=time.monotonic() - started)


def _assess(spark: SparkSession, cfg: JobConfig, job: Prepared, lineage: RunLineage, staging: StagingArea,
            listing: Listing, counts: audit.Counts) -> assess.Assessed:
    """Profiles, drift and the challenger's comparison, from the staged rows; stored before publishing."""
    settings = assess.Settings(cfg.profiles, cfg.baseline, cfg.max_drift, cfg.drift_action, cfg.output_table,
                               cfg.profile_rows)
    name = None
    if job.challenger is not None:
        ref = job.challenger.model.ref
        name = f"{ref.name} version {ref.version}" if ref.version else ref.name
    found = assess.assess(spark, settings, staging, job.scoring, job.keys, listing, lineage.scoring_run_id,
                          lineage.model_run_id, name, counts.rejected)
    log.info("quality: %d partition(s) profiled; %s; largest PSI %s", len(found.partitions), found.baseline_note,
             "-" if found.max_psi is None else f"{found.max_psi:.4f}")
    return found


def _comparisons(quality: assess.Assessed) -> list[dict[str, Any]] | None:
    found = [{"partition": q.partition, "output": c.output, "rows": c.rows, "agreement": c.agreement,
              "mean_abs_diff": c.mean_abs_diff, "max_abs_diff": c.max_abs_diff, "spearman": c.spearman, "psi": c.psi}
             for q in quality.partitions if (c := q.comparison) is not None]
    return found or None


def _discard(spark: SparkSession, staging: StagingArea) -> None:
    """Staged rows of a run that failed before publishing are never read; failing to delete them must not
    hide the run's own error (the next successful run deletes the folder of a failed run)."""
    try:
        if staging.exists(spark):
            staging.delete(spark)
    except Exception:
        log.warning("could not delete the staged rows of the failed run in %s", staging.root, exc_info=True)


@dataclass(frozen=True)
class _Staged:
    """What the run's write left in the staging area, audited, and the engine that wrote it; under `auto`
    the translation's verification on the rows the write collected, still running on a thread (`choice`
    waits for it, and where those rows were not enough reads rows back, on the caller's thread). `spec`,
    `reasons` and `second` are what the write scored with, for a second write with the UDF."""

    listing: Listing
    counts: audit.Counts
    wrote: str  # the engine that wrote the staged rows
    verifying: Background[engine.Choice | None]
    read_back: Callable[[], engine.Choice]
    spec: ModelSpec
    reasons: bad_rows.Checks | None
    second: _Second | None

    def choice(self) -> engine.Choice:
        found = self.verifying.result()
        return found if found is not None else self.read_back()

    def settle(self) -> None:
        _settle(self.verifying)


def _settle(verifying: Background[engine.Choice | None]) -> None:
    """Wait for the verification's thread, its outcome no longer wanted (the run is failing): nothing may
    read the staged rows once the run discards them."""
    with contextlib.suppress(Exception):
        verifying.result()


def _score_and_stage(spark: SparkSession, cfg: JobConfig, job: Prepared, lineage: RunLineage,
                     staging: StagingArea) -> _Staged:
    """The run's one pass over the data: score every selected row and write it, scored or rejected, under
    a run-specific folder; then audit what was written.

    A translated model is verified on the run's rows before its output may be published. Under `auto` the
    comparison takes rows the write staged, with the translation's outputs, read on the driver from the
    profile sample's files (or, where the staged columns are not the model's inputs, rows the write collected
    as it passed, an observation like its row count): no second pass over the input, no Spark job after it.
    It runs on a thread while the run profiles what it wrote; on a mismatch the caller scores again with the
    UDF (`_rescore`). Under `sql` a mismatch fails the run, so there it comes first, on the input's rows, and
    nothing is written."""
    scoring, quarantine = job.scoring, cfg.on_bad_rows == "quarantine"
    reasons = bad_rows.reasons(scoring) if cfg.on_bad_rows != "pass" else None
    spec = ModelSpec(job.model.path, scoring.features, scoring.outputs, tensor=scoring.tensor, params=job.params,
                     isolate_errors=quarantine)
    second = _challenger(spark, cfg, job, reasons, lineage) if job.challenger is not None else None
    faults.while_running_jobs(spark)
    verifying: Background[engine.Choice | None]
    if job.engine.program is not None and cfg.engine == "auto" and _verifiable_when_staged(cfg, job, spec, staging):
        written = _write(spark, cfg, job, lineage, staging, job.engine, spec, reasons, second)
        listing, counts = _audited(spark, cfg, job, staging, written)
        verifying = Background(lambda: _verified_on_staged(spark, cfg, job, spec, listing, counts), "verify")
        return _Staged(listing, counts, "sql", verifying,
                       lambda: _verified_read_back(spark, cfg, job, staging, spec), spec, reasons, second)
    if job.engine.program is not None and cfg.engine == "auto":
        written = _write(spark, cfg, job, lineage, staging, job.engine, spec, reasons, second,
                         _verify_share(job, cfg.verify_rows))
        verifying = Background(lambda: _verified_on_sample(cfg, job, spec, written), "verify")
        wrote = "sql"
    else:
        chosen = _logged(engine.verify(spark, job.engine, job.selected(spark), reasons, spec, cfg.verify_rows,
                                       cfg.engine_tolerance, cfg.engine))
        written = _write(spark, cfg, job, lineage, staging, chosen, spec, reasons, second)
        verifying, wrote = Background(lambda: chosen, "verify"), chosen.engine
    try:
        listing, counts = _audited(spark, cfg, job, staging, written)
    except BaseException:
        _settle(verifying)
        raise
    return _Staged(listing, counts, wrote, verifying, lambda: _verified_read_back(spark, cfg, job, staging, spec),
                   spec, reasons, second)


def _logged(chosen: engine.Choice) -> engine.Choice:
    log.info("engine: %s (%s)", chosen.engine, chosen.reason)
    return chosen


def _rescore(spark: SparkSession, cfg: JobConfig, job: Prepared, lineage: RunLineage, staging: StagingArea,
             first: _Staged, chosen: engine.Choice) -> tuple[Listing, audit.Counts]:
    """The translation did not verify under `auto`: its staged rows go, and the run writes again with the
    UDF (and audits that)."""
    staging.delete(spark)
    written = _write(spark, cfg, job, lineage, staging, chosen, first.spec, first.reasons, first.second)
    return _audited(spark, cfg, job, staging, written)


def _audited(spark: SparkSession, cfg: JobConfig, job: Prepared, staging: StagingArea,
             written: _Written) -> tuple[Listing, audit.Counts]:
    """The staged files counted from their footers and checked against what the write observed."""
    faults.point("after_stage")
    listing = staging.listing(spark)
    counts = audit.count(written.rows, listing.partitions)  # checked against the written files' footers
    log.info("audit: %d rows read, %d scored, %d rejected", counts.read, counts.scored, counts.rejected)
    example = staging.example_reject(spark, job.keys) if counts.rejected and cfg.on_bad_rows == "fail" else None
    audit.check(counts, cfg.on_bad_rows, cfg.max_bad_fraction, example)
    if cfg.prediction_range is not None:
        audit.check_range(staging.rows(spark, SCORED), job.scoring.outputs, cfg.prediction_range)
    return listing, counts


def _verifiable_when_staged(cfg: JobConfig, job: Prepared, spec: ModelSpec, staging: StagingArea) -> bool:
    """Whether `auto` verifies the translation on the staged rows, read on the driver after the write
    (`_verified_on_staged`): where the staged rows hold every feature as the model takes it (stored in its own
    type, none replaced by a transform) and the write's profile sample, with the small partitions' own rows,
    will hold the rows wanted. Collecting them in the write instead (`_verify_share`) costs the write a pass
    outside its generated code and the driver 0.3-0.7 s to bring them to Python."""
    stored = {f.name: f.dataType for f in staging.schema.fields}
    if job.source.replaced or spec.tensor is not None or not job.partitions \
            or any(stored.get(f.column) != f.spark_type for f in spec.features) \
            or any(v not in job.estimates for v in job.partitions):
        return False
    drawn = sampling.rates(job.estimates, cfg.profile_rows)
    expected = sum(sampling.OVERDRAW * cfg.profile_rows if v in drawn else job.estimates[v] for v in job.partitions)
    return expected >= min(cfg.verify_rows, sum(job.estimates[v] for v in job.partitions))


def _verified_on_staged(spark: SparkSession, cfg: JobConfig, job: Prepared, spec: ModelSpec, listing: Listing,
                        counts: audit.Counts) -> engine.Choice | None:
    """`auto`'s verification on staged rows read on the driver (`StagingArea.some_rows`); None where they are
    not enough (the caller reads rows back with Spark then)."""
    columns = list(dict.fromkeys([*(f.column for f in spec.features), *spec.outputs.fieldNames(),
                                  plan.REJECT_REASON]))
    staged = StagingArea.some_rows(spark, listing, columns, cfg.verify_rows)
    if staged is None:
        return None
    least = sampling.ENOUGH * min(cfg.verify_rows, counts.scored)
    found = engine.verify_staged(job.engine, staged, spec, cfg.verify_rows, least, cfg.engine_tolerance, cfg.engine)
    return _logged(found) if found is not None else None


def _verify_share(job: Prepared, rows: int) -> float | None:
    """The share of the rows the write collects to verify a translated model on about `rows` of them; None
    where the rows are not known before the write (a view, files of another format), or more are wanted than
    the write hands back well (they reach the driver as Python objects, where a read-back comes through
    Arrow)."""
    if rows > _COLLECTED_MAX or not compat.OBSERVED_IN_PYTHON or not job.partitions \
            or any(v not in job.estimates for v in job.partitions):
        return None
    total = sum(job.estimates.values())
    return min(1.0, sampling.OVERDRAW * rows / total) if total else None


def _verified_on_sample(cfg: JobConfig, job: Prepared, spec: ModelSpec, written: _Written) -> engine.Choice | None:
    """`auto`'s verification on the rows the write collected, on the driver alone (no Spark job, no session
    setting: it may run beside the run's other work); None where they are not enough (their number not known
    before the write, or a sample short of it)."""
    wanted = min(cfg.verify_rows, written.seen)
    drawn = written.sample()
    if drawn is None or len(drawn) < sampling.ENOUGH * wanted:
        return None
    if len(drawn) > cfg.verify_rows:  # spread over every task's rows, not the first tasks' only
        drawn = [drawn[i * len(drawn) // cfg.verify_rows] for i in range(cfg.verify_rows)]
    return _logged(engine.verify_sample(job.engine, drawn, spec, cfg.engine_tolerance, cfg.engine))


def _verified_read_back(spark: SparkSession, cfg: JobConfig, job: Prepared, staging: StagingArea,
                        spec: ModelSpec) -> engine.Choice:
    """`auto`'s verification on rows read back from the staging area, the profile sample's where the write
    drew one (a Spark job, with settings of its own: run where nothing else runs)."""
    rows = staging.sample_or_rows(spark, {p.values for p in staging.listing(spark).samples})
    return _logged(engine.verify_written(spark, job.engine, rows.where(col(bad_rows.OUTCOME).isin(SCORED, REJECTED)),
                                         spec, cfg.verify_rows, cfg.engine_tolerance, cfg.engine))


def _query_settings(cfg: JobConfig, spec: ModelSpec, job: Prepared, *chosen: engine.Choice) -> dict[str, str]:
    """The write's settings, for the engines of the model (and of the challenger) it scores with."""
    arrow = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.batch_size)}
    if fixed_width_inputs(spec):  # batches are bounded by rows; Int.MaxValue stops Spark sizing every row
        arrow["spark.sql.execution.arrow.maxBytesPerBatch"] = str(2**31 - 1)
    models = {k: v for c in chosen for k, v in engine.spark_settings(c).items()}
    return {**arrow, **models, **(INTERPRETED if interpreted(job, *chosen) else {})}


# A small run's write evaluates its expressions without generating code for them. Generating and compiling the
# write's code (the checks of every feature, the model, the lineage) costs a fresh JVM about a second, and
# interpreting them costs about 4.4 us a row more (measured on the logistic regression's write, 1M rows warm:
# 7.5 s against 3.1 s): less up to about 200,000 rows. Spark's own switch for this is internal (its tests set
# it); a Spark without it ignores the setting and generates code as usual, with the same results.
INTERPRETED = {"spark.sql.codegen.factoryMode": "NO_CODEGEN", "spark.sql.codegen.wholeStage": "false"}
INTERPRETED_ROWS = 50_000


def interpreted(job: Prepared, *chosen: engine.Choice) -> bool:
    """Whether the write interprets its expressions: a run of at most INTERPRETED_ROWS rows (as the footers
    estimate them), unless trees run as SQL expressions (a row walks each tree through interpreted CASEs)."""
    estimated = [job.estimates.get(v) for v in job.partitions]
    if not estimated or any(n is None for n in estimated):
        return False
    return sum(n for n in estimated if n is not None) <= INTERPRETED_ROWS and \
        all(c.program is None or c.program.size == 0 for c in chosen)


@dataclass(frozen=True)
class _Second:
    """The challenger as the write needs it: its verified engine, its spec, its lineage."""

    choice: engine.Choice
    spec: ModelSpec
    lineage: RunLineage


def _challenger(spark: SparkSession, cfg: JobConfig, job: Prepared, reasons: bad_rows.Checks | None,
                lineage: RunLineage) -> _Second:
    """The challenger's engine, verified on the run's rows like the champion's (before the write); its errors
    are isolated (a row it cannot score keeps null challenger outputs)."""
    assert job.challenger is not None
    ch = job.challenger
    spec = ModelSpec(ch.model.path, ch.scoring.features, job.scoring.outputs, tensor=ch.scoring.tensor,
                     isolate_errors=True)
    choice = engine.verify(spark, ch.engine, job.selected(spark), reasons, spec, cfg.verify_rows,
                           cfg.engine_tolerance, cfg.engine)
    log.info("challenger engine: %s (%s)", choice.engine, choice.reason)
    if choice.engine == "udf":
        spec = replace(spec, model_file=model_cache.ship(spark, ch.model.path))
    ref = ch.model.ref
    return _Second(choice, spec, RunLineage(ref.name, ref.version, ref.run_id, lineage.scored_at,
                                            lineage.scoring_run_id))


@dataclass(frozen=True)
class _Written:
    """What the write observed: the rows read, those the model saw (none rejected for their inputs), and
    the rows it collected to verify the translation on (`sample`; None: not asked), all in the write's one
    observation (two cost a 4M-row write 0.45 s more: each is a pass over the rows outside the generated
    code). The counts come from the JVM alone; bringing the sample to Python takes 0.3-0.7 s, paid on the
    verification's thread."""

    rows: int
    seen: int
    drawn: Observation | None = None

    def sample(self) -> list[Row] | None:
        """Python rows where the observation gives them (else the caller reads rows back: `_verified_read_back`)."""
        if self.drawn is None:
            return None
        found = self.drawn.get["sample"]
        return list(found) if isinstance(found, list) else None


def _write(spark: SparkSession, cfg: JobConfig, job: Prepared, lineage: RunLineage, staging: StagingArea,
           chosen: engine.Choice, spec: ModelSpec, reasons: bad_rows.Checks | None, second: _Second | None = None,
           verify_share: float | None = None) -> _Written:
    """Score every selected row with the chosen engine (and the challenger's) and stage it; with
    `verify_share`, that share of the rows the model saw comes back with the outputs (engine.sample_of)."""
    if chosen.engine == "udf":  # executors load the model from the files shipped with the job
        spec = replace(spec, model_file=model_cache.ship(spark, job.model.path))
    log.info("scoring %d partition(s) of %s (%s) with %s version %s", len(job.partitions), cfg.input_table,
             job.scoring.selection.text, lineage.model_name, lineage.model_version)
    skip = col(plan.REJECT_REASON).isNotNull() if reasons is not None else None
    settings = _query_settings(cfg, spec, job, chosen, *([second.choice] if second is not None else []))
    # the rows are built under the write's settings too: the JVM tree evaluator plans the query before it
    # (its input is an RDD of the rows before the trees), a small run's without generated code like the rest
    with runtime_conf(spark, settings):
        per_folder = _fingerprints_per_folder(job, second)
        rows, observed = _scored_rows(spark, cfg, job, chosen, spec, skip, reasons, second, verify_share, per_folder)
        # the Python workers' head start is for the profiles' pandas function on the executors: a run that
        # scores in the JVM and profiles on the driver starts no Python worker at all
        in_jvm = chosen.engine == "sql" and (second is None or second.choice.engine == "sql")
        ahead = in_jvm and not profiles.on_driver(len(job.partitions), cfg.profile_rows,
                                                  len(assess.targets(job.scoring, second is not None)))
        if settings.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN":
            log.debug("the write interprets its expressions (a run of at most %d rows)", INTERPRETED_ROWS)
        with python_workers_started(spark, ahead):
            staging.write(rows, _lineage_columns(rows.columns, lineage, second, per_folder),
                          encoding.writer_options(spark, job.plain, _passed_through(job)))
    if verify_share is None:
        read = int(observed.get["rows"])
        return _Written(read, read)
    found = compat.observed_numbers(observed, ("rows", "seen"))
    return _Written(found["rows"], found["seen"], observed)


def _scored_rows(spark: SparkSession, cfg: JobConfig, job: Prepared, chosen: engine.Choice, spec: ModelSpec,
                 skip: Column | None, reasons: bad_rows.Checks | None, second: _Second | None,
                 verify_share: float | None, per_folder: PerPartition | None = None) -> tuple[DataFrame, Observation]:
    """The rows the write stages: scored (and by the challenger), counted and sampled as they pass, with their
    fingerprints (unless the write adds them `per_folder`), outcomes and the profiles' sample."""
    rows = job.selected(spark).transform(bad_rows.with_reason, reasons)
    if second is not None:  # first, so that its outputs are out of the way before the champion's arrive
        rows = (rows.transform(engine.to_dataframe, second.choice, second.spec, skip)
                .transform(challenger.hide_outputs, job.scoring.outputs))
    rows = rows.transform(engine.to_dataframe, chosen, spec, skip)
    # counted as the rows pass, in the write's one pass: the rows read (every row goes on to be written)
    observed = Observation("written")
    metrics = [F.count(F.lit(1)).alias("rows")]
    if verify_share is not None:
        metrics.append(F.count(F.when(col(plan.REJECT_REASON).isNull(), 1)).alias("seen"))
        drawn = F.rand(sampling.SEED + 1) < F.lit(verify_share) if verify_share < 1.0 else F.lit(True)
        rows = rows.withColumn(_DRAWN, drawn)
        metrics.append(engine.sample_of(rows, spec, col(_DRAWN)).alias("sample"))
    rows = (rows.observe(observed, *metrics).drop(_DRAWN)
            .transform(lambda df: df if per_folder is not None else
                       partitions.with_fingerprints(df, job.source, job.fingerprints))
            .transform(bad_rows.with_outcome)
            .transform(_stored_values_of_rejects_only, job.source.replaced))
    if second is not None:
        rows = rows.transform(challenger.with_rows, job.scoring, job.keys)
    return rows.transform(sampling.with_sample, job.scoring.partition_columns,
                          sampling.rates(job.estimates, cfg.profile_rows)), observed


def _passed_through(job: Prepared) -> list[str]:
    """The input's columns that the scored table carries with their stored values (a transform's are new)."""
    replaced = set(job.source.replaced)
    return [c for c in job.source.input_data_columns if c not in replaced]


def _fingerprints_per_folder(job: Prepared, second: _Second | None) -> PerPartition | None:
    """The input fingerprint as a column of one value per partition, which the staging write adds after its
    sort, like the lineage (where this package's JVM writer runs: pages encoded once per partition, not a value
    hashed and compared per row; measured, 1.5-1.7 s of a warm 4M-row write); None where the rows carry it: a
    challenger's rows, more partitions than a CASE takes, a folder whose name is not certain."""
    column = partitions.fingerprint_column(job.source, job.fingerprints)
    if second is not None or column is None:
        return None
    folders = {}
    for values, fingerprint in job.fingerprints.items():
        folder = partitions.folder_of(job.source, values)
        if folder is None:
            return None
        folders[folder] = fingerprint
    return PerPartition(plan.FINGERPRINT, column, folders)


def _lineage_columns(columns: list[str], lineage: RunLineage, second: _Second | None,
                     per_folder: PerPartition | None = None) -> ConstantColumns | Callable[[DataFrame], DataFrame]:
    """The lineage columns, as the staging write adds them after its sort, in the scored table's place (before
    the input fingerprint): readers of the files alone (DuckDB, the manifest's readers) see the table's order.
    One value each for the whole write, unless a challenger's rows have their own model's. With `per_folder`,
    the fingerprint comes after them, where the rows would have carried it (before the outcome)."""
    if second is None and per_folder is not None:
        return replace(lineage.columns(before=bad_rows.OUTCOME), per_partition=per_folder)
    if second is None:
        return lineage.columns(before=plan.FINGERPRINT)
    at = columns.index(plan.FINGERPRINT)
    order = [*columns[:at], *plan.LINEAGE.fieldNames(), *columns[at:]]
    add = partial(challenger.with_lineage, champion=lineage, challenger=second.lineage)
    return lambda df: add(df).select(*order)


def _stored_values_of_rejects_only(df: DataFrame, replaced: tuple[str, ...]) -> DataFrame:
    """The stored values of columns a transform replaced are kept for rejected rows only (the rejects table
    shows them); a scored row has the transformed value, as the model saw it."""
    if not replaced:
        return df
    rejected = col(bad_rows.OUTCOME) == F.lit(REJECTED)
    return df.withColumns({f"{ORIGINAL}{c}": F.when(rejected, col(f"{ORIGINAL}{c}")) for c in replaced})


def _publish_all(spark: SparkSession, cfg: JobConfig, job: Prepared, publisher: Publisher, staging: StagingArea,
                 staged: list[StagedPartition]) -> list[str]:
    parts = job.scoring.partition_columns
    read = {p.values for p in staged}
    empty = [v for v in job.partitions if v not in read]
    if empty:  # files that hold no rows: never a reason to drop what is published
        log.warning("partition(s) %s read no rows: their published output is left as it is",
                    "; ".join(partitions.describe(parts, v) for v in empty))
    run_partitions = set(job.partitions) - set(empty)
    log.info("publishing %d partition(s) of %s", len(run_partitions), cfg.output_table)
    publisher.publish(spark, cfg.output_table, job.scoring.output_schema, staging, SCORED, staged, run_partitions,
                      manifest=True, between=lambda: faults.point("mid_publish"))
    if cfg.key_columns:
        output.create_latest_view(spark, cfg.latest, cfg.output_table, job.scoring.output_schema,
                                  job.keys[:len(cfg.key_columns)], parts)
    if job.challenger is not None or spark.catalog.tableExists(cfg.challenger):
        # a run without a challenger drops its partitions from the challenger table: they would compare an
        # older champion version
        schema = challenger.table_schema(job.scoring, job.keys)
        if job.challenger is not None:
            output.ensure_table(spark, cfg.challenger, schema, parts, cfg.output_format)
        publisher.publish(spark, cfg.challenger, schema, staging, challenger.CHALLENGER, staged, run_partitions)
    if cfg.on_bad_rows == "quarantine":
        rejects_schema = plan.rejects_schema(job.source)
        output.ensure_table(spark, cfg.rejects, rejects_schema, parts, cfg.output_format)
        publisher.publish(spark, cfg.rejects, rejects_schema, staging, REJECTED, staged, run_partitions)
    return [partitions.describe(parts, v) for v in sorted(run_partitions, key=lambda v: [str(x) for x in v])]
