"""`make bench`: this job against mlflow.pyfunc.spark_udf, the no-model floor and raw predict (see RESULTS.md)."""
