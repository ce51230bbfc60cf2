"""Batch scoring of warehouse tables with MLflow models on Spark."""
