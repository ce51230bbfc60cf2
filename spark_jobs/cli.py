"""The command line: argv -> config -> (model, while Spark starts) -> run -> summary on stdout and exit code 0,
or one line on stderr and the error's exit code (2: bad input, found before any data is read; 1: a failure
while running). Subcommands: `score-table [score flags]`, `score-table rollback ...`, `score-table baseline ...` and
`score-table view ...`."""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from spark_jobs.background import Ahead, Background
from spark_jobs.config import JobConfig, parse_args, parse_baseline_args, parse_rollback_args, parse_view_args
from spark_jobs.errors import ScoringError, one_line
from spark_jobs.session import get_session, session_for

if TYPE_CHECKING:
    from spark_jobs.model.model_ref import LocalModel

log = logging.getLogger("score_table")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["rollback"]:
        return _guarded(lambda: _rollback(args[1:]), "--verbose" in args)
    if args[:1] == ["baseline"]:
        return _guarded(lambda: _baseline(args[1:]), "--verbose" in args)
    if args[:1] == ["view"]:
        return _guarded(lambda: _view(args[1:]), "--verbose" in args)
    return _guarded(lambda: _score(args), "--verbose" in args)


def _score(args: list[str]) -> str:
    """Spark starts (the longest step of a small run, with the metastore after it) while the model is
    resolved, downloaded and loaded, and once Spark is up the input table is described from the metastore
    while the model still resolves (importing MLflow and opening its store take seconds): a wrong model still
    fails in seconds, without waiting for Spark, and the catalog is read only, never written, before the
    model is known."""
    cfg, verbose = parse_args(args), "--verbose" in args
    session = Background(lambda: get_session(cfg, verbose), "spark-start")
    from spark_jobs.planning import tables

    source = Ahead(session, lambda spark: tables.source(spark, cfg.input_table, cfg.input_partition_columns,
                                                        cfg.transform), "input-table")
    try:
        model, challenger = _models(cfg)
    except BaseException:
        source.call_off()
        raise
    from spark_jobs.scoring.job import run
    from spark_jobs.scoring.summary import summary

    return summary(cfg, run(session.result(), cfg, model, challenger, source.result()))


def _models(cfg: JobConfig) -> tuple[LocalModel, LocalModel | None]:
    """The model (and the challenger) resolved and downloaded; a translatable model starts loading."""
    # imported once Spark is starting: MLflow, pandas and the job's modules take seconds to import
    from spark_jobs.model import model_ref
    from udfs.compiled.translate import has_translator

    model_ref.connect(cfg.tracking_uri, cfg.registry_uri)
    model = model_ref.download(model_ref.resolve(cfg.model_uri))
    log.info("model %s resolved to %s version %s", cfg.model_uri, model.ref.name, model.ref.version)
    challenger = model_ref.download(model_ref.resolve(cfg.challenger_uri)) if cfg.challenger_uri else None
    if cfg.engine != "udf" and has_translator(model.path):  # translating and verifying load it on the driver
        threading.Thread(target=_load_early, args=(model.path,), name="model-load", daemon=True).start()
    return model, challenger


def _load_early(path: str) -> None:
    """Load the model (imports and unpickling: seconds) while Spark and the metastore start, which keeps
    this thread's core otherwise idle; the run takes it from the process's model cache. A failure here is
    left to the run's own load, which reports it."""
    from udfs import model_cache

    try:
        model_cache.load(path)
    except Exception:
        log.debug("loading the model early failed; the run loads it again", exc_info=True)


def _baseline(args: list[str]) -> str:
    from spark_jobs.quality.training import make_baseline

    cfg = parse_baseline_args(args)
    return make_baseline(session_for(cfg.local_defaults, cfg.local_home, cfg.spark_conf, "--verbose" in args), cfg)


def _view(args: list[str]) -> str:
    from spark_jobs.publishing.scoring_view import create_view

    cfg = parse_view_args(args)
    return create_view(session_for(cfg.local_defaults, cfg.local_home, cfg.spark_conf, "--verbose" in args), cfg)


def _rollback(args: list[str]) -> str:
    from spark_jobs.publishing.rollback import rollback

    cfg = parse_rollback_args(args)
    return rollback(session_for(cfg.local_defaults, cfg.local_home, cfg.spark_conf, "--verbose" in args), cfg)


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


# How long a Python thread holds the GIL before another may take it (Python's default: 5 ms). The driver's
# threads mostly wait on the JVM through py4j, one round trip per call, while one of them computes in Python
# (the verification's predictions, the profiles, MLflow's imports): each round trip then waits for the GIL
# up to the whole interval. Measured: listing a run's staged files took 0.14 s alone, 0.98 s beside a busy
# thread at 5 ms, 0.29 s at 0.5 ms.
SWITCH_INTERVAL_S = 0.0005


def cli() -> None:
    """The process's entry: the console script, `python -m`, spark-submit of spark_jobs/score_table.py. The
    job sets how often its threads take turns (SWITCH_INTERVAL_S) while it runs, and puts it back for a host
    process that goes on (a Databricks wheel task)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        code = main()
    finally:
        sys.setswitchinterval(previous)
    end_process(code)


def end_process(code: int) -> None:
    """Exit without the interpreter's teardown, which with MLflow, scikit-learn, pandas and SQLAlchemy
    imported takes 0.8-1.0 s of every run (measured) and does nothing the run needs: by then the run has
    written, published and closed what it owns, and its output is flushed here. On Databricks a wheel task
    runs the entry point inside the platform's own Python process, which must go on: there it exits as
    usual (SystemExit), as it does for whatever runs the entry point several times in one process (the
    tests' driver replaces this function), and where PySpark's profiler prints its profiles at exit
    (`spark.python.profile`). `main` returns."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION") or _profiled():
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _profiled() -> bool:
    """Whether the session profiles Python workers: PySpark shows (or dumps) their profiles at exit."""
    from pyspark import SparkContext

    context = SparkContext._active_spark_context
    if context is None:
        return False
    conf = context.getConf()
    keys = ("spark.python.profile", "spark.python.profile.memory")
    return any(str(conf.get(key, "false")).lower() == "true" for key in keys)
