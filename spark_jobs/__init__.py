"""Batch scoring of warehouse tables with MLflow models on Spark."""

from __future__ import annotations

import os
import re
import sys
import zipfile


def _prefer_installed_pyspark() -> None:
    """Import pyspark from its installed package rather than from SPARK_HOME's pyspark.zip, where both are the
    same version. spark-submit puts the zip first on the driver's path, and Python cannot keep compiled
    modules of a zip: every run compiled pyspark's modules again (0.7 CPU-seconds of the job's imports,
    measured, while the JVM starts on the same two cores). A different version (a cluster's Spark with
    another pyspark installed), no installed package, or pyspark imported already: nothing changes."""
    zips = [p for p in sys.path if os.path.basename(p) == "pyspark.zip"]
    if not zips or "pyspark" in sys.modules:
        return
    try:
        from importlib.metadata import PackageNotFoundError, version

        installed = version("pyspark")
        with zipfile.ZipFile(zips[0]) as z:
            found = re.search(r"""__version__[^=]*=\s*['"]([^'"]+)['"]""", z.read("pyspark/version.py").decode())
    except (OSError, KeyError, PackageNotFoundError, zipfile.BadZipFile):
        return
    if found is not None and found.group(1) == installed:
        sys.path[:] = [p for p in sys.path if p not in zips] + zips


_prefer_installed_pyspark()
