"""A run's quality step, between the audit and publishing: profile every staged partition (inputs, outputs,
a challenger's outputs), measure drift against the baseline, compare champion and challenger, store the
profiles, and gate publishing on the drift limits."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from spark_jobs.errors import ScoringError
from spark_jobs.planning import partitions
from spark_jobs.planning.plan import REJECT_REASON, ScoringPlan
from spark_jobs.publishing.staging import REJECTED, SCORED, Listing, StagedPartition, StagingArea, split_location
from spark_jobs.quality import baseline, challenger, profiles, sampling, store
from spark_jobs.quality.records import CHALLENGER, INPUT, OUTPUT, ColumnProfile, PartitionQuality
from spark_jobs.scoring.bad_rows import OUTCOME
from udfs.compat import col

log = logging.getLogger("score_table.quality")
METRICS = ("psi", "js", "ks")
Values = tuple[Any, ...]


@dataclass(frozen=True)
class Settings:
    profiles_table: str
    baseline: str  # previous | training
    max_drift: Mapping[str, float]  # metric -> limit
    drift_action: str  # fail | warn
    output_table: str
    profile_rows: int = 25_000  # a larger partition is profiled on a sample of about this many rows


@dataclass(frozen=True)
class Assessed:
    partitions: tuple[PartitionQuality, ...]
    baseline_note: str
    crossed: tuple[str, ...]  # drift limits crossed: "partition: kind column 'c' psi 0.3 > 0.25"
    seconds: float = 0.0  # what the step took (make bench reports it against the whole run)

    @property
    def max_psi(self) -> float | None:
        found = [p.drift.psi for q in self.partitions for p in q.profiles
                 if p.drift is not None and p.kind != CHALLENGER]
        return max(found) if found else None


def targets(scoring: ScoringPlan, with_challenger: bool) -> list[profiles.Target]:
    """The model's inputs over every row read, its outputs over the scored rows, a challenger's over its own."""
    types = {f.name: f.dataType for f in scoring.output_schema.fields}
    inputs = list(dict.fromkeys(f.column for f in scoring.features))
    found = [profiles.Target(c, INPUT, types[c], (SCORED, REJECTED)) for c in inputs if c in types]
    found += [profiles.Target(f.name, OUTPUT, f.dataType, (SCORED,)) for f in scoring.outputs.fields]
    if with_challenger:
        found += [profiles.Target(f.name, CHALLENGER, f.dataType, (challenger.CHALLENGER,))
                  for f in scoring.outputs.fields]
    return found


def assess(spark: SparkSession, settings: Settings, staging: StagingArea, scoring: ScoringPlan,
           keys: Sequence[str], listing: Listing, run_id: str, model_run_id: str | None,
           challenger_name: str | None, rejected: int) -> Assessed:
    started = time.monotonic()
    staged = listing.partitions
    parts = scoring.partition_columns
    fields = [f for f in staging.schema.fields if f.name in parts]
    paths = {p.values: _partition_path(p) for p in staged if p.outcome in (SCORED, REJECTED)}
    ordered = sorted(paths, key=baseline._order)
    rows = functools.cache(lambda: staging.every_row(spark))  # made only for the rejects' reasons and the challenger
    root = store.location(spark, settings.profiles_table)  # one look-up for the baselines and the write
    find, note = _baselines(spark, settings, staging, fields, paths, model_run_id, root)
    totals = _totals(staged)
    drawn = _drawn(listing.samples, totals, settings.profile_rows)
    if drawn:
        log.info("quality: %d partition(s) profiled on the sample drawn by the write", len(drawn))
    # the same rows as the driver reads them from their files, where the profiles are made on the driver
    read = [p for p in listing.samples if p.values in drawn] + [p for p in listing.partitions if p.values not in drawn]
    made = profiles.profile(lambda: staging.sample_or_rows(spark, drawn), parts,
                            targets(scoring, challenger_name is not None), find, ordered, totals,
                            settings.profile_rows, drawn,
                            lambda columns: [(p.outcome, p.values, table)
                                             for p, table in staging.read_columns(spark, read, columns)])
    reasons = _reasons(rows(), parts) if rejected else {}
    compared = challenger.outputs_compared(scoring.outputs)
    found: list[PartitionQuality] = []
    for values in ordered:
        comparison = None
        if challenger_name is not None:
            here = rows().where(partitions.matches(parts, values)) if parts else rows()
            score = next((p for p in made[values] if p.kind == OUTPUT and p.column == compared.score), None)
            edges = profiles.edges_of(score.histogram) if score is not None and score.numeric else ()
            comparison = challenger.compare(here.where(col(OUTCOME) == SCORED),
                                            here.where(col(OUTCOME) == challenger.CHALLENGER), keys, compared,
                                            edges, challenger_name)
        name = partitions.describe(parts, values) if parts else "table"
        found.append(PartitionQuality(name, values, tuple(made[values]), reasons.get(values, {}), comparison))
    store.write(spark, settings.profiles_table, run_id, fields, {q.values: (paths[q.values], q.profiles)
                                                                 for q in found}, root)
    if note.startswith("previous") and not any(p.drift for q in found for p in q.profiles):
        note = "previous: no earlier profile of these partitions (first run): drift not measured"
    crossed = gate(found, settings.max_drift)
    for line in crossed:
        log.warning("drift over the limit: %s", line)
    return Assessed(tuple(found), note, crossed, time.monotonic() - started)


def _totals(staged: Sequence[StagedPartition]) -> dict[Values, dict[str, int]]:
    """Each partition's rows by target kind, as the staging write counted them: inputs over every row read,
    outputs over the scored rows, a challenger's over its own."""
    found: dict[Values, dict[str, int]] = {}
    for p in staged:
        here = found.setdefault(p.values, {INPUT: 0, OUTPUT: 0})
        if p.outcome in (SCORED, REJECTED):
            here[INPUT] += p.rows
        if p.outcome == SCORED:
            here[OUTPUT] += p.rows
        if p.outcome == challenger.CHALLENGER:
            here[CHALLENGER] = here.get(CHALLENGER, 0) + p.rows
    return found


def _drawn(samples: Sequence[StagedPartition], totals: Mapping[Values, Mapping[str, int]], wanted: int
           ) -> dict[Values, dict[str, int]]:
    """The partitions whose sample drawn by the write is large enough (its largest kind of rows, as the
    fraction profiled is set by), with its rows by kind."""
    found = _totals(samples)
    return {v: n for v, n in found.items()
            if max(n.values()) >= sampling.ENOUGH * min(wanted, max(totals[v].values()))}


def _partition_path(p: StagedPartition) -> str:
    where = split_location(p.location)
    assert where is not None, p.location
    return where[2]


def gate(found: Sequence[PartitionQuality], limits: Mapping[str, float]) -> tuple[str, ...]:
    """Every drift limit crossed, by partition, column and metric (a challenger's outputs are compared,
    not gated)."""
    crossed = []
    for q in found:
        for p in q.profiles:
            if p.drift is None or p.kind == CHALLENGER:
                continue
            for metric, limit in limits.items():
                value = getattr(p.drift, metric)
                if value is not None and value > limit:
                    crossed.append(f"{q.partition}: {p.kind} column '{p.column}' {metric} {value:.4f} > {limit:g}")
    return tuple(crossed)


def drift_error(crossed: Sequence[str]) -> ScoringError:
    """The gate's failure (exit 1): the first limit crossed, and how many more."""
    more = f" (and {len(crossed) - 1} more)" if len(crossed) > 1 else ""
    return ScoringError(f"drift over the limit: {crossed[0]}{more}; nothing published "
                        "(--drift-action warn records it and publishes)")


def _baselines(spark: SparkSession, settings: Settings, staging: StagingArea, fields: Sequence[T.StructField],
               paths: Mapping[Values, str], model_run_id: str | None, root: str | None
               ) -> tuple[Callable[[Values], profiles.Baseline | None], str]:
    if settings.baseline == "training":
        found = baseline.training(model_run_id)
        if found is None:
            log.warning("the model version has no training profile (score-table baseline makes one): drift "
                        "not measured")
            return (lambda _v: None), "training: the model version has no training profile: drift not measured"
        return baseline.fixed(found, "training profile"), "training profile of the model version"
    return baseline.Previous(spark, staging.table_location, root, fields,
                             paths), "previous: the published version of each partition, else the latest earlier one"


def _reasons(rows: DataFrame, parts: Sequence[str]) -> dict[Values, dict[str, int]]:
    """Rejected rows by reason, per partition (one grouped count)."""
    found: dict[Values, dict[str, int]] = {}
    grouped = rows.where(col(OUTCOME) == REJECTED).groupBy(*[col(c) for c in parts], col(REJECT_REASON)).count()
    for r in grouped.collect():
        values = tuple(r[c] for c in parts)
        found.setdefault(values, {})[str(r[REJECT_REASON])] = int(r["count"])
    return found


def profile_table(rows: DataFrame, columns: Sequence[T.StructField], sample: int = 100_000) -> list[ColumnProfile]:
    """A training profile: the model's inputs over a table (no partitions, no baseline; a sample of about
    `sample` rows of a larger one, as a run profiles its partitions)."""
    wanted = [profiles.Target(f.name, INPUT, f.dataType) for f in columns]
    return profiles.profile(lambda: rows, (), wanted, lambda _v: None, [()], {(): {INPUT: rows.count()}}, sample)[()]
