from setuptools import find_packages, setup

setup(
    name="warehouse-scoring",
    version="0.1.0",
    description="Score partitioned warehouse tables with MLflow models on Spark and publish a scored table",
    python_requires=">=3.10",
    packages=find_packages(include=["spark_jobs", "spark_jobs.*", "udfs", "udfs.*"]),
    # the JVM tree evaluator, built by `make jar` (make dist builds it first); optional at run time
    package_data={"udfs": ["jvm/*.jar"]},
    install_requires=[
        # The platform's PySpark must satisfy this, or pip installs a second one over it: Spark 3.5 and 4.x
        # (Databricks Runtime 14.3 LTS to 19; tests/test_deployment.py). The floors below are the versions
        # `make test-spark35` runs with, chosen so that pip keeps the older pandas, numpy and pyarrow of a Spark
        # 3.5 LTS runtime (Databricks 15.4 LTS); PySpark 4 enforces its own pandas floor (2.2) itself.
        "pyspark>=3.5,<5",
        "mlflow>=3.0,<4",
        "pandas>=1.5.3,<3",
        "pyarrow>=14.0.1",
        "numpy>=1.23.5,<3",
        "PyYAML>=6",
        "packaging>=21",
    ],
    extras_require={
        "demo": ["scikit-learn>=1.4"],
        "dev": [
            "scikit-learn>=1.4", "xgboost>=2.0", "lightgbm>=4.0", "pytest>=8", "pytest-xdist>=3.5", "chispa>=0.10",
            "duckdb>=1.0", "psutil",
            "ruff", "mypy", "types-PyYAML",
        ],
    },
    entry_points={"console_scripts": ["score-table=spark_jobs.score_table:cli"]},
)
