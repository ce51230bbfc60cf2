"""Run with spark-submit against a test's own metastore: prints what the metastore publishes (rows,
partition folders) and the run history, as one JSON line, for the fault-injection tests."""

from __future__ import annotations

import json
import sys

from pyspark.sql import SparkSession

from spark_jobs import output, partitions, staging, tables

spark = SparkSession.builder.getOrCreate()
table = sys.argv[1]
info = tables.require(spark, table, "table")
state = {
    "rows": sorted(json.dumps(r.asDict(), default=str, sort_keys=True) for r in spark.table(table).collect()),
    "runs": {r.scoring_run_id: {"status": r.status, "error": r.error}
             for r in spark.table(f"{table}_runs").collect()},
    "published_by": {
        partitions.describe(info.partition_columns, v): (staging.split_location(
            output.location(spark, table, dict(zip(info.partition_columns, v, strict=True)))) or ["", "?"])[1]
        for v in partitions.listed(spark, info)
    },
}
print("INSPECT " + json.dumps(state))
spark.stop()
