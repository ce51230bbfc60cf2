"""The run's quality report: one self-contained HTML document (inline CSS and SVG, no script, nothing fetched),
so that it opens offline from wherever it is copied (the table's `_reports/`, an MLflow artifact, a mail).

Every number a reader (or a test) checks sits in an element with data attributes naming it, e.g.
`<td data-partition="ds=2024-01-01" data-kind="input" data-column="f01" data-metric="psi">0.1234</td>`, and is
written by `number`; every chart is an `<svg class="chart" data-chart=KIND data-partition=...>` (KIND:
prediction-histogram, drift-bars, rejects, challenger-grid). Column names, partition values, reasons and the
summary come from users' tables: every such text is escaped."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from spark_jobs.quality.records import INPUT, OUTPUT, Bin, ColumnProfile, Comparison, Grid, PartitionQuality, RunQuality

TOP_DRIFTED = 10  # inputs in a partition's drift chart
PSI_LINES = (0.1, 0.25)  # the usual reading of PSI: under 0.1 stable, 0.1 to 0.25 some shift, over 0.25 shifted
TABLE_QUANTILES = ("p1", "p5", "p25", "p50", "p75", "p95", "p99")
PROFILE_METRICS = ("count", "nulls", "nans", "min", "max", "mean", "stddev", *TABLE_QUANTILES, "psi", "js", "ks")
COMPARISON_METRICS = ("rows", "agreement", "mean_abs_diff", "max_abs_diff", "spearman", "psi")
CURRENT, BASELINE = "#2563eb", "#9ca3af"  # this run's bars, the baseline's
LABEL_CHARS = 22  # longer names are cut in charts (the full text is the element's tooltip and in the tables)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#111827;
 margin:24px 16px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;margin:32px 0 8px;padding-top:12px;border-top:2px solid #e5e7eb}
h3{font-size:15px;margin:18px 0 6px}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:10px;overflow-x:auto;font-size:12px}
.gate{background:#fef2f2;border:1px solid #fca5a5;color:#991b1b;padding:8px 8px 8px 28px;font-weight:600}
.note{color:#4b5563}.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figcaption{font-size:13px;color:#374151;margin-bottom:4px}
svg.chart{display:block;max-width:100%;height:auto;background:#fff;border:1px solid #e5e7eb}
svg text{font:11px system-ui,sans-serif;fill:#374151}svg .axis{stroke:#9ca3af}svg .ref{stroke:#6b7280;
 stroke-dasharray:4 3}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:11px;white-space:nowrap}
th,td{border:1px solid #e5e7eb;padding:2px 5px}tr:nth-child(even) td{background:#fafafa}
th{background:#f3f4f6;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def number(value: float | None) -> str:
    """How the report shows every number, so that a test can format its expected values the same way: None
    as "-", integers in full (counts: 1234567, not 1.23457e+06), other numbers with six significant digits
    (`f"{v:.6g}"`: 0.123457, 1.5e-07, 12345.7, nan, inf)."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def render(quality: RunQuality) -> str:
    """The whole report of one run."""
    title = _e(quality.title)
    toc = "".join(f'<li><a href="#partition-{i}">{_e(p.partition)}</a></li>' for i, p in enumerate(quality.partitions))
    body = [
        f"<h1>{title}</h1>",
        _gate(quality.gate),
        f'<p class="note">Baseline: {_e(quality.baseline_note)}</p>',
        f"<pre>{_e(chr(10).join(quality.summary))}</pre>",
        f"<ul>{toc}</ul>" if len(quality.partitions) > 1 else "",
        *(_partition(i, p) for i, p in enumerate(quality.partitions)),
        "" if quality.partitions else "<p>No partitions were scored.</p>",
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def _gate(lines: Sequence[str]) -> str:
    """The drift limits crossed: the reason a run failed (or the warnings it published with), shown first."""
    if not lines:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f'<ul class="gate" data-gate="{len(lines)}">{items}</ul>'


def _partition(index: int, q: PartitionQuality) -> str:
    outputs = [p for p in q.profiles if p.kind == OUTPUT]
    charts = [_figure(f"Predictions: {p.column}", _prediction_histogram(q.partition, p)) for p in outputs]
    charts.append(_figure("Most drifted inputs (PSI)", _drift_bars(q.partition, q.profiles)))
    charts.append(_figure("Rejected rows by reason", _rejects(q.partition, q.rejects)))
    if q.comparison is not None and q.comparison.grid is not None:
        charts.append(_figure(f"Champion against challenger: {q.comparison.output}",
                              _grid(q.partition, q.comparison.output, q.comparison.grid)))
    return "\n".join([
        f'<section id="partition-{index}" data-partition="{_e(q.partition)}"><h2>{_e(q.partition)}</h2>',
        _baselines(q.profiles),
        f'<div class="charts">{"".join(charts)}</div>',
        _comparison(q.partition, q.comparison) if q.comparison is not None else "",
        "<h3>Profiles</h3>",
        _profiles(q.partition, q.profiles),
        "</section>",
    ])


def _baselines(profiles: Sequence[ColumnProfile]) -> str:
    names = sorted({p.drift.baseline for p in profiles if p.drift is not None and p.drift.baseline})
    return f'<p class="note">Compared with: {_e("; ".join(names))}</p>' if names else ""


def _figure(caption: str, content: str) -> str:
    return f"<figure><figcaption>{_e(caption)}</figcaption>{content}</figure>"


# Charts -------------------------------------------------------------------------------------------------------

def _prediction_histogram(partition: str, p: ColumnProfile) -> str:
    """The output's distribution against the baseline's, as shares on the same bins (the profile's bins are the
    baseline's when there is one; bins are matched by their edges, or their category, all the same)."""
    baseline = p.drift.baseline_histogram if p.drift is not None else ()
    labels = list(dict.fromkeys([bin_label(b, p.numeric) for b in (*p.histogram, *baseline)]))
    if not labels:
        return '<p class="note">no values to plot</p>'
    series = [("this run", CURRENT, _shares(p.histogram, p.numeric))]
    if baseline:
        series.append(("baseline", BASELINE, _shares(baseline, p.numeric)))
    w, h, left, right, top, bottom = 560, 320, 66, 12, 30, 90
    pw, ph = w - left - right, h - top - bottom
    ticks = _ticks(max((s.get(label, 0.0) for _, _, s in series for label in labels), default=0.0))
    scale = ph / ticks[-1]
    out = [_y_axis(ticks, left, top, pw, ph, lambda t: f"{t * 100:.3g}%")]
    group = pw / len(labels)
    bar = group * 0.8 / len(series)
    for i, label in enumerate(labels):
        x0 = left + i * group + group * 0.1
        for k, (name, colour, shares) in enumerate(series):
            share = shares.get(label, 0.0)
            out.append(f'<rect x="{x0 + k * bar:.2f}" y="{top + ph - share * scale:.2f}" width="{bar:.2f}" '
                       f'height="{share * scale:.2f}" fill="{colour}"><title>{_e(name)} {_e(label)}: '
                       f"{share * 100:.4g}%</title></rect>")
        cx, cy = left + (i + 0.5) * group, top + ph + 12
        out.append(f'<text x="{cx:.2f}" y="{cy:.2f}" text-anchor="end" transform="rotate(-40 {cx:.2f} {cy:.2f})">'
                   f"{_short(label)}<title>{_e(label)}</title></text>")
    out.append(_legend(series, left, 10))
    return _svg("prediction-histogram", partition, w, h, out, column=p.column)


def _drift_bars(partition: str, profiles: Sequence[ColumnProfile]) -> str:
    """The inputs that moved most against their baseline, with the usual PSI reading lines."""
    drifted = sorted(((p.column, p.drift.psi) for p in profiles if p.kind == INPUT and p.drift is not None),
                     key=lambda c: -c[1])[:TOP_DRIFTED]
    if not drifted:
        return '<p class="note">no drift measured for the inputs</p>'
    rows = [(column, psi, number(psi), _psi_colour(psi)) for column, psi in drifted]
    return _hbars("drift-bars", partition, rows, PSI_LINES, max(PSI_LINES) * 1.2)


def _rejects(partition: str, rejects: Mapping[str, int]) -> str:
    if not rejects:
        return '<p class="note">no rejected rows</p>'
    rows = [(reason, float(n), number(n), "#7c3aed") for reason, n in sorted(rejects.items(), key=lambda r: -r[1])]
    return _hbars("rejects", partition, rows, (), 0.0)


def _hbars(kind: str, partition: str, rows: Sequence[tuple[str, float, str, str]], lines: Sequence[float],
           least: float) -> str:
    """Horizontal bars (label, value, value as shown, colour), the value printed at each bar's end; `lines`:
    dashed reference lines; `least`: the smallest scale, so that the reference lines always show."""
    w, left, right, top, row, bottom = 560, 170, 70, 24, 24, 30
    h = top + row * len(rows) + bottom
    pw, ph = w - left - right, row * len(rows)
    ticks = _ticks(max([least, *(v for _, v, _, _ in rows)]))
    scale = pw / ticks[-1]
    out = [_x_axis(ticks, left, top, pw, ph, number)]
    for line in lines:
        x = left + line * scale
        out.append(f'<line class="ref" x1="{x:.2f}" x2="{x:.2f}" y1="{top - 6}" y2="{top + ph}"/>'
                   f'<text x="{x:.2f}" y="{top - 9}" text-anchor="middle">{number(line)}</text>')
    for i, (label, value, shown, colour) in enumerate(rows):
        y = top + i * row
        length = max(value, 0.0) * scale
        shown_at = f'x="{left + length + 4:.2f}" y="{y + row / 2 + 4:.2f}" {_label_attrs(kind, partition, label)}'
        out.append(f'<text x="{left - 6}" y="{y + row / 2 + 4:.2f}" text-anchor="end">{_short(label)}'
                   f"<title>{_e(label)}</title></text>"
                   f'<rect x="{left}" y="{y + 4}" width="{length:.2f}" height="{row - 8}" fill="{colour}"/>'
                   f"<text {shown_at}>{_e(shown)}</text>")
    return _svg(kind, partition, w, h, out)


def _label_attrs(kind: str, partition: str, label: str) -> str:
    """Rejected rows are numbers only this chart shows: their text carries the data attributes of a metric."""
    if kind != "rejects":
        return ""
    return _attrs({"data-partition": partition, "data-kind": "rejects", "data-reason": label, "data-metric": "rows"})


def _grid(partition: str, output: str, grid: Grid) -> str:
    """The 2-D histogram of champion (x) against challenger (y): cells shaded by the log of their count, so that
    the few rows off the diagonal still show next to the many on it."""
    nx, ny = len(grid.x_edges) - 1, len(grid.y_edges) - 1
    if nx < 1 or ny < 1 or len(grid.counts) != nx or any(len(c) != ny for c in grid.counts):
        return '<p class="note">no champion/challenger grid</p>'
    w, h, left, top, size = 480, 400, 70, 16, 320
    cw, ch = size / nx, size / ny
    most = max((c for column in grid.counts for c in column), default=0)
    out = []
    for i, column in enumerate(grid.counts):
        for j, count in enumerate(column):
            shade = 0.12 + 0.88 * math.log1p(count) / math.log1p(most) if count and most else 0.0
            fill = f'fill="#1d4ed8" fill-opacity="{shade:.3f}"' if count else 'fill="#f3f4f6"'
            out.append(f'<rect x="{left + i * cw:.2f}" y="{top + size - (j + 1) * ch:.2f}" width="{cw:.2f}" '
                       f'height="{ch:.2f}" {fill}><title>champion [{number(grid.x_edges[i])}, '
                       f"{number(grid.x_edges[i + 1])}), challenger [{number(grid.y_edges[j])}, "
                       f"{number(grid.y_edges[j + 1])}): {count} rows</title></rect>")
    if grid.x_edges == grid.y_edges:
        out.append(f'<line class="ref" x1="{left}" y1="{top + size}" x2="{left + size}" y2="{top}"/>')
    out.append(f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" class="axis"/>')
    for k in sorted({0, nx // 2, nx}):
        x = left + k * cw
        out.append(f'<text x="{x:.2f}" y="{top + size + 14}" text-anchor="middle">{number(grid.x_edges[k])}</text>')
    for k in sorted({0, ny // 2, ny}):
        y = top + size - k * ch
        out.append(f'<text x="{left - 6}" y="{y + 4:.2f}" text-anchor="end">{number(grid.y_edges[k])}</text>')
    out.append(f'<text x="{left + size / 2}" y="{top + size + 34}" text-anchor="middle">champion</text>'
               f'<text x="18" y="{top + size / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + size / 2})">challenger</text>'
               f'<text x="{left + size + 8}" y="{top + 12}">max {most}</text>'
               f'<text x="{left + size + 8}" y="{top + 26}">rows/cell</text>')
    return _svg("challenger-grid", partition, w, h, out, column=output)


def _svg(kind: str, partition: str, w: int, h: int, parts: Iterable[str], column: str | None = None) -> str:
    attrs = {"class": "chart", "data-chart": kind, "data-partition": partition}
    if column is not None:
        attrs["data-column"] = column
    label = f"{kind} {partition} {column or ''}".strip()
    return (f'<svg {_attrs(attrs)} width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e(label)}">{"".join(parts)}</svg>')


def _y_axis(ticks: Sequence[float], left: int, top: int, pw: int, ph: int, fmt: Callable[[float], str]) -> str:
    out = []
    for t in ticks:
        y = top + ph - t / ticks[-1] * ph
        out.append(f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{y:.2f}" y2="{y:.2f}" stroke-opacity="0.3"/>'
                   f'<text x="{left - 4}" y="{y + 4:.2f}" text-anchor="end">{_e(fmt(t))}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}"/>')
    return "".join(out)


def _x_axis(ticks: Sequence[float], left: int, top: int, pw: int, ph: int, fmt: Callable[[float], str]) -> str:
    out = [f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}"/>']
    for t in ticks:
        x = left + t / ticks[-1] * pw
        out.append(f'<line class="axis" x1="{x:.2f}" x2="{x:.2f}" y1="{top}" y2="{top + ph + 4}" stroke-opacity="0.3"/>'
                   f'<text x="{x:.2f}" y="{top + ph + 16}" text-anchor="middle">{_e(fmt(t))}</text>')
    return "".join(out)


def _legend(series: Sequence[tuple[str, str, object]], x: int, y: int) -> str:
    out = []
    for name, colour, _ in series:
        out.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14}" y="{y + 9}">{_e(name)}</text>')
        x += 24 + 7 * len(name)
    return "".join(out)


# Tables -------------------------------------------------------------------------------------------------------

def _comparison(partition: str, c: Comparison) -> str:
    head = "".join(f"<th>{m.replace('_', ' ')}</th>" for m in COMPARISON_METRICS)
    cells = "".join(_cell(partition, "comparison", c.output, m, getattr(c, m)) for m in COMPARISON_METRICS)
    return ("<h3>Champion against challenger</h3>"
            f'<div class="scroll"><table><tr><th>challenger</th><th>output</th>{head}</tr>'
            f"<tr><td>{_e(c.challenger)}</td><td>{_e(c.output)}</td>{cells}</tr></table></div>")


def _profiles(partition: str, profiles: Sequence[ColumnProfile]) -> str:
    head = "".join(f"<th>{m}</th>" for m in ("column", "kind", "dtype", *PROFILE_METRICS))
    rows = []
    for p in profiles:
        cells = "".join(_cell(partition, p.kind, p.column, m, profile_value(p, m)) for m in PROFILE_METRICS)
        rows.append(f"<tr><td>{_e(p.column)}</td><td>{_e(p.kind)}</td><td>{_e(p.dtype)}</td>{cells}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'


def profile_value(p: ColumnProfile, metric: str) -> float | None:
    """A profile's value of one of PROFILE_METRICS (quantiles from `quantiles`, psi/js/ks from `drift`)."""
    if metric in TABLE_QUANTILES:
        return p.quantiles.get(metric)
    if metric in ("psi", "js", "ks"):
        return getattr(p.drift, metric) if p.drift is not None else None
    value: float | None = getattr(p, metric)
    return value


def _cell(partition: str, kind: str, column: str, metric: str, value: float | None) -> str:
    attrs = {"data-partition": partition, "data-kind": kind, "data-column": column, "data-metric": metric}
    return f'<td class="num" {_attrs(attrs)}>{number(value)}</td>'


# Small helpers ------------------------------------------------------------------------------------------------

def bin_label(b: Bin, numeric: bool) -> str:
    """A bin as the charts label it: numbers by their edges, "[0.1, 0.2)", "(-inf, 0.1)", "[0.9, +inf)";
    categories by their value."""
    if not numeric:
        return b.label
    lower = "(-inf" if b.lower is None else f"[{number(b.lower)}"
    upper = "+inf" if b.upper is None else number(b.upper)
    return f"{lower}, {upper})"


def _shares(bins: Sequence[Bin], numeric: bool) -> dict[str, float]:
    total = sum(b.count for b in bins)
    found: dict[str, float] = {}
    for b in bins:
        label = bin_label(b, numeric)
        found[label] = found.get(label, 0.0) + (b.count / total if total else 0.0)
    return found


def _ticks(top: float, target: int = 4) -> list[float]:
    """Round tick values from 0 to at least `top`: steps of 1, 2 or 5 times a power of ten."""
    if not top > 0 or not math.isfinite(top):
        top = 1.0
    raw = top / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(s * magnitude for s in (1, 2, 5, 10) if s * magnitude >= raw * (1 - 1e-9))
    return [round(k * step, 12) for k in range(math.ceil(top / step - 1e-9) + 1)]


def _psi_colour(psi: float) -> str:
    return "#16a34a" if psi < PSI_LINES[0] else "#d97706" if psi < PSI_LINES[1] else "#dc2626"


def _short(text: str) -> str:
    return _e(text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…")


def _attrs(attrs: Mapping[str, str]) -> str:
    return " ".join(f'{k}="{_e(v)}"' for k, v in attrs.items())


def _e(text: object) -> str:
    """Every text from users' tables (column names, partition values, reasons, the summary) goes through here."""
    return html.escape(str(text), quote=True)
