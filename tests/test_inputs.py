"""Preprocessing before scoring (issue 14): a view as the input (rename, join with a dimension table), and
per-row SQL transforms from the profile; partition pruning and incremental runs kept."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.config import parse_args
from spark_jobs.planning.prepare import prepare
from spark_jobs.planning.tables import ORIGINAL
from tests.support import DAYS, FEATURES, base, create_table, expected_scored, expected_table, pyfunc_predictions, score

RAW = "customer_id bigint, tenure_days int, spend decimal(10,2), visits bigint, seg string, day string"
LINEAGE = ("model_name", "model_version", "model_run_id", "scored_at", "scoring_run_id")


@pytest.fixture(scope="module")
def view(spark: SparkSession) -> str:
    """lake.features_v: renames (tenure_days -> tenure, day -> ds) over a partitioned table, joined with a
    dimension table for the segment's name."""
    spark.catalog.createDatabase("lake", ifNotExists=True)
    rows = [(i, 10 + i, Decimal(f"{20 + i * 1.25:.2f}"), 3 * i, f"c{i % 2}", DAYS[i % 3]) for i in range(12)]
    create_table(spark, "lake.raw_visits", rows, RAW, partition_by=("day",))
    create_table(spark, "lake.segments", [("c0", "basic"), ("c1", "premium")], "seg string, segment string", ())
    spark.sql("CREATE OR REPLACE VIEW lake.features_v AS SELECT r.customer_id, r.tenure_days AS tenure, r.spend, "
              "r.visits, s.segment, r.day AS ds FROM lake.raw_visits r JOIN lake.segments s ON r.seg = s.seg")
    return "lake.features_v"


def lineage_of(result: Any) -> SimpleNamespace:
    return SimpleNamespace(**{k: getattr(result.lineage, k) for k in LINEAGE})


def test_view_scores_by_partition_with_pruning_and_incremental_runs(
        spark: SparkSession, model: dict[str, str], view: str, output: str) -> None:
    flags = [*base(view, output), "--partition-columns", "ds"]
    uri = f"models:/churn_lr/{model['v1']}"

    # the job's own read of one selected partition opens only that partition's files (and the dimension's)
    job = prepare(spark, parse_args([*flags, "--partition", f"ds={DAYS[1]}"]))
    read = job.selected(spark).inputFiles()
    raw = [f for f in read if "/raw_visits/" in f]
    assert raw and all(f"/day={DAYS[1]}/" in f for f in raw), read
    assert any("/segments/" in f for f in read)

    first = score(spark, *flags, "--partition", f"ds={DAYS[1]}")
    assert [p.values for p in first.staged] == [(DAYS[1],)]
    expected = expected_scored(spark, spark.table(view).where(F.col("ds") == DAYS[1]), spark.table(output), uri,
                               FEATURES, lineage_of(first))
    assertDataFrameEqual(spark.table(output), expected)
    assert [c.name for c in spark.catalog.listColumns(output) if c.isPartition] == ["ds"]

    # incremental: the two other partitions, then nothing, then only the partition whose files changed
    second = score(spark, *flags, "--partition-mode", "new")
    assert sorted(p.values[0] for p in second.staged) == [DAYS[0], DAYS[2]]
    assert score(spark, *flags, "--partition-mode", "new").skipped == 3
    spark.createDataFrame([(99, 5, Decimal("1.00"), 7, "c1", DAYS[2])], RAW).write.insertInto("lake.raw_visits")
    third = score(spark, *flags, "--partition-mode", "new")
    assert [p.values for p in third.staged] == [(DAYS[2],)]
    day = spark.table(output).where(F.col("ds") == DAYS[2])
    assertDataFrameEqual(day, expected_scored(spark, spark.table(view).where(F.col("ds") == DAYS[2]), day, uri,
                                              FEATURES, lineage_of(third)))


@pytest.mark.spark35  # the row-level check reads Spark's analysed plan through py4j
def test_transforms_feed_the_model_and_rejects_keep_the_stored_values(
        spark: SparkSession, model: dict[str, str], source: str, output: str, tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "transform:\n"
        "  tenure: \"CASE WHEN segment = 's0' THEN tenure * 2 ELSE tenure END\"\n"  # replaced, same type
        "  visits: \"CASE WHEN customer_id = 4 THEN NULL ELSE visits / 2 END\"\n"  # replaced, bigint -> double
        "  band: \"IF(spend > 30, 'high', 'low')\"\n"  # added
        "  label: \"concat(band, '-', segment)\"\n"  # uses the column added before it
        "  spend_whole: CAST(spend AS INT)\n")
    result = score(spark, *base(source, output), "--config", str(profile), "--on-bad-rows", "quarantine")
    uri = f"models:/churn_lr/{model['v1']}"

    # what the model must have seen, computed here from the stored rows
    stored = spark.table(source).orderBy("customer_id").collect()
    seen = []
    for r in stored:
        band = "high" if r.spend > 30 else "low"
        seen.append({**r.asDict(), "tenure": r.tenure * 2 if r.segment == "s0" else r.tenure,
                     "visits": None if r.customer_id == 4 else r.visits / 2, "band": band,
                     "label": f"{band}-{r.segment}", "spend_whole": int(r.spend)})
    scored = [s for s in seen if s["visits"] is not None]
    inputs = pd.DataFrame([[float(s[c]) for c in FEATURES.values()] for s in scored], columns=list(FEATURES))
    rows = [Row(**s) for s in scored]
    published = spark.table(output)
    assert ORIGINAL + "visits" not in published.columns
    assertDataFrameEqual(published, expected_table(spark, rows, published,
                                                   {"prediction": pyfunc_predictions(uri, inputs)},
                                                   lineage_of(result)))

    # the rejected row: judged on the transformed value, carrying its stored input columns
    rejects = spark.table(f"{output}_rejects")
    (bad,) = [r for r in stored if r.customer_id == 4]
    expected_rejects = spark.createDataFrame(
        [(*bad[:-1], "column 'visits' is null", *[getattr(result.lineage, k) for k in LINEAGE], bad.ds)],
        rejects.schema)
    assertDataFrameEqual(rejects, expected_rejects)
    assert rejects.schema["visits"].dataType.simpleString() == "bigint"

    history = spark.table(f"{output}_runs").first()
    assert history is not None and json.loads(history.transforms) == {
        "tenure": "CASE WHEN segment = 's0' THEN tenure * 2 ELSE tenure END",
        "visits": "CASE WHEN customer_id = 4 THEN NULL ELSE visits / 2 END",
        "band": "IF(spend > 30, 'high', 'low')", "label": "concat(band, '-', segment)",
        "spend_whole": "CAST(spend AS INT)"}
