"""The run's HTML report, opened in a real (headless) browser: every chart laid out with a size, every number
shown as the records hold it, user text escaped, nothing fetched. No Spark: a RunQuality made by hand.

`python -m tests.test_report docs/report.png` remakes the README's screenshot from the same RunQuality."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from spark_jobs.quality import metrics, report
from spark_jobs.quality.records import (
    CHALLENGER,
    INPUT,
    OTHER,
    OUTPUT,
    QUANTILES,
    Bin,
    ColumnProfile,
    Comparison,
    Drift,
    Grid,
    PartitionQuality,
    RunQuality,
)
from tests import browser

HOSTILE = '<b>x</b>&"'
HOSTILE_REASON = "<script>alert(1)</script> bad 'value'"
DAYS = ("ds=2024-01-01", "ds=2024-01-02")
BASELINE = "previous: run 1a2b3c of ds=2023-12-31"


def _numeric_bins(values: np.ndarray, edges: np.ndarray) -> tuple[Bin, ...]:
    bounds: list[float | None] = [None, *map(float, edges), None]
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return tuple(Bin(f"[{lo}, {hi})", int(n), lo, hi)
                 for lo, hi, n in zip(bounds[:-1], bounds[1:], counts, strict=True))


def _category_bins(values: list[str], labels: list[str]) -> tuple[Bin, ...]:
    bins = [Bin(v, values.count(v)) for v in labels]
    return (*bins, Bin(OTHER, len(values) - sum(b.count for b in bins)))


def _drift(base: tuple[Bin, ...], cur: tuple[Bin, ...], numeric: bool) -> Drift:
    b, c = [x.count for x in base], [x.count for x in cur]
    return Drift(BASELINE, metrics.psi(b, c), metrics.js_distance(b, c), metrics.ks(b, c) if numeric else None, base)


def _numeric(column: str, kind: str, values: np.ndarray, nulls: int, baseline: np.ndarray | None) -> ColumnProfile:
    """A numeric column's profile, on the baseline's decile edges when there is a baseline (as the job does)."""
    edges = np.unique(np.quantile(baseline if baseline is not None else values, np.arange(1, 10) / 10))
    bins = _numeric_bins(values, edges)
    drift = _drift(_numeric_bins(baseline, edges), bins, True) if baseline is not None else None
    return ColumnProfile(
        column=column, kind=kind, dtype="double", numeric=True, count=len(values) + nulls, nulls=nulls, nans=0,
        min=float(values.min()), max=float(values.max()), mean=float(values.mean()),
        stddev=float(values.std(ddof=1)), quantiles={n: float(np.quantile(values, q)) for n, q in QUANTILES},
        histogram=bins, drift=drift)


def _categorical(column: str, kind: str, values: list[str], baseline: list[str]) -> ColumnProfile:
    labels = sorted(set(baseline))
    bins = _category_bins(values, labels)
    return ColumnProfile(column=column, kind=kind, dtype="string", numeric=False, count=len(values), nulls=0, nans=0,
                         min=None, max=None, mean=None, stddev=None, quantiles={}, histogram=bins,
                         drift=_drift(_category_bins(baseline, labels), bins, False))


def _empty(column: str, rows: int) -> ColumnProfile:
    """A column with only nulls: no statistics, no histogram, no drift (None everywhere)."""
    return ColumnProfile(column=column, kind=INPUT, dtype="double", numeric=True, count=rows, nulls=rows, nans=0,
                         min=None, max=None, mean=None, stddev=None, quantiles={}, histogram=())


def _grid(champion: np.ndarray, challenger: np.ndarray, cells: int = 20) -> Grid:
    edges = np.linspace(0.0, 1.0, cells + 1)
    counts, _, _ = np.histogram2d(champion, challenger, bins=[edges, edges])
    return Grid(tuple(map(float, edges)), tuple(map(float, edges)),
                tuple(tuple(int(c) for c in row) for row in counts))


def _partition(day: int, rng: np.random.Generator) -> PartitionQuality:
    n = 2_000
    shift = 0.15 * day
    inputs = [
        _numeric("tenure", INPUT, rng.gamma(2.0 + day, 12.0, n), 0, rng.gamma(2.0, 12.0, n)),
        _numeric("monthly_charges", INPUT, rng.normal(70 + 8 * day, 20, n), 17, rng.normal(70, 20, n)),
        _numeric("total_charges", INPUT, rng.lognormal(7 + shift, 1, n), 3, rng.lognormal(7, 1, n)),
        _numeric("support_calls", INPUT, rng.poisson(1.5, n).astype(float), 0, rng.poisson(1.5, n).astype(float)),
        _numeric(HOSTILE, INPUT, rng.uniform(0, 1 + shift, n), 5, rng.uniform(0, 1, n)),
        _categorical("contract", INPUT, list(rng.choice(["monthly", "yearly", "two-year", "other plan"], n,
                                                        p=[0.5 - shift / 2, 0.3, 0.15 + shift / 2, 0.05])),
                     list(rng.choice(["monthly", "yearly", "two-year"], n, p=[0.5, 0.3, 0.2]))),
        _empty("promo_code_score", n),
    ]
    inputs += [_numeric(f"f{k:02d}", INPUT, rng.normal(0.02 * k * (day + 1), 1, n), 0, rng.normal(0, 1, n))
               for k in range(1, 11)]
    champion = rng.beta(2 + day, 5, n)
    challenger = np.clip(champion + rng.normal(0, 0.05, n), 0, 1)
    labels = ["churn" if s > 0.5 else "stay" for s in champion]
    outputs = [
        _numeric("score", OUTPUT, champion, 0, rng.beta(2, 5, n)),
        _categorical("label", OUTPUT, labels, ["churn" if s > 0.5 else "stay" for s in rng.beta(2, 5, n)]),
        _numeric("score", CHALLENGER, challenger, 0, None),
    ]
    diff = np.abs(champion - challenger)
    comparison = Comparison(
        challenger="churn version 4", output="score", rows=n, agreement=None if day else 0.9735,
        mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()), spearman=0.987654321,
        psi=metrics.psi(*(np.histogram(s, 10, (0, 1))[0].tolist() for s in (champion, challenger))),
        grid=None if day else _grid(champion, challenger))
    rejects = {} if day else {"null key: customer_id": 12, "cast failed: tenure": 3, HOSTILE_REASON: 1}
    return PartitionQuality(DAYS[day], (DAYS[day][3:],), tuple([*inputs, *outputs]), rejects, comparison)


def sample_quality() -> RunQuality:
    """A realistic run of two partitions: drifted inputs, outputs against their baseline, rejects, a challenger."""
    rng = np.random.default_rng(7)
    partitions = tuple(_partition(day, rng) for day in range(2))
    summary = ("score-table: scored lake.features into lake.churn_scores (version 12)",
               f"partitions: {len(partitions)}  rows read: 4000  scored: 3984  rejected: 16",
               f"column {HOSTILE} had nulls", "engine: spark (compiled: logistic regression)  duration: 41.2s")
    gate = tuple(f"{q.partition}: {p.kind} column '{p.column}' psi {p.drift.psi:.4f} > 0.25"  # as assess.gate
                 for q in partitions for p in q.profiles if p.kind != CHALLENGER and p.drift and p.drift.psi > 0.25)
    return RunQuality("score-table run 7f3e9c2a", summary, partitions, BASELINE, gate)


def expected_metrics(quality: RunQuality) -> dict[tuple[str, str, str, str], str]:
    """(partition, kind, column or reason, metric) -> the text the report must show: report.number of the
    records' own values."""
    found = {}
    for q in quality.partitions:
        for p in q.profiles:
            values: dict[str, float | None] = {
                "count": p.count, "nulls": p.nulls, "nans": p.nans, "min": p.min, "max": p.max, "mean": p.mean,
                "stddev": p.stddev, **{m: p.quantiles.get(m) for m in ("p1", "p5", "p25", "p50", "p75", "p95", "p99")},
                "psi": p.drift.psi if p.drift else None, "js": p.drift.js if p.drift else None,
                "ks": p.drift.ks if p.drift else None,
            }
            found.update({(q.partition, p.kind, p.column, m): report.number(v) for m, v in values.items()})
        if (c := q.comparison) is not None:
            values = {"rows": c.rows, "agreement": c.agreement, "mean_abs_diff": c.mean_abs_diff,
                      "max_abs_diff": c.max_abs_diff, "spearman": c.spearman, "psi": c.psi}
            found.update({(q.partition, "comparison", c.output, m): report.number(v) for m, v in values.items()})
        found.update({(q.partition, "rejects", reason, "rows"): str(n) for reason, n in q.rejects.items()})
    return found


def expected_charts(quality: RunQuality) -> set[tuple[str, str, str | None]]:
    found: set[tuple[str, str, str | None]] = set()
    for q in quality.partitions:
        found |= {("prediction-histogram", q.partition, p.column) for p in q.profiles if p.kind == OUTPUT}
        found.add(("drift-bars", q.partition, None))
        if q.rejects:
            found.add(("rejects", q.partition, None))
        if q.comparison is not None and q.comparison.grid is not None:
            found.add(("challenger-grid", q.partition, q.comparison.output))
    return found


def test_chromium_is_installed() -> None:
    """CI installs Chromium (.ci/run): its absence is a failure of the machine, never a skip."""
    assert browser.chromium_path() is not None, "no Chromium: apt-get install chromium, or set CHROMIUM"


def open_report(quality: RunQuality, folder: Path) -> tuple[str, browser.Page, Path]:
    if browser.chromium_path() is None:
        pytest.fail("Chromium is needed for the report tests and none was found: apt-get install chromium "
                    "(.ci/run installs it), or set CHROMIUM to its binary")
    text = report.render(quality)
    page = folder / "report.html"
    page.write_text(text, encoding="utf-8")
    png = folder / "report.png"
    return text, browser.render(page, png), png


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunQuality, str, browser.Page, Path]:
    quality = sample_quality()
    return quality, *open_report(quality, tmp_path_factory.mktemp("report"))


def test_every_chart_is_laid_out(opened: tuple[RunQuality, str, browser.Page, Path]) -> None:
    quality, _, page, _ = opened
    shown = {(c.attrs["chart"], c.attrs["partition"], c.attrs.get("column")): c for c in page.charts}
    assert set(shown) == expected_charts(quality)
    assert len(page.charts) == len(shown)
    flat = [(key, c.width, c.height) for key, c in shown.items() if c.width < 100 or c.height < 100]
    assert not flat, f"charts without a size in the layout: {flat}"


def test_every_number_is_the_records_value(opened: tuple[RunQuality, str, browser.Page, Path]) -> None:
    quality, _, page, _ = opened
    shown = {(m.attrs["partition"], m.attrs["kind"], m.attrs.get("column", m.attrs.get("reason", "")),
              m.attrs["metric"]): m.text for m in page.metrics}
    assert len(shown) == len(page.metrics), "two elements show the same metric"
    expected = expected_metrics(quality)
    assert shown == expected
    assert shown["ds=2024-01-01", INPUT, "promo_code_score", "mean"] == "-"  # None
    assert shown["ds=2024-01-02", "comparison", "score", "agreement"] == "-"


def test_the_report_is_self_contained(opened: tuple[RunQuality, str, browser.Page, Path]) -> None:
    _, text, page, png = opened
    assert "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text
    assert all(url.startswith("file://") for url in page.requests) and len(page.requests) == 1, page.requests
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def test_user_text_is_shown_as_text(opened: tuple[RunQuality, str, browser.Page, Path]) -> None:
    quality, text, page, _ = opened
    assert HOSTILE in page.text and f"column {HOSTILE} had nulls" in page.text
    assert HOSTILE not in text and "<b>" not in text  # escaped in the source
    assert any(m.attrs.get("column") == HOSTILE for m in page.metrics)  # and in attributes
    assert any(m.attrs.get("reason") == HOSTILE_REASON for m in page.metrics)
    assert quality.gate[0] in page.text and quality.baseline_note in page.text
    assert page.title == quality.title


def test_number_format() -> None:
    assert [report.number(v) for v in (None, 0, 1234567, 0.1234567, 2.5e-7, 12345.678, 3.0, float("nan"))] == [
        "-", "0", "1234567", "0.123457", "2.5e-07", "12345.7", "3", "nan"]


def test_bin_labels() -> None:
    assert [report.bin_label(b, True) for b in (Bin("", 1, None, 0.5), Bin("", 1, 0.5, 1.0), Bin("", 1, 1.0))] == [
        "(-inf, 0.5)", "[0.5, 1)", "[1, +inf)"]
    assert report.bin_label(Bin(HOSTILE, 3), False) == HOSTILE


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/report.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    html_path = target.with_suffix(".html")
    html_path.write_text(report.render(sample_quality()), encoding="utf-8")
    print(f"{target}: {browser.render(html_path, target, width=1440).seconds:.1f}s")
    html_path.unlink()
