"""Publishing safely: run history, lock, concurrency, incremental runs, rollback, retention, a failed run."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs import fs
from spark_jobs.cli import main
from spark_jobs.publishing import output as output_tables
from spark_jobs.runs import lock
from spark_jobs.scoring.job import RunResult
from tests.support import DAYS, base, fit, log_model, register_sklearn, score, snapshot


def table_dir(spark: SparkSession, table: str) -> Path:
    return Path(output_tables.location(spark, table).removeprefix("file:"))


def published_folder(spark: SparkSession, table: str, day: str) -> str:
    return output_tables.location(spark, table, {"ds": day})


def run_folders(spark: SparkSession, table: str) -> set[str]:
    runs = table_dir(spark, table) / "_runs"
    return {p.name for p in runs.iterdir()} if runs.exists() else set()


@pytest.mark.spark35
def test_history_records_succeeded_and_failed_runs(spark: SparkSession, source: str, output: str,
                                                   model: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    ok = score(spark, *base(source, output), "--partition", f"ds={DAYS[0]}")
    assert main([*base(source, output, "models:/exploding_model_is_missing/1"), "--partition",
                 f"ds={DAYS[1]}"]) == 2  # a usage error: found before the lock, not a run
    history = spark.table(f"{output}_runs")
    assertDataFrameEqual(
        history.select("scoring_run_id", "kind", "status", "model_name", "model_version", "input_table",
                       "partition_selection", "rows_read", "rows_scored", "rows_rejected", "published_partitions",
                       "error"),
        [(ok.lineage.scoring_run_id, "score", "succeeded", "churn_lr", model["v1"], source, f"ds={DAYS[0]}",
          4, 4, 0, [f"ds={DAYS[0]}"], None)],
    )
    (row,) = history.collect()
    assert row.ended_at >= row.started_at and row.duration_s > 0 and row.rows_per_s == pytest.approx(
        4 / row.duration_s)


@pytest.mark.spark35
def test_failed_task_leaves_published_partitions_and_lock_and_staging_clean(
        spark: SparkSession, source: str, output: str, tracking_uri: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A model that raises on one partition's rows (pass policy: no isolation) fails the run mid-write."""
    import pandas as pd
    from mlflow.models import infer_signature

    from tests import models

    uri = log_model(models.RaisesOnNegative(), infer_signature(pd.DataFrame({"tenure": [1.0]}), pd.Series([1.0])),
                    "raises_publish")
    assert main([*base(source, output, uri)]) == 0
    published = snapshot(spark.table(output))
    spark.table(source).withColumn("tenure", F.when(F.col("ds") == DAYS[2], -F.col("tenure"))
                                   .otherwise(F.col("tenure"))).write.mode("overwrite").partitionBy("ds") \
        .saveAsTable("lake.negative_day")
    assert main([*base("lake.negative_day", output, uri), "--on-bad-rows", "pass"]) == 1
    assert "negative tenure" in capsys.readouterr().err
    assert_df_equality(spark.table(output), published, ignore_row_order=True)
    runs = spark.table(f"{output}_runs").orderBy("started_at").select("status", "error").collect()
    assert [r.status for r in runs] == ["succeeded", "failed"] and "negative tenure" in runs[1].error
    assert not fs.exists(spark, lock.lock_path(spark, output))
    succeeded = spark.table(f"{output}_runs").where("status = 'succeeded'").first().scoring_run_id
    assert run_folders(spark, output) == {succeeded}  # the failed run's staged rows are gone
    assert main([*base(source, output, uri)]) == 0  # and the next run succeeds


def test_live_lock_fails_fast_naming_the_holder_and_break_lock_takes_over(
        spark: SparkSession, source: str, output: str, model: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    holder = lock.TableLock(spark, lock.lock_path(spark, output), lock.holder("other-run-42", "2026-11-24T01:02:03"),
                            stale_after_s=600)
    holder.acquire()
    try:
        assert main([*base(source, output), "--partition", f"ds={DAYS[0]}"]) == 1
        err = capsys.readouterr().err
        assert "locked by run other-run-42 started at 2026-11-24T01:02:03" in err
        assert not spark.catalog.tableExists(output)
        assert main([*base(source, output), "--partition", f"ds={DAYS[0]}", "--break-lock"]) == 0
    finally:
        holder.release()
    assert spark.table(output).count() == 4


def test_stale_lock_of_a_dead_run_is_taken_over(spark: SparkSession, source: str, output: str,
                                                model: dict[str, str], tmp_path: Path) -> None:
    dead = lock.holder("dead-run", "2026-11-24T00:00:00")
    path = lock.lock_path(spark, output)
    assert fs.create_exclusive(spark, path, json.dumps(dead.__dict__))
    fs.touch(spark, path, time.time() - 3600)  # no heartbeat for an hour
    profile = tmp_path / "p.yaml"
    profile.write_text("lock_stale_after_s: 60\n")
    assert main(["--config", str(profile), *base(source, output), "--partition", f"ds={DAYS[0]}"]) == 0
    assert not fs.exists(spark, path)


def test_two_runs_at_once_exactly_one_writes(spark: SparkSession, source: str, output: str,
                                             model: dict[str, str]) -> None:
    path = lock.lock_path(spark, output)
    results: dict[str, object] = {}

    def attempt(name: str) -> None:
        try:
            results[name] = score(spark, *base(source, output))
        except Exception as e:
            results[name] = e

    first = threading.Thread(target=attempt, args=("first",))
    first.start()
    while not fs.exists(spark, path) and first.is_alive():
        time.sleep(0.01)
    second = threading.Thread(target=attempt, args=("second",))
    second.start()
    first.join()
    second.join()
    assert isinstance(results["first"], RunResult)
    assert isinstance(results["second"], lock.LockedError)
    assert results["first"].lineage.scoring_run_id in str(results["second"])
    written = {r.scoring_run_id for r in spark.table(output).select("scoring_run_id").distinct().collect()}
    assert written == {results["first"].lineage.scoring_run_id}


def test_exclusive_create_has_one_winner(spark: SparkSession, tmp_path: Path) -> None:
    for i in range(20):
        path = str(tmp_path / f"lock-{i}")
        wins: list[bool] = []
        threads = [threading.Thread(target=lambda p=path, w=wins: w.append(fs.create_exclusive(spark, p, "x")))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False, False, False, True]


def test_incremental_scores_only_missing_changed_or_other_version_partitions(
        spark: SparkSession, output: str, tracking_uri: str) -> None:
    spark.table("lake.features").write.mode("overwrite").partitionBy("ds").saveAsTable("lake.growing")
    register_sklearn(*fit((2.0, 1.0, 0.0), seed=11), "churn_incr", alias="champion")
    args = [*base("lake.growing", output, "models:/churn_incr@champion"), "--partition-mode", "new"]

    first = score(spark, *args, "--partition", f"ds={DAYS[0]}")
    assert [p.values for p in first.staged] == [(DAYS[0],)]
    second = score(spark, *args)
    assert sorted(p.values for p in second.staged) == [(DAYS[1],), (DAYS[2],)] and second.skipped == 1
    before = snapshot(spark.table(output))
    third = score(spark, *args)
    assert third.staged == [] and third.skipped == 3
    assert_df_equality(spark.table(output), before, ignore_row_order=True)

    spark.table("lake.features").where(F.col("ds") == DAYS[1]).limit(1).write.insertInto("lake.growing")
    fourth = score(spark, *args)
    assert [p.values for p in fourth.staged] == [(DAYS[1],)] and fourth.counts.read == 5

    register_sklearn(*fit((0.5, 0.5, 0.5), seed=12), "churn_incr", alias="champion")
    fifth = score(spark, *args)
    assert sorted(p.values for p in fifth.staged) == [(d,) for d in DAYS]
    files = spark.table("lake.growing").where(F.col("ds") == DAYS[1]).inputFiles()
    stats = [Path(f.removeprefix("file:")).stat() for f in files]
    expected = f"files={len(files)};bytes={sum(s.st_size for s in stats)};" \
               f"newest={max(int(s.st_mtime * 1000) for s in stats) / 1000:.3f}"
    assert {r.input_fingerprint for r in spark.table(output).where(F.col("ds") == DAYS[1]).collect()} == {expected}


@pytest.mark.spark35
def test_rollback_republishes_the_previous_version(spark: SparkSession, source: str, output: str,
                                                   tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    v1 = register_sklearn(*fit((1.0, 2.0, 3.0), seed=21), "churn_rb", alias="champion")
    args = [*base(source, output, "models:/churn_rb@champion"), "--partition", f"ds={DAYS[0]}"]
    score(spark, *args)
    by_v1 = snapshot(spark.table(output))
    register_sklearn(*fit((3.0, 2.0, 1.0), seed=22), "churn_rb", alias="champion")
    score(spark, *args)
    assert {r.model_version for r in spark.table(output).collect()} != {v1}

    assert main(["rollback", "--output-table", output, "--partition", f"ds={DAYS[0]}"]) == 0
    assert f"to run {by_v1.first().scoring_run_id}" in capsys.readouterr().out
    assert_df_equality(spark.table(output), by_v1, ignore_row_order=True)
    last = spark.table(f"{output}_runs").orderBy(F.desc("started_at")).first()
    assert (last.kind, last.status, last.model_version, last.published_partitions) == (
        "rollback", "succeeded", v1, [f"ds={DAYS[0]}"])
    manifest = [json.loads(line) for line in (table_dir(spark, output) / "_published.jsonl").read_text().splitlines()]
    assert manifest == [{"partition": {"ds": DAYS[0]}, "folder": published_folder(spark, output, DAYS[0])}]

    assert main(["rollback", "--output-table", output, "--partition", f"ds={DAYS[0]}"]) == 2
    assert "no earlier version of partition ds=" in capsys.readouterr().err


def test_retention_keeps_the_published_and_previous_version(spark: SparkSession, source: str, output: str,
                                                            model: dict[str, str]) -> None:
    ids = [score(spark, *base(source, output), "--partition", f"ds={DAYS[0]}").lineage.scoring_run_id
           for _ in range(3)]
    assert run_folders(spark, output) == set(ids[1:])
    ids.append(score(spark, *base(source, output), "--partition", f"ds={DAYS[0]}", "--keep-versions", "0")
               .lineage.scoring_run_id)
    assert run_folders(spark, output) == {ids[-1]}



def test_prediction_range_audit_fails_before_publishing(spark: SparkSession, source: str, output: str,
                                                        model: dict[str, str], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("prediction_range: [0, 1]\n")  # a linear model of tenure and spend scores far above 1
    assert main(["--config", str(profile), *base(source, output), "--partition", f"ds={DAYS[0]}"]) == 1
    assert "predictions outside prediction_range [0, 1]; nothing published" in capsys.readouterr().err
    assert spark.table(output).collect() == []
    (row,) = spark.table(f"{output}_runs").collect()
    assert row.status == "failed" and "prediction_range" in row.error


def test_latest_view_gives_the_newest_score_per_key(spark: SparkSession, source: str, output: str,
                                                    model: dict[str, str]) -> None:
    from decimal import Decimal

    from tests.support import SCHEMA, create_table

    rows = [(c, 10 * d + c, Decimal(c), c, "s", day) for d, day in enumerate(DAYS) for c in (1, 2, 3)]
    create_table(spark, "lake.repeat", rows, SCHEMA)
    args = [*base("lake.repeat", output), "--key-columns", "customer_id"]
    score(spark, *args)
    newest = spark.table(output).where(F.col("ds") == DAYS[2])
    assertDataFrameEqual(spark.table(f"{output}_latest"), newest)
    score(spark, *args, "--partition", f"ds={DAYS[0]}")  # rescoring an older day does not make it newest
    assertDataFrameEqual(spark.table(f"{output}_latest"), newest)
    assert spark.sql(f"SELECT count(*) FROM {output}_latest").first()[0] == 3
    spark.sql(f"DROP VIEW {output}_latest")


@pytest.mark.parametrize("few", [True, False])
def test_some_staged_rows_come_from_every_partition_and_outcome(spark: SparkSession, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, few: bool) -> None:
    """The rows a translation is verified on, read on the driver: every staged row where they are few; else
    each partition's and outcome's share of them (and a half more), from its first files, whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spark_jobs.publishing import staging
    from spark_jobs.publishing.staging import Listing, StagedPartition, StagingArea

    def staged(outcome: str, day: str, rows: int) -> StagedPartition:
        files = []
        for i in range(2):  # two files each, rows numbered by partition, outcome and file
            path = tmp_path / f"__outcome={outcome}" / f"ds={day}" / f"part-{i}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"x": [f"{day}/{outcome}/{i}/{r}" for r in range(rows // 2)]}), path)
            files.append(f"file:{path}")
        return StagedPartition(outcome, (day,), rows, f"file:{path.parent}", tuple(files))

    sampled = [staged("sample_scored", DAYS[0], 200), staged("sample_rejected", DAYS[0], 40)]
    whole = [staged("scored", DAYS[1], 100), staged("rejected", DAYS[1], 20), staged("scored", DAYS[0], 4000)]
    listing = Listing(whole, [replace(p, outcome=p.outcome.removeprefix("sample_")) for p in sampled])
    monkeypatch.setattr(staging, "_DRIVER_ROWS", 10_000 if few else 100)
    found = StagingArea.some_rows(spark, listing, ["x"], 30)
    assert found is not None
    read = sorted(found.column("x").to_pylist())
    # the sample stands for the first day; the second day's rows are its own
    sources = [*sampled, whole[0], whole[1]]
    expected = [f"{p.values[0]}/{p.outcome}/{i}/{r}" for p in sources for i in range(2 if few else 1)
                for r in range(p.rows // 2)]
    assert read == sorted(expected)
