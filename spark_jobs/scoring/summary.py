"""The run summary: what a scoring run did, in a few lines (stdout of the CLI, the top of the report)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spark_jobs.config import JobConfig

if TYPE_CHECKING:
    from spark_jobs.scoring.job import RunResult


def summary(cfg: JobConfig, result: RunResult) -> str:
    """What a run did, for people: printed by the CLI and shown at the top of the run's report."""
    lin, counts = result.lineage, result.counts
    version = f"version {lin.model_version}" if lin.model_version else "no registry version"
    lines = [
        f"scored {cfg.input_table} ({result.selection}) -> {cfg.output_table}",
        f"model: {cfg.model_uri} = {lin.model_name} {version} (run {lin.model_run_id or '-'})",
        f"scoring_run_id: {lin.scoring_run_id}",
    ]
    if result.challenger is not None:
        ch = result.challenger
        lines.append(f"challenger: {cfg.challenger_uri} = {ch.name} version {ch.version or '-'} -> {cfg.challenger}")
    if result.engine is not None:
        lines.append(f"engine: {result.engine.engine} ({result.engine.reason})")
    per_partition: dict[tuple[object, ...], dict[str, int]] = {}
    for p in result.staged:
        per_partition.setdefault(p.values, {"scored": 0, "rejected": 0})[p.outcome] = p.rows
    for values, n in sorted(per_partition.items(), key=lambda kv: [str(v) for v in kv[0]]):
        name = ", ".join(f"{c}={v}" for c, v in zip(result.partition_columns, values, strict=True)) or "table"
        lines.append(f"  {name}: {n['scored']} scored, {n['rejected']} rejected")
    if result.skipped:
        lines.append(f"up to date (skipped): {result.skipped} partition(s) already scored by this model version "
                     "from unchanged input")
    rate = counts.read / result.seconds if result.seconds > 0 else 0.0
    lines.append(f"rows read: {counts.read}, scored: {counts.scored}, rejected: {counts.rejected} "
                 f"in {result.seconds:.1f} s ({rate:,.0f} rows/s)")
    lines += _quality(result)
    if counts.rejected and result.rejects_table:
        lines.append(f"quarantined {counts.rejected} rows in {result.rejects_table} "
                     f"(SELECT * FROM {result.rejects_table} WHERE scoring_run_id = '{lin.scoring_run_id}')")
    return "\n".join(lines)


def _quality(result: RunResult) -> list[str]:
    """Drift, the challenger and the report, when the run assessed its partitions."""
    q = result.quality
    if q is None:
        return []
    lines = [f"quality: {len(q.partitions)} partition(s) profiled in {q.seconds:.1f} s",
             f"drift baseline: {q.baseline_note}"]
    drifted = [(p.drift.psi, part.partition, p.kind, p.column) for part in q.partitions for p in part.profiles
               if p.drift is not None and p.kind != "challenger"]
    if drifted:
        psi, where, kind, column = max(drifted)
        lines.append(f"largest drift: PSI {psi:.4f} in {where}, {kind} column '{column}'")
    lines += [f"drift over the limit: {line}" for line in q.crossed]
    for part in q.partitions:
        c = part.comparison
        if c is None:
            continue
        shown = [f"agreement {c.agreement:.4f}" if c.agreement is not None else None,
                 f"mean |diff| {c.mean_abs_diff:.4g}" if c.mean_abs_diff is not None else None,
                 f"max |diff| {c.max_abs_diff:.4g}" if c.max_abs_diff is not None else None,
                 f"Spearman {c.spearman:.4f}" if c.spearman is not None else None,
                 f"PSI {c.psi:.4f}" if c.psi is not None else None]
        lines.append(f"challenger {c.challenger} on {part.partition} ({c.output}, {c.rows} rows): "
                     + ", ".join(x for x in shown if x))
    if result.report_path:
        lines.append(f"report: {result.report_path}")
    return lines
