"""Profiles of a run's columns, per partition, computed from the rows the run staged. Each partition's rows (a
sample of about `sample` rows when it has more) go, as one group, to a pandas function, which returns its
profile: counts, moments, quantiles, histogram counts and category counts, one row per column. numpy does in
milliseconds what Spark's aggregates did in seconds: a profile is about 17 aggregates per column, and Spark
stops generating code for an aggregate that wide (it then interprets it, about a microsecond per row and
column; benchmarks/RESULTS.md). A sample that fits the driver (DRIVER_CELLS) is read there once through
Arrow and profiled in the driver's pandas; a larger one goes to the executors, a group per task, and only
the profiles come back.

One Spark job: a chain of partitions (one with a baseline of its own, and the partitions of the same run
that take its bins, as a backfill's later days take its first day's deciles) is one group, profiled in
order. The sample is a seeded filter, over the copies the staging write drew (quality.sampling) or over
the staged rows; the counts stay exact (the staging write counted them), and a profile of 25,000 rows
differs from the whole partition's by less than the drift that matters (PSI noise about (bins - 1) / rows)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import pairwise
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.planning.partitions import matches
from spark_jobs.quality import metrics, sampling
from spark_jobs.quality.records import DECILES, OTHER, QUANTILES, TOP_CATEGORIES, Bin, ColumnProfile, Drift
from spark_jobs.scoring.bad_rows import OUTCOME
from spark_jobs.session import runtime_conf
from udfs.compat import col

# A sample of up to so many values (rows times the columns the profiles read) is profiled on the driver: one
# read through Arrow, no shuffle and no Python worker (a run with the sql engine then starts none); a larger
# one on the executors, a chain of partitions per task.
DRIVER_CELLS = 8_000_000
Key = tuple[str, str]  # (kind, column)
Values = tuple[Any, ...]
GROUP, PART = "__profile_group", "__profile_partition"
RESULT = T.StructType([
    T.StructField("g", T.IntegerType()), T.StructField("t", T.IntegerType()), T.StructField("rows", T.LongType()),
    T.StructField("nulls", T.LongType()), T.StructField("nans", T.LongType()),
    *[T.StructField(m, T.DoubleType()) for m in ("min", "max", "mean", "stddev")],
    T.StructField("quantiles", T.ArrayType(T.DoubleType())), T.StructField("edges", T.ArrayType(T.DoubleType())),
    T.StructField("bins", T.ArrayType(T.LongType())), T.StructField("labels", T.ArrayType(T.StringType())),
    T.StructField("counts", T.ArrayType(T.LongType())),
])


@dataclass(frozen=True)
class Target:
    """A column to profile and the staged rows it is profiled over, by their outcome (inputs: every row read,
    scored or rejected; outputs: the scored rows; a challenger's outputs: its own rows); None: every row."""

    column: str
    kind: str
    data_type: T.DataType
    outcomes: tuple[str, ...] | None = None

    @property
    def key(self) -> Key:
        return self.kind, self.column

    @cached_property
    def rows(self) -> Column:
        return col(OUTCOME).isin(*self.outcomes) if self.outcomes is not None else F.lit(True)

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


@dataclass(frozen=True)
class _Bins:
    """A target's bins in one partition: numbers on `edges`, categories on `labels` (plus their top ones);
    None: the partition's own (deciles; top categories)."""

    edges: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None


def profile(rows: Callable[[], DataFrame], partition_columns: Sequence[str], targets: Sequence[Target],
            baselines: Callable[[Values], Baseline | None], partitions: Sequence[Values],
            totals: Mapping[Values, Mapping[str, int]] | None = None, sample: int | None = None,
            drawn: Mapping[Values, Mapping[str, int]] | None = None, staged: Staged | None = None
            ) -> dict[Values, list[ColumnProfile]]:
    """Every target's profile in every partition, with drift against the partition's baseline where it has
    a profile of the same shape (numbers against numbers, categories against categories). `partitions` in
    the order baselines are taken (an `earlier` baseline must come before the partition that uses it).
    `totals`: each partition's rows by target kind (known from the staging write), so that a partition of
    more than `sample` rows is profiled on a sample of about `sample` rows; without them, all rows.
    `drawn`: the partitions whose rows in `rows` are a sample drawn already (quality.sampling), with that
    sample's rows by target kind: cut to about `sample` rows likewise, their counts taken from `totals`.
    `rows` gives the rows to profile as a DataFrame; `staged` (where the caller has them) the same rows as Arrow
    tables read from their files on the driver: taken instead when the profiles are made on the driver, which
    then runs no Spark job (`_from_files`)."""
    drawn = drawn or {}
    fractions = _fractions(partitions, {**(totals or {}), **drawn}, sample)
    chosen = {v: baselines(v) for v in partitions}
    roots = {v: _root(v, chosen) for v in partitions}
    plan = {v: [_bins(t, chosen[v]) for t in targets] for v in partitions if roots[v] == v}
    found = _run(rows, partition_columns, targets, partitions, roots, plan, fractions,
                 on_driver(len(partitions), sample, len(targets)), staged)
    made: dict[Values, list[ColumnProfile]] = {}
    for v in partitions:
        base = chosen[v]
        against: Mapping[Key, ColumnProfile] = {}
        if base is not None and base.earlier is not None:
            against = {(p.kind, p.column): p for p in made.get(base.earlier, [])}
        elif base is not None:
            against = base.profiles or {}
        exact = (totals or {}).get(v, {}) if fractions.get(v, 1.0) < 1.0 or v in drawn else {}
        made[v] = [_assemble(t, found.get((v, i)), against.get(t.key), base.name if base else "",
                             exact.get(t.kind)) for i, t in enumerate(targets)]
    return {v: made[v] for v in partitions}


def on_driver(partitions: int, sample: int | None, targets: int) -> bool:
    """Whether the profiles of `partitions` partitions, each profiled on about `sample` rows (None: all of
    its rows, a number not known here), of `targets` columns, are made on the driver."""
    return sample is not None and partitions * sample * (2 * targets + 4) <= DRIVER_CELLS


def _root(v: Values, chosen: Mapping[Values, Baseline | None]) -> Values:
    """The partition whose bins `v` is profiled on: itself, or the first of its chain of earlier ones."""
    seen = {v}
    while (base := chosen.get(v)) is not None and base.earlier is not None and base.earlier not in seen:
        v = base.earlier
        seen.add(v)
    return v


def _bins(t: Target, stored: Baseline | None) -> _Bins:
    """The bins of a target in a partition that is its own root: its stored baseline's, else its own."""
    source = (stored.profiles or {}).get(t.key) if stored is not None else None
    if source is None or not source.histogram or source.numeric != t.numeric:
        return _Bins()
    if t.numeric:
        return _Bins(edges=edges_of(source.histogram))
    return _Bins(labels=tuple(b.label for b in source.histogram if b.label != OTHER))


def _run(rows: Callable[[], DataFrame], partition_columns: Sequence[str], targets: Sequence[Target],
         step: Sequence[Values], roots: Mapping[Values, Values], plan: Mapping[Values, Sequence[_Bins]],
         fractions: Mapping[Values, float], local: bool, staged: Staged | None
         ) -> dict[tuple[Values, int], Mapping[str, Any]]:
    """One Spark job: the partitions, sampled, a chain of them (a root and the partitions that take its bins)
    as one pandas group, profiled in order, on an executor or (`local`) on the driver; their profiles back.
    No job where the driver reads the staged files itself (`_from_files`)."""
    chains = list(dict.fromkeys(roots[v] for v in step))
    # per chain, in order: (partition index, its bins; None: its root's, as the root's profile made them)
    plans = {g: [(p, [(b.edges, b.labels) for b in plan[v]] if v in plan else None)
                 for p, v in enumerate(step) if roots[v] == root] for g, root in enumerate(chains)}
    if local and staged is not None and _readable(targets, partition_columns):
        read = _from_files(staged, partition_columns, targets, step, {v: chains.index(roots[v]) for v in step},
                           fractions)
        return _profiled_on_driver(read, targets, plans, step)
    share = _share(partition_columns, step, fractions)
    group: Column = F.lit(0)
    part: Column = F.lit(0)
    if partition_columns and len(step) > 1:
        for p, v in enumerate(step):
            g = F.lit(chains.index(roots[v]))
            group = F.when(matches(partition_columns, v), g) if p == 0 else \
                group.when(matches(partition_columns, v), g)  # type: ignore[attr-defined]
            part = F.when(matches(partition_columns, v), F.lit(p)) if p == 0 else \
                part.when(matches(partition_columns, v), F.lit(p))  # type: ignore[attr-defined]
    keep: Column = F.lit(True)
    if partition_columns:
        keep = matches(partition_columns, step[0])
        for v in step[1:]:
            keep = keep | matches(partition_columns, v)
    if share is not None:
        keep = keep & (F.rand(sampling.SEED) < share)
    # as few columns as the profiles need (each crosses to Python): one flag per distinct set of rows (the
    # inputs share theirs), the value (null outside its rows), and for floating columns a null flag (pandas
    # shows null and NaN alike)
    columns: list[Column] = [group.alias(GROUP), part.alias(PART)]
    flags: dict[str, str] = {}
    names: list[tuple[str, str | None]] = []  # per target: its rows flag, its null flag (floating only)
    for i, t in enumerate(targets):
        if str(t.rows) not in flags:
            flags[str(t.rows)] = f"r{len(flags)}"
            columns.append(t.rows.alias(flags[str(t.rows)]))
        flag = flags[str(t.rows)]
        floating = isinstance(t.data_type, T.FloatType | T.DoubleType)
        if floating:
            columns.append((t.rows & col(t.column).isNull()).alias(f"n{i}"))
        if t.numeric:
            columns.append(F.when(t.rows, col(t.column).cast(T.DoubleType())).alias(f"v{i}"))
        else:
            columns.append(F.when(t.rows, col(t.column).cast(T.StringType())).alias(f"v{i}"))
        names.append((flag, f"n{i}" if floating else None))
    kinds = _kinds(targets, names)
    staged_rows = rows()
    where = staged_rows.where(keep) if partition_columns or share is not None else staged_rows
    if local:
        with runtime_conf(staged_rows.sparkSession, {"spark.sql.execution.arrow.pyspark.enabled": "true"}):
            pdf: Any = where.select(*columns).toPandas()
        return _profiled_on_driver(pdf, targets, plans, step, kinds)
    result = where.select(*columns).groupBy(GROUP).applyInPandas(_profiler(kinds, plans), RESULT)
    return {(step[r["g"]], r["t"]): r for r in (r.asDict() for r in result.collect())}  # g: the partition's index


def _kinds(targets: Sequence[Target], names: Sequence[tuple[str, str | None]]) -> list[tuple[str, str, str | None]]:
    """Per target: how it is profiled, the column of its rows' flag and of its null flag (floating only)."""
    return [("numeric" if t.numeric else "categorical" if t.categorical else "other", *n)
            for t, n in zip(targets, names, strict=True)]


def _profiled_on_driver(pdf: Any, targets: Sequence[Target], plans: Mapping[int, Sequence[tuple[int, Plan | None]]],
                        step: Sequence[Values], kinds: Sequence[tuple[str, str, str | None]] | None = None
                        ) -> dict[tuple[Values, int], Mapping[str, Any]]:
    profiled = _profiled(kinds if kinds is not None else _kinds(targets, _file_names(targets)), plans)
    found = [r for _, group in pdf.groupby(GROUP, sort=False) for r in profiled(group)]
    return {(step[r["g"]], r["t"]): r for r in found}


# What the driver reads from the staged files as Spark would give it: numbers (as doubles: exact from these
# types, as Spark's cast), text and booleans (as Spark casts them to text), and for the other types their nulls
_NUMBERS = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType)
_NULLS_ONLY = (T.DateType, T.TimestampType, T.TimestampNTZType, T.BinaryType)
Staged = Callable[[Sequence[str]], Sequence[tuple[str, Values, Any]]]  # columns -> (outcome, values, Arrow table)


def _readable(targets: Sequence[Target], partition_columns: Sequence[str]) -> bool:
    """Whether `_from_files` gives exactly the values the Spark read would: not for decimals (Arrow's cast to a
    double may round apart from Spark's) or a partition column (not in the files)."""
    return all(t.outcomes is not None and t.column not in partition_columns
               and isinstance(t.data_type, (*_NUMBERS, T.StringType, T.BooleanType, *_NULLS_ONLY)) for t in targets)


def _file_names(targets: Sequence[Target]) -> list[tuple[str, str | None]]:
    """`_run`'s column names for each target's rows and null flags, for the frame `_from_files` builds."""
    flags = {o: f"r{i}" for i, o in enumerate(dict.fromkeys(t.outcomes for t in targets))}
    return [(flags[t.outcomes], f"n{i}" if isinstance(t.data_type, T.FloatType | T.DoubleType) else None)
            for i, t in enumerate(targets)]


def _from_files(staged: Staged, partition_columns: Sequence[str], targets: Sequence[Target],
                step: Sequence[Values], groups: Mapping[Values, int], fractions: Mapping[Values, float]) -> Any:
    """The frame `_run` selects through Spark, built from the staged files' Arrow tables on the driver: per row
    its chain and partition, each target's rows flag (its outcome is the file's), null flag and value. A
    partition profiled on a share of its rows keeps each row by a seeded draw of its own (the Spark read's
    draw is Spark's random numbers; both keep about the same share, not the same rows)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    names = _file_names(targets)
    several = bool(partition_columns) and len(step) > 1
    draw = np.random.default_rng(sampling.SEED)
    frames = []
    for outcome, values, table in staged(list(dict.fromkeys(t.column for t in targets))):
        if values not in groups:
            continue
        if fractions.get(values, 1.0) < 1.0:
            table = table.filter(pa.array(draw.random(table.num_rows) < fractions[values]))
        n = table.num_rows
        data: dict[str, Any] = {GROUP: np.full(n, groups[values] if several else 0, dtype="int32"),
                                PART: np.full(n, step.index(values) if several else 0, dtype="int32")}
        for i, (t, (flag, null_flag)) in enumerate(zip(targets, names, strict=True)):
            here = t.outcomes is not None and outcome in t.outcomes
            data[flag] = np.full(n, here)
            column = table.column(t.column)
            if null_flag is not None:
                data[null_flag] = column.is_null().to_numpy(zero_copy_only=False) & here
            if t.numeric:
                data[f"v{i}"] = column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
            elif isinstance(t.data_type, T.BooleanType):
                data[f"v{i}"] = pc.if_else(column, "true", "false").to_pandas()
            elif isinstance(t.data_type, T.StringType):
                data[f"v{i}"] = column.to_pandas()
            else:  # only its nulls count
                data[f"v{i}"] = pc.if_else(column.is_null(), pa.scalar(None, pa.string()), "").to_pandas()
        frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({GROUP: [], PART: []})


def _share(partition_columns: Sequence[str], step: Sequence[Values], fractions: Mapping[Values, float]
           ) -> Column | None:
    """Each partition's sampling fraction as a column (None: every row of every partition)."""
    wanted = {v: fractions.get(v, 1.0) for v in step}
    if all(f >= 1.0 for f in wanted.values()):
        return None
    return sampling.per_partition(partition_columns, wanted, 1.0)


Plan = list[tuple[tuple[float, ...] | None, tuple[str, ...] | None]]  # per target: (edges, labels)


def _profiler(kinds: Sequence[tuple[str, str, str | None]], plans: Mapping[int, Sequence[tuple[int, Plan | None]]]
              ) -> Callable[[Any], Any]:
    """The pandas function each chain of partitions goes through on an executor: `_profiled`'s rows as a
    DataFrame of RESULT."""
    profiled = _profiled(kinds, plans)

    def run(pdf: Any) -> Any:
        import pandas as pd

        return pd.DataFrame(profiled(pdf), columns=RESULT.names)

    return run


def _profiled(kinds: Sequence[tuple[str, str, str | None]], plans: Mapping[int, Sequence[tuple[int, Plan | None]]]
              ) -> Callable[[Any], list[dict[str, Any]]]:
    """A chain of partitions' profiles, one RESULT row per partition and target, from its rows in pandas
    (numpy and pandas only: a worker that scores with the udf engine has both)."""
    probabilities = [p for _, p in QUANTILES]
    decile_at = [dict(QUANTILES)[d] for d in DECILES]

    def one(pdf: Any, p: int, plan: Plan) -> tuple[list[dict[str, Any]], Plan]:
        """A partition's profiles, and the bins it used (a later partition of its chain takes them)."""
        import numpy as np

        out, used = [], []
        for i, (kind, flag, null_flag) in enumerate(kinds):
            edges, labels = plan[i]
            here = pdf[flag].to_numpy(dtype=bool)
            row: dict[str, Any] = {**dict.fromkeys(RESULT.names), "g": p, "t": i, "rows": int(here.sum()),
                                   "nans": 0}
            if kind == "numeric":
                x = pdf[f"v{i}"].to_numpy(dtype="float64")[here]
                missing = np.isnan(x)
                if null_flag is not None:  # a floating column: NaN apart from null
                    row["nulls"] = int(pdf[null_flag].sum())
                    row["nans"] = int(missing.sum()) - row["nulls"]
                else:
                    row["nulls"] = int(missing.sum())
                x = np.sort(x[~missing])
                if len(x):
                    row.update(min=float(x[0]), max=float(x[-1]), mean=float(x.mean()),
                               stddev=float(x.std(ddof=1)) if len(x) > 1 else None,
                               quantiles=[float(q) for q in np.quantile(x, probabilities, method="inverted_cdf")])
                    if edges is None:
                        edges = tuple(sorted({float(q) for q in np.quantile(x, decile_at, method="inverted_cdf")}))
                bounds = np.asarray(edges or (), dtype="float64")
                row.update(edges=[float(b) for b in bounds], bins=[int(c) for c in np.bincount(
                    np.searchsorted(bounds, x, side="right"), minlength=len(bounds) + 1)])
            else:
                values = pdf[f"v{i}"][here]
                row["nulls"] = int(values.isna().sum())
            if kind == "categorical":
                counts = values.dropna().value_counts()
                ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                if labels is None:
                    labels = tuple(str(k) for k, _ in ranked[:TOP_CATEGORIES])
                wanted = dict(ranked[:TOP_CATEGORIES])
                for label in labels:
                    wanted[label] = int(counts.get(label, 0))
                row.update(labels=list(wanted), counts=[int(n) for n in wanted.values()])
            used.append((edges, labels))
            out.append(row)
        return out, used

    def chain(pdf: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        root: Plan = []
        for p, plan in plans[int(pdf[GROUP].iloc[0])]:
            found, used = one(pdf[pdf[PART].to_numpy() == p], p, plan if plan is not None else root)
            root = used if plan is not None else root
            rows += found
        return rows

    return chain


def _assemble(t: Target, got: Mapping[str, Any] | None, baseline: ColumnProfile | None, name: str,
              total: int | None) -> ColumnProfile:
    """One target's profile from its row of the job; `total`: its exact rows when a sample was profiled."""
    got = got or {}
    counted, nulls, nans = int(got.get("rows") or 0), int(got.get("nulls") or 0), int(got.get("nans") or 0)
    if t.numeric:
        edges = tuple(got.get("edges") or ())
        bins = _numeric_bins(edges, list(got.get("bins") or [0] * (len(edges) + 1)))
    elif t.categorical:
        counts = dict(zip(got.get("labels") or (), got.get("counts") or (), strict=True))
        bins = _category_bins(counts, counted - nulls, baseline)
    else:
        bins = ()
    quantiles = dict(zip([q for q, _ in QUANTILES], got.get("quantiles") or (), strict=False))
    p = ColumnProfile(
        column=t.column, kind=t.kind, dtype=t.data_type.simpleString(), numeric=t.numeric,
        count=counted if total is None else total, nulls=nulls, nans=nans, min=_float(got.get("min")),
        max=_float(got.get("max")), mean=_float(got.get("mean")), stddev=_float(got.get("stddev")),
        quantiles=quantiles, histogram=bins, profiled=None if total is None else counted)
    return replace(p, drift=drift(p, baseline, name))


def _fractions(partitions: Sequence[Values], totals: Mapping[Values, Mapping[str, int]] | None,
               sample: int | None) -> dict[Values, float]:
    """The share of each partition's rows to profile: 1 up to `sample` rows, then about `sample` rows."""
    if not totals or not sample:
        return {}
    found = {}
    for v in partitions:
        most = max(totals.get(v, {}).values(), default=0)
        found[v] = min(1.0, sample / most) if most else 1.0
    return found


def drift(current: ColumnProfile, baseline: ColumnProfile | None, name: str) -> Drift | None:
    """The column against its baseline on the baseline's bins; None when there is nothing to compare."""
    if baseline is None or baseline.numeric != current.numeric or not baseline.histogram or not current.histogram:
        return None
    if [(b.label, b.lower, b.upper) for b in baseline.histogram if b.label != OTHER] != \
            [(b.label, b.lower, b.upper) for b in current.histogram if b.label != OTHER]:
        return None  # not on the same bins: nothing to compare bin by bin
    base, cur = [b.count for b in baseline.histogram], [b.count for b in current.histogram]
    if len(base) != len(cur) or not sum(base) or not sum(cur):
        return None
    return Drift(name, metrics.psi(base, cur), metrics.js_distance(base, cur),
                 metrics.ks(base, cur) if current.numeric else None, baseline.histogram)


def edges_of(histogram: Sequence[Bin]) -> tuple[float, ...]:
    """A numeric histogram's inner edges (its bins are (-inf, e0), [e0, e1), ..., [e_last, +inf))."""
    return tuple(b.upper for b in histogram[:-1] if b.upper is not None)


def _value(t: Target) -> Column:
    """The column's value where it counts: its rows, not null, not NaN; as a double."""
    keep = t.rows & col(t.column).isNotNull()
    if isinstance(t.data_type, T.FloatType | T.DoubleType):
        keep = keep & ~F.isnan(col(t.column))
    return F.when(keep, col(t.column).cast(T.DoubleType()))


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _numeric_bins(edges: Sequence[float], counts: Sequence[int]) -> tuple[Bin, ...]:
    bounds = [None, *edges, None]
    return tuple(Bin(_label(lo, hi), n, lo, hi) for (lo, hi), n in zip(pairwise(bounds), counts, strict=True))


def _label(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else f'{lo:.6g}'}, {'+inf' if hi is None else f'{hi:.6g}'})"


def _category_bins(counts: Mapping[str, int], values: int, baseline: ColumnProfile | None) -> tuple[Bin, ...]:
    """The baseline's categories when there is one (the same bins), else the top ones; the rest `other`."""
    if baseline is not None and not baseline.numeric and baseline.histogram:
        labels = [b.label for b in baseline.histogram if b.label != OTHER]
    else:
        labels = sorted(counts, key=lambda v: (-counts[v], v))[:TOP_CATEGORIES]
    bins = [Bin(v, counts.get(v, 0)) for v in labels]
    return (*bins, Bin(OTHER, max(values - sum(b.count for b in bins), 0)))
