from setuptools import setup

setup(
    name="warehouse-scoring",
    version="0.1.0",
    description="Score partitioned warehouse tables with MLflow models on Spark and publish a scored table",
    python_requires=">=3.10",
    packages=["spark_jobs", "udfs"],
    install_requires=[
        "pyspark>=4.0,<5",
        "mlflow>=3.0,<4",
        "pandas>=2.2,<3",
        "pyarrow>=15",
        "numpy",
        "PyYAML>=6",
    ],
    extras_require={
        "demo": ["scikit-learn>=1.4"],
        "dev": [
            "scikit-learn>=1.4", "pytest>=8", "chispa>=0.10", "duckdb>=1.0", "psutil", "ruff", "mypy", "types-PyYAML",
        ],
    },
    entry_points={"console_scripts": ["score-table=spark_jobs.score_table:cli"]},
)
