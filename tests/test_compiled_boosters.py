"""XGBoost and LightGBM models translated to Spark expressions against the libraries' own predictions, for
each objective kind (binary, multi-class, regression, log-link), on rows chosen to break an approximation:
values at every split threshold and their float64 and float32 neighbours, NaN and null, +-inf, doubles past
float32's range, zeros and values LightGBM reads as zero (|x| <= 1e-35), and the training rows. All models
share one Spark job; each (model, output) is then compared on its own."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from tests.support import TREE_ENGINES, assert_tree_engine, native_trees
from udfs.compiled import lgbm
from udfs.compiled import xgb as xgb_sql
from udfs.compiled.program import Program, Unsupported, with_stages
from udfs.compiled.verify import TIMESTAMP, compare

FEATURES = ["f0", "f1", "f2"]
SPECIALS = [np.nan, None, np.inf, -np.inf, 1e39, -1e39, 0.0, -0.0, 1e-36, -1e-36, 1e-35, 2e-35]
XGB: dict[str, Any] = {"n_estimators": 6, "max_depth": 3, "random_state": 0}
LGB: dict[str, Any] = {"n_estimators": 6, "num_leaves": 6, "min_child_samples": 5, "verbose": -1, "random_state": 0}


def _booster(params: dict[str, Any], rounds: int) -> Callable[[np.ndarray, np.ndarray], Any]:
    return lambda X, y: xgb.train(params, xgb.DMatrix(X, label=y), rounds)


def _lgb_booster(params: dict[str, Any], rounds: int) -> Callable[[np.ndarray, np.ndarray], Any]:
    return lambda X, y: lgb.train({**params, "verbose": -1}, lgb.Dataset(X, label=y), rounds)


def _early(make: Callable[[], Any], **fit: Any) -> Callable[[np.ndarray, np.ndarray], Any]:
    """Fitted with early stopping on a validation set that stops it early: best_iteration < rounds."""
    def fit_model(X: np.ndarray, y: np.ndarray) -> Any:
        model = make()
        return model.fit(X[:200], y[:200], eval_set=[(X[200:], y[200:] * -1.0)], **fit)
    return fit_model


# (id, fit(X, y), target kind, outputs): outputs "predict" / "predict_proba" for the scikit-learn wrappers,
# "booster" for a bare Booster's predict
CASES: list[tuple[str, Callable[[np.ndarray, np.ndarray], Any], str, list[str]]] = [
    ("xgb-binary", lambda X, y: xgb.XGBClassifier(**XGB).fit(X, y), "binary", ["predict", "predict_proba"]),
    ("xgb-multi", lambda X, y: xgb.XGBClassifier(**XGB).fit(X, y), "multi", ["predict", "predict_proba"]),
    ("xgb-softmax", lambda X, y: xgb.XGBClassifier(objective="multi:softmax", **XGB).fit(X, y), "multi",
     ["predict"]),
    ("xgb-squared", lambda X, y: xgb.XGBRegressor(**XGB).fit(X, y), "reg", ["predict"]),
    ("xgb-poisson", lambda X, y: xgb.XGBRegressor(objective="count:poisson", **XGB).fit(X, y), "positive",
     ["predict"]),
    ("xgb-gamma", lambda X, y: xgb.XGBRegressor(objective="reg:gamma", **XGB).fit(X, y), "positive", ["predict"]),
    ("xgb-tweedie", lambda X, y: xgb.XGBRegressor(objective="reg:tweedie", **XGB).fit(X, y), "positive",
     ["predict"]),
    ("xgb-logistic", lambda X, y: xgb.XGBRegressor(objective="reg:logistic", **XGB).fit(X, y), "unit",
     ["predict"]),
    ("xgb-early", _early(lambda: xgb.XGBRegressor(n_estimators=40, max_depth=3, early_stopping_rounds=2),
                         verbose=False), "reg", ["predict"]),
    ("xgb-booster-binary", _booster({"objective": "binary:logistic", "max_depth": 3}, 6), "binary01", ["booster"]),
    ("xgb-booster-softprob", _booster({"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, 4),
     "multi", ["booster"]),
    ("xgb-booster-logitraw", _booster({"objective": "binary:logitraw", "max_depth": 3}, 4), "binary01",
     ["booster"]),
    ("lgb-binary", lambda X, y: lgb.LGBMClassifier(**LGB).fit(X, y), "binary-str", ["predict", "predict_proba"]),
    ("lgb-multi", lambda X, y: lgb.LGBMClassifier(**LGB).fit(X, y), "multi", ["predict", "predict_proba"]),
    ("lgb-regression", lambda X, y: lgb.LGBMRegressor(**LGB).fit(X, y), "reg", ["predict"]),
    ("lgb-zero-as-missing", lambda X, y: lgb.LGBMRegressor(zero_as_missing=True, **LGB).fit(X, y), "reg",
     ["predict"]),
    ("lgb-no-missing", lambda X, y: lgb.LGBMRegressor(use_missing=False, **LGB).fit(X, y), "reg", ["predict"]),
    ("lgb-poisson", lambda X, y: lgb.LGBMRegressor(objective="poisson", **LGB).fit(X, y), "positive", ["predict"]),
    ("lgb-tweedie", lambda X, y: lgb.LGBMRegressor(objective="tweedie", **LGB).fit(X, y), "positive", ["predict"]),
    ("lgb-early", _early(lambda: lgb.LGBMRegressor(n_estimators=40, num_leaves=6, verbose=-1),
                         callbacks=[lgb.early_stopping(2, verbose=False)]), "reg", ["predict"]),
    ("lgb-booster-binary", _lgb_booster({"objective": "binary", "num_leaves": 6}, 6), "binary01", ["booster"]),
    ("lgb-booster-sigmoid", _lgb_booster({"objective": "binary", "sigmoid": 0.7, "num_leaves": 6}, 6), "binary01",
     ["booster"]),
]
RUNS = [(case, fn) for case, _, _, fns in CASES for fn in fns]


def _training_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """f1 missing in a tenth of the rows and zero in a fifth of them (LightGBM's Zero missing type); f2
    holds pairs of adjacent float32 values the target tells apart."""
    X = rng.normal(size=(400, 3))
    X[rng.random(400) < 0.2, 1] = 0.0
    X[rng.random(400) < 0.1, 1] = np.nan
    bit = rng.integers(0, 2, 400)
    base = np.float32(rng.choice([0.1, 0.7, 1.3], 400))
    X[:, 2] = np.where(bit == 1, np.nextafter(base, np.float32(np.inf)), base).astype(np.float64)
    score = X[:, 0] + 0.5 * np.nan_to_num(X[:, 1]) + 1.5 * bit + rng.normal(scale=0.3, size=400)
    return X, score


def _target(kind: str, score: np.ndarray) -> np.ndarray:
    if kind == "reg":
        return score
    if kind == "positive":
        return np.exp(score / 2)
    if kind == "unit":
        return 1 / (1 + np.exp(-score))
    if kind in ("binary", "binary01"):
        return (score > np.median(score)).astype(int)
    if kind == "binary-str":
        return np.where(score > np.median(score), "yes", "no")
    return np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))


def _thresholds(model: Any) -> list[tuple[int, float]]:
    """(feature, threshold) of every split, from the library's own dump."""
    if isinstance(model, lgb.Booster | lgb.LGBMModel):
        booster = model if isinstance(model, lgb.Booster) else model.booster_
        found: list[tuple[int, float]] = []

        def walk(node: dict[str, Any]) -> None:
            if "split_feature" in node:
                found.append((int(node["split_feature"]), float(node["threshold"])))
                walk(node["left_child"])
                walk(node["right_child"])

        for info in booster.dump_model()["tree_info"]:
            walk(info["tree_structure"])
        return found
    booster = model if isinstance(model, xgb.Booster) else model.get_booster()
    trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    return [(int(f), float(t)) for tree in trees for f, t, c in
            zip(tree["split_indices"], tree["split_conditions"], tree["left_children"], strict=True) if c >= 0]


def _neighbours(t: float) -> list[float]:
    lo = np.float32(t) if float(np.float32(t)) <= t else np.nextafter(np.float32(t), np.float32(-np.inf))
    hi = np.nextafter(lo, np.float32(np.inf))
    mid = (float(lo) + float(hi)) / 2
    return [t, *np.nextafter(t, [-np.inf, np.inf]), float(lo), float(hi), mid, *np.nextafter(mid, [-np.inf, np.inf])]


def _expected(model: Any, fn: str, X: np.ndarray) -> tuple[pd.DataFrame, list[str | None]]:
    """The library's outputs and, per row, the error it raises (DMatrix refuses values infinite in float32:
    those rows are scored one by one and get NaN outputs)."""
    errors: list[str | None] = [None] * len(X)
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.simplefilter("ignore")
        if fn == "booster" and isinstance(model, xgb.Booster):
            finite = np.isfinite(X.astype(np.float32)) | np.isnan(X)
            ok = finite.all(axis=1)
            first = model.predict(xgb.DMatrix(X[ok]))
            out = np.full((len(X), *first.shape[1:]), np.nan, dtype=first.dtype)
            out[ok] = first
            for i in np.flatnonzero(~ok):
                with pytest.raises(xgb.core.XGBoostError) as raised:
                    model.predict(xgb.DMatrix(X[i : i + 1]))
                errors[i] = "XGBoostError: " + str(raised.value).strip().splitlines()[0]
        elif fn == "booster":
            out = model.predict(X)
        else:
            out = getattr(model, fn)(X)
    out = np.asarray(out)
    columns = [f"o{k}" for k in range(out.size // len(X))]
    return pd.DataFrame(out.reshape(len(X), -1), columns=columns), errors


def _translate(program: Program, model: Any, columns: list[Column], fn: str) -> list[Column]:
    if isinstance(model, xgb.Booster):
        return xgb_sql.translate_booster(program, model, columns, "Booster")
    if isinstance(model, lgb.Booster):
        return lgbm.translate_booster(program, model, columns, "Booster")
    table = {**xgb_sql.estimators(), **lgbm.estimators()}
    return table[type(model)](program, model, columns, fn)


@pytest.fixture(scope="module", params=TREE_ENGINES)
def scored(spark: SparkSession, request: pytest.FixtureRequest) -> dict[tuple[str, str], Any]:
    rng = np.random.default_rng(11)
    X, score = _training_data(rng)
    models = {case: fit(X, _target(kind, score)) for case, fit, kind, _ in CASES}
    rows: list[list[Any]] = X[:60].tolist()
    rows += [[s if j == f else 0.5 for j in range(3)] for f in range(3) for s in SPECIALS]
    for model in models.values():
        splits = [s for s in _thresholds(model) if np.isfinite(s[1])]
        for i in rng.choice(len(splits), min(8, len(splits)), replace=False):
            f, t = splits[i]
            rows += [[float(v) if j == f else 0.5 for j in range(3)] for v in _neighbours(t)]

    columns, names, outputs = [F.col(n).cast("double") for n in FEATURES], [], []
    programs = []
    for i, (case, fn) in enumerate(RUNS):
        programs.append(program := Program(_count=i * 100_000, native=native_trees(spark, request.param)))
        out = program.outputs = _translate(program, models[case], columns, fn)
        names.append([f"r{i}o{k}" for k in range(len(out))])
        outputs += [o.alias(n) for o, n in zip(out, names[i], strict=True)]
        outputs.append((program.error if program.error is not None else F.lit(None)).alias(f"r{i}e"))
    df = spark.createDataFrame([[i, *(None if v is None else float(v) for v in r)] for i, r in enumerate(rows)],
                               "id long, " + ", ".join(f"{n} double" for n in FEATURES))
    df = with_stages(df, programs)
    collected = sorted(df.select("id", *outputs).collect(), key=lambda r: r["id"])
    assert_tree_engine(request.param, programs)

    matrix = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    result = {}
    for i, (case, fn) in enumerate(RUNS):
        expected, errors = _expected(models[case], fn, matrix)
        got = pd.DataFrame({e: [r[a] for r in collected] for e, a in zip(expected.columns, names[i], strict=True)})
        if expected.dtypes.iloc[0] == np.float32:  # as the job stores a float32 output: FloatType
            got = got.astype(np.float32)
        got_errors = [r[f"r{i}e"] for r in collected]
        result[case, fn] = expected, got, models[case], errors, got_errors
    return result


@pytest.mark.parametrize(("case", "fn"), RUNS, ids=[f"{c}-{f}" for c, f in RUNS])
def test_translation_matches_library(scored: dict[Any, Any], case: str, fn: str) -> None:
    expected, actual, model, errors, got_errors = scored[case, fn]
    assert [None if e is None else TIMESTAMP.sub("", e) for e in errors] == got_errors
    kept = [i for i, e in enumerate(errors) if e is None]
    expected, actual = expected.iloc[kept], actual.iloc[kept]
    result = compare(expected, actual, list(expected.columns))
    assert result.equal, f"{case} {fn}: {result.mismatch} (max diff {result.max_diff})"
    if case.endswith("early"):
        assert (model.best_iteration if hasattr(model, "best_iteration") else model.best_iteration_) < 39


def test_float32_outputs_are_bit_exact_but_for_expf(scored: dict[Any, Any]) -> None:
    """XGBoost's sums and thresholds are float32 exactly; only expf may round one unit apart, on few rows."""
    for (case, fn), (expected, actual, _, errors, _) in scored.items():
        kept = [i for i, e in enumerate(errors) if e is None]
        expected, actual = expected.iloc[kept], actual.iloc[kept]
        if case.startswith("xgb") and expected.dtypes.iloc[0] == np.float32:
            differ = (expected.to_numpy() != actual.to_numpy()).any(axis=1)
            assert differ.mean() < 0.01, f"{case} {fn}: {differ.sum()} of {len(differ)} rows differ"


@pytest.mark.parametrize("make", [
    lambda: lgb.LGBMRegressor(n_estimators=4, verbose=-1, min_child_samples=5, min_data_per_group=5, cat_smooth=1),
    lambda: lgb.LGBMClassifier(n_estimators=4, verbose=-1, min_child_samples=5, min_data_per_group=5, cat_smooth=1),
], ids=["regressor", "classifier"])
@pytest.mark.parametrize("tree_engine", TREE_ENGINES)
def test_lightgbm_categorical_splits_match(spark: SparkSession, make: Callable[[], Any], tree_engine: str) -> None:
    """Integer-coded categories (NaN among them) against the model, probed with NaN, negatives, fractions,
    unseen and huge codes, +-inf: LightGBM truncates a value to int, and anything not a known code goes right."""
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 8, 2000).astype(float)
    codes[rng.random(2000) < 0.1] = np.nan
    X = np.column_stack([codes, rng.normal(size=2000), rng.normal(size=2000)])
    score = np.where(np.isnan(codes), 3.0, np.nan_to_num(codes) % 3) + 0.2 * X[:, 1]
    model = make().fit(X, score if isinstance(make(), lgb.LGBMRegressor) else (score > 1).astype(int),
                       categorical_feature=[0])
    assert any(info["num_cat"] for info in model.booster_.dump_model()["tree_info"])
    probes = [np.nan, None, -0.5, -1.0, -1.5, 0.0, -0.0, 0.5, 0.9999, 1.0, 2.7, 3.0, 7.0, 8.0, 100.0, 1e10,
              2147483647.0, 2147483648.0, np.inf, -np.inf, 1e-36]
    rows = [[v, 0.3, -0.2] for v in probes] + X[:50].tolist()
    program = Program(native=native_trees(spark, tree_engine))
    out = program.outputs = lgbm.translate_estimator(program, model, [F.col(n).cast("double") for n in FEATURES],
                                                     "predict")
    assert_tree_engine(tree_engine, [program])
    df = spark.createDataFrame([[i, *(None if v is None else float(v) for v in r)] for i, r in enumerate(rows)],
                               "id long, " + ", ".join(f"{n} double" for n in FEATURES))
    df = with_stages(df, [program])
    got = pd.DataFrame({"o0": [r.p for r in sorted(df.select("id", out[0].alias("p")).collect(),
                                                   key=lambda r: r.id)]})
    matrix = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    expected = pd.DataFrame({"o0": model.predict(matrix)})
    result = compare(expected, got, ["o0"])
    assert result.equal, f"{result.mismatch} (max diff {result.max_diff})"


def test_categorical_xgboost_is_refused(spark: SparkSession) -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 5, 300), rng.normal(size=300)]).astype(float)
    y = (X[:, 0] % 2 == 0).astype(int) + (X[:, 1] > 0)
    frame = pd.DataFrame({"a": pd.Categorical(X[:, 0].astype(int)), "b": X[:, 1]})
    xmodel = xgb.XGBRegressor(n_estimators=3, enable_categorical=True, tree_method="hist").fit(frame, y)
    with pytest.raises(Unsupported, match="XGBRegressor: categorical"):
        xgb_sql.translate_estimator(Program(), xmodel, [F.col(n).cast("double") for n in ("a", "b")], "predict")
