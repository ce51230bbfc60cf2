"""Fault injection with real Spark and a real metastore: the driver SIGKILLed while scoring, after writing
and while publishing. Each crash ends its own process (the job run as `python -m`, on its own embedded
metastore); the next process first inspects, through the metastore, what readers see after the crash, and
then runs again, taking over the dead run's lock."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from tests.support import DEMO_DAYS, Driver, expected_for, published

pytestmark = pytest.mark.processes

OUT = "lake.scored_faults"
CRASH_AT = "SCORE_TABLE_CRASH_AT"


def without_run_columns(rows: list[str]) -> list[str]:
    out = []
    for r in rows:
        d = json.loads(r)
        for k in ("scored_at", "scoring_run_id"):
            d.pop(k)
        out.append(json.dumps(d, sort_keys=True))
    return sorted(out)


def manifest_runs(home: Path) -> dict[str, str]:
    """Which run's folder `_published.jsonl` names for each partition (what readers without the metastore
    see): it must agree with the metastore after every crash."""
    manifest = home / "warehouse" / "lake.db" / OUT.split(".")[1] / "_published.jsonl"
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {f"ds={e['partition']['ds']}": e["folder"].split("/_runs/", 1)[1].split("/", 1)[0] for e in entries}


def test_crashes_never_change_what_readers_see(spark: SparkSession, home_dir: Path, tmp_path: Path) -> None:
    """The first process prepares the worker's home on its own session, then runs `spark_jobs.score_table` as
    `python -m` does (the module as __main__, which takes the active session; a run that starts its own is
    the console script's test): that run is also the module entry point's test, every partition compared
    with MLflow's own predictions."""
    home = home_dir

    def process() -> Driver:
        return Driver([sys.executable], home, tmp_path, local_home=home)

    with process() as first:
        first.prepare_home()
        profile = home / "faults.yaml"
        profile.write_text(
            "model_uri: models:/churn@champion\ninput_table: lake.customer_features\nlock_stale_after_s: 2\n"
            f"spark:\n  local_home: {home}\n")
        flags = ["--config", str(profile), "--output-table", OUT]
        code, log = first.run(*flags)
        assert code == 0, log[-3000:]
        scored = published(spark, home, OUT.split(".")[1])
        assert sorted(str(r.ds) for r in scored.select("ds").distinct().collect()) == DEMO_DAYS
        for day in DEMO_DAYS:
            actual = scored.where(F.col("ds") == day)
            assertDataFrameEqual(actual, expected_for(spark, home, actual, day))
        baseline = first.inspect(OUT)
        (first_run,) = baseline["runs"]
        assert baseline["published_by"] == {f"ds={d}": first_run for d in DEMO_DAYS}
        code, log = first.run(*flags, env={CRASH_AT: "while_scoring"})
        assert code == -signal.SIGKILL, ("while_scoring", code, log[-2000:])

    crashed: list[str] = []
    for crash, point in (("while_scoring", "after_stage"), ("after_stage", "mid_publish"), ("mid_publish", None)):
        with process() as after:
            state = after.inspect(OUT)  # what readers see after the crash, before anyone runs again
            runs: dict[str, dict[str, str]] = state["runs"]
            (new_run,) = set(runs) - set(baseline["runs"]) - set(crashed)
            crashed.append(new_run)
            assert runs[new_run]["status"] == "running"  # detectably stale: its lock has no heartbeat any more
            assert manifest_runs(home) == state["published_by"], crash
            for earlier in crashed[:-1]:  # the next run took over the stale lock and marked it failed
                assert runs[earlier]["status"] == "failed" and "abandoned" in runs[earlier]["error"]
            if crash != "mid_publish":
                assert state["rows"] == baseline["rows"] and state["published_by"] == baseline["published_by"]
            else:  # per-partition atomicity: the first partition switched whole, the second kept its old rows
                assert state["published_by"] == {f"ds={DEMO_DAYS[0]}": new_run, f"ds={DEMO_DAYS[1]}": first_run}
                by_run = {json.loads(r)["scoring_run_id"] for r in state["rows"]}
                assert by_run == {new_run, first_run}
                assert len(state["rows"]) == len(baseline["rows"])
                assert without_run_columns(state["rows"]) == without_run_columns(baseline["rows"])

            code, log = after.run(*flags, env={CRASH_AT: point} if point else {})
            if point:
                assert code == -signal.SIGKILL, (point, code, log[-2000:])
                continue
            assert code == 0, log[-3000:]
            final = after.inspect(OUT)
            after.close()

    runs = final["runs"]
    assert all(runs[r]["status"] == "failed" for r in crashed)
    (last,) = {r for r, v in runs.items() if v["status"] == "succeeded"} - {first_run}
    assert final["published_by"] == {f"ds={d}": last for d in DEMO_DAYS} == manifest_runs(home)
    assert without_run_columns(final["rows"]) == without_run_columns(baseline["rows"])  # same rows again
    table_dir = home / "warehouse" / "lake.db" / OUT.split(".")[1]
    assert {p.name for p in (table_dir / "_runs").iterdir()} == {first_run, last}  # crashed runs cleaned up
    assert not (home / "warehouse" / "lake.db" / "_scoring_locks" / "scored_faults.lock").exists()
