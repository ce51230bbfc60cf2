"""Score partitions of a warehouse table with a registered MLflow model and publish a scored table.

    spark-submit spark_jobs/score_table.py \\
        --model-uri models:/churn@champion \\
        --input-table lake.customer_features --output-table lake.customer_features_scored \\
        --partition ds=2026-11-23

Also `score-table ...` (console script) and `python -m spark_jobs.score_table ...`, with the same flags.
Exit codes: 0 success; 2 bad input or usage, found before any data is read; 1 failure while running.
"""

from __future__ import annotations

from spark_jobs.cli import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    cli()
