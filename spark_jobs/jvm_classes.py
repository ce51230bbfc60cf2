"""A class-data archive of Spark's JVM (Java's AppCDS) for the driver's JVM on this machine. A run's JVM loads,
parses and verifies about 20,000 classes from Spark's jars before it reads a row: on 2 cores that is half the
JVM's CPU in a 10,000-row partition's run (10.6 of 22.8 CPU-seconds, HotSpot's own counters). With the archive
the JVM maps them ready-made instead. Measured (benchmarks/RESULTS.md): a 10,000-row partition's run 6-7 s
faster, a 4M-row run 7-8 s; the suite's JVMs use it as well.

    python -m spark_jobs.jvm_classes                 writes the archive (`make venv` does, once per virtualenv)
    python -m spark_jobs.jvm_classes --java-option   prints the JVM option that uses it (nothing without one)

The archive belongs to one JDK and one set of Spark jars (a virtualenv's), so it lives in the virtualenv, and
it is made on the machine that runs the job (a cluster's driver image would make its own). A JVM whose JDK or
class path differs from the archive's ignores it (Java's default -Xshare:auto, with one warning line) and
starts as it would without one; `java_options` gives nothing where no archive was made."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ARCHIVE = Path(sys.prefix) / "spark-classes.jsa"
OPTION = "SharedArchiveFile"  # a user's own archive (-XX:SharedArchiveFile=...) wins


def java_options() -> str:
    """The JVM option that uses the archive, or nothing when there is none (naming a missing archive would
    turn off the JDK's own default archive too)."""
    return f"-XX:{OPTION}={ARCHIVE}" if ARCHIVE.exists() else ""


def _workload(home: str) -> None:
    """What a run's JVM does, so that its classes are in the archive: a Hive metastore in Derby, a partitioned
    Parquet table written, altered, described and read, an observed and sorted write, an Arrow/pandas UDF."""
    from pyspark.sql import Observation, SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.master("local[2]").enableHiveSupport()
             .config("spark.sql.warehouse.dir", f"{home}/warehouse")
             .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                     f"jdbc:derby:;databaseName={home}/metastore_db;create=true")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sql("CREATE DATABASE IF NOT EXISTS lake")
    df = spark.range(1000).select(F.col("id"), (F.col("id") % 3).cast("string").alias("ds"))
    df.write.mode("overwrite").partitionBy("ds").format("parquet").saveAsTable("lake.t")
    spark.sql("CREATE TABLE lake.u (id BIGINT, ds STRING) USING parquet PARTITIONED BY (ds)")
    spark.sql(f"ALTER TABLE lake.u ADD PARTITION (ds = '0') LOCATION '{home}/warehouse/lake.db/t/ds=0'")
    spark.sql("DESCRIBE TABLE EXTENDED lake.u PARTITION (ds = '0')").collect()
    seen = Observation("seen")
    (spark.table("lake.t").withColumn("x", F.when(F.col("id").isNull(), F.lit("null")).otherwise(F.lit("ok")))
     .observe(seen, F.count(F.lit(1)).alias("rows")).sortWithinPartitions("ds", "x")
     .write.mode("overwrite").partitionBy("ds", "x").parquet(f"{home}/observed"))
    seen.get  # noqa: B018 - waits for the metrics

    def halves(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield batch.assign(id=batch["id"] / 2.0)

    (spark.table("lake.t").where(F.col("ds") == "1").mapInPandas(halves, "id double, ds string")
     .write.mode("overwrite").parquet(f"{home}/out"))
    spark.stop()


def make() -> bool:
    """Run the workload in a child whose JVM dumps the classes it loaded at exit; the archive appears whole
    (renamed into place) or not at all. False (and why, on stderr) where it could not be made."""
    try:
        with tempfile.TemporaryDirectory(prefix="spark-classes-", dir=ARCHIVE.parent) as home:
            partial = Path(home) / "classes.jsa"
            env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
                   "SPARK_SUBMIT_OPTS": f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} "
                                        f"-XX:ArchiveClassesAtExit={partial}"}
            done = subprocess.run([sys.executable, "-m", "spark_jobs.jvm_classes", "--workload", home], env=env,
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not partial.exists():
                why = done.stderr.strip()[-500:] or f"exit code {done.returncode}"
                print(f"no class-data archive (the job runs without it): {why}", file=sys.stderr)
                return False
            os.replace(partial, ARCHIVE)
    except (OSError, subprocess.TimeoutExpired) as e:  # a virtualenv not ours to write, a JVM that hung
        print(f"no class-data archive at {ARCHIVE} (the job runs without it): {e}", file=sys.stderr)
        return False
    return True


def main() -> None:
    if sys.argv[1:2] == ["--workload"]:
        _workload(sys.argv[2])
    elif sys.argv[1:2] == ["--java-option"]:
        print(java_options())
    elif make():
        print(f"wrote {ARCHIVE}")


if __name__ == "__main__":
    main()
