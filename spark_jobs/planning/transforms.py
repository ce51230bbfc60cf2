"""Per-row SQL transforms: columns the operator's profile adds or replaces before the model sees a row
(`transform: {tenure_years: tenure_days / 365.25}`). Each expression is parsed and analysed by Spark itself
(`F.expr`, never pasted into SQL text) and must be a deterministic expression over one row: an aggregate,
a window, a generator, a subquery or a non-deterministic function would make a row's score depend on other
rows or on the run, so each is refused (exit 2) before any data is read, naming the column."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.errors import UsageError, one_line

# pyspark logs a failed analysis (with its JVM stack) before raising it; here the error is the user's input
# and becomes one line of its own.
_PYSPARK_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


def apply(df: DataFrame, transforms: Mapping[str, str]) -> DataFrame:
    """The transforms in order: each may use the columns of the ones before it."""
    for name, text in transforms.items():
        df = df.withColumn(name, F.expr(text))
    return df


def check(df: DataFrame, transforms: Mapping[str, str], partition_columns: Sequence[str]) -> DataFrame:
    """Apply and check every transform on the input's plan (analysis only, no data read); UsageError names
    the first one that is not a deterministic row-level expression over the columns before it."""
    parts = {c.lower() for c in partition_columns}
    quiet = [logging.getLogger(n) for n in _PYSPARK_LOGGERS]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    try:
        for name, text in transforms.items():
            if name.lower() in parts:
                raise UsageError(f"transform '{name}' would replace a partition column: partitions are selected, "
                                 "fingerprinted and published by their stored values")
            df = _one(df, name, text)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    return df


def _one(df: DataFrame, name: str, text: str) -> DataFrame:
    try:
        out = df.withColumn(name, F.expr(text))
    except ParseException as e:
        raise UsageError(f"transform '{name}' is not a Spark SQL expression: {_first(e)}") from None
    except AnalysisException as e:
        raise UsageError(f"transform '{name}': {_first(e)}") from None
    problem = _row_level_problem(out, df)
    if problem:
        raise UsageError(f"transform '{name}' {problem}; only per-row expressions are allowed")
    return out


def _row_level_problem(out: DataFrame, before: DataFrame) -> str | None:
    """Why the analysed plan of `out` is not one projection, deterministic and without subqueries, straight
    over the plan of `before` (a window or a generator adds plan nodes of its own)."""
    plan: Any = out._jdf.queryExecution().analyzed()
    child = plan.children().apply(0) if plan.children().size() == 1 else None
    if plan.nodeName() != "Project" or child is None or not child.equals(before._jdf.queryExecution().analyzed()):
        return "is a window function or a generator (it would combine or multiply rows)"
    if not plan.subqueries().isEmpty():
        return "contains a subquery"
    expressions = plan.projectList()
    if not all(expressions.apply(i).deterministic() for i in range(expressions.size())):
        return "is not deterministic (the same row would score differently from run to run)"
    return None


def _first(e: Exception) -> str:
    text = one_line(e)
    if "MISSING_GROUP_BY" in text or "is not an aggregate function" in text:
        return "an aggregate over rows is not a per-row expression"
    return text
