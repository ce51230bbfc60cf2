"""Profiles of one partition's columns, computed in Spark from the rows a run staged: aggregates only, no row
reaches the driver. Two passes over the partition's staged files: the quantiles (an approximate-percentile
aggregate, which Spark cannot compile into generated code), then everything else in one compiled aggregate
(counts, moments and the histogram on known edges: the baseline's, or the partition's own deciles), plus one
grouped count for the categories of string and boolean columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.quality import metrics
from spark_jobs.quality.records import DECILES, OTHER, QUANTILES, TOP_CATEGORIES, Bin, ColumnProfile, Drift
from udfs.compat import col

ACCURACY = 10_000  # percentile_approx's default: relative rank error 1/10,000
Key = tuple[str, str]  # (kind, column)


@dataclass(frozen=True)
class Target:
    """A column to profile and the staged rows it is profiled over (inputs: every row read; outputs: the
    scored rows; a challenger's outputs: its own rows)."""

    column: str
    kind: str
    data_type: T.DataType
    rows: Column

    @property
    def key(self) -> Key:
        return self.kind, self.column

    @property
    def numeric(self) -> bool:
        return isinstance(self.data_type, T.NumericType)

    @property
    def categorical(self) -> bool:
        return isinstance(self.data_type, T.StringType | T.BooleanType)


def profile(rows: DataFrame, targets: Sequence[Target], baselines: Mapping[Key, ColumnProfile],
            baseline_name: str = "") -> list[ColumnProfile]:
    """Every target's profile over `rows` (one partition's staged rows), with drift against its baseline
    where `baselines` has one of the same shape (numbers against numbers, categories against categories)."""
    numeric = [t for t in targets if t.numeric]
    quantiles = _quantiles(rows, numeric)
    edges = {t.key: _edges(baselines.get(t.key), quantiles.get(t.key, {})) for t in numeric}
    stats = rows.agg(*[a for i, t in enumerate(targets) for a in _aggregates(i, t, edges.get(t.key, ()))]).first()
    assert stats is not None
    categories = _categories(rows, [t for t in targets if t.categorical], baselines)
    values, found = stats.asDict(), []
    for i, t in enumerate(targets):
        def get(name: str, i: int = i) -> Any:
            return values.get(f"{i}_{name}")
        counted = int(get("rows") or 0)
        nulls, nans = int(get("nulls") or 0), int(get("nans") or 0)
        if t.numeric:
            bins = _numeric_bins(edges[t.key], [int(get(f"bin{b}") or 0) for b in range(len(edges[t.key]) + 1)])
        elif t.categorical:
            bins = _category_bins(categories.get(t.column, {}), counted - nulls, baselines.get(t.key))
        else:
            bins = ()
        p = ColumnProfile(
            column=t.column, kind=t.kind, dtype=t.data_type.simpleString(), numeric=t.numeric, count=counted,
            nulls=nulls, nans=nans, min=_float(get("min")), max=_float(get("max")), mean=_float(get("mean")),
            stddev=_float(get("stddev")), quantiles=quantiles.get(t.key, {}), histogram=bins)
        found.append(replace(p, drift=drift(p, baselines.get(t.key), baseline_name)))
    return found


def drift(current: ColumnProfile, baseline: ColumnProfile | None, name: str) -> Drift | None:
    """The column against its baseline on the baseline's bins; None when there is nothing to compare."""
    if baseline is None or baseline.numeric != current.numeric or not baseline.histogram or not current.histogram:
        return None
    base, cur = [b.count for b in baseline.histogram], [b.count for b in current.histogram]
    if len(base) != len(cur) or not sum(base) or not sum(cur):
        return None
    return Drift(name, metrics.psi(base, cur), metrics.js_distance(base, cur),
                 metrics.ks(base, cur) if current.numeric else None, baseline.histogram)


def edges_of(histogram: Sequence[Bin]) -> tuple[float, ...]:
    """A numeric histogram's inner edges (its bins are (-inf, e0), [e0, e1), ..., [e_last, +inf))."""
    return tuple(b.upper for b in histogram[:-1] if b.upper is not None)


def _edges(baseline: ColumnProfile | None, own: Mapping[str, float]) -> tuple[float, ...]:
    """The baseline's edges, so both histograms share bins; without one, the partition's own deciles."""
    if baseline is not None and baseline.numeric and baseline.histogram:
        return edges_of(baseline.histogram)
    return tuple(sorted({own[d] for d in DECILES if d in own}))


def _quantiles(rows: DataFrame, targets: Sequence[Target]) -> dict[Key, dict[str, float]]:
    if not targets:
        return {}
    probabilities = [p for _, p in QUANTILES]
    row = rows.agg(*[F.percentile_approx(_value(t), probabilities, ACCURACY).alias(str(i))
                     for i, t in enumerate(targets)]).first()
    assert row is not None
    found = {}
    for i, t in enumerate(targets):
        values = row[str(i)]
        if values is not None:
            found[t.key] = {name: float(v) for (name, _), v in zip(QUANTILES, values, strict=True)}
    return found


def _value(t: Target) -> Column:
    """The column's value where it counts: its rows, not null, not NaN; as a double."""
    value = col(t.column).cast(T.DoubleType())
    keep = t.rows & col(t.column).isNotNull()
    if isinstance(t.data_type, T.FloatType | T.DoubleType):
        keep = keep & ~F.isnan(col(t.column))
    return F.when(keep, value)


def _aggregates(i: int, t: Target, edges: Sequence[float]) -> list[Column]:
    """Target i's counts, moments and histogram, named `<i>_<what>`: all of them compile into one aggregate."""
    def n(condition: Column, name: str) -> Column:
        return F.count(F.when(condition, F.lit(1))).alias(f"{i}_{name}")

    found = [n(t.rows, "rows"), n(t.rows & col(t.column).isNull(), "nulls")]
    if isinstance(t.data_type, T.FloatType | T.DoubleType):
        found.append(n(t.rows & F.isnan(col(t.column)), "nans"))
    if not t.numeric:
        return found
    v = _value(t)
    found += [F.min(v).alias(f"{i}_min"), F.max(v).alias(f"{i}_max"), F.mean(v).alias(f"{i}_mean"),
              F.stddev(v).alias(f"{i}_stddev")]
    bounds: list[float | None] = [None, *edges, None]
    for b, (lo, hi) in enumerate(pairwise(bounds)):
        inside = v.isNotNull()
        if lo is not None:
            inside = inside & (v >= F.lit(lo))
        if hi is not None:
            inside = inside & (v < F.lit(hi))
        found.append(n(inside, f"bin{b}"))
    return found


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _numeric_bins(edges: Sequence[float], counts: Sequence[int]) -> tuple[Bin, ...]:
    bounds = [None, *edges, None]
    return tuple(Bin(_label(lo, hi), n, lo, hi) for lo, hi, n in zip(bounds[:-1], bounds[1:], counts, strict=True))


def _label(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else f'{lo:.6g}'}, {'+inf' if hi is None else f'{hi:.6g}'})"


def _categories(rows: DataFrame, targets: Sequence[Target], baselines: Mapping[Key, ColumnProfile]
                ) -> dict[str, dict[str, int]]:
    """Per categorical column: its top categories by rows, and the baseline's categories (so that the two
    histograms share bins), in one grouped count."""
    if not targets:
        return {}
    pairs = F.array(*[F.when(t.rows & col(t.column).isNotNull(),
                             F.struct(F.lit(i).alias("t"), col(t.column).cast(T.StringType()).alias("v")))
                      for i, t in enumerate(targets)])
    counted = (rows.select(F.explode(pairs).alias("p")).where(col("p").isNotNull())
               .groupBy(F.col("p.t").alias("t"), F.col("p.v").alias("v")).count())
    wanted = col("rank") <= TOP_CATEGORIES
    for i, t in enumerate(targets):
        base = baselines.get(t.key)
        labels = [b.label for b in base.histogram if b.label != OTHER] if base is not None and not base.numeric else []
        if labels:
            wanted = wanted | ((col("t") == F.lit(i)) & col("v").isin(labels))
    found: dict[str, dict[str, int]] = {}
    rank = F.row_number().over(Window.partitionBy("t").orderBy(F.desc("count"), F.asc("v")))
    for r in counted.withColumn("rank", rank).where(wanted).collect():
        found.setdefault(targets[r["t"]].column, {})[r["v"]] = int(r["count"])
    return found


def _category_bins(counts: Mapping[str, int], values: int, baseline: ColumnProfile | None) -> tuple[Bin, ...]:
    """The baseline's categories when there is one (the same bins), else the top ones; the rest `other`."""
    if baseline is not None and not baseline.numeric and baseline.histogram:
        labels = [b.label for b in baseline.histogram if b.label != OTHER]
    else:
        labels = sorted(counts, key=lambda v: (-counts[v], v))[:TOP_CATEGORIES]
    bins = [Bin(v, counts.get(v, 0)) for v in labels]
    return (*bins, Bin(OTHER, max(values - sum(b.count for b in bins), 0)))
