"""`make bench`: whole spark-submits of (a) this job, (b) the same read-score-write with
mlflow.pyfunc.spark_udf, (c) the same read and write with no model (the floor), and (d) the model's raw
single-process predict, interleaved and repeated; medians, rows/s, the targets' ratios, peak memory; a
JSON and a PNG chart under benchmarks/results/.

    python -m benchmarks.bench [--rows 4000000] [--features 20] [--partitions 4] [--repeats 3]
                               [--scaling 1000000,8000000] [--models lr,hgb,rf,xgb,lgbm] [--small 10000] [--sql]
                               [--home .local/bench]

The job runs twice per model and round: `job` with the default engine (auto) and `job_udf` with
--engine udf (and `job_sql` with --engine sql, given --sql). `small`: one partition of `--small` rows of a
4-partition table, the whole job (engine auto) against a spark-submit that reads and writes that partition
with no model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.data import MODELS, START
from benchmarks.procmon import Monitor
from spark_jobs import jvm_classes
from spark_jobs.session import JVM_OPTIONS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# As the README runs spark-submit, with the job's JIT settings (spark_jobs.session.JVM_OPTIONS) and the
# virtualenv's class-data archive (spark_jobs.jvm_classes; `make bench` makes it); every variant gets them, the
# floor and spark_udf included, so the comparison stays like for like.
SUBMIT = [str(BIN / "spark-submit"), "--driver-java-options", f"{JVM_OPTIONS} {jvm_classes.java_options()}".strip()]


def table_name(rows: int) -> str:
    return f"bench.features_{rows}"


class Bench:
    def __init__(self, home: Path) -> None:
        self.home = home
        uri = f"sqlite:///{home / 'mlflow.db'}"
        self.env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
                    "SPARK_LOCAL_IP": "127.0.0.1", "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
        self.records: list[dict[str, Any]] = []

    def call(self, cmd: list[str]) -> str:
        done = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench: {' '.join(cmd[:4])} ... failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def timed(self, variant: str, model: str, rows: int, cmd: list[str]) -> dict[str, Any]:
        """One spark-submit, wall clock from launch to exit, with the peak memory of its processes."""
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        with Monitor(proc.pid) as mon:
            stdout, stderr = proc.communicate()
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"bench: {variant} {model} failed:\n{stderr[-3000:]}")
        p = mon.peaks
        record = {"variant": variant, "model": model, "rows": rows, "seconds": round(seconds, 2),
                  "jvm_mb": round(p.jvm_mb), "driver_python_mb": round(p.driver_python_mb),
                  "worker_mb": round(p.worker_mb), "workers_total_mb": round(p.workers_total_mb)}
        engine = next((line.split(":", 1)[1].strip() for line in stdout.splitlines() if line.startswith("engine:")),
                      None)
        if engine:
            record["engine"] = engine
        quality = next((line for line in stdout.splitlines() if line.startswith("quality: ")), None)
        if quality:  # "quality: 4 partition(s) profiled in 2.1 s": the profiles' share of the run
            record["quality_s"] = float(quality.rsplit(" in ", 1)[1].split()[0])
        self.records.append(record)
        print(f"  {variant:<11} {model:<4} {rows:>9} rows  {seconds:7.1f} s  worker peak {p.worker_mb:5.0f} MB  "
              f"JVM peak {p.jvm_mb:5.0f} MB  {engine or ''}", flush=True)
        return record

    def job(self, model: str, rows: int, batch_size: int | None, engine: str = "auto",
            ds: str | None = None) -> dict[str, Any]:
        variant = {"auto": "job", "udf": "job_udf", "sql": "job_sql"}[engine] if ds is None else "small"
        cmd = [*SUBMIT, "spark_jobs/score_table.py", "--config", str(self.home / "profile.yaml"),
               "--model-uri", f"models:/{MODELS[model]}@champion", "--input-table", table_name(rows),
               "--output-table", f"bench.scored_{variant}_{model}_{rows}", "--engine", engine]
        if batch_size:
            cmd += ["--batch-size", str(batch_size)]
        if ds:
            cmd += ["--partition", f"ds={ds}"]
        return self.timed(variant, model, rows, cmd)

    def plain(self, model: str | None, rows: int, ds: str | None = None) -> dict[str, Any]:
        cmd = [*SUBMIT, "benchmarks/plain_job.py", "--home", str(self.home),
               "--input", table_name(rows), *(["--ds", ds] if ds else [])]
        if model is None:
            variant = "floor" if ds is None else "small_floor"
            return self.timed(variant, "-", rows, [*cmd, "--output", f"bench.{variant}_{rows}"])
        return self.timed("spark_udf", model, rows, [*cmd, "--output", f"bench.scored_udf_{model}_{rows}",
                                                     "--model-uri", f"models:/{MODELS[model]}@champion"])

    def raw(self, model: str, rows: int) -> dict[str, Any]:
        out = json.loads(self.call([sys.executable, "-m", "benchmarks.raw_predict", "--home", str(self.home),
                                    "--table", table_name(rows), "--model-uri", f"models:/{MODELS[model]}@champion"]))
        record = {"variant": "raw_predict", "model": model, "rows": rows, "seconds": round(out["raw_s"], 3),
                  "pyfunc_seconds": round(out["pyfunc_s"], 3)}
        self.records.append(record)
        print(f"  raw       {model:<4} {rows:>9} rows  {out['raw_s']:7.2f} s  (pyfunc.predict {out['pyfunc_s']:.2f} s)",
              flush=True)
        return record


def median(records: list[dict[str, Any]], variant: str, model: str, rows: int, key: str = "seconds") -> float:
    values = [r[key] for r in records if (r["variant"], r["model"], r["rows"]) == (variant, model, rows) and key in r]
    return statistics.median(values) if values else float("nan")


def engine_of(records: list[dict[str, Any]], variant: str, model: str, rows: int) -> str:
    """The engine the job's runs got ("sql", "udf"; "sql/udf" if rounds differed)."""
    got = sorted({r["engine"].split(" ", 1)[0] for r in records
                  if (r["variant"], r["model"], r["rows"]) == (variant, model, rows) and "engine" in r})
    return "/".join(got) or "-"


def row_of(records: list[dict[str, Any]], variant: str, model: str, rows: int) -> dict[str, Any]:
    s = median(records, variant, model, rows)
    return {"variant": variant, "model": model, "seconds": s, "rows_per_s": rows / s,
            "worker_mb": median(records, variant, model, rows, "worker_mb"),
            "jvm_mb": median(records, variant, model, rows, "jvm_mb"),
            "engine": engine_of(records, variant, model, rows)}


def summarize(records: list[dict[str, Any]], rows: int, models: list[str], scaling: list[int],
              cores: int, small: int) -> dict[str, Any]:
    floor = median(records, "floor", "-", rows)
    table = [row_of(records, "floor", "-", rows)]
    targets: dict[str, Any] = {}
    for m in models:
        variants = ("job", "job_udf", "job_sql", "spark_udf") if any(
            (r["variant"], r["model"]) == ("job_sql", m) for r in records) else ("job", "job_udf", "spark_udf")
        table += [row_of(records, variant, m, rows) for variant in variants]
        raw = median(records, "raw_predict", m, rows)
        table.append({"variant": "raw_predict", "model": m, "seconds": raw, "rows_per_s": rows / raw,
                      "pyfunc_seconds": median(records, "raw_predict", m, rows, "pyfunc_seconds")})
        job, job_udf, udf = (median(records, v, m, rows) for v in ("job", "job_udf", "spark_udf"))
        engine = engine_of(records, "job", m, rows)
        if m in ("lr", "hgb", "xgb", "lgbm"):
            over = (job - floor) / (udf - floor)
            targets[f"{m}: (job - floor) / (spark_udf - floor) <= 0.3 (engine {engine})"] = over
        if "job_sql" in variants:
            targets[f"{m}: engine sql: (job_sql - floor) / (spark_udf - floor)"] = (
                (median(records, "job_sql", m, rows) - floor) / (udf - floor))
        targets[f"{m}: engine udf: (job_udf - floor) / (spark_udf - floor) <= 1.0"] = (
            (job_udf - floor) / (udf - floor))
        targets[f"{m}: auto / udf <= 1.1"] = job / job_udf
        quality = median(records, "job", m, rows, "quality_s")
        targets[f"{m}: profiles and drift / the whole job <= 0.10 ({quality:.1f} s)"] = quality / job
    if small:
        model = "lr" if "lr" in models else models[0]
        job_small, floor_small = median(records, "small", model, small), median(records, "small_floor", "-", small)
        table += [row_of(records, "small_floor", "-", small), row_of(records, "small", model, small)]
        name = f"{model}: one {small // 4:,}-row partition: job / no-model spark-submit <= 1.25"
        targets[name] = job_small / floor_small
    if len(scaling) >= 2:
        lo, hi = min(scaling), max(scaling)
        model = "hgb" if "hgb" in models else models[0]
        spent = {n: median(records, "job", model, n) - median(records, "floor", "-", n) for n in (lo, hi)}
        targets[f"{model}: scoring time {hi:,} rows / {lo:,} rows <= {1.1 * hi / lo:.1f}"] = spent[hi] / spent[lo]
        targets[f"{model}: peak worker memory {hi:,} rows / {lo:,} rows (flat: ~1)"] = (
            median(records, "job", model, hi, "worker_mb") / median(records, "job", model, lo, "worker_mb"))
    return {"table": table, "targets": targets}


def markdown(summary: dict[str, Any], rows: int) -> str:
    lines = ["| variant | model | engine | median s | rows/s | peak worker MB | peak JVM MB |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in summary["table"]:
        extra = f" (pyfunc {r['pyfunc_seconds']:.2f} s)" if "pyfunc_seconds" in r else ""
        lines.append(f"| {r['variant']} | {r['model']} | {r.get('engine', '-')} | {r['seconds']:.2f}{extra} | "
                     f"{r['rows_per_s']:,.0f} | {r.get('worker_mb', float('nan')):.0f} | "
                     f"{r.get('jvm_mb', float('nan')):.0f} |")
    lines += ["", f"Targets ({rows:,} rows):", ""]
    lines += [f"- {name}: **{value:.2f}**" for name, value in summary["targets"].items()]
    return "\n".join(lines)


def chart(records: list[dict[str, Any]], summary: dict[str, Any], rows: int, scaling: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if len(scaling) >= 2 else 1, figsize=(12, 4.5), squeeze=False)
    ax = axes[0][0]
    bars = [r for r in summary["table"]]
    labels = [f"{r['variant']}\n{r['model']}" for r in bars]
    colors = {"job": "tab:green", "job_udf": "tab:olive", "job_sql": "tab:cyan", "spark_udf": "tab:red",
              "floor": "tab:gray", "raw_predict": "tab:blue", "small": "tab:green", "small_floor": "tab:gray"}
    ax.bar(labels, [r["seconds"] for r in bars], color=[colors[r["variant"]] for r in bars])
    ax.set_ylabel("seconds (median, whole spark-submit)")
    ax.set_title(f"{rows:,} rows: this job vs spark_udf, floor, raw predict (1 thread)")
    ax.tick_params(axis="x", labelsize=8)
    if len(scaling) >= 2:
        ax2 = axes[0][1]
        sizes = sorted({r["rows"] for r in records if r["variant"] == "job"})
        for variant, model in (("job", "hgb" if any(r["model"] == "hgb" for r in records) else "lr"),
                               ("floor", "-")):
            ax2.plot(sizes, [median(records, variant, model, n) for n in sizes], marker="o", label=variant)
        ax2.set_xlabel("rows")
        ax2.set_ylabel("seconds")
        ax2.set_title("scaling")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench")
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scaling", default="1000000,8000000", help="row counts for the scaling runs ('' for none)")
    p.add_argument("--scaling-repeats", type=int, default=1)
    p.add_argument("--models", default="lr,hgb,rf,xgb,lgbm")
    p.add_argument("--small", type=int, default=40_000,
                   help="rows of the 4-partition table whose one partition is the small run (0: none)")
    p.add_argument("--batch-size", type=int, default=None, help="the job's --batch-size (default: its own)")
    p.add_argument("--sql", action="store_true",
                   help="also run the job with --engine sql (what a model over auto's node budget costs in the JVM)")
    p.add_argument("--home", default=".local/bench")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    models = [m for m in args.models.split(",") if m]
    scaling = [int(n) for n in args.scaling.split(",") if n]
    home, out = (REPO / args.home).resolve(), (REPO / args.out).resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    (home / "profile.yaml").write_text(f"spark:\n  local_home: {home}\n")
    bench, cores = Bench(home), os.cpu_count() or 1

    sizes = sorted({args.rows, *scaling, *([args.small] if args.small else [])})
    print(f"preparing {', '.join(f'{n:,}' for n in sizes)} rows x {args.features} features, models {models}",
          flush=True)
    bench.call([sys.executable, "-m", "benchmarks.data", "--home", str(home), "--features", str(args.features),
                "--partitions", str(args.partitions), "--models", ",".join(models),
                *[a for n in sizes for a in ("--table", f"{table_name(n)}:{n}")]])
    small_ds = START.isoformat()

    print(f"measuring {args.rows:,} rows, {args.repeats} rounds (interleaved)", flush=True)
    for m in models:
        bench.raw(m, args.rows)
    for i in range(args.repeats):
        print(f"round {i + 1}", flush=True)
        bench.plain(None, args.rows)
        for m in models:
            bench.job(m, args.rows, args.batch_size)
            bench.job(m, args.rows, args.batch_size, engine="udf")
            if args.sql:
                bench.job(m, args.rows, args.batch_size, engine="sql")
            bench.plain(m, args.rows)
        if args.small:
            bench.plain(None, args.small, ds=small_ds)
            bench.job("lr" if "lr" in models else models[0], args.small, args.batch_size, ds=small_ds)
    extra = [n for n in scaling if n != args.rows]
    for i in range(args.scaling_repeats if extra else 0):
        print(f"scaling round {i + 1}", flush=True)
        for n in extra:
            bench.plain(None, n)
            bench.job("hgb" if "hgb" in models else models[0], n, args.batch_size)

    identical = json.loads(bench.call([sys.executable, "-m", "benchmarks.compare", "--home", str(home), *[
        a for m in models for v in ("job", "job_udf", *(["job_sql"] if args.sql else []))
        for a in ("--pair", f"bench.scored_{v}_{m}_{args.rows}:bench.scored_udf_{m}_{args.rows}")]]))
    summary = summarize(bench.records, args.rows, models, scaling, cores, args.small)
    result = {
        "machine": {"cores": cores, "platform": platform.platform(), "python": platform.python_version()},
        "versions": versions(),
        "args": vars(args), "records": bench.records, "summary": summary, "identical_predictions": identical,
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=str))
    chart(bench.records, summary, args.rows, scaling, out / "bench.png")
    print()
    print(markdown(summary, args.rows))
    print(f"\npredictions vs spark_udf (rows, rows that differ): {identical}")
    print(f"saved {out / 'bench.json'} and {out / 'bench.png'}")
    if any(v["different"] for v in identical.values()):
        raise SystemExit("bench: predictions differ from spark_udf's")


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {p: version(p) for p in ("pyspark", "mlflow", "pandas", "pyarrow", "numpy", "scikit-learn", "xgboost",
                                     "lightgbm")}
    return {**found, "jvm_options": SUBMIT[2]}


if __name__ == "__main__":
    main()
