"""Hostile and unusual input (issue 15): each defect a careless or hostile user found, reproduced small."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.cli import main
from spark_jobs.planning.plan import NULL_PARTITION
from spark_jobs.publishing import output as output_tables
from tests.support import (
    FEATURES,
    SCHEMA,
    base,
    create_table,
    expected_scored,
    fit,
    log_model,
    register_sklearn,
    score,
    snapshot,
)

# Values Hive escapes in folder names (quote, =, :, %, /), a space, and NULL
ODD_DAYS = ["' OR 1=1 --", "x y/z", "p%q", "a:b", None]


@pytest.fixture(scope="module")
def odd_source(spark: SparkSession) -> str:
    rows = [(i, 10 + i, Decimal(f"{20 + i * 1.25:.2f}"), 3 * i, f"s{i % 2}", ODD_DAYS[i % len(ODD_DAYS)])
            for i in range(15)]
    spark.catalog.createDatabase("lake", ifNotExists=True)
    create_table(spark, "lake.odd_values", rows, SCHEMA)
    return "lake.odd_values"


@pytest.mark.spark35  # Spark < 4.1 writes these values as SQL literals (compat.sql): the riskiest path there
def test_escaped_and_null_partition_values_score_publish_roll_back_and_read_back(
        spark: SparkSession, odd_source: str, output: str, tracking_uri: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    import duckdb

    v1 = register_sklearn(*fit((1.0, -1.0, 2.0), seed=31), "churn_odd", alias="champion")
    first = score(spark, *base(odd_source, output, "models:/churn_odd@champion"))
    assert sorted(map(str, (p.values[0] for p in first.staged))) == sorted(map(str, ODD_DAYS))
    lineage = SimpleNamespace(**{k: getattr(first.lineage, k) for k in
                                 ("model_name", "model_version", "model_run_id", "scored_at", "scoring_run_id")})
    published = spark.table(output)
    expected = expected_scored(spark, spark.table(odd_source), published, f"models:/churn_odd/{v1}", FEATURES,
                               lineage)
    assertDataFrameEqual(published, expected)

    again = score(spark, *base(odd_source, output, "models:/churn_odd@champion"), "--partition-mode", "new")
    assert again.staged == [] and again.skipped == len(ODD_DAYS)

    # a readers without the metastore: the manifest names each partition's exact value and folder
    folder = Path(output_tables.location(spark, output).removeprefix("file:"))
    manifest = [json.loads(line) for line in (folder / "_published.jsonl").read_text().splitlines()]
    assert sorted(map(str, (e["partition"]["ds"] for e in manifest))) == sorted(map(str, ODD_DAYS))
    for entry in manifest:
        day = entry["partition"]["ds"]
        read = duckdb.sql("SELECT customer_id, prediction FROM read_parquet(?)",
                          params=[entry["folder"].removeprefix("file:") + "/*.parquet"]).fetchall()
        want = published.where(F.col("ds").eqNullSafe(F.lit(day))).select("customer_id", "prediction").collect()
        assert sorted(read) == sorted(tuple(r) for r in want), day

    # rescore two odd partitions with another version, then roll each back by its exact value
    register_sklearn(*fit((-3.0, 1.0, 0.5), seed=32), "churn_odd", alias="champion")
    for day in ("x y/z", NULL_PARTITION):
        score(spark, *base(odd_source, output, "models:/churn_odd@champion"), "--partition", f"ds={day}")
    assert published.where(F.col("model_version") != v1).count() == 6
    for day in ("x y/z", NULL_PARTITION):
        assert main(["rollback", "--output-table", output, "--partition", f"ds={day}"]) == 0, capsys.readouterr()
    assertDataFrameEqual(spark.table(output), expected)


def test_incremental_run_rescores_a_partition_scored_by_another_model(
        spark: SparkSession, source: str, output: str, tracking_uri: str, tmp_path: Path) -> None:
    day = "ds=2026-11-01"
    one = register_sklearn(*fit((1.0, 1.0, 1.0), seed=41), "churn_one")
    other = register_sklearn(*fit((2.0, 0.0, -1.0), seed=42), "churn_other")
    score(spark, *base(source, output, f"models:/churn_one/{one}"), "--partition", day)
    switched = score(spark, *base(source, output, f"models:/churn_other/{other}"), "--partition", day,
                     "--partition-mode", "new")
    assert switched.skipped == 0 and {r.model_name for r in spark.table(output).collect()} == {"churn_other"}

    # models:/NAME/latest resolves to its concrete version, like an alias
    latest = score(spark, *base(source, output, "models:/churn_other/latest"), "--partition", day,
                   "--partition-mode", "new")
    assert latest.lineage.model_version == other and latest.skipped == 1

    # models outside the registry: two runs:/ URIs are two models; the same one again is up to date
    uris = []
    for seed in (43, 44):
        model, X = fit((float(seed), 1.0, 0.0), seed=seed)
        uris.append(log_model(model, input_example=X.head(2)))
    results = [score(spark, *base(source, output, uri), "--partition", day, "--partition-mode", "new")
               for uri in (*uris, uris[1])]
    assert [r.skipped for r in results] == [0, 0, 1]
    rows = spark.table(output).select("model_name", "model_version", "model_run_id").distinct().collect()
    assert [(r.model_name, r.model_run_id) for r in rows] == [(uris[1], uris[1].split("/")[1])]
    assert rows[0].model_version.startswith("sha256:") and len(rows[0].model_version) == 23

    # a model in a folder: the same files give the same identity, changed files a new one
    folder = tmp_path / "model"
    mlflow.sklearn.save_model(fit((1.0, 2.0, 3.0), seed=45)[0], str(folder), serialization_format="cloudpickle",
                              input_example=pd.DataFrame([[1.0, 2.0, 3.0]], columns=list(FEATURES)),
                              pip_requirements=[])
    kept = [score(spark, *base(source, output, folder.as_uri()), "--partition", day, "--partition-mode", "new")
            for _ in range(2)]
    assert [r.skipped for r in kept] == [0, 1]
    (folder / "extra.txt").write_text("changed")
    changed = score(spark, *base(source, output, folder.as_uri()), "--partition", day, "--partition-mode", "new")
    assert changed.skipped == 0 and changed.lineage.model_version != kept[0].lineage.model_version


def test_the_next_lock_holder_puts_the_manifest_back_in_step_with_the_metastore(
        spark: SparkSession, source: str, output: str, model: dict[str, str]) -> None:
    """A run killed between switching a partition and recording it in `_published.jsonl` leaves its lock
    behind; whoever takes the lock over rewrites the manifest from the metastore."""
    from spark_jobs.runs import lock

    score(spark, *base(source, output, "models:/churn_lr@champion"))
    folder = Path(output_tables.location(spark, output).removeprefix("file:"))
    truth = {(folder / "_published.jsonl").read_text()}
    (folder / "_published.jsonl").write_text("")  # the crashed run's view: nothing recorded
    dead = lock.holder("deadbeef", "2026-11-01T00:00:00")
    Path(lock.lock_path(spark, output).removeprefix("file:")).write_text(json.dumps(dead.__dict__))

    score(spark, *base(source, output, "models:/churn_lr@champion"), "--partition", "ds=2026-11-01", "--break-lock")
    entries = [json.loads(line) for line in (folder / "_published.jsonl").read_text().splitlines()]
    assert {e["partition"]["ds"]: e["folder"] for e in entries} == {
        day: output_tables.location(spark, output, {"ds": day}) for (day,) in
        spark.table(output).select("ds").distinct().collect()}
    assert truth != {(folder / "_published.jsonl").read_text()}  # ds=2026-11-01 moved to the new run


def test_lock_sits_in_the_database_folder_even_when_its_path_needs_escaping(spark: SparkSession,
                                                                           tmp_path: Path) -> None:
    """The catalog gives a database location as a URI (`a%20b`): the lock must go in the folder itself."""
    from spark_jobs.runs import lock

    folder = tmp_path / "ware house"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS odd_location LOCATION '{folder}'")  # a test's own path
    try:
        path = lock.lock_path(spark, "odd_location.scores")
        assert path == f"file:{folder}/_scoring_locks/scores.lock"
        assert lock.lock_path(spark, "spark_catalog.odd_location.scores") == path  # the catalog is honoured
        held = lock.TableLock(spark, path, lock.holder("run1", "now"), 600.0)
        assert held.acquire() is None
        assert (folder / "_scoring_locks" / "scores.lock").exists()
        held.release()
    finally:
        spark.sql("DROP DATABASE IF EXISTS odd_location CASCADE")


def test_decimal_partitions_and_a_partition_whose_file_is_emptied(spark: SparkSession, source: str, output: str,
                                                                   model: dict[str, str], tmp_path: Path) -> None:
    """The manifest holds decimal partition values (as text); a selected partition whose file now holds no
    rows keeps its published output while the others are rescored."""
    schema = SCHEMA.replace("ds string", "p decimal(4,1)")
    rows = [(i, 10 + i, Decimal(f"{20 + i:.2f}"), i, "s", Decimal("1.5") if i % 2 else Decimal("2.5"))
            for i in range(6)]
    create_table(spark, "lake.dec_parts", rows, schema, partition_by=("p",))
    first = score(spark, *base("lake.dec_parts", output, f"models:/churn_lr/{model['v1']}"))
    before = snapshot(spark.table(output).where(F.col("p") == Decimal("2.5")))

    empty = tmp_path / "p=2.5"
    spark.table("lake.dec_parts").limit(0).drop("p").coalesce(1).write.parquet(str(empty))
    spark.sql("ALTER TABLE lake.dec_parts PARTITION (p = 2.5) SET LOCATION :folder", args={"folder": str(empty)})
    spark.catalog.refreshTable("lake.dec_parts")
    second = score(spark, *base("lake.dec_parts", output, f"models:/churn_lr/{model['v2']}"))
    assert [p.values for p in second.staged] == [(Decimal("1.5"),)]
    assert_df_equality(spark.table(output).where(F.col("p") == Decimal("2.5")), before, ignore_row_order=True)
    assert {r.model_version for r in spark.table(output).where(F.col("p") == Decimal("1.5")).collect()} == {model["v2"]}

    folder = Path(output_tables.location(spark, output).removeprefix("file:"))
    manifest = [json.loads(line) for line in (folder / "_published.jsonl").read_text().splitlines()]
    assert {e["partition"]["p"]: e["folder"].split("/_runs/")[1].split("/")[0] for e in manifest} == {
        "1.5": second.lineage.scoring_run_id, "2.5": first.lineage.scoring_run_id}
