"""A class-data archive of Spark's JVM for the suite (Java's AppCDS): every JVM the tests start (the suite's own
session, spark-submit, `python -m`, the console script, a standalone master, worker and executor, the Thrift
server) maps the classes it needs from the archive instead of loading and verifying them from Spark's jars.
Measured on this 2-core machine: a Spark session with the Hive metastore, a table written and read back,
20.5 s without it, 13 s with it (9 s with C1 alone, as the short-lived processes run). The suite is mostly
JVM starts, so this is its largest single saving.

    python -m tests.jvm_classes        writes the archive (`make test` does, once per virtualenv)

The archive belongs to one JDK and one set of Spark jars (a virtualenv's), so it lives in the virtualenv. A
JVM whose JDK or class path differs from the archive's ignores it (Java's default -Xshare:auto) and starts
as it would without one; so does every JVM when the archive was never made."""

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


def java_options() -> str:
    """The JVM option that uses the archive, or nothing when there is none."""
    return f"-XX:SharedArchiveFile={ARCHIVE}" if ARCHIVE.exists() else ""


def _workload(home: str) -> None:
    """What the suite's JVMs do, so that their classes are in the archive: a Hive metastore in Derby, a
    partitioned Parquet table written, altered and read, an Arrow/pandas UDF."""
    from pyspark.sql import SparkSession
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

    def halves(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield batch.assign(id=batch["id"] / 2.0)

    (spark.table("lake.t").where(F.col("ds") == "1").mapInPandas(halves, "id double, ds string")
     .write.mode("overwrite").parquet(f"{home}/out"))
    spark.stop()


def main() -> None:
    """Run the workload in a child whose JVM dumps the classes it loaded at exit; the archive appears whole
    (renamed into place) or not at all."""
    if len(sys.argv) > 1 and sys.argv[1] == "--workload":
        _workload(sys.argv[2])
        return
    with tempfile.TemporaryDirectory(prefix="spark-classes-", dir=ARCHIVE.parent) as home:
        partial = Path(home) / "classes.jsa"
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
               "SPARK_SUBMIT_OPTS": f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} -XX:ArchiveClassesAtExit={partial}"}
        done = subprocess.run([sys.executable, "-m", "tests.jvm_classes", "--workload", home], env=env,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not partial.exists():
            print(f"no class-data archive (the tests run without it): {done.stderr.strip()[-500:]}",
                  file=sys.stderr)
            return
        os.replace(partial, ARCHIVE)
    print(f"wrote {ARCHIVE}")


if __name__ == "__main__":
    main()
