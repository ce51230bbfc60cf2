"""Champion and challenger in one pass. The challenger scores the same rows in the same read: its outputs ride
along as hidden columns, and the staging write emits, for every scored row, a second row of outcome
`challenger` (the key and partition columns, the challenger's outputs under the same names, its lineage;
other columns null). `<output>_challenger` is published from those rows; the table BI reads does not
change. The comparison pairs the two outcomes' rows by key, in Spark."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.planning.plan import LINEAGE, ScoringPlan
from spark_jobs.quality import metrics
from spark_jobs.quality.records import Comparison, Grid
from spark_jobs.scoring.bad_rows import OUTCOME
from spark_jobs.scoring.lineage import RunLineage
from udfs.compat import col
from udfs.model_udf import MODEL_ERROR

CHALLENGER = "challenger"  # the staged outcome of the challenger's rows
HIDDEN = "__challenger_"  # prefix of its outputs while they ride along with the champion's row
GRID = 20  # cells per axis of the champion/challenger 2-D histogram


def table_schema(scoring: ScoringPlan, keys: Sequence[str]) -> T.StructType:
    """`<output>_challenger`: key columns, the challenger's outputs, its lineage, the partition columns."""
    by_name = {f.name: f for f in scoring.output_schema.fields}
    data_keys = [by_name[k] for k in keys if k not in scoring.partition_columns]
    parts = [by_name[c] for c in scoring.partition_columns]
    return T.StructType([*data_keys, *scoring.outputs.fields, *LINEAGE.fields, *parts])


def hide_outputs(df: DataFrame, outputs: T.StructType) -> DataFrame:
    """After the challenger scored: its outputs renamed out of the champion's way, its errors dropped (a
    row the challenger cannot score keeps null challenger outputs; the champion decides the row's fate)."""
    renamed = df.withColumnsRenamed({f.name: f"{HIDDEN}{f.name}" for f in outputs.fields})
    return renamed.drop(MODEL_ERROR)


def with_rows(df: DataFrame, scoring: ScoringPlan, keys: Sequence[str]) -> DataFrame:
    """One more row per scored row, of outcome `challenger`; the hidden columns go. (Its lineage is added
    after the write's sort: `with_lineage`.)"""
    outputs = {f.name for f in scoring.outputs.fields}
    kept = {*keys, *scoring.partition_columns}
    columns = [f for f in df.schema.fields if not f.name.startswith(HIDDEN)]

    def as_challenger(f: T.StructField) -> Column:
        if f.name in outputs:
            return col(f"{HIDDEN}{f.name}").cast(f.dataType).alias(f.name)
        if f.name == OUTCOME:
            return F.lit(CHALLENGER).alias(f.name)
        if f.name in kept:
            return col(f.name)
        return F.lit(None).cast(f.dataType).alias(f.name)

    champion = F.struct(*[col(f.name) for f in columns])
    challenger = F.struct(*[as_challenger(f) for f in columns])
    both = F.when(col(OUTCOME) == F.lit("scored"), F.array(champion, challenger)).otherwise(F.array(champion))
    return df.select(F.explode(both).alias("__row")).select(*[F.col("__row")[f.name].alias(f.name) for f in columns])


def with_lineage(df: DataFrame, champion: RunLineage, challenger: RunLineage) -> DataFrame:
    """The lineage columns of a run with a challenger: the challenger's model on its rows (and on their
    sample copies), the same run and time on every row."""
    theirs = col(OUTCOME).endswith(CHALLENGER)
    return df.withColumns({
        f.name: F.when(theirs, F.lit(getattr(challenger, f.name))).otherwise(F.lit(getattr(champion, f.name)))
        .cast(f.dataType) for f in LINEAGE.fields
    })


@dataclass(frozen=True)
class Compared:
    label: str | None  # the output compared for agreement
    score: str | None  # the output compared by value


def outputs_compared(outputs: T.StructType) -> Compared:
    """Labels: the first string, integer or boolean output; scores: the first floating one (else the label,
    when it is a number)."""
    label = next((f for f in outputs.fields if isinstance(f.dataType, T.StringType | T.BooleanType
                                                             | T.IntegralType)), None)
    score = next((f for f in outputs.fields if isinstance(f.dataType, T.FloatType | T.DoubleType
                                                             | T.DecimalType)), None)
    if score is None and label is not None and isinstance(label.dataType, T.IntegralType):
        score = label
    return Compared(label.name if label else None, score.name if score else None)


def compare(champion: DataFrame, challenger: DataFrame, keys: Sequence[str], compared: Compared,
            edges: Sequence[float], name: str) -> Comparison:
    """One partition's champion rows against its challenger rows, paired by key (null-safe). `edges`: the
    champion score's histogram edges, for the PSI between the two score distributions."""
    picked = [c for c in (compared.label, compared.score) if c is not None]
    a = champion.select(*[col(k) for k in keys], *[col(c).alias(f"a_{i}") for i, c in enumerate(picked)])
    b = challenger.select(*[col(k).alias(f"k_{j}") for j, k in enumerate(keys)],
                          *[col(c).alias(f"b_{i}") for i, c in enumerate(picked)])
    on = [col(k).eqNullSafe(col(f"k_{j}")) for j, k in enumerate(keys)]
    pairs = a.join(b, on=_all(on), how="inner")
    aggregates = [F.count(F.lit(1)).alias("rows")]
    if compared.label is not None:
        aggregates.append(F.avg(col("a_0").eqNullSafe(col("b_0")).cast("double")).alias("agreement"))
    s = picked.index(compared.score) if compared.score is not None else None
    if s is not None:
        x, y = col(f"a_{s}").cast("double"), col(f"b_{s}").cast("double")
        bounds: list[float | None] = [None, *edges, None]
        for i, (lo, hi) in enumerate(pairwise(bounds)):
            for side, v in (("a", x), ("b", y)):
                inside = v.isNotNull()
                inside = inside & (v >= F.lit(lo)) if lo is not None else inside
                inside = inside & (v < F.lit(hi)) if hi is not None else inside
                aggregates.append(F.count(F.when(inside, 1)).alias(f"{side}_bin{i}"))
        aggregates += [F.avg(F.abs(x - y)).alias("mean"), F.max(F.abs(x - y)).alias("max"),
                       F.min(F.least(x, y)).alias("lo"), F.max(F.greatest(x, y)).alias("hi")]
    row = pairs.agg(*aggregates).first()
    assert row is not None
    got = row.asDict()
    rows = int(got["rows"])
    psi = spearman = grid = None
    if s is not None and rows:
        bins = len(edges) + 1
        base, cur = [got[f"a_bin{i}"] for i in range(bins)], [got[f"b_bin{i}"] for i in range(bins)]
        psi = metrics.psi(base, cur) if sum(base) and sum(cur) else None
        spearman = _spearman(pairs, f"a_{s}", f"b_{s}")
        grid = _grid(pairs, f"a_{s}", f"b_{s}", got["lo"], got["hi"])
    return Comparison(challenger=name, output=compared.score or compared.label or "", rows=rows,
                      agreement=got.get("agreement"), mean_abs_diff=got.get("mean"), max_abs_diff=got.get("max"),
                      spearman=spearman, psi=psi, grid=grid)


def _all(conditions: Sequence[Column]) -> Column:
    found = F.lit(True)
    for c in conditions:
        found = found & c
    return found


def _spearman(pairs: DataFrame, a: str, b: str) -> float | None:
    """Spearman's rank correlation: Pearson's of the two average ranks (ties share their mean rank)."""
    def ranked(c: str) -> Column:
        return (F.rank().over(Window.orderBy(col(c))) + (F.count(F.lit(1)).over(Window.partitionBy(col(c))) - 1)
                / 2.0)

    clean = pairs.where(col(a).isNotNull() & col(b).isNotNull())
    row = clean.select(ranked(a).alias("ra"), ranked(b).alias("rb")).agg(F.corr("ra", "rb").alias("r")).first()
    value = row["r"] if row is not None else None
    return None if value is None or math.isnan(value) else float(value)


def _grid(pairs: DataFrame, a: str, b: str, lo: float | None, hi: float | None) -> Grid | None:
    """A GRID x GRID histogram of champion (x) against challenger (y) score over their common range."""
    if lo is None or hi is None or not math.isfinite(lo) or not math.isfinite(hi):
        return None
    width = (hi - lo) / GRID if hi > lo else 1.0

    def cell(c: str) -> Column:
        return F.least(F.floor((col(c).cast("double") - F.lit(lo)) / F.lit(width)), F.lit(GRID - 1)).cast("int")

    counts = [[0] * GRID for _ in range(GRID)]
    cells = pairs.where(col(a).isNotNull() & col(b).isNotNull()).groupBy(cell(a).alias("i"), cell(b).alias("j"))
    for r in cells.count().collect():
        counts[r["i"]][r["j"]] += int(r["count"])
    edges = tuple(lo + width * k for k in range(GRID + 1))
    return Grid(edges, edges, tuple(tuple(row) for row in counts))
