"""XGBoost models as Spark expressions, read from the library's own JSON model (`Booster.save_raw("json")`),
reproducing its CPU predictor's float32 arithmetic: features cast to float32 and sent left where
`value < split_condition` (float32), NaN by each node's default direction, leaves added in float32 in tree
order onto the base margin, then the objective's transform in float32 (sigmoid 1 / (1 + expf(-x)); softmax
expf(x - max) over a double sum cast to float32; expf for count:poisson, reg:gamma, reg:tweedie).

Java has no float32 exp: expf(x) is computed as the double exp rounded to float32, which differs from glibc's
expf by one unit in the last place on about 6 in 10,000 values; verification holds float32 outputs to that
unit (udfs.compiled.verify). Every other step is exact: a float32 +, -, * or / computed in double and rounded
once gives the float32 result."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F

from udfs.compiled.program import (
    Program,
    Unsupported,
    argmax_label,
    as_double,
    as_float32,
    chain_sum,
    f32,
)
from udfs.compiled.trees import SplitRule, Tree, stage_features, tree_sums
from udfs.compiled.verify import TIMESTAMP

RULE = SplitRule("<", as_float32, threshold=lambda t: float(np.float32(t)))  # src/predictor: fvalue < split
_LOGIT = ("binary:logistic", "reg:logistic")
_EXP = ("count:poisson", "reg:gamma", "reg:tweedie")
_IDENTITY = ("binary:logitraw", "reg:squarederror", "reg:linear", "reg:absoluteerror", "reg:pseudohubererror",
             "reg:squaredlogerror")
_SOFTMAX = ("multi:softprob", "multi:softmax")
OBJECTIVES = (*_LOGIT, *_EXP, *_IDENTITY, *_SOFTMAX)


@dataclass(frozen=True)
class Ensemble:
    """What a gbtree booster's JSON model reduces to: the trees (float32 thresholds and leaves), the output
    group of each, one base margin per group, the objective and the feature names (None if unnamed)."""

    trees: list[Tree]
    groups: list[int]
    base: list[float]
    objective: str
    features: list[str] | None
    owner: str


def read(booster: Any, owner: str, iterations: int | None = None) -> Ensemble:
    """The booster's own JSON dump; `iterations`: only the first that many boosting rounds (best_iteration + 1)."""
    learner = json.loads(bytes(booster.save_raw("json")))["learner"]
    objective = learner["objective"]["name"]
    booster_kind = learner["gradient_booster"]["name"]
    if booster_kind != "gbtree":
        raise Unsupported(f"{owner}: booster {booster_kind} (only gbtree translates)")
    if objective not in OBJECTIVES:
        raise Unsupported(f"{owner}: objective {objective}")
    param = learner["learner_model_param"]
    if int(param.get("num_target", "1")) != 1:
        raise Unsupported(f"{owner}: {param['num_target']} targets")
    types = learner.get("feature_types") or []
    if "c" in types:
        raise Unsupported(f"{owner}: categorical features")
    model = learner["gradient_booster"]["model"]
    trees, groups = model["trees"], list(model["tree_info"])
    if iterations is not None:
        indptr = model.get("iteration_indptr")
        if indptr is None:
            raise Unsupported(f"{owner}: best_iteration without iteration_indptr in the model")
        end = indptr[min(iterations, len(indptr) - 1)]
        trees, groups = trees[:end], groups[:end]
    n_groups = max(1, int(param.get("num_class", "0")))
    scores = [float(v) for v in str(param["base_score"]).strip("[]").split(",")]
    if len(scores) not in (1, n_groups):
        raise Unsupported(f"{owner}: {len(scores)} base scores for {n_groups} output groups")
    base = [_prob_to_margin(objective, s, owner) for s in scores] * (n_groups if len(scores) == 1 else 1)
    names = learner.get("feature_names") or None
    return Ensemble([_tree(t, owner) for t in trees], groups, base, objective, names, owner)


def _tree(tree: dict[str, Any], owner: str) -> Tree:
    if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
        raise Unsupported(f"{owner}: vector leaves")
    if any(int(s) != 0 for s in tree.get("split_type", [])):
        raise Unsupported(f"{owner}: categorical splits")
    left = np.asarray(tree["left_children"], np.int64)
    values = np.asarray(tree["split_conditions"], np.float32).astype(np.float64)  # a leaf's value sits here
    return Tree(np.asarray(tree["split_indices"], np.int64), values, left,
                np.asarray(tree["right_children"], np.int64), np.asarray(tree["default_left"], bool),
                np.where(left < 0, values, 0.0).reshape(-1, 1))


@functools.cache
def _libm() -> Any:
    path = ctypes.util.find_library("m")
    lib = ctypes.CDLL(path) if path else None
    if lib is not None:
        lib.logf.restype, lib.logf.argtypes = ctypes.c_float, [ctypes.c_float]
    return lib


def _logf(x: float) -> float:
    """C's logf, as the library computes its base margin (numpy's float32 log rounds differently)."""
    lib = _libm()
    value = lib.logf(x) if lib is not None else np.log(np.float32(x))
    return float(np.float32(value))


def _prob_to_margin(objective: str, score: float, owner: str) -> float:
    """ObjFunction::ProbToMargin in float32: -logf(1 / p - 1) for logistic objectives, logf(p) for the
    log-link ones, p itself otherwise (binary:logitraw included)."""
    p = np.float32(score)
    if objective in _LOGIT:
        if not 0.0 < p < 1.0:
            raise Unsupported(f"{owner}: base_score {score} outside (0, 1) for {objective}")
        return float(np.float32(-_logf(float(np.float32(np.float32(1.0) / p - np.float32(1.0))))))
    if objective in _EXP:
        if not p > 0.0:
            raise Unsupported(f"{owner}: base_score {score} not positive for {objective}")
        return _logf(float(p))
    return float(p)


def expf(value: Column) -> Column:
    return f32(F.exp(as_double(value)))


def margins(program: Program, ensemble: Ensemble, X: Sequence[Column]) -> list[Column]:
    """Per output group: base + tree + tree + ... in float32, in the order the trees are stored."""
    if ensemble.features is not None and len(ensemble.features) != len(X):
        raise Unsupported(f"{ensemble.owner}: {len(ensemble.features)} features, the model gets {len(X)}")
    names = stage_features(program, X, RULE)
    # measured (make bench, 300 trees of depth 6 on 4M rows): XGBoost's blocked C++ predictor walks a node
    # faster than the evaluator (2.9 against 3.3 us a row in one thread since the fifteenth pass's walk,
    # 3.7 before), which outweighs the crossing into Python: whole runs 45.7 and 41.8 s as a UDF against 50.6
    # and 46.7 s in the evaluator (benchmarks/RESULTS.md)
    program.faster_in_library = "XGBoost's own predictor walks large ensembles faster than the JVM tree evaluator"
    return tree_sums(program, ensemble.trees, names, RULE, len(ensemble.base), ensemble.groups, ensemble.base,
                     float32=True)


def transformed(program: Program, ensemble: Ensemble, raw: list[Column]) -> list[Column]:
    """The objective's PredTransform (multi:softmax's class index left to the caller)."""
    objective = ensemble.objective
    if objective in ("binary:logistic", "reg:logistic"):
        return [sigmoid32(raw[0])]
    if objective in _EXP:
        return [expf(raw[0])]
    if objective in _SOFTMAX:
        return softmax32(program, raw)
    return raw


def sigmoid32(x: Column) -> Column:
    """common::Sigmoid: 1.0f / (1.0f + expf(-x))."""
    return f32(F.lit(1.0) / as_double(f32(F.lit(1.0) + as_double(expf(-x)))))


def softmax32(program: Program, raw: list[Column]) -> list[Column]:
    """common::Softmax: e_k = expf(x_k - max) (float32), wsum their double sum, e_k / (float) wsum."""
    top = program.let(F.greatest(*raw) if len(raw) > 1 else raw[0])
    program.next_stage()
    exps = [program.let(expf(f32(x - top))) for x in raw]
    program.next_stage()
    total = program.let(as_double(f32(chain_sum([as_double(e) for e in exps]))))
    program.next_stage()
    return [f32(as_double(e) / total) for e in exps]


def first_max(values: Sequence[Column]) -> Column:
    """The index of the first largest value (numpy's argmax, common::FindMaxIndex)."""
    return argmax_label(values, list(range(len(values))))


Output = Callable[[Program, Ensemble, list[Column]], list[Column]]


def _booster_predict(program: Program, ensemble: Ensemble, raw: list[Column]) -> list[Column]:
    """Booster.predict: the transformed output; multi:softmax gives the class index as a float."""
    if ensemble.objective == "multi:softmax":
        return [f32(first_max(raw))]
    return transformed(program, ensemble, raw)


def translate_booster(program: Program, booster: Any, X: list[Column], owner: str) -> list[Column]:
    """A bare Booster as mlflow.xgboost's pyfunc calls it: predict(DMatrix(frame)), every tree. DMatrix
    refuses a row with a value that is infinite in float32; the message is the library's own."""
    ensemble = read(booster, owner)
    if not program.inputs_finite:
        message = _dmatrix_error()
        program.fail_when(_any_infinite(X), message, "XGBoostError")
    return _booster_predict(program, ensemble, margins(program, ensemble, X))


def _any_infinite(X: Sequence[Column]) -> Column:
    found = F.lit(False)
    for x in X:
        found = found | F.coalesce(F.abs(as_float32(x)) == F.lit(math.inf), F.lit(False))
    return found


def _dmatrix_error() -> str:
    """The first line of what DMatrix raises on an infinite value, less its time stamp."""
    import xgboost

    try:
        xgboost.DMatrix(np.array([[math.inf]]))
    except xgboost.core.XGBoostError as e:
        return untimed((str(e).strip().splitlines() or [""])[0][:500])
    raise Unsupported("Booster: DMatrix accepts infinite values in this XGBoost version")


def untimed(message: str) -> str:
    """XGBoost's messages start with the time they were raised, `[hh:mm:ss] `: never the same twice."""
    return TIMESTAMP.sub("", message, count=1)


def _check_wrapper(estimator: Any, predict_fn: str, classifier: bool) -> None:
    name = type(estimator).__name__
    if predict_fn not in (("predict", "predict_proba") if classifier else ("predict",)):
        raise Unsupported(f"{name}: predict_fn {predict_fn!r}")
    missing = getattr(estimator, "missing", math.nan)
    if not (isinstance(missing, float) and math.isnan(missing)):
        raise Unsupported(f"{name}: missing={missing!r} (only NaN as missing translates)")


def _iterations(estimator: Any) -> int | None:
    """XGBModel.predict scores up to best_iteration when the model was fitted with early stopping."""
    try:
        return int(estimator.best_iteration) + 1
    except AttributeError:
        return None


def translate_estimator(program: Program, estimator: Any, X: list[Column], predict_fn: str) -> list[Column]:
    """XGBClassifier / XGBRegressor (alone or a Pipeline's final step): predict gives the regressor's
    transformed output, the classifier's class index (binary: probability > 0.5; multi-class: first largest
    probability); predict_proba gives [1 - p, p] or the softmax probabilities."""
    from sklearn.base import is_classifier

    classifier = is_classifier(estimator)
    _check_wrapper(estimator, predict_fn, classifier)
    owner = type(estimator).__name__
    ensemble = read(estimator.get_booster(), owner, _iterations(estimator))
    raw = margins(program, ensemble, X)
    if not classifier:
        return _booster_predict(program, ensemble, raw)
    if ensemble.objective not in ("binary:logistic", *_SOFTMAX):
        raise Unsupported(f"{owner}: a classifier with objective {ensemble.objective}")
    if ensemble.objective == "multi:softmax":
        if predict_fn == "predict_proba":
            raise Unsupported(f"{owner}: predict_proba with objective multi:softmax")
        return [first_max(raw)]
    probabilities = transformed(program, ensemble, raw)
    if len(probabilities) == 1:
        p = program.let(probabilities[0])
        program.next_stage()
        if predict_fn == "predict":
            return [F.when(p > F.lit(0.5), F.lit(1)).otherwise(F.lit(0))]
        return [f32(F.lit(1.0) - as_double(p)), p]
    if predict_fn == "predict":
        staged = [program.let(c) for c in probabilities]
        program.next_stage()
        return [first_max(staged)]
    return probabilities


def estimators() -> dict[type, Callable[[Program, Any, list[Column], str], list[Column]]]:
    import xgboost

    return dict.fromkeys([xgboost.XGBClassifier, xgboost.XGBRegressor], translate_estimator)
