"""Benchmark inputs: a synthetic partitioned feature table (generated in the JVM) and registered models.

    python -m benchmarks.data --home .local/bench --table bench.features_4m --rows 4000000 --features 20 \\
        --partitions 4 [--models]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs import compat
from spark_jobs.config import embedded_tracking_uri
from spark_jobs.session import session_for

START = dt.date(2026, 11, 1)
MODELS = {"lr": "bench_lr", "hgb": "bench_hgb", "rf": "bench_rf", "xgb": "bench_xgb", "lgbm": "bench_lgbm"}
TREES = 300  # XGBoost's and LightGBM's rounds: "a few hundred trees", as production models have


def feature_names(n: int) -> list[str]:
    return [f"f{i:02d}" for i in range(n)]


def features_df(spark: SparkSession, rows: int, features: int, partitions: int) -> DataFrame:
    """`id`, `features` doubles in [0, 1), and `ds`: `partitions` days of equal size."""
    ids = spark.range(0, rows, numPartitions=max(2, partitions * 2))
    return ids.select(
        F.col("id"),
        *[F.rand(100 + i).alias(name) for i, name in enumerate(feature_names(features))],
        F.date_add(F.lit(START), (F.col("id") % partitions).cast("int")).alias("ds"),
    )


def training_frame(features: int, n: int = 20_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.random((n, features)), columns=feature_names(features))
    weights = rng.normal(0, 2, features)
    logit = (X.to_numpy() - 0.5) @ weights + np.sin(6 * X.iloc[:, 0].to_numpy())
    return X, logit


def train(kind: str, features: int) -> tuple[Any, pd.DataFrame]:
    """lr (cheap): a logistic regression (class labels); hgb (medium): 100-tree gradient boosting (a score);
    rf (large): a 200-tree random forest of depth 8 (a score); xgb: an XGBoost classifier of 300 trees of
    depth 6 (class labels); lgbm: a LightGBM regressor of 300 trees of 31 leaves (a score)."""
    X, logit = training_frame(features)
    if kind == "xgb":
        import xgboost

        return xgboost.XGBClassifier(n_estimators=TREES, max_depth=6, random_state=0, n_jobs=2).fit(
            X, (logit > 0).astype(int)), X
    if kind == "lgbm":
        import lightgbm

        return lightgbm.LGBMRegressor(n_estimators=TREES, num_leaves=31, random_state=0, verbose=-1).fit(X, logit), X
    if kind == "lr":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=500).fit(X, (logit > 0).astype(int)), X
    if kind == "rf":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=200, max_depth=8, random_state=0, n_jobs=1).fit(X, logit), X
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=100, early_stopping=False, random_state=0).fit(X, logit), X


def register(home: str, features: int, kinds: Sequence[str]) -> None:
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(embedded_tracking_uri(home))
    client = MlflowClient()
    for kind in kinds:
        name = MODELS[kind]
        model, X = train(kind, features)
        signature = infer_signature(X.head(100), model.predict(X.head(100)))
        with mlflow.start_run(run_name=f"bench-{kind}"):
            if kind in ("xgb", "lgbm"):  # each library's own MLflow flavor
                import mlflow.lightgbm
                import mlflow.xgboost

                flavor = mlflow.xgboost if kind == "xgb" else mlflow.lightgbm
                info = flavor.log_model(model, name="model", signature=signature, registered_model_name=name,
                                        pip_requirements=[])
            else:
                info = mlflow.sklearn.log_model(
                    model, name="model", signature=signature, registered_model_name=name,
                    serialization_format="cloudpickle",
                    pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_cloudpickle=True),
                )
        client.set_registered_model_alias(name, "champion", str(info.registered_model_version))
        print(f"registered models:/{name}@champion -> version {info.registered_model_version}")


def main(argv: Sequence[str] | None = None) -> None:
    logging.getLogger("py4j").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(prog="python -m benchmarks.data")
    p.add_argument("--home", required=True)
    p.add_argument("--table", action="append", default=[], help="DB.TABLE:ROWS, repeatable")
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--models", default="", help="models to train and register, e.g. lr,hgb,rf")
    args = p.parse_args(argv)
    if args.models:
        register(args.home, args.features, args.models.split(","))
    if not args.table:
        return
    spark = session_for(True, args.home)
    for spec in args.table:
        name, rows = spec.rsplit(":", 1)
        compat.create_database(spark, name.split(".")[0])
        (features_df(spark, int(rows), args.features, args.partitions).write.mode("overwrite")
         .partitionBy("ds").format("parquet").saveAsTable(name))
        print(f"wrote {name}: {rows} rows x {args.features} features in {args.partitions} partitions")
    spark.stop()


if __name__ == "__main__":
    main()
