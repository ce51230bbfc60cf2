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
from dataclasses import dataclass

from pyspark.sql import SparkSession

from spark_jobs import model_ref, output, plan, tables
from spark_jobs.config import JobConfig, parse_args
from spark_jobs.errors import ScoringError, UsageError
from spark_jobs.lineage import RunLineage, with_lineage
from spark_jobs.session import get_session
from udfs import ModelSpec, model_cache, score

log = logging.getLogger("score_table")


@dataclass(frozen=True)
class RunResult:
    lineage: RunLineage
    selection: str
    partitions: list[output.PartitionCount]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)


def run(spark: SparkSession, cfg: JobConfig) -> RunResult:
    """Resolve -> plan and validate (metadata only) -> score -> write."""
    started = time.monotonic()
    source = tables.require(spark, cfg.input_table, "input table")
    model_ref.connect(cfg.tracking_uri, cfg.registry_uri)
    ref = model_ref.resolve(cfg.model_uri)
    model = model_ref.download(ref)
    case_sensitive = spark.conf.get("spark.sql.caseSensitive", "false") == "true"
    scoring = plan.build(source, model.signature, cfg.partitions, case_sensitive)
    output_exists = output.check_compatible(spark, cfg.output_table, scoring)
    selected = spark.table(cfg.input_table)
    if scoring.selection.condition is not None:
        selected = selected.where(scoring.selection.condition)
    if not selected.inputFiles():  # partition pruning on metadata: lists files, reads none
        raise UsageError(f"partition selection {scoring.selection.text} matches no rows in {cfg.input_table}")

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.batch_size))
    spec = ModelSpec(model_cache.ship(spark, model.path), scoring.features, scoring.outputs)
    lineage = RunLineage.start(model.ref)
    log.info("scoring %s (%s) with %s = version %s", cfg.input_table, scoring.selection.text, ref.requested_uri,
             ref.version)
    scored = selected.transform(score, spec).transform(with_lineage, lineage)
    output.write(scored, cfg.output_table, scoring, cfg.output_format, output_exists)
    counts = output.count_written(spark, cfg.output_table, scoring, lineage.scoring_run_id)
    return RunResult(lineage, scoring.selection.text, counts, time.monotonic() - started)


def summary(cfg: JobConfig, result: RunResult) -> str:
    lin = result.lineage
    version = f"version {lin.model_version}" if lin.model_version else "no registry version"
    lines = [
        f"scored {cfg.input_table} ({result.selection}) -> {cfg.output_table}",
        f"model: {cfg.model_uri} = {lin.model_name} {version} (run {lin.model_run_id or '-'})",
        f"scoring_run_id: {lin.scoring_run_id}",
    ]
    lines += [
        "  " + ", ".join(f"{k}={v}" for k, v in p.values.items()) + f": {p.rows} rows" for p in result.partitions
    ]
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    lines.append(f"rows scored: {result.rows} in {result.seconds:.1f} s ({rate:,.0f} rows/s)")
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
