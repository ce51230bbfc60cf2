"""Profiles of a run's columns, per partition, computed in Spark from the rows the run staged: aggregates
only, no row reaches the driver, and the number of Spark jobs does not grow with the partitions. Three grouped
passes over the staged files (by partition): the quantiles (an approximate-percentile aggregate, which Spark
cannot compile into generated code, so it runs alone); then counts, moments and the histogram, compiled into
one aggregate, each row's bin found on its partition's edges (the baseline's, or the partition's own deciles);
and one grouped count for the categories of string and boolean columns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.planning.partitions import matches
from spark_jobs.quality import metrics
from spark_jobs.quality.records import DECILES, OTHER, QUANTILES, TOP_CATEGORIES, Bin, ColumnProfile, Drift
from udfs.compat import col

ACCURACY = 10_000  # percentile_approx's default: relative rank error 1/10,000
Key = tuple[str, str]  # (kind, column)
Values = tuple[Any, ...]


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


@dataclass(frozen=True)
class Baseline:
    """What one partition is compared with: profiles stored before (`profiles`), or the profile this run
    makes of an earlier partition (`earlier`: a backfill compares each day with the day before)."""

    name: str
    profiles: Mapping[Key, ColumnProfile] | None = None
    earlier: Values | None = None


def profile(rows: DataFrame, partition_columns: Sequence[str], targets: Sequence[Target],
            baselines: Callable[[Values], Baseline | None], partitions: Sequence[Values]
            ) -> dict[Values, list[ColumnProfile]]:
    """Every target's profile in every partition, with drift against the partition's baseline where it has
    a profile of the same shape (numbers against numbers, categories against categories). `partitions` in
    the order baselines are taken (an `earlier` baseline must come before the partition that uses it)."""
    groups = [col(c) for c in partition_columns]
    numeric = [t for t in targets if t.numeric]
    quantiles = _quantiles(rows, groups, partition_columns, numeric)
    chosen = {v: baselines(v) for v in partitions}
    edges: dict[Values, dict[Key, tuple[float, ...]]] = {}
    for v in partitions:
        base = chosen[v]
        edges[v] = {t.key: _edges(t.key, base, edges, quantiles.get(v, {}).get(t.key, {})) for t in numeric}
    counted = _aggregate(rows, groups, partition_columns, targets, edges, partitions)
    categories = _categories(rows, partition_columns, [t for t in targets if t.categorical], chosen)
    made: dict[Values, list[ColumnProfile]] = {}
    for v in partitions:
        base = chosen[v]
        against: Mapping[Key, ColumnProfile] = {}
        if base is not None and base.earlier is not None:
            against = {(p.kind, p.column): p for p in made.get(base.earlier, [])}
        elif base is not None:
            against = base.profiles or {}
        made[v] = [_assemble(i, t, counted.get(v, {}), quantiles.get(v, {}), edges[v], categories.get(v, {}),
                             against.get(t.key), base.name if base else "") for i, t in enumerate(targets)]
    return made


def _assemble(i: int, t: Target, got: Mapping[str, Any], quantiles: Mapping[Key, dict[str, float]],
              edges: Mapping[Key, tuple[float, ...]], categories: Mapping[str, dict[str, int]],
              baseline: ColumnProfile | None, name: str) -> ColumnProfile:
    def get(what: str) -> Any:
        return got.get(f"{i}_{what}")

    counted, nulls, nans = int(get("rows") or 0), int(get("nulls") or 0), int(get("nans") or 0)
    if t.numeric:
        bins = _numeric_bins(edges[t.key], [int(get(f"bin{b}") or 0) for b in range(len(edges[t.key]) + 1)])
    elif t.categorical:
        bins = _category_bins(categories.get(t.column, {}), counted - nulls, baseline)
    else:
        bins = ()
    p = ColumnProfile(
        column=t.column, kind=t.kind, dtype=t.data_type.simpleString(), numeric=t.numeric, count=counted,
        nulls=nulls, nans=nans, min=_float(get("min")), max=_float(get("max")), mean=_float(get("mean")),
        stddev=_float(get("stddev")), quantiles=quantiles.get(t.key, {}), histogram=bins)
    return replace(p, drift=drift(p, baseline, name))


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


def _edges(key: Key, base: Baseline | None, made: Mapping[Values, Mapping[Key, tuple[float, ...]]],
           own: Mapping[str, float]) -> tuple[float, ...]:
    """The baseline's edges, so that both histograms share bins; without one, the partition's own deciles."""
    if base is not None and base.earlier is not None and key in made.get(base.earlier, {}):
        return made[base.earlier][key]
    stored = (base.profiles or {}).get(key) if base is not None else None
    if stored is not None and stored.numeric and stored.histogram:
        return edges_of(stored.histogram)
    return tuple(sorted({own[d] for d in DECILES if d in own}))


def _partition_of(row: Any, partition_columns: Sequence[str]) -> Values:
    return tuple(row[f"__p{j}"] for j in range(len(partition_columns)))


def _group_names(groups: Sequence[Column]) -> list[Column]:
    return [g.alias(f"__p{j}") for j, g in enumerate(groups)]


def _quantiles(rows: DataFrame, groups: Sequence[Column], partition_columns: Sequence[str],
               targets: Sequence[Target]) -> dict[Values, dict[Key, dict[str, float]]]:
    if not targets:
        return {}
    probabilities = [p for _, p in QUANTILES]
    found: dict[Values, dict[Key, dict[str, float]]] = {}
    aggregates = [F.percentile_approx(_value(t), probabilities, ACCURACY).alias(str(i)) for i, t in enumerate(targets)]
    for row in rows.groupBy(*_group_names(groups)).agg(*aggregates).collect():
        here = found.setdefault(_partition_of(row, partition_columns), {})
        for i, t in enumerate(targets):
            if row[str(i)] is not None:
                here[t.key] = {name: float(v) for (name, _), v in zip(QUANTILES, row[str(i)], strict=True)}
    return found


def _value(t: Target) -> Column:
    """The column's value where it counts: its rows, not null, not NaN; as a double."""
    keep = t.rows & col(t.column).isNotNull()
    if isinstance(t.data_type, T.FloatType | T.DoubleType):
        keep = keep & ~F.isnan(col(t.column))
    return F.when(keep, col(t.column).cast(T.DoubleType()))


def _aggregate(rows: DataFrame, groups: Sequence[Column], partition_columns: Sequence[str],
               targets: Sequence[Target], edges: Mapping[Values, Mapping[Key, tuple[float, ...]]],
               partitions: Sequence[Values]) -> dict[Values, dict[str, Any]]:
    """Counts, moments and histogram counts of every target, per partition, in one compiled aggregate. Bin
    counts are per bin index; a row's index is the number of its partition's edges at or below its value."""
    aggregates: list[Column] = []
    for i, t in enumerate(targets):
        aggregates += _aggregates(i, t, [edges[v].get(t.key, ()) for v in partitions], partitions,
                                  partition_columns)
    found = {}
    for row in rows.groupBy(*_group_names(groups)).agg(*aggregates).collect():
        found[_partition_of(row, partition_columns)] = row.asDict()
    return found


def _aggregates(i: int, t: Target, edges: Sequence[tuple[float, ...]], partitions: Sequence[Values],
                partition_columns: Sequence[str]) -> list[Column]:
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
    index: Column | None = None
    for values, mine in zip(partitions, edges, strict=True):
        here = _bin_index(v, mine)
        if len(set(edges)) == 1:  # every partition on the same bins: no need to ask which partition a row is in
            index = here
            break
        condition = matches(partition_columns, values) if partition_columns else F.lit(True)
        index = F.when(condition, here) if index is None else index.when(condition, here)  # type: ignore[attr-defined]
    most = max((len(e) for e in edges), default=0)
    for b in range(most + 1):
        found.append(n(v.isNotNull() & (index == F.lit(b)), f"bin{b}") if index is not None else
                     n(F.lit(False), f"bin{b}"))
    return found


def _bin_index(v: Column, edges: Sequence[float]) -> Column:
    """Which bin of (-inf, e0), [e0, e1), ..., [e_last, +inf) holds v: the number of edges at or below it."""
    index: Column = F.lit(0)
    for e in edges:
        index = index + F.when(v >= F.lit(e), F.lit(1)).otherwise(F.lit(0))
    return index


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _numeric_bins(edges: Sequence[float], counts: Sequence[int]) -> tuple[Bin, ...]:
    bounds = [None, *edges, None]
    return tuple(Bin(_label(lo, hi), n, lo, hi) for (lo, hi), n in zip(pairwise(bounds), counts, strict=True))


def _label(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else f'{lo:.6g}'}, {'+inf' if hi is None else f'{hi:.6g}'})"


def _categories(rows: DataFrame, partition_columns: Sequence[str], targets: Sequence[Target],
                baselines: Mapping[Values, Baseline | None]) -> dict[Values, dict[str, dict[str, int]]]:
    """Per partition and categorical column: its top categories by rows, and the categories of any baseline
    (so that the two histograms can share bins), in one grouped count."""
    if not targets:
        return {}
    pairs = F.array(*[F.when(t.rows & col(t.column).isNotNull(),
                             F.struct(F.lit(i).alias("t"), col(t.column).cast(T.StringType()).alias("v")))
                      for i, t in enumerate(targets)])
    groups = _group_names([col(c) for c in partition_columns])
    keys = [F.col(f"__p{j}") for j in range(len(partition_columns))]
    counted = (rows.select(*groups, F.explode(pairs).alias("p")).where(col("p").isNotNull())
               .groupBy(*keys, F.col("p.t").alias("t"), F.col("p.v").alias("v")).count())
    wanted = col("rank") <= TOP_CATEGORIES
    for i, t in enumerate(targets):
        labels = sorted({b.label for base in baselines.values() if base is not None and base.profiles
                         for p in [base.profiles.get(t.key)] if p is not None and not p.numeric
                         for b in p.histogram if b.label != OTHER})
        if labels:
            wanted = wanted | ((col("t") == F.lit(i)) & col("v").isin(labels))
    rank = F.row_number().over(Window.partitionBy(*keys, "t").orderBy(F.desc("count"), F.asc("v")))
    # a category among the top ones of any partition is counted in every partition (one may be the other's
    # baseline)
    anywhere = F.max((col("rank") <= TOP_CATEGORIES).cast("int")).over(Window.partitionBy("t", "v")) == 1
    found: dict[Values, dict[str, dict[str, int]]] = {}
    ranked = counted.withColumn("rank", rank).withColumn("anywhere", anywhere)
    for r in ranked.where(wanted | col("anywhere")).collect():
        here = found.setdefault(_partition_of(r, partition_columns), {})
        here.setdefault(targets[r["t"]].column, {})[r["v"]] = int(r["count"])
    return found


def _category_bins(counts: Mapping[str, int], values: int, baseline: ColumnProfile | None) -> tuple[Bin, ...]:
    """The baseline's categories when there is one (the same bins), else the top ones; the rest `other`."""
    if baseline is not None and not baseline.numeric and baseline.histogram:
        labels = [b.label for b in baseline.histogram if b.label != OTHER]
    else:
        labels = sorted(counts, key=lambda v: (-counts[v], v))[:TOP_CATEGORIES]
    bins = [Bin(v, counts.get(v, 0)) for v in labels]
    return (*bins, Bin(OTHER, max(values - sum(b.count for b in bins), 0)))
