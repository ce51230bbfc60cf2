"""The pipelines this job is compared with, each run with spark-submit in a fresh session, as a user would:

    spark-submit benchmarks/plain_job.py --home H --input T --output O --model-uri models:/bench_hgb@champion
        (b) the plain MLflow way: read, score with mlflow.pyfunc.spark_udf (env_manager local), write
    spark-submit benchmarks/plain_job.py --home H --input T --output O
        (c) the floor: the same read and write with no model at all

Both use the job's embedded-default session settings, and write a Parquet table partitioned like the input.
"""

from __future__ import annotations

import argparse
import sys
import time

from pyspark.sql import functions as F

from spark_jobs.session import session_for


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--home", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--model-uri")
    p.add_argument("--ds", help="only this partition (as the job's --partition ds=...)")
    args = p.parse_args()
    started = time.monotonic()
    spark = session_for(True, args.home)
    df = spark.table(args.input)
    if args.ds:
        df = df.where(F.col("ds") == F.lit(args.ds).cast("date"))
    features = [c for c in df.columns if c not in ("id", "ds")]
    if args.model_uri:
        import mlflow.pyfunc

        udf = mlflow.pyfunc.spark_udf(spark, args.model_uri, env_manager="local", result_type="double")
        scored = df.withColumn("prediction", udf(*features))
    else:
        scored = df.withColumn("prediction", F.lit(0.0))
    scored.write.mode("overwrite").partitionBy("ds").format("parquet").saveAsTable(args.output)
    print(f"wrote {args.output} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    spark.stop()


if __name__ == "__main__":
    main()
