"""Parquet encodings of the files a run writes: a column that the input's own writer stored without a
dictionary is written without one.

Parquet's writer starts a dictionary for every column and gives it up when it outgrows its page (1 MiB): a
column of many distinct values (measurements, amounts, ids) pays for a dictionary on every row and then throws
it away. The scored table carries the input's columns with the input's values, so the input's files already
tell which of them end that way (their first row group has no dictionary page): the write skips those
dictionaries from the start, and the files come out as the input's did. Measured on 4M rows of 20 random
doubles (benchmarks/RESULTS.md): the job's write 9.9 s instead of 11.6 s, files of the same size. A dictionary
setting of the user's own (`parquet.enable.dictionary`, for all columns or one) is left to decide."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from pyspark.sql import SparkSession

log = logging.getLogger("score_table")
_KEY = "parquet.enable.dictionary"


def writer_options(spark: SparkSession, plain: Collection[str], columns: Sequence[str]) -> dict[str, str]:
    """The write's options that turn the dictionary off for those of `columns` (the input's columns as the
    run writes them) which `plain` names (as the input's files name them; case aside)."""
    stored = {c.lower() for c in plain}
    chosen = [c for c in columns if c.lower() in stored]
    if not chosen:
        return {}
    try:
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        if conf.get(_KEY) is not None:
            return {}
        chosen = [c for c in chosen if conf.get(f"{_KEY}#{c}") is None]
    except Exception:  # no JVM session (Spark Connect): the session's settings cannot be read; decide as told
        log.debug("the Hadoop configuration is not readable here", exc_info=True)
    return {f"{_KEY}#{c}": "false" for c in chosen}
