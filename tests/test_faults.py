"""Fault injection with real Spark and a real metastore: the driver SIGKILLed while scoring, after writing
and while publishing. Each crashed run is a separate process (spark-submit or the console script) on its
own embedded metastore; what readers see is inspected through the metastore after each crash."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.support import DEMO_DAYS, call, submit_conf

BIN_JOB = ["-m", "spark_jobs.score_table"]
OUT = "lake.scored_faults"


def job(home: Path, tmp: Path, crash: str | None = None) -> tuple[int, str]:
    import sys

    cmd = [sys.executable, *BIN_JOB, "--config", str(home / "faults.yaml"), "--output-table", OUT]
    done = call(cmd, home, tmp, {"SCORE_TABLE_CRASH_AT": crash} if crash else {})
    return done.returncode, done.stdout + done.stderr


def inspect(home: Path, tmp: Path) -> dict[str, object]:
    import sys

    bin_dir = Path(sys.executable).parent
    done = call([str(bin_dir / "spark-submit"), *submit_conf(home), str(Path(__file__).with_name("inspect_output.py")),
                 OUT], home, tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("INSPECT "))
    return json.loads(line.removeprefix("INSPECT "))  # type: ignore[no-any-return]


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


def test_crashes_never_change_what_readers_see(home: Path, tmp_path: Path) -> None:
    (home / "faults.yaml").write_text(
        "model_uri: models:/churn@champion\ninput_table: lake.customer_features\nlock_stale_after_s: 2\n"
        f"spark:\n  local_home: {home}\n")
    code, log = job(home, tmp_path)
    assert code == 0, log[-3000:]
    baseline = inspect(home, tmp_path)
    (first_run,) = baseline["runs"]  # type: ignore[misc]
    assert baseline["published_by"] == {f"ds={d}": first_run for d in DEMO_DAYS}

    crashed = []
    for point in ("while_scoring", "after_stage", "mid_publish"):
        code, log = job(home, tmp_path, crash=point)
        assert code == -signal.SIGKILL, (point, code, log[-2000:])
        state = inspect(home, tmp_path)
        runs: dict[str, dict[str, str]] = state["runs"]  # type: ignore[assignment]
        (new_run,) = set(runs) - set(baseline["runs"]) - set(crashed)  # type: ignore[arg-type]
        crashed.append(new_run)
        assert runs[new_run]["status"] == "running"  # detectably stale: its lock has no heartbeat any more
        assert manifest_runs(home) == state["published_by"], point
        for earlier in crashed[:-1]:  # the next run took over the stale lock and marked it failed
            assert runs[earlier]["status"] == "failed" and "abandoned" in runs[earlier]["error"]
        if point != "mid_publish":
            assert state["rows"] == baseline["rows"] and state["published_by"] == baseline["published_by"]
        else:  # per-partition atomicity: the first partition switched whole, the second kept its old rows
            assert state["published_by"] == {f"ds={DEMO_DAYS[0]}": new_run, f"ds={DEMO_DAYS[1]}": first_run}
            by_run = {json.loads(r)["scoring_run_id"] for r in state["rows"]}
            assert by_run == {new_run, first_run}
            assert len(state["rows"]) == len(baseline["rows"])
            assert without_run_columns(state["rows"]) == without_run_columns(baseline["rows"])

    code, log = job(home, tmp_path)
    assert code == 0, log[-3000:]
    final = inspect(home, tmp_path)
    runs = final["runs"]  # type: ignore[assignment]
    assert all(runs[r]["status"] == "failed" for r in crashed)
    (last,) = {r for r, v in runs.items() if v["status"] == "succeeded"} - {first_run}
    assert final["published_by"] == {f"ds={d}": last for d in DEMO_DAYS} == manifest_runs(home)
    assert without_run_columns(final["rows"]) == without_run_columns(baseline["rows"])  # same rows again
    table_dir = home / "warehouse" / "lake.db" / OUT.split(".")[1]
    assert {p.name for p in (table_dir / "_runs").iterdir()} == {first_run, last}  # crashed runs cleaned up
    assert not (home / "warehouse" / "lake.db" / "_scoring_locks" / "scored_faults.lock").exists()
