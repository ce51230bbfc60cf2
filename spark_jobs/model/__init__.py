"""The model: resolved once to one version and downloaded (`model_ref`); which engine scores it, translated
into Spark expressions or as the UDF (`engine`)."""
