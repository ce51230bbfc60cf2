"""Fitted scikit-learn linear models as Spark expressions: the decision X @ coef.T + intercept in double
precision, then what the model does with it (identity for regressors; for LogisticRegression, decision > 0 or
argmax for labels, expit or softmax for probabilities), as sklearn 1.9's LinearModel and
LinearClassifierMixin compute them. The caller (udfs.compiled.sklearn) has already failed the rows these
models reject (NaN, infinity), so every decision here is over finite inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge

from udfs.compiled.program import Program, Unsupported, argmax_label, chain_sum, sigmoid, softmax

Translator = Callable[[Program, Any, list[Column], str], list[Column]]


def decision(coef: Sequence[float], intercept: float, X: Sequence[Column]) -> Column:
    """sum(coef_j * x_j) + intercept, summed left to right (BLAS may group differently: equal within the
    tolerance). Zero coefficients (Lasso's) are left out: over finite inputs their terms are zeros."""
    terms = [x * F.lit(float(c)) for c, x in zip(coef, X, strict=True) if c != 0.0]
    return (chain_sum(terms) if terms else F.lit(0.0)) + F.lit(float(intercept))


def label(value: Any) -> Any:
    """A class label as a Spark literal takes it: numpy scalars as Python values."""
    return value.item() if isinstance(value, np.generic) else value


def _coefficients(estimator: Any, X: Sequence[Column]) -> tuple[np.ndarray, np.ndarray]:
    """coef_ as (outputs, features) and intercept_ as (outputs,)."""
    coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(estimator.intercept_, dtype=np.float64), (coef.shape[0],))
    if coef.shape[1] != len(X):
        raise Unsupported(f"{type(estimator).__name__}: {coef.shape[1]} coefficients for {len(X)} features")
    return coef, intercept


def _regressor(program: Program, estimator: Any, X: list[Column], predict_fn: str) -> list[Column]:
    name = type(estimator).__name__
    if predict_fn != "predict":
        raise Unsupported(f"{name}: a regressor has no {predict_fn}")
    coef, intercept = _coefficients(estimator, X)
    if coef.shape[0] != 1:
        raise Unsupported(f"{name}: multi-output regression ({coef.shape[0]} targets) is not supported")
    return [decision(coef[0], intercept[0], X)]


def _logistic(program: Program, estimator: Any, X: list[Column], predict_fn: str) -> list[Column]:
    """Binary: one decision d; predict is classes_[d > 0] (NaN, from inf - inf, is not > 0 in numpy, but
    is the largest value in Spark), predict_proba is [1 - expit(d), expit(d)]. Multiclass: one decision per
    class; argmax (first of ties) and softmax."""
    if predict_fn not in ("predict", "predict_proba"):
        raise Unsupported(f"{type(estimator).__name__}: {predict_fn} is not supported")
    coef, intercept = _coefficients(estimator, X)
    classes = [label(c) for c in estimator.classes_]
    scores = [program.let(decision(c, b, X)) for c, b in zip(coef, intercept, strict=True)]
    program.next_stage()
    if len(classes) == 2:
        (d,) = scores
        if predict_fn == "predict":
            return [F.when((d > 0) & ~F.isnan(d), F.lit(classes[1])).otherwise(F.lit(classes[0]))]
        p = program.let(sigmoid(d))
        program.next_stage()
        return [F.lit(1.0) - p, p]
    if predict_fn == "predict":
        return [argmax_label(scores, classes)]
    return softmax(program, scores)


ESTIMATORS: dict[type, Translator] = {
    LinearRegression: _regressor,
    Ridge: _regressor,
    Lasso: _regressor,
    ElasticNet: _regressor,
    LogisticRegression: _logistic,
}
