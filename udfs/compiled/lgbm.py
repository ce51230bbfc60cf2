"""LightGBM models as Spark expressions, read from the library's own dump (`Booster.dump_model()`, which takes
the best iteration when there is one, as predict does), reproducing its double arithmetic:

- a value with |x| <= 1e-35f becomes 0 (the dense row is made sparse before prediction);
- per node, by its missing type: `NaN` sends NaN the default way; `Zero` reads NaN as 0 and sends 0 the
  default way; `None` reads NaN as 0; then `value <= threshold` goes left (tree.h NumericalDecision);
- a categorical split sends a value left when its integer part (C's truncating cast) is one of the split's
  categories; NaN, values of -1 and below and values past int's range go right (CategoricalDecision);
- raw score per class = tree + tree + ... from 0, iteration by iteration; then the objective's conversion
  (binary: 1 / (1 + exp(-sigmoid * x)); multiclass: softmax; poisson, gamma, tweedie: exp).

Pandas categorical columns, random-forest averaging and objectives outside that list raise Unsupported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from udfs.compiled.program import Program, Unsupported, argmax_label, missing, sigmoid, softmax
from udfs.compiled.trees import SplitRule, Tree, tree_sums

RULE = SplitRule("<=", lambda c: c)
ZERO = float(np.float32(1e-35))  # kZeroThreshold, a float literal widened to double
_MISSING = ("NaN", "Zero", "None")  # the order of each feature's three staged variants
_IDENTITY = ("regression", "regression_l1", "huber", "fair", "quantile", "mape", "lambdarank", "rank_xendcg")
_EXP = ("poisson", "gamma", "tweedie")


@dataclass(frozen=True)
class Ensemble:
    trees: list[Tree]  # feature f of node i indexes the staged variants: f + n_features * missing type
    per_iteration: int
    objective: str
    sigmoid: float
    owner: str


def read(booster: Any, owner: str, n_features: int) -> Ensemble:
    dump = booster.dump_model()
    if dump.get("average_output"):
        raise Unsupported(f"{owner}: boosting rf (averaged trees)")
    if int(dump["max_feature_idx"]) + 1 != n_features:
        raise Unsupported(f"{owner}: {int(dump['max_feature_idx']) + 1} features, the model gets {n_features}")
    words = str(dump["objective"]).split()
    objective = words[0] if words else ""
    options = dict(w.split(":", 1) for w in words[1:] if ":" in w)
    if objective not in ("binary", "multiclass", "cross_entropy", *_IDENTITY, *_EXP) or "sqrt" in words[1:]:
        raise Unsupported(f"{owner}: objective {dump['objective']!r}")
    if dump.get("pandas_categorical"):
        raise Unsupported(f"{owner}: pandas categorical columns (their codes are the training frame's)")
    trees = [_tree(info["tree_structure"], owner, n_features) for info in dump["tree_info"]]
    return Ensemble(trees, int(dump["num_tree_per_iteration"]), objective, float(options.get("sigmoid", 1.0)), owner)


def _tree(root: dict[str, Any], owner: str, n_features: int) -> Tree:
    """The nested dump as arrays, nodes numbered depth first; a one-leaf tree is a leaf."""
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    default_left: list[bool] = []
    value: list[float] = []
    categories: list[tuple[int, ...] | None] = []

    def add(node: dict[str, Any]) -> int:
        i = len(feature)
        feature.append(0)
        threshold.append(0.0)
        left.append(-1)
        right.append(-1)
        default_left.append(False)
        value.append(float(node.get("leaf_value", 0.0)))
        categories.append(None)
        if "split_feature" not in node:
            return i
        if node["decision_type"] == "==":  # CategoricalDecision: NaN goes right whatever the missing type
            feature[i] = int(node["split_feature"])  # the NaN variant: null for NaN, never taken left
            categories[i] = tuple(int(c) for c in str(node["threshold"]).split("||"))
        elif node["decision_type"] == "<=":
            kind = _MISSING.index(node["missing_type"])
            feature[i] = int(node["split_feature"]) + n_features * kind
            threshold[i] = float(node["threshold"])
            default_left[i] = bool(node["default_left"])
        else:
            raise Unsupported(f"{owner}: decision type {node['decision_type']!r}")
        left[i] = add(node["left_child"])
        right[i] = add(node["right_child"])
        return i

    add(root)
    return Tree(np.asarray(feature), np.asarray(threshold), np.asarray(left), np.asarray(right),
                np.asarray(default_left), np.asarray(value, np.float64).reshape(-1, 1),
                tuple(categories) if any(c is not None for c in categories) else None)


def _stage_features(program: Program, X: list[Column], used: list[int]) -> list[str]:
    """The staged variants in `used` (index f + len(X) * missing type, as Ensemble numbers them), in that order:
    a feature one way per missing type its nodes read it with; null is what goes the default way. Only those the
    trees split on: a model trained without missing values reads every feature one way, and each variant is an
    expression per row and a column the tree evaluator copies (three per feature before: the bench's LightGBM
    model staged 60 columns for 20 features)."""
    nan = F.lit(None).cast(T.DoubleType())
    zero = F.lit(0.0)
    names = []
    for i in used:
        variant, x = _MISSING[i // len(X)], X[i % len(X)]
        small = F.abs(x) <= F.lit(ZERO)
        if variant == "NaN":
            expr = F.when(missing(x), nan).when(small, zero).otherwise(x)
        elif variant == "Zero":
            expr = F.when(missing(x) | small, nan).otherwise(x)
        else:
            expr = F.when(missing(x) | small, zero).otherwise(x)
        program.let(expr)
        names.append(program.stages[-1][-1][0])
    program.next_stage()
    return names


def raw_scores(program: Program, ensemble: Ensemble, X: list[Column]) -> list[Column]:
    """Per class: tree_0k + tree_1k + ... (GBDT::PredictRaw adds into zeros, iteration by iteration), over the
    staged variants the trees split on, renumbered in order."""
    used = sorted({int(f) for t in ensemble.trees for f, left in zip(t.feature, t.left, strict=True) if left >= 0})
    used = used or [0]  # trees that are all leaves read nothing; one column keeps the stage from being empty
    at = {f: i for i, f in enumerate(used)}
    trees = [replace(t, feature=np.array([at.get(int(f), 0) for f in t.feature], np.int64)) for t in ensemble.trees]
    names = _stage_features(program, X, used)
    k = ensemble.per_iteration
    return tree_sums(program, trees, names, RULE, k, [i % k for i in range(len(trees))])


def converted(program: Program, ensemble: Ensemble, raws: list[Column]) -> list[Column]:
    """ObjectiveFunction::ConvertOutput."""
    objective = ensemble.objective
    if objective == "binary":
        return [F.lit(1.0) / (F.lit(1.0) + F.exp(F.lit(-ensemble.sigmoid) * raws[0]))]
    if objective == "cross_entropy":
        return [sigmoid(raws[0])]
    if objective == "multiclass":
        return softmax(program, raws)
    if objective in _EXP:
        return [F.exp(raws[0])]
    return raws


def translate_booster(program: Program, booster: Any, X: list[Column], owner: str) -> list[Column]:
    """A bare Booster as mlflow.lightgbm's pyfunc calls it: predict(frame)."""
    ensemble = read(booster, owner, len(X))
    return converted(program, ensemble, raw_scores(program, ensemble, X))


def translate_estimator(program: Program, estimator: Any, X: list[Column], predict_fn: str) -> list[Column]:
    """LGBMClassifier / LGBMRegressor: the regressor's converted output; the classifier's predict_proba
    ([1 - p, p] for two classes) and predict (classes_[argmax of those], the first of equal maxima)."""
    from sklearn.base import is_classifier

    owner = type(estimator).__name__
    classifier = is_classifier(estimator)
    if predict_fn not in (("predict", "predict_proba") if classifier else ("predict",)):
        raise Unsupported(f"{owner}: predict_fn {predict_fn!r}")
    ensemble = read(estimator.booster_, owner, len(X))
    if classifier and ensemble.objective not in ("binary", "multiclass"):
        raise Unsupported(f"{owner}: a classifier with objective {ensemble.objective}")
    outputs = converted(program, ensemble, raw_scores(program, ensemble, X))
    if not classifier:
        return outputs
    if len(outputs) == 1:
        p = program.let(outputs[0])
        program.next_stage()
        outputs = [F.lit(1.0) - p, p]
    if predict_fn == "predict_proba":
        return outputs
    staged = [program.let(c) for c in outputs]
    program.next_stage()
    labels = [c.item() if isinstance(c, np.generic) else c for c in estimator.classes_]
    return [argmax_label(staged, labels)]


def estimators() -> dict[type, Callable[[Program, Any, list[Column], str], list[Column]]]:
    import lightgbm

    return dict.fromkeys([lightgbm.LGBMClassifier, lightgbm.LGBMRegressor], translate_estimator)
