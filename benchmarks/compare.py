"""Predictions of this job and of spark_udf on the same rows must be identical: count the rows that differ.

    python -m benchmarks.compare --home H --pair bench.scored_job_hgb:bench.scored_udf_hgb ...
"""

from __future__ import annotations

import argparse
import json

from pyspark.sql import functions as F

from spark_jobs.session import session_for


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
        row = joined.agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum((~F.col("a").eqNullSafe(F.col("b"))).cast("int")).alias("different"),
        ).first()
        assert row is not None
        out[pair] = {"rows": row["rows"], "different": row["different"]}
    print(json.dumps(out))
    spark.stop()


if __name__ == "__main__":
    main()
