"""This project's own JVM classes (udfs/jvm, built by `make` into udfs/jvm/score-table.jar and shipped in the
wheel): the tree evaluator (udfs.compiled.native) and the staging write's constant columns
(spark_jobs.publishing.constant_columns). Each is optional: where the jar is missing, the session has no JVM of
its own (Spark Connect) or a class does not load, its caller takes its other path and says so once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

log = logging.getLogger("score_table")
JAR = Path(__file__).resolve().parent / "jvm" / "score-table.jar"

_added: dict[int, bool] = {}  # per JVM gateway: whether the jar is in the session's class loader


def load_class(spark: SparkSession, name: str) -> Any | None:
    """The class `name` from the jar, added to `spark` (its driver's loader and every executor's) once per JVM;
    None where it cannot be (the reason logged by the caller's `what`)."""
    gateway = getattr(spark.sparkContext, "_gateway", None) if hasattr(spark, "_jsparkSession") else None
    if gateway is None or not JAR.exists():
        return None
    session = spark._jsparkSession  # type: ignore[attr-defined]
    if id(gateway) not in _added:
        try:
            session.sessionState().resourceLoader().addJar(str(JAR))
            _added[id(gateway)] = True
        except Exception as e:  # a locked-down cluster
            log.debug("could not add %s to the session: %s", JAR.name, e)
            _added[id(gateway)] = False
    if not _added[id(gateway)]:
        return None
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    return jvm.java.lang.Class.forName(name, True, session.sharedState().jarClassLoader())
