"""The plain values the quality steps hand each other: profiles (computed in Spark, stored in
`<output>_profiles`), drift against a baseline, champion against challenger, and what the report shows. No
Spark here: the report and the metrics work on these alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

INPUT, OUTPUT, CHALLENGER = "input", "output", "challenger"  # ColumnProfile.kind
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p1", 0.01), ("p5", 0.05), ("p10", 0.1), ("p20", 0.2), ("p25", 0.25), ("p30", 0.3), ("p40", 0.4),
    ("p50", 0.5), ("p60", 0.6), ("p70", 0.7), ("p75", 0.75), ("p80", 0.8), ("p90", 0.9), ("p95", 0.95),
    ("p99", 0.99),
)
DECILES = ("p10", "p20", "p30", "p40", "p50", "p60", "p70", "p80", "p90")  # a column's own histogram edges
OTHER = "other"  # the categories past the top ones
TOP_CATEGORIES = 20


@dataclass(frozen=True)
class Bin:
    """One bar of a histogram. Numbers: [lower, upper), lower None = -inf, upper None = +inf (the last bin
    holds its upper edge's values too: it is open). Categories: `label` is the value (or `other`),
    lower and upper are None."""

    label: str
    count: int
    lower: float | None = None
    upper: float | None = None


@dataclass(frozen=True)
class Drift:
    """A column of a partition against its baseline, on the baseline's bins (numbers: the baseline's edges;
    categories: the baseline's categories plus `other`)."""

    baseline: str  # what it was compared with, for people: "previous: run 1a2b.. of ds=2024-01-01"
    psi: float
    js: float  # Jensen-Shannon distance, base 2: 0 (same) to 1
    ks: float | None  # numbers only: the largest gap between the two CDFs at the bin edges
    baseline_histogram: tuple[Bin, ...]


@dataclass(frozen=True)
class ColumnProfile:
    """One column of one partition of one run (NaN counted apart from nulls; the statistics, quantiles
    and histogram over the values that are neither)."""

    column: str
    kind: str  # input | output | challenger
    dtype: str  # Spark's simpleString
    numeric: bool
    count: int  # rows, nulls included
    nulls: int
    nans: int
    min: float | None
    max: float | None
    mean: float | None
    stddev: float | None
    quantiles: Mapping[str, float]  # QUANTILES names -> value (numbers only)
    histogram: tuple[Bin, ...]
    drift: Drift | None = None
    # rows the other statistics were computed on (a sample of a partition larger than the run's profile
    # sample); None: all of them. nulls, nans, the histogram and the categories count these rows.
    profiled: int | None = None

    @property
    def rows_profiled(self) -> int:
        return self.count if self.profiled is None else self.profiled


@dataclass(frozen=True)
class Grid:
    """A 2-D histogram: counts[i][j] rows with x in [x_edges[i], x_edges[i+1]) and y likewise."""

    x_edges: tuple[float, ...]
    y_edges: tuple[float, ...]
    counts: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Comparison:
    """Champion against challenger on the same rows of one partition."""

    challenger: str  # "churn version 4"
    output: str  # the output compared (a score, or the label)
    rows: int  # rows both scored
    agreement: float | None  # share of rows with the same label (label outputs)
    mean_abs_diff: float | None  # numeric outputs
    max_abs_diff: float | None
    spearman: float | None
    psi: float | None  # challenger's prediction distribution against the champion's
    grid: Grid | None = None


@dataclass(frozen=True)
class PartitionQuality:
    partition: str  # "ds=2024-01-01" ("table" when unpartitioned)
    values: tuple[object, ...]
    profiles: tuple[ColumnProfile, ...]
    rejects: Mapping[str, int] = field(default_factory=dict)  # reason -> rows
    comparison: Comparison | None = None


@dataclass(frozen=True)
class RunQuality:
    """What the report shows about one run."""

    title: str
    summary: tuple[str, ...]  # the run summary, line by line
    partitions: tuple[PartitionQuality, ...]
    baseline_note: str  # "previous published version", "training profile of churn 3", "no baseline: ..."
    gate: tuple[str, ...] = ()  # drift limits crossed (a failed run) or warned about
