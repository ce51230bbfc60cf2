"""The embedded-default demo: `prepare` registers a churn model and builds a partitioned feature table;
`report` runs example SQL over the scored table. `make demo` runs the scoring job between the two, with
spark-submit, as a user would. Nothing is downloaded: data is generated, the model trained here.

    python -m spark_jobs.demo prepare [--rows 1200000] [--days 4] [--shifted-days 1 --challenger]
    python -m spark_jobs.demo report

With `--shifted-days N` the table gets N more days whose features are shifted on purpose (more support calls,
longer since the last login, higher spend), and `--challenger` registers a second model as churn@challenger:
`make demo` scores those days with the challenger beside the champion, and the run's drift and report show it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs import compat
from spark_jobs.config import embedded_tracking_uri
from spark_jobs.session import session_for

MODEL_NAME = "churn"
INPUT_TABLE = "lake.customer_features"
OUTPUT_TABLE = "lake.customer_features_scored"
FEATURES = ["tenure_months", "monthly_spend", "support_calls", "days_since_login", "num_products", "contract_months"]
REPORT_SQL = f"""SELECT ds,
       count(*)                                   AS customers,
       round(avg(prediction), 4)                  AS avg_churn_score,
       sum(CASE WHEN prediction > 0.5 THEN 1 END) AS at_risk,
       max(model_version)                         AS model_version
FROM {OUTPUT_TABLE}
GROUP BY ds
ORDER BY ds"""


def churn_logit(f: dict[str, np.ndarray]) -> np.ndarray:
    """Ground truth of the synthetic world: short tenure, support calls and inactivity drive churn."""
    return (
        -1.0 - 0.04 * f["tenure_months"] + 0.35 * f["support_calls"] + 0.03 * f["days_since_login"]
        - 0.3 * f["num_products"] - 0.02 * f["contract_months"] + 0.004 * f["monthly_spend"]
    )


def features_df(spark: SparkSession, rows: int, days: int, start: dt.date, shifted_days: int = 0) -> DataFrame:
    """Generated in the JVM, so a million-row table costs seconds. The `shifted_days` after the first `days`
    drift on purpose: more support calls, longer since the last login, higher spend."""
    per_day = rows // days
    total = days + shifted_days
    ids = spark.range(0, per_day * total, numPartitions=max(2, total))
    day = (F.col("id") % total).cast("int")
    shift = F.when(day >= days, F.lit(1.0)).otherwise(F.lit(0.0))
    return ids.select(
        F.col("id").alias("customer_id"),
        (F.rand(1) * 72).cast("int").alias("tenure_months"),
        (F.rand(2) * 150 * (1 + 0.3 * shift) + 10).cast("decimal(10,2)").alias("monthly_spend"),
        (F.floor(-F.log(F.rand(3) + F.lit(1e-9)) * 1.5) + 2 * shift).cast("int").alias("support_calls"),
        (F.rand(4) * 60 + 25 * shift).cast("int").alias("days_since_login"),
        (F.rand(5) * 4 + 1).cast("int").alias("num_products"),
        F.element_at(F.array(*[F.lit(m) for m in (1, 12, 24)]), (F.rand(6) * 3).cast("int") + 1)
        .alias("contract_months"),
        F.date_add(F.lit(start), day).alias("ds"),
    )


# Customers the demo model trains on: 50,000 are plenty; a smaller table (a test's) trains on as many as it has.
TRAINING_ROWS, MIN_TRAINING_ROWS = 50_000, 1_000


def train(seed: int = 7, n: int = TRAINING_ROWS) -> tuple[Any, pd.DataFrame]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(seed)
    f = {
        "tenure_months": rng.integers(0, 72, n).astype(float),
        "monthly_spend": np.round(rng.uniform(10, 160, n), 2),
        "support_calls": np.floor(rng.exponential(1.5, n)),
        "days_since_login": rng.integers(0, 60, n).astype(float),
        "num_products": rng.integers(1, 5, n).astype(float),
        "contract_months": rng.choice([1.0, 12.0, 24.0], n),
    }
    churned = rng.random(n) < 1 / (1 + np.exp(-churn_logit(f)))
    X = pd.DataFrame(f)[FEATURES]
    # A regressor on the 0/1 label: its prediction estimates the churn probability, one number per customer.
    # Depth 3: 50 trees of at most 15 nodes, within what the sql engine takes (spark_jobs/model/engine.py), so the
    # demo scores in the JVM, verified against the model on every run.
    model = HistGradientBoostingRegressor(max_iter=50, max_depth=3, random_state=seed)
    return model.fit(X, churned.astype(float)), X


def register(local_home: str, tracking_uri: str, training_rows: int = TRAINING_ROWS, alias: str = "champion",
             seed: int = 7) -> str:
    """Train the demo model on `training_rows` generated customers and register it as churn@<alias>."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name("churn-demo")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "churn-demo", artifact_location=(Path(local_home).resolve() / "mlartifacts").as_uri()
    )
    model, X = train(seed=seed, n=training_rows)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"churn-demo-training-{alias}"):
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(X.head(100), model.predict(X.head(100))),
            registered_model_name=MODEL_NAME, serialization_format="cloudpickle",
            # what the model needs to load (mlflow itself is added): MLflow would otherwise infer it by loading
            # the model in a subprocess
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_cloudpickle=True),
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(MODEL_NAME, alias, version)
    return version


def prepare(args: argparse.Namespace) -> None:
    spark = session_for(True, args.home)
    for line in prepare_home(spark, args.home, args.rows, args.days, dt.date.fromisoformat(args.start),
                             args.shifted_days, args.challenger):
        print(line)
    spark.stop()


def prepare_home(spark: SparkSession, home: str, rows: int, days: int, start: dt.date, shifted_days: int = 0,
                 challenger: bool = False) -> list[str]:
    """Register the model (and a challenger) in the home's registry and write the feature table through
    `spark` (whose metastore is the home's); what was made, a line each."""
    tracking_uri = embedded_tracking_uri(home)
    training_rows = min(TRAINING_ROWS, max(MIN_TRAINING_ROWS, rows))
    version = register(home, tracking_uri, training_rows)
    made = [f"registered models:/{MODEL_NAME}@champion -> version {version} ({tracking_uri})"]
    if challenger:  # another training sample: close to the champion, not the same
        made.append(f"registered models:/{MODEL_NAME}@challenger -> version "
                    f"{register(home, tracking_uri, training_rows, 'challenger', seed=11)}")
    compat.create_database(spark, "lake")
    (features_df(spark, rows, days, start, shifted_days).write.mode("overwrite")
     .partitionBy("ds").format("parquet").saveAsTable(INPUT_TABLE))
    shifted = f", the last {shifted_days} with shifted features" if shifted_days else ""
    made.append(f"wrote {INPUT_TABLE}: {rows // days * (days + shifted_days)} rows in {days + shifted_days} daily "
                f"partitions from {start}{shifted}")
    return made


DRIFT_SQL = f"""SELECT ds, kind, column_name, round(psi, 3) AS psi, round(js, 3) AS js, round(ks, 3) AS ks, baseline
FROM {OUTPUT_TABLE}_profiles
WHERE scoring_run_id = (SELECT max_by(scoring_run_id, started_at) FROM {OUTPUT_TABLE}_runs WHERE status = 'succeeded')
  AND psi IS NOT NULL
ORDER BY psi DESC
LIMIT 8"""
CHALLENGER_SQL = f"""SELECT c.partition, c.rows, round(c.mean_abs_diff, 4) AS mean_abs_diff,
       round(c.spearman, 4) AS spearman, round(c.psi, 4) AS psi, r.challenger_version, r.report_path
FROM {OUTPUT_TABLE}_runs r LATERAL VIEW explode(r.challenger) t AS c
WHERE r.challenger IS NOT NULL
ORDER BY r.started_at DESC"""


VIEW = "lake.churn_now"
VIEW_SQL = f"""SELECT customer_id, round(prediction, 4) AS churn_score, model_version
FROM {VIEW}
WHERE ds = (SELECT max(ds) FROM {VIEW}) AND contract_months = 1
ORDER BY prediction DESC
LIMIT 5"""


def report(args: argparse.Namespace) -> None:
    from spark_jobs.config import ViewConfig
    from spark_jobs.publishing.scoring_view import create_view

    spark = session_for(True, args.home)
    print("Example SQL over the scored table (spark-sql, beeline, or any Hive-metastore client):\n")
    for title, sql in (("Scores per day", REPORT_SQL), ("The latest run's most drifted columns", DRIFT_SQL),
                       ("Champion vs challenger", CHALLENGER_SQL)):
        if "_profiles" in sql and not spark.catalog.tableExists(f"{OUTPUT_TABLE}_profiles"):
            continue
        print(f"-- {title}\n{sql};\n")
        spark.sql(sql).show(truncate=False)
    latest = spark.sql(f"SELECT max_by(report_path, started_at) AS path FROM {OUTPUT_TABLE}_runs").first()
    if latest is not None and latest["path"]:
        print(f"The latest run's report (open it in a browser): {latest['path']}")
    print(f"\nA scoring view: the champion as SQL over {INPUT_TABLE} (score-table view), fresh scores for any slice\n")
    print(create_view(spark, ViewConfig(model_uri=f"models:/{MODEL_NAME}@champion", input_table=INPUT_TABLE,
                                        view=VIEW, tracking_uri=embedded_tracking_uri(args.home),
                                        local_home=args.home)))
    print(f"\n{VIEW_SQL};\n")
    spark.sql(VIEW_SQL).show(truncate=False)
    spark.stop()


def main(argv: Sequence[str] | None = None) -> None:
    logging.getLogger("py4j").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(prog="python -m spark_jobs.demo")
    p.add_argument("step", choices=["prepare", "report"])
    p.add_argument("--rows", type=int, default=1_200_000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--start", default="2026-11-20", help="first ds partition (ISO date)")
    p.add_argument("--shifted-days", type=int, default=0, help="more days, with features shifted on purpose")
    p.add_argument("--challenger", action="store_true", help="also register a challenger model")
    p.add_argument("--home", default=".local", help="folder of the embedded metastore, warehouse and registry")
    args = p.parse_args(argv)
    prepare(args) if args.step == "prepare" else report(args)


if __name__ == "__main__":
    main()
