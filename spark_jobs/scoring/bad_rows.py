"""Bad rows: features the model cannot take (null, NaN, infinite, or text that does not parse), found in the
JVM before the batch reaches Python, with a reason that names the column and the problem."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.planning.plan import REJECT_REASON, ScoringPlan
from udfs.compat import col, try_cast
from udfs.model_udf import MODEL_ERROR

OUTCOME = "__outcome"  # scored | rejected: the staged rows of one run, split by one write


def reasons(plan: ScoringPlan) -> Column | None:
    """The first problem of a row, or null when the model can take it. A row is tested first with one
    boolean per column (NaN, both infinities, null and a failed cast all fail `abs(x) < inf`); only a bad row
    builds its message from the checks (0.3 s less per 4M rows of 20 doubles than the message's 60 branches on
    every row). Each Column here is a call into the JVM or three: shared ones are made once."""
    checks: list[Column] = []
    bad: list[Column] = []
    infinity = F.lit(float("inf"))
    for f in plan.features:
        missing = col(f.column).isNull()
        checks.append(F.when(missing, F.lit(f"column '{f.column}' is null")))
        value = try_cast(f.column, f.spark_type)
        if f.column in plan.checked:
            checks.append(F.when(value.isNull(),
                                 F.lit(f"column '{f.column}' cannot be cast to {f.spark_type.simpleString()}")))
        if isinstance(f.spark_type, (T.DoubleType, T.FloatType)):
            magnitude = F.abs(value)
            checks.append(F.when(F.isnan(value), F.lit(f"column '{f.column}' is NaN")))
            checks.append(F.when(magnitude == infinity, F.lit(f"column '{f.column}' is infinite")))
            bad.append(~(magnitude < infinity))  # null (missing or not cast) is not less: a bad row
        else:
            bad.append(missing)
            if f.column in plan.checked:
                bad.append(value.isNull())
    if not checks:
        return None
    any_bad = bad[0]
    for b in bad[1:]:
        any_bad = any_bad | b
    return F.when(F.coalesce(any_bad, F.lit(True)), F.coalesce(*checks))


def with_reason(df: DataFrame, reason: Column | None) -> DataFrame:
    """Evaluate the checks once per row, into `reject_reason`: the UDF skips those rows, and the outcome
    reads it back."""
    return df.withColumn(REJECT_REASON, reason if reason is not None else F.lit(None).cast("string"))


def with_outcome(df: DataFrame) -> DataFrame:
    """Name each row's outcome: rejected (its feature problem or the model's error) or scored."""
    why = F.coalesce(col(REJECT_REASON), col(MODEL_ERROR)) if MODEL_ERROR in df.columns else col(REJECT_REASON)
    named = df.withColumns({REJECT_REASON: why,
                            OUTCOME: F.when(why.isNull(), F.lit("scored")).otherwise(F.lit("rejected"))})
    return named.drop(MODEL_ERROR) if MODEL_ERROR in df.columns else named
