"""The reject reason of every kind of bad feature, against a reason worked out in Python row by row."""

from __future__ import annotations

import math
import random
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from spark_jobs.planning.plan import REJECT_REASON, ScoringPlan, Selection
from spark_jobs.scoring import bad_rows
from udfs import FeatureColumn

# (column, stored type, the model's type, whether the plan checks its cast)
COLUMNS = [
    ("a", T.DoubleType(), T.DoubleType(), False),
    ("b", T.FloatType(), T.FloatType(), False),
    ("c", T.StringType(), T.DoubleType(), True),
    ("d", T.IntegerType(), T.LongType(), False),
    ("e", T.StringType(), T.IntegerType(), True),
    ("f", T.DoubleType(), T.DoubleType(), False),
]
DOUBLES = [0.0, -2.5, 1e308, -1e308, 3.4e38, float("nan"), float("inf"), float("-inf"), None]
TEXTS = ["1.5", "-7", "1e308", "NaN", "Infinity", "-Infinity", "x", "", None]
INTS = ["12", "-3", "2147483648", "1.5", "y", None]


def expected(row: tuple[Any, ...]) -> str | None:
    """The first feature that is null, does not cast, is NaN or is infinite, as a person reads the rules."""
    for (name, _, model_type, checked), value in zip(COLUMNS, row, strict=True):
        if value is None:
            return f"column '{name}' is null"
        if checked and isinstance(model_type, T.DoubleType):
            try:
                value = float(value)
            except ValueError:
                return f"column '{name}' cannot be cast to double"
        if checked and isinstance(model_type, T.IntegerType):
            try:
                value = int(value)
                if not -2**31 <= value < 2**31:
                    raise ValueError(value)
            except ValueError:
                return f"column '{name}' cannot be cast to int"
        if isinstance(value, float) and math.isnan(value):
            return f"column '{name}' is NaN"
        if isinstance(value, float) and math.isinf(value):
            return f"column '{name}' is infinite"
    return None


def test_reasons_name_the_first_bad_feature_and_its_problem(spark: SparkSession) -> None:
    rng = random.Random(7)
    rows = []
    for _ in range(600):
        good = rng.random() < 0.4  # many rows with every feature fine, a sum of 1e308s that overflows among them
        rows.append((
            rng.choice(DOUBLES[:5] if good else DOUBLES),
            rng.choice([0.5, -3.0, 3.0e38] if good else [0.5, 3.0e38, float("nan"), float("inf"), None]),
            rng.choice(TEXTS[:3] if good else TEXTS),
            rng.choice([1, -5] if good else [1, None]),
            rng.choice(INTS[:2] if good else INTS),
            rng.choice(DOUBLES[:5] if good else DOUBLES),
        ))
    schema = T.StructType([T.StructField(n, stored) for n, stored, _, _ in COLUMNS])
    df = spark.createDataFrame(rows, schema).withColumn("id", F.monotonically_increasing_id())
    plan = ScoringPlan(features=tuple(FeatureColumn(n, n, t) for n, _, t, _ in COLUMNS), outputs=T.StructType(),
                       output_schema=T.StructType(), partition_columns=(), selection=Selection(None, "all"),
                       checked=tuple(n for n, _, _, checked in COLUMNS if checked))
    checks = bad_rows.reasons(plan)
    got = bad_rows.with_reason(df, checks).select("id", *[n for n, *_ in COLUMNS], REJECT_REASON)
    local = [(r.id, *[r[n] for n, *_ in COLUMNS]) for r in df.collect()]
    want = spark.createDataFrame([(*r, expected(r[1:])) for r in local],
                                 T.StructType([T.StructField("id", T.LongType(), False), *schema.fields,
                                               T.StructField(REJECT_REASON, T.StringType())]))
    assert {r[-1] is None for r in want.collect()} == {True, False}
    assertDataFrameEqual(got, want)
    # the rows the model can take (the translation's verification sample) are exactly those without a reason
    assertDataFrameEqual(bad_rows.good_rows(df, checks).select("id", *[n for n, *_ in COLUMNS]),
                         want.where(want[REJECT_REASON].isNull()).drop(REJECT_REASON))
