"""The SparkSession: whatever the platform configured wins (spark-submit --conf, spark-defaults.conf, the
session a Databricks job already has); the embedded default fills only the gaps."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from spark_jobs import compat, jvm_classes
from spark_jobs.config import JobConfig

log = logging.getLogger("score_table")
LOG4J_CONF = Path(__file__).resolve().parents[1] / "conf" / "log4j2.properties"  # in a checkout, not a wheel
# The JIT settings of the job's JVM (README: spark-submit's --driver-java-options; the console script and
# `python -m` add them themselves). Let the JIT compile methods over 8,000 bytes of bytecode: whole-stage code
# generation of a translated model (udfs.compiled) makes such methods, and HotSpot leaves them interpreted by
# default, several times slower.
JIT_HUGE_METHODS = "-XX:-DontCompileHugeMethods"
# Optimize (C2) only code that runs ten times as often as HotSpot's defaults ask: a run executes much code a few
# thousand times once (SQL parsing, the metastore in Derby, planning, serialization) whose optimization costs a
# short-lived JVM more CPU than it saves, while the loops over rows pass the thresholds in their first batch.
# Measured (benchmarks/RESULTS.md): a 10,000-row partition's run 3.3 s faster, a 4M-row run 4.2 s and 12.5 CPU-s.
JIT_LATE_OPTIMIZING = ("-XX:Tier4InvocationThreshold=50000 -XX:Tier4MinInvocationThreshold=6000 "
                       "-XX:Tier4CompileThreshold=150000 -XX:Tier4BackEdgeThreshold=400000")
JVM_OPTIONS = f"{JIT_HUGE_METHODS} {JIT_LATE_OPTIMIZING}"
# Keep Spark's SQL parser (ANTLR's runtime and the generated SqlBaseParser) out of C2. A run parses a few
# thousand times (every table name, statement and, on each metastore read of a table, every column's type):
# enough to pass even the late thresholds above, and C2 then spends about a CPU-second optimizing a parser
# whose C1 code is fast enough. A compiler directive (JEP 165), added to the driver's JVM as the session
# starts, not a launch option: every way of running gets it. Measured (benchmarks/RESULTS.md): a 10,000-row
# partition's run 0.9 s and 2 CPU-s less, a 4M-row run 1.0 s; a no-model read and write the same.
PARSER_AT_C1 = ('[{match: ["org/antlr/*.*", "org/apache/spark/sql/catalyst/parser/SqlBase*.*"], '
                'c2: {Exclude: true}}]')
_directives_added: int | None = None  # the gateway of the JVM that has them
# Settings of every session the job creates (not a Databricks job's, nor what the user configured). PySpark 4
# records the Python call site of every Column function for error messages, a few py4j round trips each; a
# translated model is thousands of such calls, and the job's errors carry their own context.
JOB_DEFAULTS = {"spark.python.sql.dataFrameDebugging.enabled": "false"}


def embedded_defaults(local_home: str) -> dict[str, str]:
    """Local Spark, a Hive metastore in embedded Derby and a warehouse, all under one project folder."""
    home = Path(local_home).resolve()
    return {
        "spark.master": "local[*]",
        "spark.app.name": "score-table",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),  # the progress bar, on a terminal
    }


def get_session(cfg: JobConfig, verbose: bool = False) -> SparkSession:
    """The run's session; the run's log says once what this Spark lacks (Spark 3.5 and 4.0: no Arrow UDFs)."""
    spark = session_for(cfg.local_defaults, cfg.local_home, cfg.spark_conf, verbose)
    compat.note_limitations(log)
    return spark


def session_for(local_defaults: bool, local_home: str, spark_conf: Mapping[str, str] | None = None,
                verbose: bool = False) -> SparkSession:
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):  # the platform configured everything
        return SparkSession.builder.getOrCreate()
    defaults = {**JOB_DEFAULTS, **(embedded_defaults(local_home) if local_defaults else {}), **(spark_conf or {})}
    if local_defaults:
        # Local workers run the driver's interpreter, which has the model's libraries.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        _own_jvm_options(quiet=not verbose)
    configured = _configured_keys()
    builder = SparkSession.builder
    for key, value in defaults.items():
        if key not in configured:
            builder = builder.config(key, value)
    if local_defaults and "spark.hadoop.javax.jdo.option.ConnectionURL" not in configured:
        Path(local_home).mkdir(parents=True, exist_ok=True)
        _set_jvm_property("derby.system.home", str(Path(local_home).resolve()))  # derby.log goes there
    spark = builder.getOrCreate()
    _add_compiler_directives(spark, PARSER_AT_C1)
    if local_defaults and not verbose and "spark.log.level" not in configured:
        spark.sparkContext.setLogLevel("WARN")  # the job's own phases and summary, not Spark's INFO chatter
    return spark


def _own_jvm_options(quiet: bool) -> None:
    """When this process is about to start its own JVM (the console script, `python -m`), start it with
    JVM_OPTIONS (each group unless the user set it), the virtualenv's class-data archive where one was made
    (spark_jobs.jvm_classes) and, when `quiet`, conf/log4j2.properties (Spark at WARN) unless the user gave a
    log4j configuration of their own: the INFO lines of Spark's start-up come before any setLogLevel could
    stop them."""
    options = os.environ.get("SPARK_SUBMIT_OPTS", "")
    if SparkContext._gateway is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
        return  # the JVM runs already: spark-submit started it with its own options
    added = [flags for flags, given in ((JIT_HUGE_METHODS, "DontCompileHugeMethods"),
                                        (JIT_LATE_OPTIMIZING, "Tier4"),
                                        (jvm_classes.java_options(), jvm_classes.OPTION))
             if flags and given not in options]
    if quiet and "log4j" not in options and LOG4J_CONF.exists():
        added.append(f"-Dlog4j2.configurationFile={LOG4J_CONF.as_uri()}")
    os.environ["SPARK_SUBMIT_OPTS"] = " ".join([options, *added]).strip()


def _add_compiler_directives(spark: SparkSession, directives: str) -> None:
    """`jcmd <driver> Compiler.directives_add FILE`, from inside, once per JVM. Only an optimization: a JVM
    without the command (another vendor's; none at all under Spark Connect) runs as it would have."""
    global _directives_added
    try:  # Spark Connect has no JVM here: sparkContext raises
        if _directives_added == id(spark.sparkContext._gateway):
            return
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "directives.json"
            path.write_text(directives)
            said = diagnostic_command(spark, "compilerDirectivesAdd", str(path))
        _directives_added = id(spark.sparkContext._gateway)
        log.debug("JIT compiler directives: %s", said.strip())
    except Exception:
        log.debug("could not add the JIT compiler directives", exc_info=True)


def diagnostic_command(spark: SparkSession, operation: str, *args: str) -> str:
    """A diagnostic command of the driver's JVM (what `jcmd` runs: `compilerDirectivesAdd`), through the
    JVM's DiagnosticCommand MBean, by the public interface's Method (py4j's reflection cannot reach the
    platform server's own class); its output."""
    gateway, jvm = spark.sparkContext._gateway, spark.sparkContext._jvm
    assert gateway is not None and jvm is not None

    def array(of: Any, *items: Any) -> Any:
        made = gateway.new_array(of, len(items))
        for i, item in enumerate(items):
            made[i] = item
        return made

    cls, objects, strings = jvm.java.lang.Class, jvm.java.lang.Object, jvm.java.lang.String
    invoke = cls.forName("javax.management.MBeanServer").getMethod("invoke", array(
        cls, cls.forName("javax.management.ObjectName"), cls.forName("java.lang.String"),
        cls.forName("[Ljava.lang.Object;"), cls.forName("[Ljava.lang.String;")))
    command = jvm.javax.management.ObjectName("com.sun.management:type=DiagnosticCommand")
    return str(invoke.invoke(jvm.java.lang.management.ManagementFactory.getPlatformMBeanServer(), array(
        objects, command, operation, array(objects, array(strings, *args)), array(strings, "[Ljava.lang.String;"))))


def _configured_keys() -> set[str]:
    """Keys the launcher already set: starting the JVM first makes spark-submit's --conf and
    spark-defaults.conf visible as system properties, which SparkConf() loads."""
    SparkContext._ensure_initialized()
    return {key for key, _ in SparkConf().getAll()}


def _set_jvm_property(key: str, value: str) -> None:
    jvm = SparkContext._jvm
    if jvm is not None:
        jvm.java.lang.System.setProperty(key, value)


@contextmanager
def runtime_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Runtime SQL settings for one action, then the caller's session back as it was (a Databricks job's
    session is shared with whatever else runs in it)."""
    old = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, before in old.items():
            if before is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, before)


def _start_workers(spark: SparkSession) -> None:
    """One tiny pandas job over every slot: each executor core forks its Python worker and imports pandas
    and pyarrow, and the idle workers stay for the next task (Spark keeps them a minute)."""
    slots = spark.sparkContext.defaultParallelism
    spark.range(0, slots, 1, slots).mapInPandas(lambda batches: batches, "id long").collect()


@contextmanager
def python_workers_started(spark: SparkSession, wanted: bool = True) -> Iterator[None]:
    """Around a job that runs in the JVM only (the sql engine's scoring write): start the executors' Python
    workers while its last tasks run, for the step after it (the profiles' pandas function), which would
    otherwise wait for a worker's start and its pandas and pyarrow imports (3-4 s on 2 cores). The workers'
    job is submitted once the block's first job is running, so the scheduler (first in, first out) gives it
    the cores that job's tail leaves idle; idle workers stay for the next task. The block does not wait for
    that job: the driver's next steps (the audit's footers) overlap the workers' start."""
    if not wanted:
        yield
        return
    sc = spark.sparkContext
    group = f"score-table-{os.getpid()}-{id(spark)}"
    sc.setJobGroup(group, "score-table: the run's write", interruptOnCancel=False)
    done = threading.Event()

    def start() -> None:
        try:
            while not done.is_set() and not sc.statusTracker().getJobIdsForGroup(group):
                done.wait(0.1)
            if not done.is_set():
                _start_workers(spark)
        except Exception:  # only a head start: the step that needs the workers starts them itself
            log.debug("could not start the Python workers ahead", exc_info=True)

    thread = threading.Thread(target=start, name="python-workers", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
        sc.setLocalProperty("spark.job.description", None)  # type: ignore[arg-type]
