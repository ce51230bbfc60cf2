"""The bench's three pipelines in one warm session, the way a long-lived driver (a Databricks job cluster, a
notebook, a scheduler that keeps its driver) runs them: what a run costs once the JVM's classes are loaded and
its code compiled, which `make bench` (a fresh spark-submit per run) cannot show.

    spark-submit --driver-java-options "$(python -c 'from spark_jobs.session import JVM_OPTIONS; print(JVM_OPTIONS)')" \
        benchmarks/warm_session.py --home .local/bench [--rows 4000000] [--model lr] [--rounds 4]

Each round runs, in this order, the floor (read and write, no model), the plain `mlflow.pyfunc.spark_udf`
pipeline and this job (`spark_jobs.scoring.job.run`, engine auto, its whole run: history, quality, publish,
MLflow run). The first round is the cold one; the medians are over the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from benchmarks.bench import table_name
from spark_jobs.config import parse_args
from spark_jobs.scoring.job import run
from spark_jobs.session import session_for


def _plain(spark: SparkSession, source: str, target: str, score: Callable[[DataFrame], DataFrame]) -> None:
    """benchmarks/plain_job.py's read and write."""
    score(spark.table(source)).write.mode("overwrite").partitionBy("ds").format("parquet").saveAsTable(target)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--home", required=True)
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--model", default="lr")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("score_table").setLevel(logging.INFO)  # the job's phases, with their times
    spark = session_for(True, args.home)
    source, uri = table_name(args.rows), f"models:/bench_{args.model}@champion"
    features = [c for c in spark.table(source).columns if c not in ("id", "ds")]

    def floor() -> None:
        _plain(spark, source, "bench.warm_floor", lambda df: df.withColumn("prediction", F.lit(0.0)))

    def spark_udf() -> None:
        import mlflow.pyfunc

        udf = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local", result_type="double")
        _plain(spark, source, "bench.warm_spark_udf", lambda df: df.withColumn("prediction", udf(*features)))

    def job() -> None:
        run(spark, parse_args(["--config", f"{args.home}/profile.yaml", "--model-uri", uri, "--input-table",
                               source, "--output-table", f"bench.warm_job_{args.model}"]))

    seconds: dict[str, list[float]] = {"floor": [], "spark_udf": [], "job": []}
    for r in range(args.rounds):
        for name, step in (("floor", floor), ("spark_udf", spark_udf), ("job", job)):
            started = time.monotonic()
            step()
            seconds[name].append(round(time.monotonic() - started, 2))
            print(f"round {r + 1} {name}: {seconds[name][-1]:.2f} s", file=sys.stderr)
    warm = {k: statistics.median(v[1:]) for k, v in seconds.items()} if args.rounds > 1 else {}
    ratio = (warm["job"] - warm["floor"]) / (warm["spark_udf"] - warm["floor"]) if warm else None
    print(json.dumps({"rows": args.rows, "model": args.model, "seconds": seconds, "warm_medians": warm,
                      "job_over_floor_vs_spark_udf_over_floor": ratio}, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
