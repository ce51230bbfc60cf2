"""The serving copy: the run's scored rows loaded into an operational database (PostgreSQL) for fast
lookups by key. Spark's JDBC writer fills a staging table; one transaction then replaces the keys' rows,
so a rerun never duplicates and a failed run leaves the serving table as it was. Credentials come from
the environment or a file, never from the command line, and are never logged."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from spark_jobs.errors import UsageError

USER_ENV, PASSWORD_ENV = "SCORE_TABLE_JDBC_USER", "SCORE_TABLE_JDBC_PASSWORD"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")


@dataclass(frozen=True)
class ServeTarget:
    url: str  # jdbc:postgresql://host:port/db
    table: str  # [schema.]table
    key_columns: tuple[str, ...]
    credentials_file: str | None = None


def credentials(target: ServeTarget) -> dict[str, str]:
    """user/password from SCORE_TABLE_JDBC_USER/_PASSWORD, else from a JSON file {"user":..,"password":..}."""
    if os.environ.get(USER_ENV):
        return {"user": os.environ[USER_ENV], "password": os.environ.get(PASSWORD_ENV, "")}
    if target.credentials_file:
        try:
            data = json.loads(Path(target.credentials_file).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"serve.credentials_file {target.credentials_file}: cannot read user and password "
                             f"({type(e).__name__})") from None
        return {"user": str(data["user"]), "password": str(data.get("password", ""))}
    raise UsageError(f"--serve-to needs credentials: set {USER_ENV} and {PASSWORD_ENV}, or serve.credentials_file")


def validate(target: ServeTarget) -> None:
    if not target.url.startswith("jdbc:postgresql://"):
        raise UsageError("--serve-to must be a jdbc:postgresql:// URL")
    if not _NAME.match(target.table):
        raise UsageError(f"serve.table {target.table!r} must be [schema.]table of letters, digits and underscores")
    if not target.key_columns or not all(_NAME.match(k) and "." not in k for k in target.key_columns):
        raise UsageError("serve.key_columns must name the key columns of the serving table")


def serve(spark: SparkSession, rows: DataFrame, target: ServeTarget, run_id: str) -> int:
    """Load `rows` and swap them in by key in one transaction; returns the number of rows served."""
    props = {**credentials(target), "driver": "org.postgresql.Driver"}
    staging = f"{target.table}_staging_{run_id[:12]}"
    rows.write.jdbc(target.url, staging, mode="overwrite", properties=props)
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    jprops = jvm.java.util.Properties()
    for k in ("user", "password"):
        jprops.setProperty(k, props[k])
    conn = jvm.java.sql.DriverManager.getConnection(target.url, jprops)
    try:
        conn.setAutoCommit(False)
        statement = conn.createStatement()
        table, stage = _q(target.table), _q(staging)
        match = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in target.key_columns)
        statement.execute(f"CREATE TABLE IF NOT EXISTS {table} (LIKE {stage})")
        statement.execute(f"DELETE FROM {table} t USING {stage} s WHERE {match}")
        served = int(statement.executeUpdate(f"INSERT INTO {table} SELECT * FROM {stage}"))
        statement.execute(f"DROP TABLE {stage}")
        conn.commit()
        return served
    except Exception:
        conn.rollback()
        conn.setAutoCommit(True)
        conn.createStatement().execute(f"DROP TABLE IF EXISTS {_q(staging)}")
        raise
    finally:
        conn.close()


def _q(name: str) -> str:
    """Quote a validated [schema.]name for PostgreSQL."""
    return ".".join(f'"{part}"' for part in name.split("."))

