"""Fitted scikit-learn tree models (single trees, forests, gradient boosting, histogram gradient boosting) as
Spark expressions that reproduce the library's own arithmetic: the same feature rounding and comparison, the
same missing-value directions, the trees summed in the library's order, the same init, link and tie rules.

The generic part (`Tree`, `SplitRule`, `tree_sql`, `tree_columns`, `tree_sums`) knows nothing of
scikit-learn, so other tree libraries (XGBoost and LightGBM compare `<` in float32 and carry default
directions) reuse it. `tree_sums` runs the trees in the JVM tree evaluator (udfs.compiled.native) where it
may; otherwise a tree becomes one SQL CASE expression parsed once (`F.expr`): building it node by node
through the Column API costs several JVM calls per node, minutes for a large forest. Spark's analysis still
costs about 0.1-0.5 ms per tree node: a 300-tree forest of depth 10 (100k nodes) takes tens of seconds to
plan."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from udfs.compiled import native
from udfs.compiled.program import (
    NativeTrees,
    Program,
    Unsupported,
    argmax_label,
    as_double,
    as_float32,
    f32,
    running_sum,
    sigmoid,
    softmax,
)

Translator = Callable[[Program, Any, list[Column], str], list[Column]]


# --- generic trees ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """One binary tree in array form, the shape every library's trees reduce to: node i splits on
    `feature[i]` at `threshold[i]`, children `left[i]` / `right[i]` (negative at a leaf); a missing value
    goes left where `missing_left[i]`; `value[i]` is the leaf's output vector (width 1 for a scalar)."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray  # (n_nodes, width), float64
    # per node, the integer categories that go left (a categorical split: a present value whose integer part
    # is one of them goes left, anything else right), or None for a threshold split; None: no categorical split
    categories: tuple[tuple[int, ...] | None, ...] | None = None


@dataclass(frozen=True)
class SplitRule:
    """How a library sends a present value left: `cast(feature) <operator> threshold`. `cast` is the type the
    library compares the feature in (float32 widened back to double, or double itself); `threshold` maps a
    stored threshold to the double it is compared as (identity for float64 thresholds)."""

    operator: str  # "<=" (scikit-learn) or "<" (XGBoost, LightGBM)
    cast: Callable[[Column], Column]
    threshold: Callable[[float], float] = float


SKLEARN_TREE = SplitRule("<=", as_float32)  # tree/_tree.pyx: float32 X[i, f] <= float64 threshold
SKLEARN_HIST = SplitRule("<=", as_double)  # _hist_gradient_boosting/_predictor.pyx: float64 data_val <= ...


def sql_double(value: float) -> str:
    """A double literal Spark parses back to exactly `value` (repr is the shortest round-trip form)."""
    if math.isnan(value):
        return "CAST('NaN' AS DOUBLE)"
    if math.isinf(value):
        return f"CAST('{'-' if value < 0 else ''}Infinity' AS DOUBLE)"
    return f"{value!r}D"


def stage_features(program: Program, X: Sequence[Column], rule: SplitRule) -> list[str]:
    """One stage column per feature, cast as the rule compares it, null where missing (NaN or null): a CASE
    condition on null is false, so a split sends it right unless it tests IS NULL. Returns the names."""
    names = [_let(program, F.nanvl(rule.cast(x), F.lit(None).cast(T.DoubleType())),
                  program.source_of(x) if rule.cast is as_double else None) for x in X]
    program.next_stage()
    return names


def tree_sql(tree: Tree, features: Sequence[str], rule: SplitRule) -> str:
    """The tree as nested IF(test, left, right) over the staged feature columns (a one-branch CASE WHEN: a null
    test takes the right side; Catalyst optimizes If several times faster than CaseWhen, which counts for
    forests of 100k nodes); a leaf is its value (an array when the leaf holds a vector)."""

    def leaf(node: int) -> str:
        values = [sql_double(float(v)) for v in tree.value[node]]
        return values[0] if len(values) == 1 else f"array({', '.join(values)})"

    def build(node: int) -> str:
        if tree.left[node] < 0:
            return leaf(node)
        x = f"`{features[int(tree.feature[node])]}`"
        categories = tree.categories[node] if tree.categories is not None else None
        if categories is not None:  # C's (int) cast: truncation; below 0 or past int's range goes right
            test = (f"({x} > -1.0D AND {x} < 2147483648.0D AND CAST({x} AS INT) IN "
                    f"({', '.join(str(int(c)) for c in categories)}))")
        else:
            test = f"{x} {rule.operator} {sql_double(rule.threshold(float(tree.threshold[node])))}"
        if tree.missing_left[node]:
            test = f"({x} IS NULL OR {test})"
        return f"IF({test}, {build(int(tree.left[node]))}, {build(int(tree.right[node]))})"

    return build(0)


def tree_columns(program: Program, trees: Sequence[Tree], features: Sequence[str], rule: SplitRule) -> list[Column]:
    """Each tree its own stage column: Spark compiles each projection of its own and splits the code."""
    program.size += sum(len(tree.feature) for tree in trees)
    if program.max_size is not None and program.size > program.max_size:
        raise Unsupported(f"{program.size:,} tree nodes, more than the {program.max_size:,} the sql engine "
                          "compiles faster than the UDF scores")
    columns = [program.let(F.expr(tree_sql(tree, features, rule))) for tree in trees]
    program.next_stage()
    return columns


def tree_sums(program: Program, trees: Sequence[Tree], features: Sequence[str], rule: SplitRule, outputs: int,
              first_output: Sequence[int] | None = None, init: Sequence[float] | None = None,
              float32: bool = False) -> list[Column]:
    """Per output k: init[k] (when given, else the first term itself) + the leaf values that go to k, tree by
    tree in the order given, as the library accumulates: in double, or in float32 (`float32`, XGBoost: a float
    column out). Tree i adds its leaf vector to outputs first_output[i], first_output[i] + 1, ... (default 0);
    an output nothing adds to is 0. Where the program may and the Spark session can, the JVM tree evaluator walks
    every tree over flat arrays (udfs.compiled.native), with the same comparisons and the same additions; otherwise
    each tree is an SQL expression (tree_columns) and the sums are running sums of them."""
    first = list(first_output) if first_output is not None else [0] * len(trees)
    if program.native and len(features) <= native.MAX_FEATURES:
        packed = native.pack(trees, len(features), rule.operator, rule.threshold, outputs, first, init, float32)
        sums = program.let_native(NativeTrees(packed, tuple(features)))
        program.native_trees += len(trees)
        program.native_nodes += sum(len(t.feature) for t in trees)
        program.next_stage()
        values = [sums] if outputs == 1 else [sums[k] for k in range(outputs)]
        result = [program.let(f32(v) if float32 else v) for v in values]
        program.next_stage()
        return result
    columns = tree_columns(program, trees, features, rule)
    result = []
    for k in range(outputs):
        terms = [c if int(t.value.shape[1]) == 1 else c[k - at] for c, t, at in zip(columns, trees, first, strict=True)
                 if at <= k < at + int(t.value.shape[1])]
        start = [F.lit(float(init[k]))] if init is not None else []
        if float32:
            terms, start = [f32(c) for c in terms], [f32(c) for c in start]
        total = running_sum(program, [*start, *terms]) if start or terms else F.lit(0.0)
        result.append(program.let(f32(total) if float32 else total))
    program.next_stage()
    return result


def _let(program: Program, expr: Column, source: str | None = None) -> str:
    program.let(expr, source)
    return program.stages[-1][-1][0]


# --- shared scikit-learn pieces ---------------------------------------------------------------------------


def _name(estimator: Any) -> str:
    return type(estimator).__name__


def _label(value: Any) -> Any:
    """A class label as a plain Python value (numpy scalars are not Spark literals)."""
    return value.item() if isinstance(value, np.generic) else value


def _check(estimator: Any, predict_fn: str, classifier: bool) -> None:
    allowed = ("predict", "predict_proba") if classifier else ("predict",)
    if predict_fn not in allowed:
        raise Unsupported(f"{_name(estimator)}: predict_fn {predict_fn!r}")
    if getattr(estimator, "n_outputs_", 1) != 1:
        raise Unsupported(f"{_name(estimator)}: {estimator.n_outputs_} outputs")


def _sklearn_features(program: Program, estimator: Any, X: Sequence[Column], allow_nan: bool) -> list[str]:
    """Features as float32, and the rows check_array rejects: NaN where the model takes none, then anything
    infinite once in float32 (a finite double past float32's range included), as its messages say."""
    names = stage_features(program, X, SKLEARN_TREE)
    columns = [F.col(n) for n in names]
    if not allow_nan:
        program.fail_when(_any(c.isNull() for c in columns), "Input X contains NaN.")
    program.fail_when(_any(F.abs(c) == F.lit(math.inf) for c in columns),
                      "Input X contains infinity or a value too large for dtype('float32').")
    return names


def _any(conditions: Any) -> Column:
    result: Column | None = None
    for c in conditions:
        result = c if result is None else result | c
    assert result is not None
    return result


def _sklearn_tree(estimator: Any, scale: float | None = None) -> Tree:
    """A fitted sklearn.tree estimator's `tree_`. Classifier leaves hold class fractions already (what
    predict_proba returns); `scale` multiplies the leaves as gradient boosting's `scale * value` does."""
    tree = estimator.tree_
    value = np.asarray(tree.value, dtype=np.float64)[:, 0, :]
    if scale is not None:
        value = scale * value[:, :1]
    missing_left = getattr(tree, "missing_go_to_left", None)
    return Tree(tree.feature, tree.threshold, tree.children_left, tree.children_right,
                np.zeros(tree.node_count, bool) if missing_left is None else np.asarray(missing_left, bool), value)


def _proba_link(estimator: Any, predict_fn: str) -> str:
    """The inverse link predict_proba applies, checked before anything is built."""
    kind = type(estimator._loss.link).__name__
    if predict_fn == "predict_proba" and kind not in ("LogitLink", "HalfLogitLink", "MultinomialLogit"):
        raise Unsupported(f"{_name(estimator)}: predict_proba with the {kind} link")
    return kind


def _classify(program: Program, estimator: Any, raws: list[Column], predict_fn: str,
              positive: Callable[[Column], Column]) -> list[Column]:
    """Boosting's raw scores to outputs: predict from the raw scores (binary: `positive(raw)` picks
    classes_[1]; multiclass: first maximum), predict_proba through the loss's inverse link."""
    labels = [_label(c) for c in estimator.classes_]
    if predict_fn == "predict":
        if len(raws) == 1:
            return [F.when(positive(raws[0]), F.lit(labels[1])).otherwise(F.lit(labels[0]))]
        return [argmax_label(raws, labels)]
    kind = _proba_link(estimator, predict_fn)
    if kind == "MultinomialLogit":
        return softmax(program, raws)
    p = program.let(sigmoid(raws[0] if kind == "LogitLink" else F.lit(2.0) * raws[0]))
    program.next_stage()
    return [F.lit(1.0) - p, p]  # HalfBinomialLoss / ExponentialLoss.predict_proba: [1 - p, p]


# --- translators --------------------------------------------------------------------------------------------


def _forest(program: Program, estimator: Any, X: list[Column], predict_fn: str) -> list[Column]:
    """A single tree or a forest (a single tree is a forest of one: its values divided by 1 are unchanged).
    Forests accumulate each tree's predict_proba / predict into zeros, then divide by the number of trees;
    predict of a classifier is the first maximum of those averages."""
    from sklearn.base import is_classifier
    from sklearn.utils import get_tags

    classifier = is_classifier(estimator)
    _check(estimator, predict_fn, classifier)
    members = list(getattr(estimator, "estimators_", [estimator]))
    names = _sklearn_features(program, estimator, X, get_tags(members[0]).input_tags.allow_nan)
    width = len(estimator.classes_) if classifier else 1
    sums = tree_sums(program, [_sklearn_tree(m) for m in members], names, SKLEARN_TREE, width)
    count = F.lit(float(len(members)))
    if not classifier:
        return [sums[0] / count]
    means = [program.let(s / count) for s in sums]
    program.next_stage()
    return means if predict_fn == "predict_proba" else [argmax_label(means, [_label(c) for c in estimator.classes_])]


def _constant_init(estimator: Any) -> list[float]:
    """GradientBoosting's raw init, computed by the model itself on one row: exact while the init estimator
    predicts a constant (the default DummyClassifier/DummyRegressor, or 'zero')."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    init = estimator.init_
    constant = isinstance(init, DummyRegressor) or (isinstance(init, DummyClassifier) and init.strategy != "stratified")
    if not (init == "zero" if isinstance(init, str) else constant):
        raise Unsupported(f"{_name(estimator)}: init estimator {_name(init)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fitted with feature names, asked with an array
        raw = estimator._raw_predict_init(np.zeros((1, estimator.n_features_in_), np.float32))
    return [float(v) for v in np.asarray(raw, np.float64)[0]]


def _gradient_boosting(program: Program, estimator: Any, X: list[Column], predict_fn: str) -> list[Column]:
    """ensemble/_gb.py: raw = init + learning_rate * tree value, stage by stage (predict_stages). The
    regressor returns raw whatever its loss; the classifier predicts class 1 where raw >= 0."""
    from sklearn.base import is_classifier

    classifier = is_classifier(estimator)
    _check(estimator, predict_fn, classifier)
    if classifier:
        _proba_link(estimator, predict_fn)
    init = _constant_init(estimator)
    names = _sklearn_features(program, estimator, X, allow_nan=False)  # validate_data: all finite
    stages = estimator.estimators_
    k_count = stages.shape[1]
    raws = tree_sums(program, [_sklearn_tree(t, float(estimator.learning_rate)) for t in stages.ravel()], names,
                     SKLEARN_TREE, k_count, [i % k_count for i in range(stages.size)], init)
    if not classifier:
        return raws
    return _classify(program, estimator, raws, predict_fn, lambda raw: raw >= F.lit(0.0))


_INVERSE_LINKS: dict[str, Callable[[Column], Column]] = {"IdentityLink": lambda raw: raw, "LogLink": F.exp}


def _hist_tree(estimator: Any, predictor: Any) -> Tree:
    nodes = predictor.nodes
    if nodes["is_categorical"].any():
        raise Unsupported(f"{_name(estimator)}: categorical splits")
    leaf = nodes["is_leaf"].astype(bool)
    left = np.where(leaf, -1, nodes["left"].astype(np.int64))
    return Tree(nodes["feature_idx"], nodes["num_threshold"], left, nodes["right"].astype(np.int64),
                nodes["missing_go_to_left"].astype(bool), nodes["value"].astype(np.float64).reshape(-1, 1))


def _hist_gradient_boosting(program: Program, estimator: Any, X: list[Column], predict_fn: str) -> list[Column]:
    """_hist_gradient_boosting: float64 features (no check rejects NaN or inf), raw = baseline + leaf values
    (shrinkage already in the leaves) iteration by iteration; the regressor applies the loss's inverse link,
    the binary classifier predicts class 1 where raw > 0 (a tie is class 0, as argmax of [0.5, 0.5])."""
    from sklearn.base import is_classifier

    classifier = is_classifier(estimator)
    _check(estimator, predict_fn, classifier)
    link = _proba_link(estimator, predict_fn) if classifier else type(estimator._loss.link).__name__
    if not classifier and link not in _INVERSE_LINKS:
        raise Unsupported(f"{_name(estimator)}: the {link} link")
    if getattr(estimator, "is_categorical_", None) is not None:
        raise Unsupported(f"{_name(estimator)}: categorical splits")  # features reordered by its encoder too
    trees = [[_hist_tree(estimator, p) for p in iteration] for iteration in estimator._predictors]
    names = stage_features(program, X, SKLEARN_HIST)
    k_count = estimator.n_trees_per_iteration_
    flat = [t for iteration in trees for t in iteration]
    raws = tree_sums(program, flat, names, SKLEARN_HIST, k_count, [i % k_count for i in range(len(flat))],
                     np.asarray(estimator._baseline_prediction, np.float64).ravel().tolist())
    if classifier:
        return _classify(program, estimator, raws, predict_fn, lambda raw: raw > F.lit(0.0))
    return [_INVERSE_LINKS[link](raws[0])]


def _estimators() -> dict[type, Translator]:
    from sklearn import ensemble, tree

    forests = [tree.DecisionTreeClassifier, tree.DecisionTreeRegressor, tree.ExtraTreeClassifier,
               tree.ExtraTreeRegressor, ensemble.RandomForestClassifier, ensemble.RandomForestRegressor,
               ensemble.ExtraTreesClassifier, ensemble.ExtraTreesRegressor]
    table: dict[type, Translator] = dict.fromkeys(forests, _forest)
    table.update(dict.fromkeys([ensemble.GradientBoostingClassifier, ensemble.GradientBoostingRegressor],
                               _gradient_boosting))
    table.update(dict.fromkeys([ensemble.HistGradientBoostingClassifier, ensemble.HistGradientBoostingRegressor],
                               _hist_gradient_boosting))
    return table


ESTIMATORS: dict[type, Translator] = _estimators()
