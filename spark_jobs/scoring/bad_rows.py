"""Bad rows: features the model cannot take (null, NaN, infinite, or text that does not parse), found in the
JVM before the batch reaches Python, with a reason that names the column and the problem."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.planning.plan import REJECT_REASON, ScoringPlan
from udfs.compat import col, try_cast
from udfs.model_udf import MODEL_ERROR

OUTCOME = "__outcome"  # scored | rejected: the staged rows of one run, split by one write
_BAD_AT = "__bad_at"  # the position of a row's first bad feature, between the two projections of the checks


@dataclass(frozen=True)
class Checks:
    """The feature checks of a plan: `at`, the position (from 1) of a row's first bad feature, null for a row
    the model can take (0 for a row that only looked suspect); `message`, the reject reason, read from `at`."""

    at: Column
    message: Column


def reasons(plan: ScoringPlan) -> Checks | None:
    """The first problem of a row, or null when the model can take it: the first feature, in the plan's
    order, that is null, does not cast, is NaN or is infinite (in that order for one feature).

    Every row pays for one test: the sum of the floating features (NaN, an infinity or a null makes the sum
    fail `abs(sum) < inf`) and a null test of the others. Only a row that fails it looks for its feature,
    and the message is read from arrays at that feature's position instead of a branch per check: for 20
    doubles the write's generated method shrinks from 10,829 to 7,105 bytes of bytecode, which the JVM
    compiles two or three times per run (under the 8,000 bytes where HotSpot's defaults stop compiling). A
    sum that overflows only sends a good row down that path, which finds nothing. `with_reason` adds the
    position and the message as two projections, so the position is computed once per bad row."""
    if not plan.features:
        return None
    infinity = F.lit(float("inf"))
    total: Column | None = None
    others: list[Column] = []
    bad: list[Column] = []  # per feature: it cannot be taken (null, not cast, NaN or infinite)
    missing: list[Column] = []
    not_cast: list[Column] = []
    values: list[Column] = []  # per feature: its value as a double, for NaN against infinite
    for f in plan.features:
        is_null = col(f.column).isNull()
        value = try_cast(f.column, f.spark_type)
        checked = f.column in plan.checked
        missing.append(is_null)
        not_cast.append(value.isNull() & ~is_null if checked else F.lit(False))
        if isinstance(f.spark_type, (T.DoubleType, T.FloatType)):
            total = value if total is None else total + value
            bad.append(~F.coalesce(F.abs(value) < infinity, F.lit(False)))  # null: missing or not cast
            values.append(value.cast(T.DoubleType()))
        else:
            others.append(value.isNull() if checked else is_null)
            bad.append(value.isNull() if checked else is_null)
            values.append(F.lit(0.0))
    suspect = [~(F.abs(total) < infinity)] if total is not None else []
    any_suspect = suspect + others
    guard = any_suspect[0]
    for b in any_suspect[1:]:
        guard = guard | b
    at = F.array_position(F.array(*bad), True).cast(T.IntegerType())
    return Checks(F.when(F.coalesce(guard, F.lit(True)), at), _message(plan, missing, not_cast, values))


def _message(plan: ScoringPlan, missing: list[Column], not_cast: list[Column], values: list[Column]) -> Column:
    """The message of the feature at `_BAD_AT`: its name and problem, picked from per-feature arrays."""
    at = col(_BAD_AT)

    def pick(items: list[Column]) -> Column:
        return F.element_at(F.array(*items), at)

    names = pick([F.lit(f.column) for f in plan.features])
    types = pick([F.lit(f.spark_type.simpleString()) for f in plan.features])
    value = pick(values)
    problem = (F.when(pick(missing), F.lit("is null"))
               .when(pick(not_cast), F.concat(F.lit("cannot be cast to "), types))
               .when(F.isnan(value), F.lit("is NaN"))
               .otherwise(F.lit("is infinite")))
    return F.when(at > 0, F.concat(F.lit("column '"), names, F.lit("' "), problem))


def with_reason(df: DataFrame, checks: Checks | None) -> DataFrame:
    """Evaluate the checks once per row, into `reject_reason`: the UDF skips those rows, and the outcome
    reads it back. Two projections, which Spark keeps apart (the second reads the position five times), so
    that a bad row finds its feature once."""
    if checks is None:
        return df.withColumn(REJECT_REASON, F.lit(None).cast("string"))
    return df.withColumn(_BAD_AT, checks.at).withColumn(REJECT_REASON, checks.message).drop(_BAD_AT)


def good_rows(df: DataFrame, checks: Checks | None) -> DataFrame:
    """The rows the model can take."""
    if checks is None:
        return df
    return df.transform(with_reason, checks).where(col(REJECT_REASON).isNull()).drop(REJECT_REASON)


def with_outcome(df: DataFrame) -> DataFrame:
    """Name each row's outcome: rejected (its feature problem or the model's error) or scored."""
    why = F.coalesce(col(REJECT_REASON), col(MODEL_ERROR)) if MODEL_ERROR in df.columns else col(REJECT_REASON)
    named = df.withColumns({REJECT_REASON: why,
                            OUTCOME: F.when(why.isNull(), F.lit("scored")).otherwise(F.lit("rejected"))})
    return named.drop(MODEL_ERROR) if MODEL_ERROR in df.columns else named
