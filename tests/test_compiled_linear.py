"""Translated linear models and preprocessing (udfs.compiled.sklearn, udfs.compiled.linear) against the
models' own predictions: every case is fitted on small random data, scored on edge rows (zeros, NaN and
null, infinities, large and tiny magnitudes, unseen categories) by its Program in Spark and by the model, and
compared with verify.compare; rows the model raises on must carry its message. All cases run in one Spark
job (a union), so the suite stays fast."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, PolynomialFeatures, StandardScaler

from udfs.compiled import Feature, Program, Unsupported
from udfs.compiled import sklearn as compiled
from udfs.compiled.program import with_stages
from udfs.compiled.verify import compare

NAN, INF = float("nan"), float("inf")
SCHEMA = T.StructType([
    T.StructField("a", T.DoubleType()), T.StructField("b", T.DoubleType()), T.StructField("c", T.DoubleType()),
    T.StructField("z", T.DoubleType()), T.StructField("f", T.FloatType()), T.StructField("g", T.FloatType()),
    T.StructField("k", T.DoubleType()), T.StructField("n", T.LongType()), T.StructField("s", T.StringType()),
])
DTYPES = {"a": "float64", "b": "float64", "c": "float64", "z": "float64", "f": "float32", "g": "float32",
          "k": "float64", "n": "float64", "s": "object"}  # n: int64 unless null, as pandas holds it
EDGE_ROWS = [
    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 0, "red"),
    (1e12, -3e11, 2e11, 7.0, 1e6, 3e5, 1e20, 10**12, "green"),
    (1e-300, -5e-310, 1e-8, 7.0, 1e-30, -2e-20, 1e-5, -3, "blue"),
    (NAN, 1.0, 2.0, 7.0, NAN, 1.0, NAN, None, None),
    (None, 2.0, None, None, 1.5, None, 12345678.5, 7, "purple"),
    (INF, 1.0, 0.0, 7.0, 2.0, 0.5, 1.5, 1, "red"),
    (1.0, -INF, 0.5, 7.0, INF, 1.0, INF, 2, "it's"),
    (2.5, 0.1, -1.0, 7.0, 3.0, -INF, 3.0, 99, 'say "hi"\n'),
    (-4.0, 3.0, 1.0, 7.0, -2.0, 2.0, 0.5, 4, "blue"),
]


def _train(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(0, 2, rows), rng.normal(1, 1, rows), rng.uniform(-1, 1, rows)
    return pd.DataFrame({
        "a": np.where(rng.random(rows) < 0.1, np.nan, a), "b": b, "c": c, "z": np.full(rows, 7.0),
        "f": rng.normal(0, 3, rows).astype(np.float32), "g": rng.uniform(0, 2, rows).astype(np.float32),
        "k": rng.choice([0.0, 1.5, 3.0, np.nan], rows), "n": rng.integers(0, 5, rows),
        "s": rng.choice(["red", "green", "blue"], rows),
    }).assign(score=lambda d: 3 * d.b - 2 * d.c + d.f + rng.normal(0, 0.1, rows))


TRAIN = _train()
TARGETS: dict[str, Callable[[pd.DataFrame], Any]] = {
    "regression": lambda d: d.score.to_numpy(),
    "binary": lambda d: (d.score > 2).astype(int).to_numpy(),
    "multiclass": lambda d: np.select([d.score < 0, d.score < 4], ["low", "mid"], "high"),
}


@dataclass(frozen=True)
class Case:
    id: str
    model: Callable[[], Any]  # unfitted
    columns: tuple[str, ...]  # the signature's inputs, in order
    target: str = "regression"
    predict_fn: str = "predict"
    ndarray: bool = False  # fitted on an ndarray: no feature names, columns taken in order
    imputes: bool = False  # fitted with the NaNs in `a` (else they are zeros)

    def fit(self) -> Any:
        x = TRAIN[list(self.columns)]
        x = x if self.imputes else x.fillna({"a": 0.0})
        return self.model().fit(x.to_numpy() if self.ndarray else x, TARGETS[self.target](TRAIN))


def _float32_and_b(transformer: Any) -> ColumnTransformer:
    """`transformer` on the float32 columns (so it computes in float32), b passed through: the estimator gets
    float64 and fits float64 coefficients (float32 ones on float32 inputs compute in float32: Unsupported)."""
    return ColumnTransformer([("f32", transformer, ["f", "g"])], remainder="passthrough")


def _num_cat(encoder: OneHotEncoder) -> ColumnTransformer:
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["a", "b"]),
        ("cat", encoder, ["s"]),
    ], remainder="passthrough")


CASES = [
    Case("linear_regression", LinearRegression, ("a", "b", "c")),
    Case("ridge_ndarray", lambda: Ridge(alpha=0.5), ("b", "c", "f"), ndarray=True),
    Case("lasso", lambda: Lasso(alpha=0.3), ("a", "b", "c", "f")),
    Case("elastic_net", lambda: ElasticNet(alpha=0.2, l1_ratio=0.3), ("b", "c", "f")),
    Case("logistic_binary", LogisticRegression, ("b", "c", "f"), "binary"),
    Case("logistic_binary_proba", LogisticRegression, ("b", "c", "f"), "binary", "predict_proba"),
    Case("logistic_multinomial_ties", lambda: LogisticRegression(fit_intercept=False), ("b", "c", "f"),
         "multiclass"),
    Case("logistic_multinomial_proba", lambda: LogisticRegression(C=10.0), ("b", "c", "f"), "multiclass",
         "predict_proba"),
    Case("scaler_zero_variance", lambda: make_pipeline(StandardScaler(), LinearRegression()), ("b", "z", "c")),
    Case("scaler_float32", lambda: make_pipeline(_float32_and_b(StandardScaler()), Ridge()), ("f", "g", "b")),
    Case("minmax_clip", lambda: make_pipeline(MinMaxScaler((-1, 2), clip=True), LogisticRegression()),
         ("b", "c", "g"), "binary", "predict_proba"),
    Case("minmax_float32", lambda: make_pipeline(_float32_and_b(MinMaxScaler()), LinearRegression()),
         ("f", "g", "b")),
    Case("impute_mean_indicator", lambda: make_pipeline(SimpleImputer(add_indicator=True), LinearRegression()),
         ("a", "b", "c"), imputes=True),
    Case("impute_constant_float32", lambda: make_pipeline(_float32_and_b(make_pipeline(
        SimpleImputer(strategy="constant", fill_value=-1.5), StandardScaler())), Lasso(alpha=0.01)), ("f", "g", "b")),
    Case("column_transformer_onehot_ignore",
         lambda: Pipeline([("prep", _num_cat(OneHotEncoder(handle_unknown="ignore"))),
                           ("clf", LogisticRegression())]), ("a", "b", "s", "c"), "multiclass", imputes=True),
    Case("column_transformer_onehot_ignore_proba",
         lambda: Pipeline([("prep", _num_cat(OneHotEncoder(handle_unknown="ignore", sparse_output=False))),
                           ("clf", LogisticRegression())]), ("a", "b", "s", "c"), "multiclass", "predict_proba",
         imputes=True),
    Case("onehot_error_drop_first",
         lambda: make_pipeline(ColumnTransformer([("cat", OneHotEncoder(drop="first"), ["s", "n"])],
                                                 remainder="drop"), Ridge()), ("b", "s", "n")),
    Case("onehot_numeric_by_index",
         lambda: make_pipeline(ColumnTransformer([("cat", OneHotEncoder(drop="if_binary"), [1, 2]),
                                                  ("gone", "drop", [0]),
                                                  ("scale", StandardScaler(), [3])], remainder="passthrough"),
                               LinearRegression()), ("c", "k", "n", "b", "f")),
    Case("onehot_sparse_scaled",
         lambda: make_pipeline(OneHotEncoder(handle_unknown="ignore"), StandardScaler(with_mean=False),
                               LinearRegression()), ("s",)),
    Case("impute_strings_most_frequent",
         lambda: make_pipeline(ColumnTransformer([
             ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()), ["s"]),
             ("num", SimpleImputer(strategy="median"), ["a"])]), LogisticRegression()), ("s", "a", "b"), "binary",
         imputes=True),
]


def _pyfunc_frame(rows: list[tuple[Any, ...]], columns: tuple[str, ...]) -> pd.DataFrame:
    """The edge rows as the pyfunc model gets them: numbers with NaN for null, strings with None."""
    frame = pd.DataFrame(rows, columns=SCHEMA.fieldNames())[list(columns)]
    for name in columns:
        dtype = DTYPES[name]
        if name == "n" and frame[name].notna().all():
            dtype = "int64"
        frame[name] = frame[name].astype(dtype) if dtype != "object" else frame[name].astype(object)
    return frame


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def expected(model: Any, frame: pd.DataFrame, predict_fn: str) -> tuple[pd.DataFrame, list[str | None]]:
    """The model's outputs row by row (each row alone, as the job's error isolation scores it) and its
    first-line error message where it raises."""
    outputs, errors = [], []
    for i in range(len(frame)):
        row = frame.iloc[[i]].reset_index(drop=True)
        row = row.astype({c: "int64" for c in row.columns if c == "n" and row[c].notna().all()})
        try:
            outputs.append(np.asarray(getattr(model, predict_fn)(row)).reshape(1, -1)[0])
            errors.append(None)
        except ValueError as e:
            outputs.append(None)
            errors.append(f"ValueError: {_first_line(e)}")
    width = max((len(o) for o in outputs if o is not None), default=1)
    gap = np.full(width, np.nan) if predict_fn == "predict_proba" else np.full(width, None, dtype=object)
    filled = np.stack([o if o is not None else gap for o in outputs])
    frame = pd.DataFrame(filled).rename(columns=lambda j: f"out_{j}")
    return frame.infer_objects() if predict_fn == "predict_proba" else frame, errors


def outputs_schema(model: Any, predict_fn: str) -> T.StructType:
    if predict_fn == "predict_proba":
        return T.StructType([T.StructField(f"proba_{c}", T.DoubleType()) for c in model.classes_])
    return T.StructType([T.StructField("prediction", T.DoubleType())])


def features(columns: tuple[str, ...]) -> list[Feature]:
    types = {f.name: f.dataType for f in SCHEMA.fields}
    return [Feature(name, F.col(name).cast(types[name]), types[name]) for name in columns]


def apply(df: DataFrame, program: Program) -> DataFrame:
    return with_stages(df, [program])


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    return {case.id: case.fit() for case in CASES}


@pytest.fixture(scope="module")
def source(spark: SparkSession) -> Iterator[DataFrame]:
    """The edge rows as a table, with ConvertToLocalRelation left out so the projections run as generated
    code, as over a real table, not folded on the driver."""
    rule = "spark.sql.optimizer.excludedRules"
    before = spark.conf.get(rule, None)
    spark.conf.set(rule, "org.apache.spark.sql.catalyst.optimizer.ConvertToLocalRelation")
    yield spark.createDataFrame([(i, *r) for i, r in enumerate(EDGE_ROWS)],
                                T.StructType([T.StructField("row", T.IntegerType()), *SCHEMA.fields]))
    if before is None:
        spark.conf.unset(rule)
    else:
        spark.conf.set(rule, before)


def score(source: DataFrame, case: Case, model: Any) -> tuple[pd.DataFrame, list[str | None]]:
    """The case's Program over the edge rows (one Spark job): outputs in columns out_0.., and the errors.
    (One job per case: a union of all cases' projections takes minutes to plan and compile.)"""
    program = compiled.translate(model, features(case.columns), outputs_schema(model, case.predict_fn),
                                 case.predict_fn)
    labels = case.predict_fn == "predict" and case.target != "regression"
    error = program.error if program.error is not None else F.lit(None)
    rows = apply(source, program).select(
        "row", *[(o.cast("string") if labels else o).alias(f"out_{j}") for j, o in enumerate(program.outputs)],
        error.cast("string").alias("error")).toPandas().sort_values("row").reset_index(drop=True)
    return rows.drop(columns=["row", "error"]), [e if isinstance(e, str) else None for e in rows["error"]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_translation_matches_model(case: Case, fitted: dict[str, Any], source: DataFrame) -> None:
    model = fitted[case.id]
    want, errors = expected(model, _pyfunc_frame(EDGE_ROWS, case.columns), case.predict_fn)
    got, got_errors = score(source, case, model)
    assert got_errors == errors
    ok = [i for i, e in enumerate(errors) if e is None]
    assert ok, "every edge row raises: nothing compared"
    if case.predict_fn == "predict" and case.target != "regression":
        want = want.astype(object).map(lambda v: str(v.item() if isinstance(v, np.generic) else v))
    result = compare(want.iloc[ok], got.iloc[ok], list(want.columns))
    assert result.equal, result.mismatch


def test_edge_rows_raise_where_expected(fitted: dict[str, Any]) -> None:
    """The cases do reach sklearn's error paths (NaN, infinity, unknown categories), not only the happy one."""
    messages = {e for case in CASES for e in expected(fitted[case.id], _pyfunc_frame(EDGE_ROWS, case.columns),
                                                      case.predict_fn)[1] if e}
    assert {"ValueError: Input X contains NaN.",
            "ValueError: Input X contains infinity or a value too large for dtype('float32').",
            "ValueError: Found unknown categories ['purple'] in column 0 during transform",
            "ValueError: Found unknown categories [np.int64(1000000000000)] in column 1 during transform",
            "ValueError: Found unknown categories [np.float64(1e+20)] in column 0 during transform",
            "ValueError: Found unknown categories [None] in column 0 during transform"} <= messages


@pytest.mark.parametrize(("model", "columns", "target", "message"), [
    (lambda: make_pipeline(PolynomialFeatures(), LinearRegression()), ("b", "c"), ["score"],
     "Pipeline: Pipeline step 'polynomialfeatures': PolynomialFeatures is not supported"),
    (lambda: make_pipeline(StandardScaler(), KNeighborsRegressor()), ("b", "c"), ["score"],
     "Pipeline: final estimator 'kneighborsregressor': KNeighborsRegressor is not supported"),
    (KNeighborsRegressor, ("b", "c"), ["score"], "KNeighborsRegressor: KNeighborsRegressor is not supported"),
    (LinearRegression, ("b", "c"), ["score", "f"], "LinearRegression: multi-output regression"),
    (lambda: make_pipeline(OneHotEncoder(max_categories=2), Ridge()), ("s",), ["score"],
     "Pipeline: Pipeline step 'onehotencoder': OneHotEncoder with infrequent categories"),
    (lambda: make_pipeline(StandardScaler(), Ridge()), ("f", "g"), ["score"],
     "Pipeline: final estimator 'ridge': float32 coefficients on float32 inputs"),
], ids=["polynomial_step", "knn_final", "knn_bare", "multi_output", "infrequent", "float32_arithmetic"])
def test_unsupported(model: Callable[[], Any], columns: tuple[str, ...], target: list[str], message: str) -> None:
    y = TRAIN[target] if len(target) > 1 else TRAIN[target[0]]
    fitted = model().fit(TRAIN[list(columns)], y)
    with pytest.raises(Unsupported, match=message.replace("(", r"\(")):
        compiled.translate(fitted, features(columns), T.StructType([T.StructField("prediction", T.DoubleType())]),
                           "predict")


def test_output_count_must_match(fitted: dict[str, Any]) -> None:
    with pytest.raises(Unsupported, match="LogisticRegression: predict_proba gives 2 outputs"):
        compiled.translate(fitted["logistic_binary"], features(("b", "c", "f")),
                           T.StructType([T.StructField("prediction", T.DoubleType())]), "predict_proba")


def test_logged_pipeline_through_mlflow(spark: SparkSession, tmp_path: Path, fitted: dict[str, Any]) -> None:
    """The path the job takes: an MLflow model folder, its signature's outputs, udfs.compiled.translate."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from spark_jobs.planning.plan import output_fields
    from udfs.compiled import translate

    case = next(c for c in CASES if c.id == "column_transformer_onehot_ignore")
    model, columns = fitted[case.id], case.columns
    train = TRAIN[list(columns)]
    path = str(tmp_path / "model")
    # As object: a numpy str array infers Tensor('str'), which spark_jobs.planning.plan.output_fields takes for double.
    signature = infer_signature(train, model.predict(train).astype(object))
    mlflow.sklearn.save_model(model, path, signature=signature, pip_requirements=[],
                              serialization_format="cloudpickle")
    rows = [r for r in EDGE_ROWS if not _raises(model, r, columns)]
    frame = _pyfunc_frame(rows, columns)
    outputs = output_fields(signature)
    program = translate(path, features(columns), outputs)
    df = spark.createDataFrame(rows, SCHEMA).select(*columns)
    actual = apply(df, program).select(*[o.cast(f.dataType).alias(f.name)
                                         for o, f in zip(program.outputs, outputs.fields, strict=True)]).toPandas()
    want = pd.DataFrame({"prediction": mlflow.pyfunc.load_model(path).predict(frame)})
    result = compare(want, actual, ["prediction"])
    assert result.equal, result.mismatch


def _raises(model: Any, row: tuple[Any, ...], columns: tuple[str, ...]) -> bool:
    return expected(model, _pyfunc_frame([row], columns), "predict")[1][0] is not None
