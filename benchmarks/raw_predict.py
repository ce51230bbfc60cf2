"""(d) The hardware floor for a model: its raw `predict` on the same rows, in one process, one thread.

    python -m benchmarks.raw_predict --home H --table bench.features_4m --model-uri models:/bench_hgb@champion

Prints one JSON line: rows, seconds of predict alone (features already in memory), and of pyfunc predict.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlflow
import pyarrow.dataset as ds
from threadpoolctl import threadpool_limits

from spark_jobs.config import embedded_tracking_uri


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--home", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--model-uri", required=True)
    args = p.parse_args()
    mlflow.set_tracking_uri(embedded_tracking_uri(args.home))
    db, name = args.table.split(".")
    folder = Path(args.home).resolve() / "warehouse" / f"{db}.db" / name
    frame = ds.dataset(str(folder), format="parquet", partitioning="hive").to_table().to_pandas()
    pyfunc = mlflow.pyfunc.load_model(args.model_uri)
    raw = pyfunc.get_raw_model()
    X = frame[[c for c in frame.columns if c not in ("id", "ds")]]
    with threadpool_limits(1):  # Spark runs one single-threaded Python worker per core (OMP_NUM_THREADS=1)
        t0 = time.perf_counter()
        raw.predict(X)
        t1 = time.perf_counter()
        pyfunc.predict(X)
        t2 = time.perf_counter()
    print(json.dumps({"rows": len(X), "raw_s": t1 - t0, "pyfunc_s": t2 - t1}))


if __name__ == "__main__":
    main()
