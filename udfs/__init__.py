"""Vectorized model UDFs: know models and DataFrames, nothing of tables or the CLI."""

from __future__ import annotations

from udfs.model_udf import FeatureColumn, ModelSpec, score

__all__ = ["FeatureColumn", "ModelSpec", "score"]
