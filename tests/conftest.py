"""One Spark session (local[2], Hive metastore in Derby) and one MLflow registry (SQLite) for the suite."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.catalog import Catalog

from spark_jobs import compat, jvm_classes
from tests.support import DAYS, SCHEMA, create_table, fit, prepare_home, register_sklearn

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
# One throwaway MLflow store for the whole session, set before any test runs: whatever reads MLflow's
# defaults (the environment) finds it, never a store in the working directory.
REGISTRY_DIR = Path(tempfile.mkdtemp(prefix="scoring-tests-mlflow-"))
REGISTRY_URI = f"sqlite:///{REGISTRY_DIR / 'mlflow.db'}"
os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = REGISTRY_URI
atexit.register(shutil.rmtree, REGISTRY_DIR, True)


# The modules whose tests start processes (marker `processes`), in two units for pytest-xdist (`make test` runs
# two workers). Each unit goes whole to one worker, so the process tests of one worker share that worker's
# prepared embedded home (the `home` fixture, one per worker: Derby admits one process at a time) and never run
# at once. The crash tests (about a third of the process time) are one unit, the other process tests the
# second; the compiled-model tests ride with the crash tests so that both units are larger than any other and
# xdist hands one to each worker first. Every other test is a unit of its own.
PROCESS_MODULES = {"test_entry_points.py", "test_faults.py", "test_platforms.py", "test_spark_submit.py"}
PROCESS_UNITS = {
    "crashes": {"test_faults.py", "test_compiled_linear.py", "test_compiled_trees.py"},
    "processes": PROCESS_MODULES - {"test_faults.py"},
}


# The process tests that prepare their home in their own first process run first in their unit (xdist hands a
# unit's tests to its worker in collection order): the rest of the unit finds the home prepared.
PREPARE_FIRST = ("test_faults.py", "test_spark_submit.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    strays = [i.nodeid for i in items if i.get_closest_marker("processes") and i.path.name not in PROCESS_MODULES]
    assert not strays, f"tests marked `processes` outside PROCESS_MODULES (tests/conftest.py): {strays}"
    items.sort(key=lambda i: i.path.name not in PREPARE_FIRST)  # stable: the order within stays


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`-n N` (pytest-xdist's default `--dist load`): this scheduling instead; another --dist: xdist's own."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ProcessUnits(LoadScopeScheduling):  # type: ignore[misc]
        """PROCESS_UNITS, largest first (xdist orders units by their number of tests); then one test a unit."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return next((unit for unit, modules in PROCESS_UNITS.items() if module in modules), nodeid)

    return ProcessUnits(config, log)


def _create_database(catalog: Catalog, dbName: str, ifNotExists: bool = False) -> None:
    compat.create_database(catalog._sparkSession, dbName)


def _drop_table(catalog: Catalog, tableName: str, ifExists: bool = False) -> None:
    compat.drop_table(catalog._sparkSession, tableName)


# The tests create databases and drop tables with PySpark 4.2's Catalog calls; on an older PySpark (the Spark
# 3.5 run of `make test`) the same statements come from spark_jobs.compat.
if not hasattr(Catalog, "createDatabase"):
    Catalog.createDatabase = _create_database
    Catalog.dropTable = _drop_table


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scoring")


@pytest.fixture(scope="session")
def spark(workdir: Path) -> Iterator[SparkSession]:
    session = (
        SparkSession.builder.master("local[2]")
        .appName("scoring-tests")
        .enableHiveSupport()
        .config("spark.sql.warehouse.dir", str(workdir / "warehouse"))
        .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={workdir / 'metastore_db'};create=true")
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={workdir} {jvm_classes.java_options()}")
        .config("spark.ui.enabled", "false")
        .config("spark.python.sql.dataFrameDebugging.enabled", "false")  # as the job's own sessions (JOB_DEFAULTS)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.task.maxFailures", "1")
        .config("spark.sql.execution.pyspark.udf.simplifiedTraceback.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tracking_uri(workdir: Path) -> str:
    """The session's throwaway registry (see REGISTRY_URI); the job finds it the standard way, through
    MLFLOW_TRACKING_URI. Tracking and registry are pinned again, whatever a test pointed MLflow at before."""
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = REGISTRY_URI
    mlflow.set_tracking_uri(REGISTRY_URI)
    mlflow.set_registry_uri(REGISTRY_URI)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("tests", artifact_location=(workdir / "artifacts").as_uri())
    )
    return REGISTRY_URI


@pytest.fixture(scope="session")
def home_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of this worker's embedded default for tests that run the job in separate processes (Derby
    admits one process at a time, and this session's Spark holds another one). The first process that
    runs there prepares it when it can (tests.support.Driver.prepare_home); else the `home` fixture does."""
    return tmp_path_factory.mktemp("embedded")


@pytest.fixture(scope="session")
def home(home_dir: Path) -> Path:
    """The embedded default, prepared (demo model, small two-day table): by a process of its own unless a
    Driver prepared it already."""
    return prepare_home(home_dir)


@pytest.fixture(scope="session")
def model(tracking_uri: str) -> dict[str, str]:
    """Registered model `churn_lr`: version 1 (alias champion) and version 2 with other coefficients."""
    v1 = register_sklearn(*fit((3.0, 0.5, -1.0), seed=1), "churn_lr", alias="champion")
    v2 = register_sklearn(*fit((-2.0, 1.5, 4.0), seed=2), "churn_lr")
    return {"v1": v1, "v2": v2}


@pytest.fixture(scope="session")
def source(spark: SparkSession) -> str:
    """lake.features: 12 customers over three daily partitions, features in types the model must cast."""
    spark.catalog.createDatabase("lake", ifNotExists=True)
    rows = [(i, 10 + i, Decimal(f"{20 + i * 1.25:.2f}"), 3 * i, f"s{i % 2}", DAYS[i % 3]) for i in range(12)]
    create_table(spark, "lake.features", rows, SCHEMA)
    return "lake.features"


@pytest.fixture()
def output(spark: SparkSession, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh output table name per test, dropped afterwards."""
    name = "lake.scored_" + re.sub(r"\W", "_", request.node.name)[5:60]
    spark.catalog.dropTable(name, ifExists=True)
    yield name
    spark.catalog.dropTable(name, ifExists=True)
