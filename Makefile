# The two commands: `make demo` (score a generated table on the embedded default) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The Spark 3.5 run: the newest PySpark 3.5.x with the oldest pandas, numpy and pyarrow setup.py admits (what a
# Spark 3.5 LTS runtime such as Databricks 15.4 ships); numpy 1.x also because pyspark 3.5's pandas API, which
# pyspark.testing imports, fails on numpy 2.
VENV35 ?= .venv-spark35
PY35   := $(VENV35)/bin/python
SPARK35_PINS ?= "pyspark>=3.5,<3.6" numpy==1.23.5 pandas==1.5.3 pyarrow==14.0.1
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: check-javac jar venv venv-spark35 check-java demo test test-spark4 test-spark35 test-fast lint dist bench clean

check-java:
	@command -v java >/dev/null 2>&1 || { echo "make: Java 17 is required by Spark and 'java' is not on PATH (Debian: apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1); \
	 [ -n "$$v" ] && [ "$$v" -ge 17 ] || { echo "make: Java 17 or newer is required by Spark 4, found: $$(java -version 2>&1 | head -n1)" >&2; exit 1; }

check-javac:
	@command -v javac >/dev/null 2>&1 || { echo "$(NO_JAVAC), which the tests run" >&2; exit 1; }

# The project's JVM classes (udfs/jvm_jar.py): the tree evaluator (udfs/compiled/native.py) and the staging
# write's constant columns (spark_jobs/publishing/constant_columns.py), compiled against the virtualenv's PySpark
# jars for Java 8 and newer (Spark 3.5 runtimes too). Needs a JDK's javac; without one `make demo` goes on (trees
# run as SQL expressions, the lineage goes in the rows, as the log says) and `make test` stops (it tests both).
JAR := udfs/jvm/score-table.jar
JAR_SRC := $(wildcard udfs/jvm/src/scoretable/*.java)
NO_JAVAC := make: javac (a JDK: apt-get install openjdk-17-jdk-headless) builds the project's JVM classes

$(JAR): $(JAR_SRC) | $(VENV)/.installed
	@command -v javac >/dev/null 2>&1 || { echo "$(NO_JAVAC); without it trees run as SQL expressions" >&2; exit 0; }
	rm -rf build/jvm && mkdir -p build/jvm
	javac -nowarn --release 8 -Xlint:-options -cp "$$($(PY) -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')/*" -d build/jvm $(JAR_SRC)
	jar cf $@ -C build/jvm .

jar: $(JAR)

$(VENV)/.installed: setup.py
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "make: Python 3.10+ is required ($(PYTHON))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed $(JAR)

$(VENV35)/.installed: setup.py
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "make: Python 3.10+ is required ($(PYTHON))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV35)
	$(PY35) -m pip install -q --upgrade pip
	$(PY35) -m pip install -q -e ".[dev]" $(SPARK35_PINS)
	touch $@

venv-spark35: $(VENV35)/.installed

# A class-data archive of Spark's JVM per virtualenv (spark_jobs/jvm_classes.py): the job's JVM (the demo's, the
# README's spark-submit, the console script) and every JVM the tests start map Spark's classes from it instead of
# loading them from the jars, 6-8 s off each run here. Made once (about a minute); everything runs without it.
$(VENV)/spark-classes.jsa: $(VENV)/.installed
	$(PY) -m spark_jobs.jvm_classes

$(VENV35)/spark-classes.jsa: $(VENV35)/.installed
	PYSPARK_PYTHON=$(abspath $(PY35)) PYSPARK_DRIVER_PYTHON=$(abspath $(PY35)) $(PY35) -m spark_jobs.jvm_classes

# The demo: four days scored with the champion, then a fifth whose features drift on purpose, scored with the
# champion and a challenger in one pass (its drift, the comparison and the report's path are printed at the end).
# The job's JIT settings (spark_jobs.session.JVM_OPTIONS, where they are explained; the README's command has them)
JOB_JAVA_OPTIONS = -XX:-DontCompileHugeMethods -XX:Tier4InvocationThreshold=50000 \
    -XX:Tier4MinInvocationThreshold=6000 -XX:Tier4CompileThreshold=150000 -XX:Tier4BackEdgeThreshold=400000
DEMO_SUBMIT = $(VENV)/bin/spark-submit --driver-java-options "$(JOB_JAVA_OPTIONS) $$($(PY) -m spark_jobs.jvm_classes --java-option) \
    -Dlog4j2.configurationFile=file:$(CURDIR)/conf/log4j2.properties" --conf spark.ui.showConsoleProgress=true \
    spark_jobs/score_table.py --config conf/demo.yaml

demo: check-java venv $(VENV)/spark-classes.jsa
	$(PY) -m spark_jobs.demo prepare --days 4 --shifted-days 1 --challenger
	$(DEMO_SUBMIT) --partition ds=2026-11-20 --partition ds=2026-11-21 --partition ds=2026-11-22 --partition ds=2026-11-23
	$(DEMO_SUBMIT) --partition ds=2026-11-24 --challenger-uri models:/churn@challenger
	$(PY) -m spark_jobs.demo report

# The whole suite on PySpark 4, then the platform subset (marker spark35: scoring against MLflow's predictions,
# partition selection, write-audit-publish and rollback, rejects, run history) on PySpark 3.5. Each run ends
# with its 15 slowest steps. `make test-fast`: everything that starts no process of its own (marker processes:
# spark-submit, the console script, python -m, servers), for development.
# Two pytest-xdist workers: the tests that start processes all go to one of them (tests/conftest.py), the
# in-process tests share the other; PYTEST_ARGS="-n 0" runs everything in one process.
PYTEST_ARGS ?= -n 2
PYTEST := -m pytest -q --durations=15 $(PYTEST_ARGS)

test: test-spark4 test-spark35

test-spark4: check-java check-javac venv $(VENV)/spark-classes.jsa
	$(PY) $(PYTEST) tests

test-spark35: check-java check-javac venv-spark35 $(VENV35)/spark-classes.jsa $(JAR)
	PYSPARK_PYTHON=$(abspath $(PY35)) PYSPARK_DRIVER_PYTHON=$(abspath $(PY35)) $(PY35) $(PYTEST) -m spark35 tests

test-fast: check-java check-javac venv $(VENV)/spark-classes.jsa
	$(PY) $(PYTEST) -m "not processes" tests

lint: venv
	$(VENV)/bin/ruff check spark_jobs udfs tests benchmarks setup.py
	$(VENV)/bin/mypy spark_jobs udfs benchmarks

# Whole spark-submits of this job vs mlflow.pyfunc.spark_udf, the no-model floor and raw predict (about
# 30 minutes on 2 cores); BENCH_ARGS="--rows 1000000 --repeats 1 --scaling ''" for a quick look.
bench: check-java venv $(VENV)/spark-classes.jsa
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

dist: venv $(JAR)
	$(PY) -m pip wheel -q --no-deps -w dist .

clean:
	rm -rf .local build dist *.egg-info derby.log metastore_db spark-warehouse
