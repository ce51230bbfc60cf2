"""Deployment files agree with the code: the Databricks bundle's entry point, parameters, compute and runtime
(its Spark within the range setup.py declares), the cron line."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shlex
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from pyspark.sql import SparkSession

from spark_jobs.config import parse_args
from spark_jobs.score_table import cli

CONF = Path(__file__).resolve().parents[1] / "conf"
SETUP = CONF.parent / "setup.py"
pytestmark = pytest.mark.spark35  # no Spark session: cheap on both lines, and setup.py is the same for both

# Databricks Runtime -> the Apache Spark it ships, from Databricks' release notes ("powered by Apache Spark").
# A major version alone stands for each of its releases.
RUNTIME_SPARK = {
    "13.3": "3.4.1",
    "14.3": "3.5.0",
    "15.4": "3.5.0",
    "16.4": "3.5.2",
    "17.3": "4.0.0",
    "18": "4.1.0",
    "19": "4.2.0",
}
LTS = {"13.3", "14.3", "15.4", "16.4", "17.3"}


def runtime(spark_version: str) -> tuple[str, Version]:
    """A cluster's `spark_version` key (16.4.x-scala2.13, 15.4.x-photon-scala2.12) as the runtime and its Spark."""
    m = re.fullmatch(r"(\d+)\.(\d+)\.x-[\w.-]+", spark_version)
    assert m, f"spark_version {spark_version!r} is not a Databricks runtime key such as 16.4.x-scala2.13"
    name = f"{m[1]}.{m[2]}"
    spark = RUNTIME_SPARK.get(name) or RUNTIME_SPARK.get(m[1])
    assert spark, f"Databricks Runtime {name} is not in RUNTIME_SPARK: add it from Databricks' release notes"
    return name, Version(spark)


def install_requires() -> list[Requirement]:
    """setup.py's install_requires, read from its source: what the wheel will declare."""
    call = next(n for n in ast.walk(ast.parse(SETUP.read_text())) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "setup")
    value = next(k.value for k in call.keywords if k.arg == "install_requires")
    return [Requirement(r) for r in ast.literal_eval(value)]


def declared_pyspark() -> SpecifierSet:
    (pyspark,) = [r for r in install_requires() if canonicalize_name(r.name) == "pyspark"]
    return pyspark.specifier


def pyspark_requirements() -> dict[str, SpecifierSet]:
    """Every requirement on pyspark that installing the wheel brings, by who asks: the wheel itself and, through
    the distributions installed here, its dependencies (extras nobody asked for left out)."""
    found: dict[str, SpecifierSet] = {}
    seen: set[str] = set()
    todo = [("warehouse-scoring", r) for r in install_requires()]
    while todo:
        owner, req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "pyspark":
            found[owner] = req.specifier
        if name in seen:
            continue
        seen.add(name)
        try:
            deps = [Requirement(d) for d in importlib.metadata.requires(name) or []]
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [(name, d) for d in deps
                 if d.marker is None or any(d.marker.evaluate({"extra": e}) for e in ("", *req.extras))]
    return found


def bundle_job() -> dict[str, Any]:
    return yaml.safe_load((CONF / "databricks" / "resources" / "score_job.yml").read_text())["resources"]["jobs"][
        "score_table"]


def substitute(text: str, variables: dict[str, Any]) -> str:
    """Bundle variables by their defaults; Databricks' dynamic value references by an example value."""
    text = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), text)
    return text.replace("{{job.parameters.run_date}}", "2026-11-23")


def test_databricks_bundle_runs_the_wheel_entry_point_with_valid_flags() -> None:
    bundle = yaml.safe_load((CONF / "databricks" / "databricks.yml").read_text())
    job = bundle_job()
    setup = SETUP.read_text()
    (task,) = job["tasks"]
    wheel = task["python_wheel_task"]
    assert wheel["entry_point"] == re.search(r'"([\w-]+)=spark_jobs\.score_table:cli"', setup).group(1)
    assert wheel["package_name"] == re.search(r'name="([\w-]+)"', setup).group(1).replace("-", "_")
    assert job["schedule"]["quartz_cron_expression"] == "0 0 2 * * ?"
    assert job["parameters"] == [{"name": "run_date", "default": "{{job.start_time.iso_date}}"}]

    args = [substitute(str(p), bundle["variables"]) for p in wheel["parameters"]]
    cfg = parse_args(args)  # the CLI's own parser and validation, three-part names included
    assert (cfg.model_uri, cfg.input_table, cfg.output_table) == (
        "models:/main.ml.churn@champion", "main.lake.customer_features", "main.lake.customer_features_scored")
    assert cfg.partitions == {"ds": ("2026-11-23",)}
    assert cfg.output_format == "delta"


def test_cron_line_has_valid_flags() -> None:
    line = next(x for x in (CONF / "cron" / "score-table.cron").read_text().splitlines()
                if x and not x.startswith("#"))
    words = shlex.split(line.split(" spark-submit ", 1)[1].split(">>")[0].replace("\\%", "%"))
    flags = words[words.index("spark_jobs/score_table.py") + 1:]
    flags = [w.replace("$(date -d yesterday +%F)", "2026-11-23") for w in flags]
    cfg = parse_args([f.replace("conf/cluster.yaml", str(CONF / "cluster.yaml")) for f in flags])
    assert cfg.partitions == {"ds": ("2026-11-23",)} and cfg.local_defaults is False


def test_cron_line_and_kubernetes_job_give_the_driver_the_jobs_jit_settings() -> None:
    """The JIT settings have one owner (spark_jobs.session.JVM_OPTIONS); the deployment files pass them as is."""
    from spark_jobs.session import JVM_OPTIONS

    cron = next(x for x in (CONF / "cron" / "score-table.cron").read_text().splitlines() if x and not x.startswith("#"))
    job = yaml.safe_load((CONF / "kubernetes" / "cronjob.yaml").read_text())
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    for command in (cron.split(">>")[0].replace("\\%", "%"), " ".join(container["args"])):
        words = shlex.split(command.split("spark-submit ", 1)[1])
        assert words[words.index("--driver-java-options") + 1] == JVM_OPTIONS


def test_databricks_bundle_pins_an_lts_runtime_whose_spark_the_package_supports() -> None:
    """The runtime's PySpark must satisfy the wheel's requirement, or pip installs a second PySpark over the
    platform's (or refuses the wheel)."""
    clusters = [c["new_cluster"] for c in bundle_job()["job_clusters"]]
    assert clusters
    for cluster in clusters:
        name, spark = runtime(cluster["spark_version"])
        assert name in LTS, f"the bundle pins Databricks Runtime {name}, not an LTS release"
        assert spark in declared_pyspark(), (
            f"Databricks Runtime {name} ships Spark {spark}, outside setup.py's pyspark{declared_pyspark()}")


@pytest.mark.parametrize(("spark_version", "supported"), [
    ("13.3.x-scala2.12", False), ("14.3.x-scala2.12", True), ("15.4.x-scala2.12", True),
    ("16.4.x-scala2.13", True), ("17.3.x-scala2.13", True), ("18.0.x-scala2.13", True), ("19.0.x-scala2.13", True),
])
def test_supported_runtimes_are_those_whose_spark_setup_py_admits(spark_version: str, supported: bool) -> None:
    """The runtimes the README lists as supported (pinning 16.4 against pyspark>=4.0 would have failed here)."""
    assert (runtime(spark_version)[1] in declared_pyspark()) is supported


def test_installing_the_wheel_never_replaces_the_runtimes_pyspark() -> None:
    """Whatever in the wheel's dependency closure asks for pyspark admits the pinned runtime's Spark, so pip
    keeps the PySpark the platform installed."""
    requirements = pyspark_requirements()
    assert "warehouse-scoring" in requirements
    for cluster in (c["new_cluster"] for c in bundle_job()["job_clusters"]):
        name, spark = runtime(cluster["spark_version"])
        wrong = {owner: str(spec) for owner, spec in requirements.items() if spark not in spec}
        assert not wrong, f"on Databricks Runtime {name} (Spark {spark}) pip would replace PySpark for {wrong}"


def test_databricks_job_compute_registry_and_output_are_what_the_job_needs() -> None:
    """Dedicated (single user) classic compute: the job ships the model with SparkContext.addArchive, which
    standard (shared) access mode and serverless (Spark Connect) do not offer; the Unity Catalog registry;
    Delta output (checked with the flags above)."""
    job = bundle_job()
    (task,) = job["tasks"]
    assert "environment_key" not in task and task["job_cluster_key"]  # job cluster, not serverless
    (cluster,) = [c["new_cluster"] for c in job["job_clusters"] if c["job_cluster_key"] == task["job_cluster_key"]]
    assert cluster["data_security_mode"] in {"SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED"}
    assert cluster["spark_env_vars"]["MLFLOW_REGISTRY_URI"] == "databricks-uc"


def test_entry_point_exits_with_the_jobs_code_and_one_error_line(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """What the wheel task runs: a failure fails the task with the exit code, and the run's output shows one
    `score-table: error:` line (a usage error here, found before any Spark starts), and the platform's Python
    process goes on (SystemExit, not the process's end: tests/test_entry_points.py)."""
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.setattr(sys, "argv", ["score-table", "--model-uri", "models:/churn@champion",
                                      "--input-table", "main.lake.t", "--output-table", "main.lake.t"])
    with pytest.raises(SystemExit) as exited:
        cli()
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("score-table: error: ")


def test_the_wheel_holds_every_module_of_the_package(tmp_path: Path) -> None:
    """The wheel a Databricks job or a cluster installs: every module of spark_jobs and udfs, subpackages
    included (a module left out imports on a checkout and fails on the platform), and the JVM tree
    evaluator's jar (`make` builds it before the tests, as `make dist` before the wheel)."""
    import subprocess
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(SETUP.parent)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    modules = {str(p.relative_to(SETUP.parent)) for package in ("spark_jobs", "udfs")
               for p in (SETUP.parent / package).rglob("*.py")}
    assert modules - packed == set()
    assert "udfs/jvm/score-table.jar" in zipfile.ZipFile(wheel).namelist()


def test_the_jobs_jit_settings_are_the_same_in_the_readme_the_makefile_and_the_bench() -> None:
    """spark_jobs.session.JVM_OPTIONS is the one owner; the README's command and the demo copy it out, and
    the bench gives every variant the class-data archive on top."""
    from benchmarks.bench import SUBMIT
    from spark_jobs import jvm_classes
    from spark_jobs.session import JVM_OPTIONS

    readme = (CONF.parent / "README.md").read_text()
    makefile = (CONF.parent / "Makefile").read_text()
    in_readme = re.search(r'JOB_JAVA_OPTIONS="([^"]*)"', readme).group(1)
    in_makefile = re.search(r"^JOB_JAVA_OPTIONS = ((?:.*\\\n)*.*)$", makefile, re.MULTILINE).group(1)
    wanted = JVM_OPTIONS.split()
    assert in_readme.replace("\\\n", " ").split() == wanted
    assert in_makefile.replace("\\\n", " ").split() == wanted
    assert SUBMIT[-1].split() == [*wanted, *jvm_classes.java_options().split()]


def test_the_readmes_and_the_demos_spark_submit_take_the_class_data_archive() -> None:
    """Both ask spark_jobs.jvm_classes for the option (nothing where no archive was made) and pass it to the
    driver's JVM; the demo and the bench make the archive first."""
    readme = (CONF.parent / "README.md").read_text()
    makefile = (CONF.parent / "Makefile").read_text()
    assert 'CLASSES=$(python -m spark_jobs.jvm_classes --java-option)' in readme
    assert '--driver-java-options "$JOB_JAVA_OPTIONS $CLASSES ' in readme
    demo = re.search(r"^DEMO_SUBMIT = (.*)$", makefile, re.MULTILINE).group(1)
    assert '--driver-java-options "$(JOB_JAVA_OPTIONS) $$($(PY) -m spark_jobs.jvm_classes --java-option)' in demo
    for target in ("demo", "bench", "test-spark4"):
        assert "$(VENV)/spark-classes.jsa" in re.search(rf"^{target}:(.*)$", makefile, re.MULTILINE).group(1)


@pytest.mark.parametrize("made, given, expected", [
    (True, "", 1), (False, "", 0), (True, "-XX:SharedArchiveFile=/elsewhere/own.jsa", 1),
])
def test_a_jvm_the_job_starts_itself_gets_the_class_data_archive_where_one_was_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: bool, given: str, expected: int) -> None:
    """The archive's option where `make` wrote one; none where none was made (naming a missing archive would
    turn off the JDK's own); the user's own archive wins."""
    from pyspark import SparkContext

    from spark_jobs import jvm_classes, session

    archive = tmp_path / "spark-classes.jsa"
    if made:
        archive.write_bytes(b"")
    monkeypatch.setattr(jvm_classes, "ARCHIVE", archive)
    monkeypatch.setattr(SparkContext, "_gateway", None)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", given)
    session._own_jvm_options(quiet=False)
    options = os.environ["SPARK_SUBMIT_OPTS"].split()
    archives = [o for o in options if o.startswith("-XX:SharedArchiveFile=")]
    assert len(archives) == expected
    if given:
        assert archives == [given]
    elif made:
        assert archives == [f"-XX:SharedArchiveFile={archive}"]


@pytest.mark.parametrize("given, added", [
    ("", ["-XX:-DontCompileHugeMethods", "-XX:Tier4InvocationThreshold=50000"]),
    ("-XX:+DontCompileHugeMethods", ["-XX:Tier4InvocationThreshold=50000"]),
    ("-XX:Tier4InvocationThreshold=9", ["-XX:-DontCompileHugeMethods"]),
])
def test_a_jvm_the_job_starts_itself_gets_the_jit_settings_the_user_did_not_give(
        monkeypatch: pytest.MonkeyPatch, given: str, added: list[str]) -> None:
    from pyspark import SparkContext

    from spark_jobs import session

    monkeypatch.setattr(SparkContext, "_gateway", None)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", given)
    session._own_jvm_options(quiet=False)
    options = os.environ["SPARK_SUBMIT_OPTS"].split()
    assert options[:len(given.split())] == given.split()
    assert all(a in options for a in added)
    assert sum("DontCompileHugeMethods" in o for o in options) == 1
    assert sum("Tier4InvocationThreshold" in o for o in options) == 1


def test_no_class_data_archive_where_it_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m spark_jobs.jvm_classes` where the virtualenv is not the user's to write: one line on
    stderr, no archive, and the job's JVM gets no option (it starts as it would without one)."""
    from spark_jobs import jvm_classes

    monkeypatch.setattr(jvm_classes, "ARCHIVE", tmp_path / "not-there" / "spark-classes.jsa")
    assert jvm_classes.make() is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("no class-data archive at ")
    assert jvm_classes.java_options() == ""


def test_the_drivers_jvm_keeps_the_sql_parser_out_of_c2(spark: SparkSession) -> None:
    """The directive the job adds as its session starts is in the JVM's own list, for C2 only, on the parser."""
    from spark_jobs import session

    session._add_compiler_directives(spark, session.PARSER_AT_C1)
    listed = session.diagnostic_command(spark, "compilerDirectivesPrint").split("Directive:")
    ours = [d for d in listed if "org/antlr/*.*" in d]
    assert len(ours) == 1 and "org/apache/spark/sql/catalyst/parser/SqlBase*.*" in ours[0]
    c1, c2 = ours[0].split("c1 directives:")[1].split("c2 directives:")
    assert "Exclude:true" in c2 and "Exclude:false" in c1


@pytest.mark.parametrize("zipped, moved", [(None, True), ("0.0.1", False)])
def test_the_driver_imports_the_installed_pyspark_before_spark_homes_zip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zipped: str | None, moved: bool) -> None:
    """spark-submit puts SPARK_HOME's pyspark.zip first on the driver's path, and Python compiles a zip's
    modules on every run: the job moves the zip after the installed package of the same version, and leaves
    a zip of another version (a cluster's own Spark) first."""
    import spark_jobs

    installed = importlib.metadata.version("pyspark")
    archive = tmp_path / "lib" / "pyspark.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pyspark/version.py", f'__version__: str = "{zipped or installed}"\n')
    path = [str(archive), str(tmp_path / "py4j.zip"), *sys.path]
    monkeypatch.setattr(sys, "path", list(path))
    monkeypatch.delitem(sys.modules, "pyspark")
    spark_jobs._prefer_installed_pyspark()
    assert sys.path == ([p for p in path if p != str(archive)] + [str(archive)] if moved else path)
