"""Predictions of this job and of spark_udf on the same rows must agree: labels exactly, scores within the
engine tolerance (udfs.compiled.verify: |a - b| <= 1e-9 * max(|a|, |b|, 1)). Counts the rows that differ and
the largest scaled difference.

    python -m benchmarks.compare --home H --pair bench.scored_job_hgb:bench.scored_udf_hgb ...
"""

from __future__ import annotations

import argparse
import json

from pyspark.sql import functions as F

from spark_jobs.session import session_for
from udfs.compiled.verify import DEFAULT_TOLERANCE


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--home", required=True)
    p.add_argument("--pair", action="append", required=True, help="OURS:THEIRS")
    args = p.parse_args()
    spark = session_for(True, args.home)
    out = {}
    for pair in args.pair:
        ours, theirs = pair.split(":")
        a = spark.table(ours).select("id", F.col("prediction").cast("double").alias("a"))
        b = spark.table(theirs).select("id", F.col("prediction").cast("double").alias("b"))
        joined = a.join(b, "id", "full_outer")
        scale = F.greatest(F.abs("a"), F.abs("b"), F.lit(1.0))
        diff = F.when(F.col("a").eqNullSafe(F.col("b")), F.lit(0.0)).otherwise(F.abs(F.col("a") - F.col("b")) / scale)
        row = joined.agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum((F.coalesce(diff, F.lit(float("inf"))) > DEFAULT_TOLERANCE).cast("int")).alias("different"),
            F.max(diff).alias("max_diff"),
        ).first()
        assert row is not None
        out[pair] = {"rows": row["rows"], "different": row["different"], "max_diff": row["max_diff"]}
    print(json.dumps(out))
    spark.stop()


if __name__ == "__main__":
    main()
