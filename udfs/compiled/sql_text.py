"""A Program as the text of one SQL query over a table, for a view the metastore stores as text: each stage a
subquery over the one before, each expression printed by Spark itself from its analyzed form
(`Expression.sql`), so that names come back backtick-quoted and literals in the form Spark parses to the same
value (doubles as Java's round-trip `toString` with a `D` suffix, strings escaped). Nothing is pasted in: the
table name is checked and quoted by the caller, every other part is an expression Spark has resolved."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from udfs.compiled.program import Program

ALIAS = "__s"  # the subqueries' names; the program's own columns start with PREFIX


def query(source: DataFrame, source_sql: str, program: Program, final: Sequence[Column]) -> str:
    """The SQL of `source` (whose text is `source_sql`, e.g. a quoted table name) with the program's stages
    and then the `final` columns (each aliased)."""
    text, df, n = f"SELECT * FROM {source_sql}", source.alias(f"{ALIAS}0"), 0
    for stage in program.stages:
        if not stage:
            continue
        # a view's program has no tree evaluator (Program.native is off for views): its query is SQL text
        columns = [expr.alias(name) for name, expr in stage if isinstance(expr, Column)]
        assert len(columns) == len(stage), "a view's program runs no JVM tree evaluator"
        text = f"SELECT *, {', '.join(_sql(df, columns))} FROM ({text}) AS `{ALIAS}{n}`"
        n += 1
        df = df.select("*", *columns).alias(f"{ALIAS}{n}")
    return f"SELECT {', '.join(_sql(df, final))} FROM ({text}) AS `{ALIAS}{n}`"


def _sql(df: DataFrame, columns: Sequence[Column]) -> list[str]:
    """Each column as Spark prints it once resolved against `df`."""
    items = df.select(*columns)._jdf.queryExecution().analyzed().projectList()
    return [str(items.apply(i).sql()) for i in range(items.length())]


def literals(spark: SparkSession, values: Sequence[str]) -> list[str]:
    """String literals as Spark prints them (quoted, escaped): parsed back, each gives the same string."""
    items = spark.range(1).select(*[F.lit(v) for v in values])._jdf.queryExecution().analyzed().projectList()
    return [str(items.apply(i).child().sql()) for i in range(items.length())]
