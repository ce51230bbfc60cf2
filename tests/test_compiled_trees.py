"""Tree models translated to Spark expressions against the models' own predictions, on rows chosen to break an
approximation: values at every kind of split threshold and their float64 and float32 neighbours (values that
round onto or across a float32 threshold), NaN and null, +-inf and doubles past float32's range, the overflow
boundary itself, and training rows (duplicates with conflicting labels: tied leaves). All models share one
Program and one Spark job; each (model, predict_fn) is then checked on its own."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from sklearn import ensemble as E
from sklearn import tree as T

from tests.support import TREE_ENGINES, assert_tree_engine, native_trees
from udfs.compiled.program import Program, Unsupported, with_stages
from udfs.compiled.trees import ESTIMATORS
from udfs.compiled.verify import compare

FEATURES = ["f0", "f1", "f2"]
F32_MAX = float(np.finfo(np.float32).max)
F32_OVERFLOW = 3.4028235677973366e38  # halfway from float32's max to 2**128: rounds to inf (even)
SPECIALS = [np.nan, None, np.inf, -np.inf, 1e39, -1e39, F32_MAX, F32_OVERFLOW, np.nextafter(F32_OVERFLOW, 0.0)]

HGB: dict[str, Any] = {"max_iter": 5, "max_leaf_nodes": 8}
# (id, model, target kind, NaN in the training data)
CASES: list[tuple[str, Callable[[], Any], str, bool]] = [
    ("tree-binary-str-nan", lambda: T.DecisionTreeClassifier(random_state=0), "binary-str", True),
    ("tree-multi-int", lambda: T.DecisionTreeClassifier(max_depth=4, random_state=0), "multi-int", False),
    ("tree-reg-nan", lambda: T.DecisionTreeRegressor(max_depth=4, random_state=0), "reg", True),
    ("extratree-multi-str", lambda: T.ExtraTreeClassifier(max_depth=4, random_state=0), "multi-str", False),
    ("extratree-reg", lambda: T.ExtraTreeRegressor(max_depth=4, random_state=0), "reg", False),
    ("forest-binary-int-nan", lambda: E.RandomForestClassifier(3, max_depth=4, random_state=0), "binary-int", True),
    ("forest-multi-str", lambda: E.RandomForestClassifier(3, max_depth=4, random_state=0), "multi-str", False),
    ("forest-reg-nan", lambda: E.RandomForestRegressor(3, max_depth=4, random_state=0), "reg", True),
    ("extratrees-binary-bool", lambda: E.ExtraTreesClassifier(3, max_depth=4, random_state=0), "binary-bool", False),
    ("extratrees-reg", lambda: E.ExtraTreesRegressor(3, max_depth=4, random_state=0), "reg", False),
    ("gb-binary-str", lambda: E.GradientBoostingClassifier(n_estimators=4, random_state=0), "binary-str", False),
    ("gb-exponential", lambda: E.GradientBoostingClassifier(loss="exponential", n_estimators=4, random_state=0),
     "binary-int", False),
    ("gb-multi-int", lambda: E.GradientBoostingClassifier(n_estimators=4, max_depth=2, random_state=0),
     "multi-int", False),
    ("gb-squared", lambda: E.GradientBoostingRegressor(n_estimators=4, random_state=0), "reg", False),
    ("gb-huber", lambda: E.GradientBoostingRegressor(loss="huber", n_estimators=4, random_state=0), "reg", False),
    ("gb-quantile", lambda: E.GradientBoostingRegressor(loss="quantile", alpha=0.8, n_estimators=4,
                                                        random_state=0), "reg", False),
    ("gb-zero-init", lambda: E.GradientBoostingRegressor(init="zero", loss="absolute_error", n_estimators=4,
                                                         random_state=0), "reg", False),
    ("hgb-binary-str-nan", lambda: E.HistGradientBoostingClassifier(**HGB, random_state=0), "binary-str", True),
    ("hgb-multi-int", lambda: E.HistGradientBoostingClassifier(**HGB, random_state=0), "multi-int", False),
    ("hgb-squared-nan", lambda: E.HistGradientBoostingRegressor(**HGB, random_state=0), "reg", True),
    ("hgb-poisson", lambda: E.HistGradientBoostingRegressor(loss="poisson", **HGB), "positive", False),
    ("hgb-gamma", lambda: E.HistGradientBoostingRegressor(loss="gamma", **HGB), "positive", True),
    ("hgb-absolute", lambda: E.HistGradientBoostingRegressor(loss="absolute_error", **HGB), "reg", False),
    ("hgb-quantile", lambda: E.HistGradientBoostingRegressor(loss="quantile", quantile=0.3, **HGB),
     "reg", False),
]
LABELS = {"binary-str": ["no", "yes"], "binary-int": [-1, 3], "binary-bool": [False, True],
          "multi-str": ["a", "b", "c"], "multi-int": [0, 5, 9]}
RUNS = [(case, fn) for case, _, kind, _ in CASES for fn in (["predict", "predict_proba"] if kind in LABELS
                                                           else ["predict"])]


def _training_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """f2 holds pairs of adjacent float32 values the target tells apart, so some thresholds fall exactly
    halfway between two float32 values; the last 30 rows repeat the first 30 (conflicting labels)."""
    X = rng.normal(size=(300, 3))
    bit = rng.integers(0, 2, 300)
    base = np.float32(rng.choice([0.1, 0.7, 1.3], 300))
    X[:, 2] = np.where(bit == 1, np.nextafter(base, np.float32(np.inf)), base).astype(np.float64)
    score = X[:, 0] + 0.5 * X[:, 1] + 1.5 * bit + rng.normal(scale=0.3, size=300)
    return np.vstack([X, X[:30]]), np.concatenate([score, score[:30] + 1.0])


def _target(kind: str, score: np.ndarray) -> np.ndarray:
    if kind == "reg":
        return score
    if kind == "positive":
        return np.exp(score / 2)
    labels = np.array(LABELS[kind])
    return labels[np.digitize(score, np.quantile(score, np.linspace(0, 1, len(labels) + 1)[1:-1]))]


def _splits(model: Any) -> list[tuple[int, float]]:
    """(feature, threshold) of every split, whatever the model's tree representation."""
    if hasattr(model, "_predictors"):
        nodes = [p.nodes[~p.nodes["is_leaf"].astype(bool)] for it in model._predictors for p in it]
        return [(int(n["feature_idx"]), float(n["num_threshold"])) for ns in nodes for n in ns]
    members = np.ravel(getattr(model, "estimators_", [model]))
    return [(int(f), float(t)) for m in members for f, t, c in
            zip(m.tree_.feature, m.tree_.threshold, m.tree_.children_left, strict=True) if c >= 0]


def _neighbours(t: float) -> list[float]:
    """t, its float64 neighbours, the float32 values around it, their midpoint and its neighbours."""
    lo = np.float32(t) if float(np.float32(t)) <= t else np.nextafter(np.float32(t), np.float32(-np.inf))
    hi = np.nextafter(lo, np.float32(np.inf))
    mid = (float(lo) + float(hi)) / 2
    return [t, *np.nextafter(t, [-np.inf, np.inf]), float(lo), float(hi), mid, *np.nextafter(mid, [-np.inf, np.inf])]


def _probe_rows(model: Any, X: np.ndarray, rng: np.random.Generator) -> list[list[Any]]:
    base = np.nanmedian(X, axis=0)
    splits = [s for s in _splits(model) if np.isfinite(s[1])]
    rows = []
    for i in rng.choice(len(splits), min(6, len(splits)), replace=False):
        f, t = splits[i]
        for v in _neighbours(t):
            rows.append([float(v) if j == f else float(base[j]) for j in range(3)])
    return rows


def _expected(model: Any, fn: str, rows: list[list[Any]]) -> tuple[pd.DataFrame, list[str | None]]:
    """The model's outputs, and per row the first line of the error it raises (None where it predicts);
    rows it rejects get NaN outputs and are left out of the comparison."""
    X = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.simplefilter("ignore")
        finite = np.isfinite(X.astype(np.float32)).all(axis=1)
        out = np.full((len(X), len(getattr(model, "classes_", [0])) if fn == "predict_proba" else 1), np.nan,
                      dtype=object if fn == "predict" else np.float64)
        errors: list[str | None] = [None] * len(X)
        out[finite] = getattr(model, fn)(X[finite]).reshape(int(finite.sum()), -1)
        for i in np.flatnonzero(~finite):
            try:
                out[i] = getattr(model, fn)(X[i : i + 1])[0]
            except ValueError as e:
                errors[i] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    frame = pd.DataFrame(out, columns=[f"o{k}" for k in range(out.shape[1])])
    return (frame.infer_objects() if fn == "predict" else frame), errors


@pytest.fixture(scope="module", params=TREE_ENGINES)
def scored(spark: SparkSession, request: pytest.FixtureRequest
           ) -> dict[tuple[str, str], tuple[pd.DataFrame, pd.DataFrame, list[Any], list[Any]]]:
    """Every (model, predict_fn) translated into one Program and scored in one Spark job."""
    rng = np.random.default_rng(7)
    X, score = _training_data(rng)
    X_nan = X.copy()
    X_nan[rng.random(len(X)) < 0.1, 1] = np.nan
    models = {case: make().fit(X_nan if nan else X, _target(kind, score)) for case, make, kind, nan in CASES}
    rows: list[list[Any]] = X_nan[:40].tolist() + X_nan[300:].tolist()
    rows += [[s if j == f else 0.5 for j in range(3)] for f in range(3) for s in SPECIALS]
    for model in models.values():
        rows += _probe_rows(model, X, rng)

    columns, names, outputs, programs = [F.col(n).cast("double") for n in FEATURES], [], [], []
    for i, (case, fn) in enumerate(RUNS):
        # a Program per run, its columns numbered apart, so that all runs' k-th stages form one projection
        programs.append(program := Program(_count=i * 100_000, native=native_trees(spark, request.param)))
        out = program.outputs = ESTIMATORS[type(models[case])](program, models[case], columns, fn)
        names.append([f"r{i}o{k}" for k in range(len(out))])
        outputs += [o.alias(n) for o, n in zip(out, names[i], strict=True)]
        outputs.append((program.error if program.error is not None else F.lit(None)).alias(f"r{i}e"))
    df = spark.createDataFrame([[i, *(None if v is None else float(v) for v in r)] for i, r in enumerate(rows)],
                               "id long, " + ", ".join(f"{n} double" for n in FEATURES))
    df = with_stages(df, programs)
    collected = sorted(df.select("id", *outputs).collect(), key=lambda r: r["id"])
    assert_tree_engine(request.param, programs)

    result = {}
    for i, (case, fn) in enumerate(RUNS):
        expected, errors = _expected(models[case], fn, rows)
        got = pd.DataFrame({e: [r[a] for r in collected] for e, a in zip(expected.columns, names[i], strict=True)})
        raw = {type(r[names[i][0]]) for r, e in zip(collected, errors, strict=True) if e is None}
        result[case, fn] = expected, got, errors, [r[f"r{i}e"] for r in collected], rows, raw, models[case]
    return result


@pytest.mark.parametrize(("case", "fn"), RUNS, ids=[f"{c}-{f}" for c, f in RUNS])
def test_translation_matches_model(scored: dict[Any, Any], case: str, fn: str) -> None:
    expected, actual, errors, actual_errors, rows, raw_types, model = scored[case, fn]
    wrong = [(i, rows[i], a, e) for i, (a, e) in enumerate(zip(actual_errors, errors, strict=True)) if a != e]
    assert not wrong, f"{len(wrong)} rows raise otherwise, first (row, values, translated, model): {wrong[0]}"
    kept = [i for i, e in enumerate(errors) if e is None]
    result = compare(expected.iloc[kept], actual.iloc[kept], list(expected.columns))
    assert result.equal, f"{case} {fn}: {result.mismatch} (max diff {result.max_diff})"
    if fn == "predict" and case.split("-")[1] in ("binary", "multi"):  # labels as classes_' own Python type
        assert raw_types == {type(model.classes_.tolist()[0])}


@pytest.mark.parametrize(("model", "fn", "message"), [
    (lambda: E.RandomForestClassifier(2), "predict_log_proba", "RandomForestClassifier: predict_fn"),
    (lambda: E.GradientBoostingRegressor(n_estimators=2), "predict_proba", "GradientBoostingRegressor: predict_fn"),
    (lambda: E.HistGradientBoostingClassifier(max_iter=2, categorical_features=[0]), "predict",
     "HistGradientBoostingClassifier: categorical splits"),
])
def test_unsupported(spark: SparkSession, model: Callable[[], Any], fn: str, message: str) -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 4, 100), rng.normal(size=100)]).astype(float)
    fitted = model().fit(X, (X[:, 0] + X[:, 1] > 1).astype(int))
    with pytest.raises(Unsupported, match=message):
        ESTIMATORS[type(fitted)](Program(), fitted, [F.col(n).cast("double") for n in ("a", "b")], fn)


@pytest.mark.parametrize(("make", "fn"), [
    (lambda: E.RandomForestClassifier(4, max_depth=5, random_state=0), "predict_proba"),  # an array of sums
    (lambda: E.HistGradientBoostingRegressor(max_iter=6, max_leaf_nodes=8, random_state=0), "predict"),
], ids=["forest-proba", "hgb-nan"])
def test_evaluator_blocks_keep_each_row_with_its_values(spark: SparkSession, make: Callable[[], Any],
                                                        fn: str) -> None:
    """The JVM evaluator reads rows a block at a time (a thousand rows of three features) and hands each back
    with its sums: over several blocks and partitions, a partial last block, and missing values, every row keeps
    its own columns, in order, and gets the model's own outputs. Missing values are in the first 2,000 rows
    only: a block without one takes the walk that skips the nodes' missing-value rule."""
    rng = np.random.default_rng(3)
    X, score = _training_data(rng)
    X[rng.random(len(X)) < 0.1, 1] = np.nan
    model = make().fit(X, _target("multi-int" if fn == "predict_proba" else "reg", score))
    rows = rng.normal(size=(5000, 3))
    rows[:2000][rng.random(2000) < 0.1, 1] = np.nan
    data = [[i, f"row {i}", *(None if np.isnan(v) else float(v) for v in r)] for i, r in enumerate(rows.tolist())]
    df = spark.createDataFrame(spark.sparkContext.parallelize(data, 3),  # three partitions of consecutive ids
                               "id long, tag string, " + ", ".join(f"{n} double" for n in FEATURES))
    program = Program(native=native_trees(spark, "native"))
    out = program.outputs = ESTIMATORS[type(model)](program, model, [F.col(n) for n in FEATURES], fn)
    assert_tree_engine("native", [program])
    got = with_stages(df, [program]).select("id", "tag", *FEATURES, *[o.alias(f"o{k}") for k, o in enumerate(out)])
    collected = got.collect()
    assert [r.id for r in collected] == list(range(len(rows)))  # the input's order
    assert [(r.tag, *[r[n] for n in FEATURES]) for r in collected] == \
        [(f"row {i}", *(None if np.isnan(v) else float(v) for v in r)) for i, r in enumerate(rows.tolist())]
    expected = pd.DataFrame(getattr(model, fn)(rows).reshape(len(rows), -1)).add_prefix("o")
    actual = pd.DataFrame([[r[f"o{k}"] for k in range(len(out))] for r in collected]).add_prefix("o")
    result = compare(expected, actual, list(expected.columns))
    assert result.equal, f"{result.mismatch} (max diff {result.max_diff})"


def _evaluator_input(df: Any) -> list[str]:
    """The columns of the rows the tree evaluator receives (its RDD's schema, a leaf of the analyzed plan)."""
    leaves = df._jdf.queryExecution().analyzed().collectLeaves()
    for i in range(leaves.size()):
        if leaves.apply(i).getClass().getSimpleName() == "LogicalRDD":
            output = leaves.apply(i).output()
            return [output.apply(j).name() for j in range(output.size())]
    raise AssertionError("no tree evaluator in the plan")


def test_evaluator_reads_double_inputs_themselves_and_no_column_it_does_not_need(spark: SparkSession) -> None:
    """A HistGradientBoosting model reads its features as doubles: the evaluator takes the double input columns
    themselves (null and NaN both missing) and a float one through the program's column, and the program's
    columns nothing reads after it (the features as the pyfunc frame holds them, as staged) are not carried to
    it. The predictions are the model's own, NaN, null and infinities included."""
    from pyspark.sql import types as ST

    from udfs.compat import try_cast
    from udfs.compiled import sklearn
    from udfs.compiled.program import Feature

    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 3))
    X[rng.random(400) < 0.1, 0] = np.nan
    model = E.HistGradientBoostingRegressor(**HGB, random_state=0).fit(X, X[:, 1] + np.nan_to_num(X[:, 0]))
    rows = np.vstack([X[:200], [[np.inf, 0.5, 0.5], [-np.inf, -1.0, 2.0], [0.5, np.inf, -np.inf]]])
    data = [[i, None if i % 7 == 0 else float(r[0]), float(r[1]), float(r[2])] for i, r in enumerate(rows.tolist())]
    df = spark.createDataFrame(data, "id long, f0 double, f1 double, f2 float")
    program = sklearn.translate(model, [Feature(n, try_cast(n, ST.DoubleType()), ST.DoubleType(), n)
                                        for n in FEATURES], ST.StructType([ST.StructField("p", ST.DoubleType())]),
                                "predict", native=native_trees(spark, "native"))
    assert_tree_engine("native", [program])
    scored = with_stages(df, [program])
    read = _evaluator_input(scored)
    own = [c for c in read if c.startswith("__m")]
    assert read[:4] == ["id", "f0", "f1", "f2"] and len(own) == 2, read  # f2's staged double and the sums
    got = sorted(scored.select("id", program.outputs[0].alias("p")).collect(), key=lambda r: r.id)
    matrix = np.array([[np.nan if v is None else v for v in r[1:]] for r in data], dtype=np.float64)
    matrix[:, 2] = matrix[:, 2].astype(np.float32)
    expected = model.predict(matrix)
    assert [r.p for r in got] == expected.tolist()
