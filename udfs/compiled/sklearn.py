"""Fitted scikit-learn models, as MLflow's sklearn flavor loads them, as a Program: a bare estimator, or a
Pipeline of preprocessing steps (ColumnTransformer, StandardScaler, MinMaxScaler, SimpleImputer,
OneHotEncoder, passthrough) then an estimator from linear.ESTIMATORS or trees.ESTIMATORS.

The walk mirrors what sklearn does to the pyfunc DataFrame: columns selected by name where the step saw
names at fit time, each block's dtype as numpy promotes it (a block of float32 columns is scaled in float32,
rounded after each in-place operation), and each check that makes sklearn raise, in the order sklearn runs
them, as a `fail_when` with sklearn's first-line message, so a row the model rejects gets the same error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

from udfs.compiled import linear, trees
from udfs.compiled.program import Feature, Program, Unsupported, as_double, as_float32

ESTIMATORS: dict[type, linear.Translator] = {**linear.ESTIMATORS, **trees.ESTIMATORS}
PREDICT_FNS = ("predict", "predict_proba")

# The dtype pandas gives each signature type (integers as float64: a batch with a null holds NaN in them).
_DTYPES: dict[type[T.DataType], str] = {
    T.DoubleType: "float64", T.FloatType: "float32", T.LongType: "int64", T.IntegerType: "int32",
    T.ShortType: "int16", T.ByteType: "int8", T.BooleanType: "bool", T.StringType: "object",
}
_INF = float("inf")


@dataclass(frozen=True)
class Value:
    """One column of what a step receives: a double (NaN for missing) or, for `object`, a string (null for
    None), and the numpy dtype sklearn holds it in."""

    column: Column
    dtype: str
    raw: bool = False  # a model input as it arrived, not yet transformed by a step

    @property
    def text(self) -> bool:
        return self.dtype == "object"


@dataclass(frozen=True)
class Block:
    """A step's input or output: a DataFrame (with `names`) or an ndarray (names None), dense or sparse."""

    values: list[Value]
    names: list[str] | None = None
    sparse: bool = False

    def dtype(self) -> str:
        """The block's dtype as check_array sees it (np.result_type of its columns)."""
        if any(v.text for v in self.values):
            return "object"
        return str(np.result_type(*[np.dtype(v.dtype) for v in self.values])) if self.values else "float64"

    def float_dtype(self) -> str:
        """The dtype a float-only step (scalers, imputer) computes in: float32 stays, all else is float64."""
        return "float32" if self.dtype() == "float32" else "float64"


def translate(model: Any, features: Sequence[Feature], outputs: T.StructType, predict_fn: str,
              inputs_finite: bool = False, max_size: int | None = None, native: bool = False) -> Program:
    """`model`'s `predict_fn` as a Program whose outputs fill `outputs` (cast by the caller); `inputs_finite`,
    `max_size` and `native`: see Program."""
    owner = type(model).__name__
    if predict_fn not in PREDICT_FNS:
        raise Unsupported(f"{owner}: predict_fn {predict_fn} is not supported")
    steps, (final_name, final) = _steps(model, owner)
    program = Program(inputs_finite=inputs_finite, max_size=max_size, native=native)
    block = _frame(program, features, owner)
    for name, step in steps:
        block = _transform(program, step, block, f"{owner}: Pipeline step {name!r}")
    where = f"{owner}: final estimator {final_name!r}" if steps or final is not model else owner
    translator = estimator_translator(final)
    if translator is None:
        raise Unsupported(f"{where}: {type(final).__name__} is not supported")
    library = type(final).__module__.split(".")[0]
    if library == "lightgbm":  # LightGBM takes columns by position, whatever their names
        block = _select(Block(block.values, None, block.sparse), final, where)
        if block.dtype() not in ("float32", "float64"):  # integers reach it as float32 or float64 by batch
            raise Unsupported(f"{where}: {type(final).__name__} on {block.dtype()} columns")
    else:
        block = _select(block, final, where)
        if library == "xgboost" and block.sparse:  # a sparse matrix's absent entries are missing to XGBoost
            raise Unsupported(f"{where}: a sparse matrix reaches {type(final).__name__}")
    if any(v.text for v in block.values):
        raise Unsupported(f"{where}: string columns reach {type(final).__name__}")
    if type(final) in linear.ESTIMATORS:
        if block.dtype() == "float32" and np.asarray(final.coef_).dtype == np.float32:
            raise Unsupported(f"{where}: float32 coefficients on float32 inputs (a float32 BLAS product)")
        _check_finite(program, block, _inf_message(block.dtype()), "Input X contains NaN.")
    program.next_stage()
    columns = translator(program, final, [v.column for v in block.values], predict_fn)
    if len(columns) != len(outputs.fields):
        raise Unsupported(f"{owner}: {predict_fn} gives {len(columns)} outputs where the output schema has "
                          f"{len(outputs.fields)} ({', '.join(outputs.fieldNames())})")
    program.outputs = columns
    return program


def estimator_translator(final: Any) -> linear.Translator | None:
    """The translator of a final estimator: scikit-learn's own, or XGBoost's and LightGBM's scikit-learn
    wrappers (their libraries imported only when the model is one of theirs)."""
    found = ESTIMATORS.get(type(final))
    library = type(final).__module__.split(".")[0]
    if found is None and library in ("xgboost", "lightgbm"):
        from udfs.compiled import lgbm, xgb

        found = (xgb.estimators() if library == "xgboost" else lgbm.estimators()).get(type(final))
    return found


def _steps(model: Any, owner: str) -> tuple[list[tuple[str, Any]], tuple[str, Any]]:
    """The preprocessing steps and the final estimator (nested Pipelines flattened)."""
    if not isinstance(model, Pipeline):
        return [], (owner, model)
    steps: list[tuple[str, Any]] = []
    for name, step in model.steps[:-1]:
        if isinstance(step, Pipeline):
            inner, last = _steps(step, owner)
            steps += [*inner, last]
        else:
            steps.append((name, step))
    name, final = model.steps[-1]
    if isinstance(final, Pipeline):
        inner, last = _steps(final, owner)
        return steps + inner, last
    if final is None or final == "passthrough":
        raise Unsupported(f"{owner}: the final step {name!r} is passthrough: the Pipeline has no {PREDICT_FNS[0]}")
    return steps, (name, final)


def _frame(program: Program, features: Sequence[Feature], owner: str) -> Block:
    """The pyfunc DataFrame: numbers as doubles with NaN where null, strings as strings, in one stage."""
    values = []
    for f in features:
        dtype = _DTYPES.get(type(f.spark_type))
        if dtype is None:
            raise Unsupported(f"{owner}: input {f.name!r} has type {f.spark_type.simpleString()}")
        column = f.column if dtype == "object" else F.when(f.column.isNull(), F.lit(float("nan"))).otherwise(
            as_double(f.column))
        # a double input column is this value itself to the tree evaluator (null and NaN are both missing)
        source = f.source if isinstance(f.spark_type, T.DoubleType) else None
        values.append(Value(program.let(column, source), dtype, raw=True))
    program.next_stage()
    return Block(values, [f.name for f in features])


def _select(block: Block, step: Any, where: str) -> Block:
    """What `step` takes from `block`: by name where it saw names at fit time (a DataFrame in the signature's
    order), else every column in order."""
    expected = getattr(step, "feature_names_in_", None)
    if expected is not None and block.names is not None:
        index = {n: i for i, n in enumerate(block.names)}
        lost = [str(n) for n in expected if n not in index]
        if lost:
            raise Unsupported(f"{where}: input {lost[0]!r} is not among the model's inputs")
        return Block([block.values[index[n]] for n in expected], [str(n) for n in expected], block.sparse)
    width = getattr(step, "n_features_in_", len(block.values))
    if width != len(block.values):
        raise Unsupported(f"{where}: {type(step).__name__} takes {width} features, it gets {len(block.values)}")
    return block


def _transform(program: Program, step: Any, block: Block, where: str) -> Block:
    """One preprocessing step; its outputs computed in a stage of their own."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return block
    if isinstance(step, Pipeline):
        for name, inner in step.steps:
            block = _transform(program, inner, block, f"{where}: Pipeline step {name!r}")
        return block
    transform = _TRANSFORMERS.get(type(step))
    if transform is None:
        raise Unsupported(f"{where}: {type(step).__name__} is not supported")
    block = _select(block, step, where)
    if type(step) in _NUMERIC_ONLY and any(v.text for v in block.values):
        raise Unsupported(f"{where}: {type(step).__name__} on string columns is not supported")
    out = transform(program, step, block, where)
    program.next_stage()
    return out


def _rounding(dtype: str) -> Callable[[Column], Column]:
    """Each in-place operation on a float32 array rounds its result to float32."""
    return as_float32 if dtype == "float32" else (lambda c: c)


def _is_inf(value: Column) -> Column:
    return F.abs(value) == F.lit(_INF)


def _let_all(program: Program, columns: Sequence[Column], dtype: str) -> list[Value]:
    return [Value(program.let(c), dtype) for c in columns]


def _check_finite(program: Program, block: Block, inf_message: str, nan_message: str | None = None) -> None:
    """check_array's finiteness check on one row: the first non-finite value in column order names the error
    (NaN only where `nan_message` is given: the step does not allow NaN)."""
    if block.dtype() == "object":
        return
    for v in block.values:
        if v.raw and program.inputs_finite:
            continue
        if nan_message is not None:
            program.fail_when(F.isnan(v.column), nan_message)
        program.fail_when(_is_inf(v.column), inf_message)


def _inf_message(dtype: str, name: str = "X ") -> str:
    return f"Input {name}contains infinity or a value too large for dtype('{dtype}')."


def _standard_scaler(program: Program, step: StandardScaler, block: Block, where: str) -> Block:
    """X -= mean_; X /= scale_ (a sparse X: times 1 / scale_, no centering), in the block's float dtype."""
    dtype = block.float_dtype()
    _check_finite(program, block, _inf_message(dtype))
    rnd = _rounding(dtype)
    cast = np.float32 if dtype == "float32" else np.float64
    columns = []
    for j, v in enumerate(block.values):
        x = v.column
        if step.mean_ is not None and not block.sparse:
            x = rnd(x - F.lit(float(cast(step.mean_[j]))))
        if step.scale_ is not None:
            scale = step.scale_[j]
            x = rnd(x * F.lit(float(1.0 / scale))) if block.sparse else rnd(x / F.lit(float(cast(scale))))
        columns.append(x)
    return Block(_let_all(program, columns, dtype), sparse=block.sparse)


def _min_max_scaler(program: Program, step: MinMaxScaler, block: Block, where: str) -> Block:
    """X *= scale_; X += min_; then np.clip to feature_range (NaN stays NaN, as in numpy)."""
    dtype = block.float_dtype()
    _check_finite(program, block, _inf_message(dtype))
    rnd = _rounding(dtype)
    cast = np.float32 if dtype == "float32" else np.float64
    low, high = (F.lit(float(cast(b))) for b in step.feature_range)
    columns = []
    for j, v in enumerate(block.values):
        x = rnd(rnd(v.column * F.lit(float(step.scale_[j]))) + F.lit(float(step.min_[j])))
        if step.clip:
            x = F.when(F.isnan(x), x).otherwise(F.least(F.greatest(x, low), high))
        columns.append(x)
    return Block(_let_all(program, columns, dtype))


def _simple_imputer(program: Program, step: SimpleImputer, block: Block, where: str) -> Block:
    """NaN replaced by statistics_ (in the block's dtype); a feature whose statistic is NaN is dropped unless
    keep_empty_features; missing indicators appended. On strings, missing_values=NaN never matches the None
    a null string arrives as, so strings pass through unchanged."""
    if not _is_nan(step.missing_values):
        raise Unsupported(f"{where}: SimpleImputer with missing_values={step.missing_values!r} is not supported")
    if block.sparse:
        raise Unsupported(f"{where}: SimpleImputer on a sparse matrix is not supported")
    text = all(v.text for v in block.values)
    if not text and any(v.text for v in block.values):
        raise Unsupported(f"{where}: SimpleImputer on string and numeric columns together is not supported")
    dtype = "object" if text else block.float_dtype()
    if not text:
        _check_finite(program, block, _inf_message(dtype))
    cast = np.float32 if dtype == "float32" else np.float64
    columns = []
    for v, stat in zip(block.values, step.statistics_, strict=True):
        if _is_nan(stat) and not step.keep_empty_features:
            continue
        columns.append(v.column if text else F.when(F.isnan(v.column), F.lit(float(cast(stat)))).otherwise(v.column))
    indicator = getattr(step, "indicator_", None) if step.add_indicator else None
    if indicator is not None:
        if text and len(indicator.features_):
            raise Unsupported(f"{where}: SimpleImputer missing indicators on string columns are not supported")
        columns += [F.when(F.isnan(block.values[j].column), F.lit(1.0)).otherwise(F.lit(0.0))
                    for j in indicator.features_]
    return Block(_let_all(program, columns, dtype))


def _one_hot_encoder(program: Program, step: OneHotEncoder, block: Block, where: str) -> Block:
    """One 0/1 column per category but the dropped one; an unknown value gives zeros, or fails with sklearn's
    message under handle_unknown='error' (after every column's finiteness check, as _check_X runs first)."""
    if getattr(step, "_infrequent_enabled", False):
        raise Unsupported(f"{where}: OneHotEncoder with infrequent categories is not supported")
    if block.sparse:
        raise Unsupported(f"{where}: OneHotEncoder on a sparse matrix is not supported")
    frame = block.names is not None  # a DataFrame is checked column by column, in each column's dtype
    array_dtype = block.dtype()
    dtypes = [v.dtype if frame else array_dtype for v in block.values]
    for v, dtype in zip(block.values, dtypes, strict=True):
        if dtype in ("float32", "float64"):
            program.fail_when(_is_inf(v.column), _inf_message(dtype, ""))
    drops = step._drop_idx_after_grouping
    columns = []
    for i, (v, dtype, categories) in enumerate(zip(block.values, dtypes, step.categories_, strict=True)):
        text = categories.dtype == object
        if text != (dtype == "object") or (text and not all(c is None or isinstance(c, str) for c in categories)):
            raise Unsupported(f"{where}: OneHotEncoder categories {categories.dtype} for a {dtype} column")
        matches = [_matches(v.column, c, text) for c in categories]
        if step.handle_unknown == "error":
            known = F.lit(False)
            for m in matches:
                known = known | m
            program.fail_when(~known, F.concat(F.lit("Found unknown categories ["), _py_repr(program, v.column, dtype),
                                                 F.lit(f"] in column {i} during transform")))
        drop = None if drops is None or drops[i] is None else int(drops[i])
        columns += [F.when(m, F.lit(1.0)).otherwise(F.lit(0.0)) for j, m in enumerate(matches) if j != drop]
    return Block(_let_all(program, columns, np.dtype(step.dtype).name), sparse=bool(step.sparse_output))


def _column_transformer(program: Program, step: ColumnTransformer, block: Block, where: str) -> Block:
    """Each fitted transformer on its columns (a sub-DataFrame where the input is one), outputs concatenated
    in transformers_ order (the remainder last) and promoted to one dtype as np.hstack does."""
    outputs: list[Value] = []
    for name, transformer, _ in step.transformers_:
        indices = step._transformer_to_input_indices.get(name, [])
        if (isinstance(transformer, str) and transformer == "drop") or not len(indices):
            continue
        names = None if block.names is None else [block.names[i] for i in indices]
        sub = Block([block.values[i] for i in indices], names)
        inner = f"{where}: ColumnTransformer transformer {name!r}"
        if isinstance(transformer, str) and transformer == "passthrough":
            outputs += sub.values
        else:
            outputs += _transform(program, transformer, sub, inner).values
    dtype = Block(outputs).dtype()
    return Block([Value(v.column, dtype) for v in outputs], sparse=bool(step.sparse_output_))


def _function_transformer(program: Program, step: FunctionTransformer, block: Block, where: str) -> Block:
    """Only the identity (what a ColumnTransformer makes of 'passthrough')."""
    if step.func is not None:
        raise Unsupported(f"{where}: FunctionTransformer with func={getattr(step.func, '__name__', step.func)}")
    return block


_TRANSFORMERS: dict[type, Callable[[Program, Any, Block, str], Block]] = {
    StandardScaler: _standard_scaler,
    MinMaxScaler: _min_max_scaler,
    SimpleImputer: _simple_imputer,
    OneHotEncoder: _one_hot_encoder,
    ColumnTransformer: _column_transformer,
    FunctionTransformer: _function_transformer,
}
_NUMERIC_ONLY = (StandardScaler, MinMaxScaler)


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def _matches(value: Column, category: Any, text: bool) -> Column:
    """Whether a value is `category` as sklearn's _encode sees it (NaN and None match themselves)."""
    if text:
        return value.isNull() if category is None else F.coalesce(value == F.lit(category), F.lit(False))
    if _is_nan(category):
        return F.isnan(value)
    return ~F.isnan(value) & (value == F.lit(float(category)))


def _py_repr(program: Program, value: Column, dtype: str) -> Column:
    """repr() of the value as it sits in a numpy array of `dtype` (numpy 2 scalar reprs: np.float64(5.0),
    np.int64(3); a Python str repr for strings, None for null)."""
    if dtype == "object":
        return F.when(value.isNull(), F.lit("None")).otherwise(_str_repr(value))
    if dtype == "bool":
        return F.when(value == 1.0, F.lit("np.True_")).otherwise(F.lit("np.False_"))
    if dtype.startswith("int"):  # a null made the column float64 in pandas
        return F.when(F.isnan(value), F.lit("np.float64(nan)")).otherwise(
            F.concat(F.lit(f"np.{dtype}("), value.cast(T.LongType()).cast(T.StringType()), F.lit(")")))
    text = (value.cast(T.FloatType()) if dtype == "float32" else value).cast(T.StringType())
    return F.concat(F.lit(f"np.{dtype}("), _float_repr(program, text), F.lit(")"))


def _str_repr(value: Column) -> Column:
    """Python's repr of a str: single quotes unless it holds ' and no ", backslash, tab, newline and return
    escaped (other unprintable characters are not escaped here)."""
    escaped = value
    for char, escape in (("\\\\", "\\\\\\\\"), ("\n", "\\\\n"), ("\r", "\\\\r"), ("\t", "\\\\t")):
        escaped = F.regexp_replace(escaped, char, escape)
    double = value.contains("'") & ~value.contains('"')
    return F.when(double, F.concat(F.lit('"'), escaped, F.lit('"'))).otherwise(
        F.concat(F.lit("'"), F.regexp_replace(escaped, "'", "\\\\'"), F.lit("'")))


def _float_repr(program: Program, java: Column) -> Column:
    """Java's shortest float text (1.0E20, 1.0E-5, NaN, Infinity) as Python's repr writes it (1e+20, 1e-05,
    nan, inf): Java uses an exponent outside [1e-3, 1e7), Python outside [1e-4, 1e16). The parts are staged:
    inlined, each would be recomputed in every branch that reads it (minutes of planning)."""
    java = program.let(java)
    program.next_stage()
    body = program.let(F.regexp_replace(java, "^-", ""))
    program.next_stage()
    exponent = program.let(F.regexp_extract(body, r"E(-?[0-9]+)$", 1).try_cast(T.IntegerType()))
    digits = program.let(F.regexp_replace(F.regexp_replace(F.regexp_extract(body, r"^([0-9.]+)E", 1), r"\.", ""),
                                          "0+$", ""))
    program.next_stage()
    sign = F.when(java.startswith("-"), F.lit("-")).otherwise(F.lit(""))
    n = F.length(digits)
    whole = F.when(n <= exponent + 1, F.concat(F.rpad(digits, exponent + 1, "0"), F.lit(".0"))).otherwise(
        F.concat(F.substring(digits, 1, exponent + 1), F.lit("."), F.substring(digits, exponent + 2, 1 << 20)))
    small = F.concat(F.lit("0."), F.repeat(F.lit("0"), -exponent - 1), digits)
    scientific = F.concat(
        F.substring(digits, 1, 1), F.when(n > 1, F.concat(F.lit("."), F.substring(digits, 2, 1 << 20))).otherwise(""),
        F.lit("e"), F.when(exponent < 0, F.lit("-")).otherwise(F.lit("+")),
        F.lpad(F.abs(exponent).cast("string"), 2, "0"))
    formatted = (F.when(body == "NaN", F.lit("nan")).when(body == "Infinity", F.lit("inf"))
                 .when(~body.contains("E"), body)
                 .when((exponent >= 0) & (exponent < 16), whole)
                 .when((exponent >= -4) & (exponent < 0), small)
                 .otherwise(scientific))
    return F.when(body == "NaN", formatted).otherwise(F.concat(sign, formatted))

