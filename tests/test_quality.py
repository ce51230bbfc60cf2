"""Profiles, drift and its gate, champion vs challenger, the training baseline, the run in MLflow and the
report: checked against independent computations (numpy, pandas, scipy) on the rows themselves."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual
from scipy import stats

from spark_jobs.cli import main
from spark_jobs.publishing.output import location as output_location
from spark_jobs.publishing.staging import StagingArea
from spark_jobs.quality import metrics, profiles, report
from spark_jobs.quality.records import INPUT, QUANTILES
from spark_jobs.scoring.bad_rows import OUTCOME
from tests import browser
from tests.support import DAYS, FEATURES, base, create_table, fit, pyfunc_predictions, register_sklearn, score

DRIFT_SCHEMA = "customer_id bigint, tenure int, spend decimal(10,2), visits bigint, segment string, ds string"


def drift_rows(day: str, shift: float, n: int = 300, seed: int = 7) -> list[tuple[Any, ...]]:
    """Tenure and spend moved by `shift`; visits and segment as they were."""
    rng = np.random.default_rng(seed)
    return [(i, int(rng.integers(1, 60) + shift), Decimal(f"{rng.uniform(10, 90) + shift:.2f}"),
             int(rng.integers(0, 30)), "ab"[i % 2] if i % 5 else "c", day) for i in range(n)]


@pytest.fixture()
def drifting(spark: SparkSession, source: str) -> Iterator[str]:
    """A one-day table of 300 customers (the `source` fixture made the database)."""
    name = "lake.drifting"
    create_table(spark, name, drift_rows(DAYS[0], 0.0), DRIFT_SCHEMA)
    yield name
    spark.catalog.dropTable(name, ifExists=True)


def profiles_of(spark: SparkSession, table: str, run_id: str) -> pd.DataFrame:
    return spark.table(table).where(F.col("scoring_run_id") == run_id).toPandas()


def source_frame(spark: SparkSession, table: str, day: str) -> pd.DataFrame:
    return spark.table(table).where(F.col("ds") == day).toPandas()


def binned(values: np.ndarray, histogram: Any) -> list[int]:
    """Counts of values in the stored bins, by numpy: [lower, upper), open at both ends."""
    edges = [b["upper"] for b in histogram[:-1]]
    return list(np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1))


@pytest.fixture(params=["driver", "executors"])
def profiled_on(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the profiles are made: the driver (a sample that fits it, the default here) or the executors
    (a pandas function per group, as for a larger sample)."""
    if request.param == "executors":
        monkeypatch.setattr(profiles, "DRIVER_CELLS", 0)
    return str(request.param)


def test_profiles_equal_an_independent_computation(spark: SparkSession, source: str, output: str,
                                                    model: dict[str, str], profiled_on: str) -> None:
    result = score(spark, *base(source, output), "--no-mlflow-run")
    stored = profiles_of(spark, f"{output}_profiles", result.lineage.scoring_run_id)
    rows = spark.table(source).toPandas()
    assert set(stored["ds"]) == set(DAYS)
    for day in DAYS:
        here = rows[rows["ds"] == day]
        predictions = np.asarray(pyfunc_predictions(f"models:/churn_lr/{model['v1']}",
                                                    here[list(FEATURES.values())].astype(float)
                                                    .set_axis(list(FEATURES), axis=1)), dtype=float)
        columns = {**{c: here[c].astype(float).to_numpy() for c in FEATURES.values()}, "prediction": predictions}
        got = stored[stored["ds"] == day].set_index("column_name")
        assert sorted(got.index) == sorted(columns)
        for name, values in columns.items():
            row = got.loc[name]
            assert row["kind"] == ("output" if name == "prediction" else "input")
            assert (row["rows"], row["nulls"], row["nans"]) == (len(values), 0, 0)
            assert row["min"] == values.min() and row["max"] == values.max()
            assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert row["stddev"] == pytest.approx(values.std(ddof=1), rel=1e-9)
            # percentile_approx on a handful of rows is exact: the smallest value with at least p of them below
            assert row["quantiles"] == {q: float(np.quantile(values, p, method="inverted_cdf"))
                                        for q, p in QUANTILES}
            assert [b["count"] for b in row["histogram"]] == binned(values, row["histogram"])
            assert row["baseline"] is None or day != DAYS[0]


def test_drift_gate_fails_the_run_naming_the_column_and_publishes_nothing(
        spark: SparkSession, drifting: str, output: str, model: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    first = score(spark, *base(drifting, output), "--no-mlflow-run")
    published = spark.table(output).collect()
    create_table(spark, drifting, drift_rows(DAYS[0], 25.0), DRIFT_SCHEMA)
    code = main([*base(drifting, output), "--max-drift", "psi=0.25", "--no-mlflow-run"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"drift over the limit: ds={DAYS[0]}: input column 'tenure' psi" in err or \
        f"drift over the limit: ds={DAYS[0]}: input column 'spend' psi" in err, err
    assertDataFrameEqual(spark.table(output), published)  # nothing published
    runs = spark.table(f"{output}_runs").where(F.col("status") == "failed").collect()
    assert len(runs) == 1 and runs[0].error.startswith("drift over the limit") and runs[0].report_path

    # the failed run's profiles, against the first run's, recomputed here from the stored histograms and the rows
    failed_id = runs[0].scoring_run_id
    now = profiles_of(spark, f"{output}_profiles", failed_id).set_index("column_name")
    before = profiles_of(spark, f"{output}_profiles", first.lineage.scoring_run_id).set_index("column_name")
    rows = source_frame(spark, drifting, DAYS[0])
    for name in ("tenure", "spend", "visits"):
        base_bins, cur_bins = before.loc[name]["histogram"], now.loc[name]["histogram"]
        assert [b["upper"] for b in cur_bins] == [b["upper"] for b in base_bins]  # the baseline's bins
        counts = binned(rows[name].astype(float).to_numpy(), cur_bins)
        assert [b["count"] for b in cur_bins] == counts
        p = np.maximum(np.array([b["count"] for b in base_bins]) / sum(b["count"] for b in base_bins), 1e-4)
        q = np.maximum(np.array(counts) / sum(counts), 1e-4)
        assert now.loc[name]["psi"] == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-9)
        assert now.loc[name]["ks"] == pytest.approx(float(np.max(np.abs(np.cumsum(p) - np.cumsum(q)))), abs=1e-3)
        assert now.loc[name]["baseline"].startswith(f"published ds={DAYS[0]} (run {first.lineage.scoring_run_id}")
    assert now.loc["tenure"]["psi"] > 0.25 and now.loc["visits"]["psi"] < 0.1  # visits did not move

    assert main([*base(drifting, output), "--max-drift", "psi=0.25", "--drift-action", "warn",
                 "--no-mlflow-run"]) == 0
    out = capsys.readouterr().out
    assert "drift over the limit:" in out and "largest drift: PSI" in out
    assert spark.table(output).select("scoring_run_id").distinct().count() == 1
    assert spark.table(output).first()["scoring_run_id"] != first.lineage.scoring_run_id


def test_challenger_scores_the_same_rows_into_its_own_table(spark: SparkSession, source: str, output: str,
                                                            model: dict[str, str]) -> None:
    alone = f"{output}_alone"
    spark.catalog.dropTable(alone, ifExists=True)
    plain = score(spark, *base(source, alone), "--no-mlflow-run")
    result = score(spark, *base(source, output), "--challenger-uri", f"models:/churn_lr/{model['v2']}",
                   "--key-columns", "customer_id", "--no-mlflow-run")
    runs = ["scored_at", "scoring_run_id"]
    assertDataFrameEqual(spark.table(output).drop(*runs), spark.table(alone).drop(*runs))  # BI's table unchanged
    assert plain.counts == result.counts
    rows = spark.table(source).orderBy("customer_id").toPandas()
    inputs = rows[list(FEATURES.values())].astype(float).set_axis(list(FEATURES), axis=1)
    champion = np.asarray(pyfunc_predictions(f"models:/churn_lr/{model['v1']}", inputs), dtype=float)
    challenger = np.asarray(pyfunc_predictions(f"models:/churn_lr/{model['v2']}", inputs), dtype=float)
    lineage = result.lineage
    expected = [(int(r.customer_id), float(p), "churn_lr", model["v2"], None, lineage.scored_at,
                 lineage.scoring_run_id, r.ds) for r, p in zip(rows.itertuples(), challenger, strict=True)]
    got = spark.table(f"{output}_challenger")
    assert got.columns == ["customer_id", "prediction", "model_name", "model_version", "model_run_id",
                           "scored_at", "scoring_run_id", "ds"]
    # the sql engine's linear model: within the engine's tolerance (1e-9 relative) of MLflow's own
    assertDataFrameEqual(got.drop("model_run_id"), spark.createDataFrame(
        [tuple(e[:4]) + tuple(e[5:]) for e in expected], got.drop("model_run_id").schema), rtol=1e-9)
    history = spark.table(f"{output}_runs").where(F.col("scoring_run_id") == lineage.scoring_run_id).first()
    assert history.challenger_uri == f"models:/churn_lr/{model['v2']}" and history.challenger_version == model["v2"]
    by_day = {c.partition: c for c in history.challenger}
    stored = profiles_of(spark, f"{output}_profiles", lineage.scoring_run_id)
    for day in DAYS:
        at = (rows["ds"] == day).to_numpy()
        a, b = champion[at], challenger[at]
        c = by_day[f"ds={day}"]
        assert (c.output, c.rows, c.agreement) == ("prediction", int(at.sum()), None)
        assert c.mean_abs_diff == pytest.approx(float(np.mean(np.abs(a - b))), rel=1e-12)
        assert c.max_abs_diff == pytest.approx(float(np.max(np.abs(a - b))), rel=1e-12)
        assert c.spearman == pytest.approx(float(stats.spearmanr(a, b).statistic), rel=1e-12)
        score_profile = stored[(stored["ds"] == day) & (stored["kind"] == "output")].iloc[0]
        bins = score_profile["histogram"]
        assert c.psi == pytest.approx(metrics.psi(binned(a, bins), binned(b, bins)), rel=1e-12)
        ch_profile = stored[(stored["ds"] == day) & (stored["kind"] == "challenger")].iloc[0]
        assert ch_profile["mean"] == pytest.approx(float(b.mean()), rel=1e-12)

    # a later run without the challenger takes its partitions out of the challenger table
    score(spark, *base(source, output), "--partition", f"ds={DAYS[0]}", "--no-mlflow-run")
    assert sorted(r.ds for r in spark.table(f"{output}_challenger").select("ds").distinct().collect()) == DAYS[1:]
    spark.catalog.dropTable(alone, ifExists=True)
    spark.catalog.dropTable(f"{alone}_runs", ifExists=True)
    spark.catalog.dropTable(f"{alone}_profiles", ifExists=True)
    for side in ("challenger", "profiles", "runs"):
        spark.catalog.dropTable(f"{output}_{side}", ifExists=True)


def test_training_baseline_is_stored_with_the_model_version_and_used(
        spark: SparkSession, source: str, output: str, tracking_uri: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    version = register_sklearn(*fit((1.0, 2.0, 3.0), seed=5), "churn_trained")
    uri = f"models:/churn_trained/{version}"
    assert main(["baseline", "--model-uri", uri, "--input-table", source, "--partition", f"ds={DAYS[0]}"]) == 0
    assert f"runs:/{MlflowClient().get_model_version('churn_trained', version).run_id}/" in capsys.readouterr().out
    result = score(spark, *base(source, output, uri), "--baseline", "training", "--no-mlflow-run")
    stored = profiles_of(spark, f"{output}_profiles", result.lineage.scoring_run_id)
    inputs = stored[stored["kind"] == "input"]
    assert set(inputs["baseline"]) == {"training profile"}
    day0 = inputs[inputs["ds"] == DAYS[0]]
    assert list(day0["psi"]) == [0.0] * len(day0)  # the training rows themselves
    assert stored[stored["kind"] == "output"]["baseline"].isna().all()  # no outputs in a training profile


def test_the_run_is_an_mlflow_run_with_its_report(spark: SparkSession, source: str, output: str,
                                                  model: dict[str, str], tmp_path: Path) -> None:
    result = score(spark, *base(source, output))
    client = MlflowClient()
    experiment = client.get_experiment_by_name(f"score-table/{output}")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["score_table.scoring_run_id"] == result.lineage.scoring_run_id
    assert run.data.params["model_version"] == model["v1"] and run.data.params["input_table"] == source
    assert run.data.metrics["rows_read"] == 12 and run.data.metrics["rows_scored"] == 12
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.html"]
    history = spark.table(f"{output}_runs").first()
    assert history.mlflow_run_id == run.info.run_id
    # a failed run (another model version: its predictions drift past the limit) ends its MLflow run as FAILED
    assert main([*base(source, output, f"models:/churn_lr/{model['v2']}"), "--max-drift", "psi=0.0001"]) == 1
    failed = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id != run.info.run_id]
    assert [r.info.status for r in failed] == ["FAILED"]
    assert failed[0].data.tags["error"].startswith("drift over the limit: ds=")


def test_report_shows_the_profiles_in_a_browser(spark: SparkSession, source: str, output: str,
                                                model: dict[str, str], tmp_path: Path) -> None:
    score(spark, *base(source, output), "--no-mlflow-run", "--partition", f"ds={DAYS[0]}")
    result = score(spark, *base(source, output), "--no-mlflow-run", "--challenger-uri",
                   f"models:/churn_lr/{model['v2']}", "--key-columns", "customer_id")
    assert result.report_path is not None
    html = tmp_path / "report.html"
    html.write_text(Path(result.report_path.removeprefix("file:")).read_text())
    page = browser.render(html, tmp_path / "report.png")
    charts = {(c.attrs.get("chart"), c.attrs.get("partition")) for c in page.charts}
    for day in DAYS:
        assert ("prediction-histogram", f"ds={day}") in charts and ("challenger-grid", f"ds={day}") in charts
    assert all(c.width > 0 and c.height > 0 for c in page.charts)
    assert page.requests == [html.as_uri()]  # self-contained: nothing else fetched
    shown = {(m.attrs["partition"], m.attrs.get("kind"), m.attrs.get("column"), m.attrs["metric"]): m.text
             for m in page.metrics}
    stored = profiles_of(spark, f"{output}_profiles", result.lineage.scoring_run_id)
    assert len(stored) == 3 * 5  # three inputs, the output and the challenger's output, in each of 3 days
    for r in stored.itertuples():
        for metric in ("rows", "nulls", "min", "max", "mean", "stddev", "psi", "js", "ks"):
            value = getattr(r, metric)
            value = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
            value = int(value) if metric in ("rows", "nulls") else value
            key = (f"ds={r.ds}", r.kind, r.column_name, "count" if metric == "rows" else metric)
            assert shown[key] == report.number(value), key


def test_the_write_draws_the_profile_sample_and_leaves_no_copy_behind(
        spark: SparkSession, drifting: str, output: str, model: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A 300-row day with --profile-rows 100 (its footers say 300 rows): the staging write copies about 125
    rows aside, the profile is made from about 100 of them with the day's exact count and statistics within
    the day's; the copies are deleted before publishing, and the published rows are every row, once."""
    caplog.set_level("INFO", logger="score_table.quality")
    result = score(spark, *base(drifting, output), "--no-mlflow-run", "--profile-rows", "100")
    assert "profiled on the sample drawn by the write" in caplog.text
    stored = profiles_of(spark, f"{output}_profiles", result.lineage.scoring_run_id).set_index("column_name")
    day = source_frame(spark, drifting, DAYS[0])
    for name in FEATURES.values():
        row, values = stored.loc[name], day[name].astype(float).to_numpy()
        assert row["rows"] == 300 and 50 < row["profiled_rows"] < 160
        assert values.min() <= row["min"] <= row["max"] <= values.max()
        assert row["mean"] == pytest.approx(values.mean(), rel=0.2)
        assert sum(b["count"] for b in row["histogram"]) == row["profiled_rows"]
    published = spark.table(output)
    assertDataFrameEqual(published.select("customer_id"), spark.table(drifting).select("customer_id"))
    where = Path(output_location(spark, output).removeprefix("file:"))
    folders = [str(p) for p in where.rglob("*") if p.is_dir() and "sample_" in p.name]
    assert folders == []


def test_a_large_partition_is_profiled_on_a_sample_with_its_count_exact(spark: SparkSession, profiled_on: str
                                                                         ) -> None:
    """Two days of 40,000 rows profiled on about 4,000 each: the count is the day's, the statistics are the
    sample's (counts of the sampled rows, bins summing to them) and close to the whole day's (numpy); the
    second day takes the first day's bins (its baseline in the same run), so drift is measured on them."""
    rng = np.random.default_rng(3)
    n = 40_000
    frame = pd.DataFrame({"x": np.concatenate([rng.normal(0, 1, n), rng.normal(0.5, 1, n)]),
                          "ds": ["d1"] * n + ["d2"] * n})
    frame.loc[::97, "x"] = np.nan
    rows = spark.createDataFrame(frame).withColumn("x", F.when(~F.isnan("x"), F.col("x")))  # NaN as null
    target = profiles.Target("x", INPUT, rows.schema["x"].dataType)
    days = [("d1",), ("d2",)]
    earlier = {("d2",): profiles.Baseline("the day before", earlier=("d1",))}
    made = profiles.profile(lambda: rows, ["ds"], [target], earlier.get, days, {d: {INPUT: n} for d in days}, 4_000)
    first, second = made[("d1",)][0], made[("d2",)][0]
    for p, day in ((first, "d1"), (second, "d2")):
        values = frame.loc[frame["ds"] == day, "x"].dropna().to_numpy()
        assert p.count == n and p.profiled is not None and 3_000 < p.profiled < 5_000
        assert sum(b.count for b in p.histogram) == p.profiled - p.nulls
        assert p.nulls / p.profiled == pytest.approx(1 / 97, abs=0.01)
        assert p.mean == pytest.approx(values.mean(), abs=0.1) and p.stddev == pytest.approx(values.std(), abs=0.1)
        assert p.quantiles["p50"] == pytest.approx(np.median(values), abs=0.1)
    assert profiles.edges_of(second.histogram) == profiles.edges_of(first.histogram)
    assert second.drift is not None and first.drift is None
    base, cur = [b.count for b in first.histogram], [b.count for b in second.histogram]
    assert second.drift.psi == pytest.approx(metrics.psi(base, cur), rel=1e-12)
    assert 0.1 < second.drift.psi < 0.6  # half a standard deviation: a real shift, well above sampling noise


def test_profiles_read_from_the_staged_files_equal_those_read_through_spark(spark: SparkSession, tmp_path: Path
                                                                            ) -> None:
    """A small run's profiles are made from the staged files, read on the driver with no Spark job: the same
    profiles, to the last bit, as from the same rows read through Spark, for every type the driver reads
    (numbers with null, NaN and infinities, text, booleans, dates, timestamps back to year 1), over rows of
    three outcomes in two partitions, the second on the first one's bins."""
    rng = np.random.default_rng(11)
    n = 400
    ints = rng.integers(-50, 50, n)
    doubles = rng.normal(0, 1e6, n)
    doubles[::13], doubles[3::51] = np.nan, np.inf  # infinities in scored rows alone
    rows = [(int(ints[i]) if i % 7 else None, int(ints[i]) * 3_000_000_000, int(ints[i]) % 100,
             None if i % 11 == 0 else float(doubles[i]), float(np.float32(doubles[i] / 1e3)),
             None if i % 9 == 0 else "abcde"[i % 5] * (1 + i % 3), None if i % 8 == 0 else bool(i % 3),
             dt.date(1 + i % 3000, 1 + i % 12, 1 + i % 28), dt.datetime(1 + i % 2000, 6, 1, 12, 30, i % 60),
             ["scored", "rejected", "challenger"][i % 3], ["d1", "d2"][i % 2]) for i in range(n)]
    frame = spark.createDataFrame(rows, "i int, l bigint, s smallint, d double, f float, t string, b boolean, "
                                        f"day date, at timestamp, {OUTCOME} string, ds string")
    staging = StagingArea(str(tmp_path), "run", T.StructType([f for f in frame.schema.fields if f.name != OUTCOME]),
                          ("ds",))
    staging.write(frame)
    listing = staging.listing(spark)
    kinds = {"scored": ("scored",), "rejected": ("scored", "rejected"), "challenger": ("challenger",)}
    targets = [profiles.Target(f.name, kind, f.dataType, kinds[kind]) for f in frame.schema.fields[:9]
               for kind in kinds]
    days = [("d1",), ("d2",)]
    earlier = {("d2",): profiles.Baseline("the day before", earlier=("d1",))}
    totals = {d: {k: n for k in kinds} for d in days}

    def made(staged: profiles.Staged | None) -> dict[Any, list[Any]]:
        return profiles.profile(lambda: staging.every_row(spark), ["ds"], targets, earlier.get, days, totals, 10_000,
                                None, staged)

    read: list[str] = []

    def staged(columns: Sequence[str]) -> list[tuple[str, Any, Any]]:
        found = staging.read_columns(spark, listing.partitions, columns)
        read.extend(p.outcome for p, _ in found)
        return [(p.outcome, p.values, table) for p, table in found]

    from_files = made(staged)
    assert sorted(set(read)) == ["challenger", "rejected", "scored"]
    through_spark = made(None)
    assert repr(from_files) == repr(through_spark)  # repr: NaN (a mean with infinities) equals itself
    d1 = {(p.kind, p.column): p for p in from_files[("d1",)]}
    read_d1 = [r for r in rows if r[-1] == "d1" and r[-2] != "challenger"]
    assert d1[("rejected", "d")].nans == sum(1 for r in read_d1 if r[3] is not None and math.isnan(r[3]))
    assert {b.label: b.count for b in d1[("rejected", "b")].histogram} == {
        "true": sum(r[6] is True for r in read_d1), "false": sum(r[6] is False for r in read_d1), "other": 0}
    assert d1[("rejected", "at")].nulls == 0 and d1[("rejected", "t")].nulls == sum(r[5] is None for r in read_d1)
    # a partition profiled on a share of its rows: the files' rows drawn on the driver, the count still exact
    sampled = profiles.profile(lambda: staging.every_row(spark), ["ds"], targets, earlier.get, days,
                               {d: {k: 1_000 for k in kinds} for d in days}, 100, None, staged)
    for day in days:
        for p in sampled[day]:
            assert p.count == 1_000 and p.profiled is not None and 0 < p.profiled < 200 // (1 + (p.kind != "rejected"))
            assert p.nulls <= p.profiled
