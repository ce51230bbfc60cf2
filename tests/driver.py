"""Runs the job several times in one process, one JVM, as the test that started it asks (tests.support.Driver).

    spark-submit [--conf ...] tests/driver.py COMMANDS           the session spark-submit configures
    python tests/driver.py COMMANDS --local-home DIR             the embedded default under DIR, as the job makes it

COMMANDS is a named pipe (spark-submit gives its Python driver no stdin). Each line in it is a JSON command,
answered by a line `DONE <json>` on stdout once it is done:
    {"run": [ARG, ...], "env": {NAME: VALUE}}  runs `python -m spark_jobs.score_table ARG ...` here, the code
                                                spark-submit runs for spark_jobs/score_table.py, with those
                                                environment variables set for the run -> {"code": EXIT_CODE}
    {"inspect": TABLE}                          what the metastore publishes of TABLE (its rows, which run's
                                                folder each partition points at) and its run history
    {"prepare": {"home": DIR, "rows": N, "days": N, "start": ISO_DATE}}
                                                `python -m spark_jobs.demo prepare` for DIR, on this process's
                                                session (a home prepared without a JVM start of its own)
No session starts before a command needs one: a first `run` makes it itself, exactly as `python -m
spark_jobs.score_table` (or spark-submit of spark_jobs/score_table.py) does, and later commands use the one
it left active. Whatever a run prints comes before its DONE line. A run that crashes the process (SIGKILL at
a crash point) answers nothing: the test sees the process end. Derby admits one process at a time: while
this one lives, the test reads the metastore through it."""

from __future__ import annotations

import datetime as dt
import json
import os
import runpy
import sys
from typing import Any

from pyspark.sql import SparkSession

from spark_jobs import cli, demo, session
from spark_jobs.planning import partitions, tables
from spark_jobs.publishing import output, staging


def current_session(argv: list[str]) -> SparkSession:
    """The session a run left active, else a new one: the embedded default of --local-home, or the session
    spark-submit configured."""
    if argv[:1] == ["--local-home"]:
        return session.session_for(True, argv[1])
    return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()


def run(argv: list[str], env: dict[str, str]) -> int:
    """One run as its own process would make it, but this process goes on: the entry point's end of the
    process becomes a SystemExit with its code."""
    cli.end_process = sys.exit  # type: ignore[assignment]
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.argv = ["score_table.py", *argv]
    try:
        runpy.run_module("spark_jobs.score_table", run_name="__main__")
        return 0
    except SystemExit as exited:
        return int(exited.code or 0)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def inspect(spark: SparkSession, table: str) -> dict[str, Any]:
    info = tables.require(spark, table, "table")

    def published_by(values: partitions.Values) -> str:
        folder = output.location(spark, table, dict(zip(info.partition_columns, values, strict=True)))
        return (staging.split_location(folder) or ["", "?"])[1]

    return {
        "rows": sorted(json.dumps(r.asDict(), default=str, sort_keys=True) for r in spark.table(table).collect()),
        "runs": {r.scoring_run_id: {"status": r.status, "error": r.error}
                 for r in spark.table(f"{table}_runs").collect()},
        "published_by": {partitions.describe(info.partition_columns, v): published_by(v)
                         for v in partitions.listed(spark, info)},
    }


def prepare(spark: SparkSession, home: str, rows: int, days: int, start: str) -> dict[str, Any]:
    return {"printed": demo.prepare_home(spark, home, rows, days, dt.date.fromisoformat(start))}


def main() -> None:
    with open(sys.argv[1]) as commands:
        for line in commands:
            answer(sys.argv[2:], json.loads(line))
    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


def answer(argv: list[str], command: dict[str, Any]) -> None:
    if "inspect" in command:
        result: dict[str, Any] = inspect(current_session(argv), command["inspect"])
    elif "prepare" in command:
        result = prepare(current_session(argv), **command["prepare"])
    else:
        result = {"code": run(command["run"], command.get("env", {}))}
    sys.stderr.flush()
    print("\nDONE " + json.dumps(result), flush=True)  # on a line of its own, after any progress bar


if __name__ == "__main__":
    main()
