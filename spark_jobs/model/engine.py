"""Which engine scores a run. `sql`: the model translated into Spark expressions (udfs.compiled), run in the
JVM; `udf`: the Arrow/pandas UDF. Under `auto` a model gets `sql` only when it translates and, on this run's
own rows, gives the model's own pyfunc predictions; otherwise `udf`, with the reason logged. The translation
happens from metadata (before data is read, so `--engine sql` on a model that does not translate is exit 2);
the verification compares a sample of the run's rows: under `sql` read before anything is written, under
`auto` as the write scored them (read on the driver from the staged files, `verify_staged`; where the staged
columns are not the model's inputs, collected by the write itself, `sample_of`; else read back with Spark)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_type

from spark_jobs.errors import ScoringError, UsageError
from spark_jobs.planning.plan import REJECT_REASON, ScoringPlan
from spark_jobs.scoring import bad_rows
from spark_jobs.session import runtime_conf
from udfs import ModelSpec, model_cache, score
from udfs.compat import col, try_cast
from udfs.compiled import Feature, Program, Unsupported, native, translate
from udfs.compiled.program import with_stages
from udfs.compiled.verify import compare
from udfs.model_udf import MODEL_ERROR, MODEL_ERROR_PREFIX, predict_batch

log = logging.getLogger("score_table")
Name = Literal["sql", "udf"]
# Tree nodes the sql engine takes as SQL expressions, where the JVM tree evaluator (udfs.compiled.native) is not
# there to run them. Spark compiles such trees into generated Java; the compile time and the per-row cost of the
# nested conditionals grow with the nodes, and past about this many the UDF is faster (measured by `make bench`:
# a 100-tree HistGradientBoosting, about 6,100 nodes, took 70 s in sql against 51 s as a UDF on 4M rows;
# benchmarks/RESULTS.md). Larger ensembles go to the UDF under auto. The evaluator takes any size.
MAX_TREE_NODES = 1_000
VERIFY_SETTINGS = {"spark.sql.execution.arrow.pyspark.enabled": "true"}  # the sample comes back through Arrow
_TRANSLATABLE = (T.BooleanType, T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
                 T.StringType)


@dataclass(frozen=True)
class Choice:
    """The engine a run scores with, why, and (for `sql`) the program and the largest difference found."""

    engine: Name
    reason: str
    program: Program | None = None
    max_diff: float | None = None


def plan(requested: str, model_path: str, scoring: ScoringPlan, params: dict[str, Any],
         inputs_checked: bool, max_nodes: int | None = MAX_TREE_NODES, spark: SparkSession | None = None
         ) -> Choice:
    """Translate the model, from metadata alone. `--engine sql` on a model that does not translate raises
    UsageError (exit 2) naming the part that does not; `auto` falls back to `udf` with that reason.
    `inputs_checked`: bad rows (null, NaN, infinite inputs) never reach the model; `max_nodes`: the largest
    ensemble `auto` takes as SQL expressions (None: any; `--engine sql` takes any, as asked); `spark`: the run's
    session, where trees run as the JVM tree evaluator (udfs.compiled.native, no such limit) if it loads."""
    if requested == "udf":
        return Choice("udf", "--engine udf")
    try:
        program = _translate(model_path, scoring, params, inputs_checked, None if requested == "sql" else max_nodes,
                             spark is not None and native.load(spark))
    except Unsupported as e:
        if requested == "sql":
            raise UsageError(f"--engine sql: the model does not translate: {e}") from None
        return Choice("udf", f"not translated: {e}")
    if requested == "auto" and program.faster_in_library and max_nodes is not None and program.native_nodes > max_nodes:
        return Choice("udf", f"{program.native_nodes:,} tree nodes: {program.faster_in_library}")
    return Choice("sql", program.described, program)


def _translate(model_path: str, scoring: ScoringPlan, params: dict[str, Any], inputs_checked: bool,
               max_nodes: int | None, native: bool) -> Program:
    if scoring.tensor is not None:
        raise Unsupported("a model with a tensor input (only named columns translate)")
    if params:
        raise Unsupported(f"predict params ({', '.join(params)})")
    for f in scoring.features:
        if not isinstance(f.spark_type, _TRANSLATABLE):
            raise Unsupported(f"input '{f.name}' of type {f.spark_type.simpleString()}")
    for o in scoring.outputs.fields:
        if not isinstance(o.dataType, _TRANSLATABLE):
            raise Unsupported(f"output '{o.name}' of type {o.dataType.simpleString()}")
    features = [Feature(f.name, try_cast(f.column, f.spark_type), f.spark_type, f.column) for f in scoring.features]
    return translate(model_path, features, scoring.outputs, inputs_checked, max_nodes, native)


def spark_settings(choice: Choice) -> dict[str, str]:
    """Settings for the queries that run a translated model. Trees: no whole-stage code generation, so each
    tree becomes a method of its own, small enough for the JIT (one stage-wide method of a hundred trees
    exceeds Java's 64 KB limit, and Spark would log the failed compile before falling back)."""
    if choice.program is not None and choice.program.size > 0:
        return {"spark.sql.codegen.wholeStage": "false"}
    return {}


def verify(spark: SparkSession, choice: Choice, selected: DataFrame, reasons: bad_rows.Checks | None, spec: ModelSpec,
           rows: int, tolerance: float, requested: str) -> Choice:
    """Score up to `rows` of the run's own input rows both ways (the rows the model will see: bad rows left
    out unless they pass to the model) and compare. A mismatch: `udf` under auto, a failure under `sql`."""
    if choice.program is None:
        return choice
    sample = bad_rows.good_rows(selected, reasons)
    scored = apply(sample.limit(rows), choice.program, spec.outputs, None, isolate_errors=True)
    return check(spark, choice, scored, spec, tolerance, requested)


def verify_written(spark: SparkSession, choice: Choice, written: DataFrame, spec: ModelSpec, rows: int,
                   tolerance: float, requested: str) -> Choice:
    """The same comparison on up to `rows` of the rows as the run wrote them (`written`: the staged columns),
    so that `auto` makes no second pass over the input: the rows the model saw (not those rejected for their
    inputs), with the error it raised on a row, which the run isolated into the reject reason."""
    if choice.program is None:
        return choice
    error = F.when(col(REJECT_REASON).startswith(F.lit(MODEL_ERROR_PREFIX)), col(REJECT_REASON))
    seen = written.where(col(REJECT_REASON).isNull() | error.isNotNull()).withColumn(MODEL_ERROR, error)
    return check(spark, choice, seen.limit(rows), spec, tolerance, requested)


def model_inputs(spec: ModelSpec) -> list[Column]:
    """The model's inputs as the pyfunc receives them, named as its signature names them."""
    return [try_cast(f.column, f.spark_type).alias(f.name) for f in spec.features]


def check(spark: SparkSession, choice: Choice, scored: DataFrame, spec: ModelSpec, tolerance: float,
          requested: str) -> Choice:
    """Compare rows scored by the translation (the input columns, the outputs and MODEL_ERROR) with the
    model's own pyfunc predictions for the same rows."""
    compiled = scored.select(*model_inputs(spec), *[f.name for f in spec.outputs.fields], MODEL_ERROR)
    with runtime_conf(spark, {**VERIFY_SETTINGS, **spark_settings(choice)}):
        got: pd.DataFrame = compiled.toPandas()
    return _compared(choice, got, spec, tolerance, requested)


def sample_of(df: DataFrame, spec: ModelSpec, drawn: Column) -> Column:
    """The rows the write's observation collects for verification, where `drawn` holds: each the model's
    inputs, the translation's outputs and its error (`df`: the scored rows, before the reject reason takes
    the model's error), over the rows the model saw (not those rejected for their inputs)."""
    error = col(MODEL_ERROR) if MODEL_ERROR in df.columns else F.lit(None).cast(T.StringType())
    row = F.struct(*model_inputs(spec), *[col(f.name) for f in spec.outputs.fields], error.alias(MODEL_ERROR))
    return F.collect_list(F.when(drawn & col(REJECT_REASON).isNull(), row))


def verify_sample(choice: Choice, rows: Sequence[Row], spec: ModelSpec, tolerance: float, requested: str
                  ) -> Choice:
    """The comparison of `check` on the rows the write collected (`sample_of`): no Spark job, no row read
    again. The rows become pandas through Arrow, as the UDF's batches do."""
    fields = [*[T.StructField(f.name, f.spark_type) for f in spec.features], *spec.outputs.fields,
              T.StructField(MODEL_ERROR, T.StringType())]
    got = pd.concat([pa.array([r[i] for r in rows], type=to_arrow_type(f.dataType)).to_pandas()
                     for i, f in enumerate(fields)], axis=1, keys=[f.name for f in fields])
    return _compared(choice, got, spec, tolerance, requested)


def verify_staged(choice: Choice, staged: pa.Table, spec: ModelSpec, rows: int, least: float, tolerance: float,
                  requested: str) -> Choice | None:
    """The comparison of `check` on up to `rows` of the staged rows the model saw (`staged`: the features as
    the model takes them, stored in their own types, the outputs and the reject reason, which holds the model's
    error where it raised), read from their files on the driver: no Spark job, no row read again by Spark. None
    where fewer than `least` are there."""
    reason = staged.column(REJECT_REASON)
    error = pc.if_else(pc.starts_with(pc.fill_null(reason, ""), MODEL_ERROR_PREFIX), reason,
                       pa.scalar(None, pa.string()))
    seen = staged.filter(pc.or_(pc.is_null(reason), pc.is_valid(error)))
    if seen.num_rows < least:
        return None
    picked = [i * seen.num_rows // rows for i in range(rows)] if seen.num_rows > rows else None
    columns = {f.name: seen.column(f.column).cast(to_arrow_type(f.spark_type)) for f in spec.features}
    columns.update({f.name: seen.column(f.name).cast(to_arrow_type(f.dataType)) for f in spec.outputs.fields})
    columns[MODEL_ERROR] = pc.filter(error, pc.or_(pc.is_null(reason), pc.is_valid(error)))
    table = pa.table(columns)
    if picked is not None:
        table = table.take(picked)
    got = pd.concat([c.to_pandas() for c in table.columns], axis=1, keys=table.column_names)
    return _compared(choice, got, spec, tolerance, requested)


def _compared(choice: Choice, got: pd.DataFrame, spec: ModelSpec, tolerance: float, requested: str) -> Choice:
    names = [f.name for f in spec.features]
    outputs = [f.name for f in spec.outputs.fields]
    # the model's own outputs, and its own errors: rows it raises on are bisected out, as the UDF does
    expected = predict_batch(model_cache.load(spec.model_file), got[names], replace(spec, isolate_errors=True))
    result = compare(expected, got[[*outputs, MODEL_ERROR]], [*outputs, MODEL_ERROR], tolerance, [MODEL_ERROR])
    if not result.equal:
        return _mismatch(choice, f"differs from the model: {result.mismatch}", result.max_diff, requested)
    assert choice.program is not None
    return replace(choice, reason=f"{choice.program.described}, verified on {len(got)} rows "
                                  f"(largest difference {result.max_diff:.1e})",
                   max_diff=result.max_diff)


def _mismatch(choice: Choice, problem: str, max_diff: float, requested: str) -> Choice:
    if requested == "sql":
        raise ScoringError(f"--engine sql: verification failed, nothing written: {problem}")
    return Choice("udf", f"verification failed: {problem}", max_diff=max_diff)


def apply(df: DataFrame, program: Program, outputs: T.StructType, skip: Column | None,
          isolate_errors: bool) -> DataFrame:
    """Append the model's outputs computed by `program`, as the UDF would: rows where `skip` holds get nulls;
    rows the model raises on get `__model_error` (isolating errors) or fail the Spark job with the model's
    message. Every input column passes through."""
    df = with_stages(df, [program])
    scored = F.lit(True) if skip is None else ~F.coalesce(skip, F.lit(False))
    error = program.error
    columns: dict[str, Column] = {}
    for i, f in enumerate(outputs.fields):
        value = program.outputs[i].cast(f.dataType)
        if error is not None and not isolate_errors and i == 0:
            raised = F.raise_error(F.concat(F.lit(MODEL_ERROR_PREFIX), error))
            value = F.when(error.isNotNull(), raised).otherwise(value)
        if error is not None and isolate_errors:
            value = F.when(error.isNull(), value)
        columns[f.name] = F.when(scored, value)
    if isolate_errors:
        columns[MODEL_ERROR] = F.when(scored, F.concat(F.lit(MODEL_ERROR_PREFIX), error)) if error is not None \
            else F.lit(None).cast(T.StringType())
    return df.withColumns(columns).drop(*program.columns)


def to_dataframe(df: DataFrame, choice: Choice, spec: ModelSpec, skip: Column | None) -> DataFrame:
    """The scored rows with the chosen engine."""
    if choice.engine == "sql" and choice.program is not None:
        return apply(df, choice.program, spec.outputs, skip, spec.isolate_errors)
    return score(df, spec, skip)
