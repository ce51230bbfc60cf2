"""Job configuration: a YAML profile from `conf/`, overridden by command-line flags, validated into one
typed object before Spark starts, so that usage errors cost nothing and exit 2."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spark_jobs import serving
from spark_jobs.errors import UsageError
from spark_jobs.serving import ServeTarget

OUTPUT_FORMATS = ("parquet", "delta")
BAD_ROW_POLICIES = ("fail", "quarantine", "pass")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOP_KEYS = {
    "model_uri", "input_table", "output_table", "partitions", "output_format", "batch_size", "mlflow", "spark",
    "on_bad_rows", "max_bad_fraction", "rejects_table", "key_columns", "feature_columns", "result_type", "params",
    "partition_mode", "runs_table", "keep_versions", "lock_stale_after_s", "prediction_range", "latest_view",
    "serve",
}
_SERVE_KEYS = {"url", "table", "key_columns", "credentials_file"}
PARTITION_MODES = ("all", "new")
_MLFLOW_KEYS = {"tracking_uri", "registry_uri"}
_SPARK_KEYS = {"local_defaults", "local_home", "conf"}


@dataclass(frozen=True)
class JobConfig:
    model_uri: str
    input_table: str
    output_table: str
    # column -> accepted values; several values of one column are OR-ed, several columns AND-ed
    partitions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    output_format: str = "parquet"
    batch_size: int = 50_000
    tracking_uri: str | None = None
    registry_uri: str | None = None
    # Embedded-default settings (local master, Derby metastore, warehouse under local_home) are applied
    # only where Spark has no setting of its own (spark-submit --conf, spark-defaults.conf, a live session).
    local_defaults: bool = True
    local_home: str = ".local"
    spark_conf: Mapping[str, str] = field(default_factory=dict)
    on_bad_rows: str = "fail"
    max_bad_fraction: float | None = None
    rejects_table: str | None = None  # default: <output_table>_rejects
    key_columns: tuple[str, ...] = ()  # name a row in messages (default: the first input column)
    feature_columns: tuple[str, ...] = ()  # ordered columns feeding a tensor-input model
    result_type: str | None = None  # Spark DDL type of the output when the model has no output signature
    params: Mapping[str, str] = field(default_factory=dict)  # MLflow predict params, typed by the model
    partition_mode: str = "all"  # new: only partitions without output for this model version, or changed
    runs_table: str | None = None  # default: <output_table>_runs
    keep_versions: int = 1  # superseded versions kept per partition, for rollback
    lock_stale_after_s: float = 600.0  # a lock without heartbeat for this long belongs to a dead run
    break_lock: bool = False
    prediction_range: tuple[float, float] | None = None  # audit: every scored prediction within [lo, hi]
    latest_view: str | None = None  # newest score per key_columns; default <output_table>_latest
    serve: ServeTarget | None = None  # the serving copy in PostgreSQL (--serve-to plus the profile's serve:)
    verbose: bool = False

    @property
    def rejects(self) -> str:
        return self.rejects_table or f"{self.output_table}_rejects"

    @property
    def latest(self) -> str:
        return self.latest_view or f"{self.output_table}_latest"

    @property
    def runs(self) -> str:
        return self.runs_table or f"{self.output_table}_runs"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="score-table",
        description="Score partitions of a warehouse table with an MLflow model and publish a scored table.",
    )
    p.add_argument("--config", metavar="PATH", help="YAML profile (see conf/); flags override it")
    p.add_argument("--model-uri", help="MLflow model URI, e.g. models:/churn@champion or models:/churn/3")
    p.add_argument("--input-table", metavar="[CATALOG.]DB.TABLE", help="partitioned table to score")
    p.add_argument("--output-table", metavar="[CATALOG.]DB.TABLE", help="scored table to create or update")
    p.add_argument(
        "--partition", action="append", metavar="COL=VALUE", default=None,
        help="partition to score; repeat it: values of one column are OR-ed, columns AND-ed (default: all)",
    )
    p.add_argument("--output-format", choices=OUTPUT_FORMATS, help="format of a new output table")
    p.add_argument("--batch-size", type=int, metavar="ROWS", help="rows per Arrow batch sent to the model")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, then profile)")
    p.add_argument("--registry-uri", help="MLflow registry URI (default: MLFLOW_REGISTRY_URI, then profile)")
    p.add_argument("--on-bad-rows", choices=BAD_ROW_POLICIES,
                   help="rows with null/NaN/infinite/uncastable features: fail the run (default), quarantine "
                        "them in the rejects table, or pass them to the model")
    p.add_argument("--max-bad-fraction", type=float, metavar="F",
                   help="fail before publishing when rejected rows exceed this share of rows read")
    p.add_argument("--rejects-table", metavar="[CATALOG.]DB.TABLE", help="default: <output-table>_rejects")
    p.add_argument("--key-columns", metavar="A,B", help="columns that identify a row in messages")
    p.add_argument("--feature-columns", metavar="A,B,C",
                   help="ordered numeric columns that feed a model with one tensor input")
    p.add_argument("--result-type", metavar="DDL",
                   help="output type for a model without output signature, e.g. double or 'label string, score double'")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", default=None,
                   help="MLflow predict parameter, typed by the model's params schema (repeatable)")
    p.add_argument("--partition-mode", choices=PARTITION_MODES,
                   help="all (default): every selected partition; new: only those with no output for this "
                        "model version, or whose input files changed since they were scored")
    p.add_argument("--runs-table", metavar="[CATALOG.]DB.TABLE", help="run history (default: <output-table>_runs)")
    p.add_argument("--keep-versions", type=int, metavar="N",
                   help="superseded versions kept per partition for rollback (default 1)")
    p.add_argument("--serve-to", metavar="JDBC_URL",
                   help="also load the scored rows into PostgreSQL (table and keys from the profile's serve:)")
    p.add_argument("--break-lock", action="store_true", help="take over the output table's lock from another run")
    p.add_argument("--verbose", action="store_true", help="print full tracebacks on failure")
    return p


def parse_args(argv: Sequence[str] | None = None) -> JobConfig:
    """Flags over the profile over built-in defaults; every problem raises UsageError."""
    args = build_parser().parse_args(argv)
    profile = load_profile(args.config) if args.config else {}
    mlflow_section = profile.get("mlflow") or {}
    spark_section = profile.get("spark") or {}

    def pick(flag: Any, key: str, default: Any = None) -> Any:
        return flag if flag is not None else profile.get(key, default)

    local_defaults = spark_section.get("local_defaults", True)
    local_home = spark_section.get("local_home", ".local")
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow_section.get("tracking_uri")
    if tracking_uri is None and local_defaults is True:
        tracking_uri = embedded_tracking_uri(local_home)
    partitions = (
        parse_partition_flags(args.partition) if args.partition else _profile_partitions(profile.get("partitions"))
    )
    return validate(JobConfig(
        model_uri=_require(pick(args.model_uri, "model_uri"), "--model-uri"),
        input_table=_require(pick(args.input_table, "input_table"), "--input-table"),
        output_table=_require(pick(args.output_table, "output_table"), "--output-table"),
        partitions=partitions,
        output_format=pick(args.output_format, "output_format", "parquet"),
        batch_size=pick(args.batch_size, "batch_size", 50_000),
        tracking_uri=tracking_uri,
        registry_uri=args.registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or mlflow_section.get("registry_uri"),
        local_defaults=local_defaults,
        local_home=local_home,
        spark_conf={str(k): str(v) for k, v in (spark_section.get("conf") or {}).items()},
        on_bad_rows=pick(args.on_bad_rows, "on_bad_rows", "fail"),
        max_bad_fraction=pick(args.max_bad_fraction, "max_bad_fraction"),
        rejects_table=pick(args.rejects_table, "rejects_table"),
        key_columns=_names(pick(args.key_columns, "key_columns"), "key columns"),
        feature_columns=_names(pick(args.feature_columns, "feature_columns"), "feature columns"),
        result_type=pick(args.result_type, "result_type"),
        params=parse_params(args.param) if args.param else _str_map(profile.get("params"), "params"),
        partition_mode=pick(args.partition_mode, "partition_mode", "all"),
        runs_table=pick(args.runs_table, "runs_table"),
        keep_versions=pick(args.keep_versions, "keep_versions", 1),
        lock_stale_after_s=profile.get("lock_stale_after_s", 600.0),
        break_lock=args.break_lock,
        prediction_range=_range(profile.get("prediction_range")),
        latest_view=profile.get("latest_view"),
        serve=_serve(args.serve_to, profile.get("serve")),
        verbose=args.verbose,
    ))


def embedded_tracking_uri(local_home: str) -> str:
    """The embedded default registry: a SQLite file beside the local metastore."""
    return f"sqlite:///{(Path(local_home) / 'mlflow.db').resolve()}"


@dataclass(frozen=True)
class RollbackConfig:
    output_table: str
    partitions: Mapping[str, tuple[str, ...]]
    rejects: str
    runs: str
    local_defaults: bool = True
    local_home: str = ".local"
    spark_conf: Mapping[str, str] = field(default_factory=dict)
    lock_stale_after_s: float = 600.0
    break_lock: bool = False
    verbose: bool = False


def parse_rollback_args(argv: Sequence[str]) -> RollbackConfig:
    """`score-table rollback`: republish the previous version of partitions of an output table."""
    p = argparse.ArgumentParser(prog="score-table rollback",
                                description="Republish the previous kept version of output partitions.")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--output-table", required=True, metavar="[CATALOG.]DB.TABLE")
    p.add_argument("--partition", action="append", required=True, metavar="COL=VALUE")
    p.add_argument("--rejects-table", metavar="[CATALOG.]DB.TABLE")
    p.add_argument("--runs-table", metavar="[CATALOG.]DB.TABLE")
    p.add_argument("--serve-to", metavar="JDBC_URL",
                   help="also load the scored rows into PostgreSQL (table and keys from the profile's serve:)")
    p.add_argument("--break-lock", action="store_true")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    profile = load_profile(args.config) if args.config else {}
    spark_section = profile.get("spark") or {}
    output = validate_table_name(args.output_table, "--output-table")
    rejects = validate_table_name(args.rejects_table or profile.get("rejects_table") or f"{output}_rejects",
                                  "--rejects-table")
    runs = validate_table_name(args.runs_table or profile.get("runs_table") or f"{output}_runs", "--runs-table")
    partitions = parse_partition_flags(args.partition)
    several = [c for c, values in partitions.items() if len(values) > 1]
    if several:
        raise UsageError(f"rollback takes one value per partition column; {', '.join(several)} has several")
    return RollbackConfig(
        output_table=output, partitions=partitions, rejects=rejects, runs=runs,
        local_defaults=spark_section.get("local_defaults", True), local_home=spark_section.get("local_home", ".local"),
        spark_conf={str(k): str(v) for k, v in (spark_section.get("conf") or {}).items()},
        lock_stale_after_s=profile.get("lock_stale_after_s", 600.0), break_lock=args.break_lock,
        verbose=args.verbose,
    )


def load_profile(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise UsageError(f"config {path} must be a mapping of keys to values")
    _reject_unknown(data, _TOP_KEYS, path)
    for section, allowed in (("mlflow", _MLFLOW_KEYS), ("spark", _SPARK_KEYS)):
        value = data.get(section) or {}
        if not isinstance(value, dict):
            raise UsageError(f"config {path}: '{section}' must be a mapping")
        _reject_unknown(value, allowed, f"{path}: {section}")
    return data


def parse_partition_flags(flags: Sequence[str]) -> dict[str, tuple[str, ...]]:
    selection: dict[str, tuple[str, ...]] = {}
    for flag in flags:
        col, sep, value = flag.partition("=")
        if not sep or not col:
            raise UsageError(f"--partition {flag!r} must look like COLUMN=VALUE")
        if not _IDENT.match(col):
            raise UsageError(f"--partition {flag!r}: {col!r} is not a valid column name")
        if value == "":
            raise UsageError(f"--partition {flag!r} has an empty value")
        values = selection.get(col, ())
        if value not in values:
            selection[col] = (*values, value)
    return selection


def validate_table_name(name: str, what: str) -> str:
    """Accept [catalog.]db.table of plain identifiers: names are never pasted into SQL, and this keeps
    them unambiguous for the catalog API too."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 3 or not all(_IDENT.match(p) for p in parts):
        raise UsageError(
            f"{what} {name!r} is not a valid table name: expected [catalog.]database.table made of "
            "letters, digits and underscores"
        )
    return name


def validate(cfg: JobConfig) -> JobConfig:
    validate_table_name(cfg.input_table, "--input-table")
    validate_table_name(cfg.output_table, "--output-table")
    if _normalized(cfg.input_table) == _normalized(cfg.output_table):
        raise UsageError(f"--output-table {cfg.output_table!r} is the input table: scores must go to another table")
    if cfg.output_format not in OUTPUT_FORMATS:
        raise UsageError(f"output_format {cfg.output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    if isinstance(cfg.batch_size, bool) or not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise UsageError(f"batch size {cfg.batch_size!r} must be a positive whole number of rows")
    if not isinstance(cfg.local_defaults, bool):
        raise UsageError(f"spark.local_defaults {cfg.local_defaults!r} must be true or false")
    names = {"--output-table": cfg.output_table}
    for flag, name in (("--rejects-table", cfg.rejects), ("--runs-table", cfg.runs), ("latest_view", cfg.latest)):
        validate_table_name(name, flag)
        if _normalized(name) in {_normalized(cfg.input_table), *map(_normalized, names.values())}:
            raise UsageError(f"{flag} {name!r} must differ from the input, output and other tables of the run")
        names[flag] = name
    if cfg.partition_mode not in PARTITION_MODES:
        raise UsageError(f"partition_mode {cfg.partition_mode!r} is not one of {', '.join(PARTITION_MODES)}")
    if isinstance(cfg.keep_versions, bool) or not isinstance(cfg.keep_versions, int) or cfg.keep_versions < 0:
        raise UsageError(f"keep_versions {cfg.keep_versions!r} must be a whole number >= 0")
    if isinstance(cfg.lock_stale_after_s, bool) or not isinstance(cfg.lock_stale_after_s, int | float) \
            or cfg.lock_stale_after_s <= 0:
        raise UsageError(f"lock_stale_after_s {cfg.lock_stale_after_s!r} must be a positive number of seconds")
    if cfg.on_bad_rows not in BAD_ROW_POLICIES:
        raise UsageError(f"on_bad_rows {cfg.on_bad_rows!r} is not one of {', '.join(BAD_ROW_POLICIES)}")
    fraction = cfg.max_bad_fraction
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 <= fraction <= 1):
        raise UsageError(f"--max-bad-fraction {fraction!r} must be a number from 0 to 1")
    if fraction is not None and cfg.on_bad_rows == "pass":
        raise UsageError("--max-bad-fraction needs --on-bad-rows quarantine or fail: with pass nothing is rejected")
    if not cfg.model_uri.strip():
        raise UsageError("--model-uri is empty")
    return cfg


def parse_params(flags: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for flag in flags:
        key, sep, value = flag.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {flag!r} must look like KEY=VALUE")
        params[key] = value
    return params


def _names(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) and _IDENT.match(i.strip()) for i in items):
        raise UsageError(f"{what} {value!r} must be a comma-separated list of column names")
    return tuple(i.strip() for i in items)


def _serve(url: str | None, section: Any) -> ServeTarget | None:
    section = section or {}
    if not isinstance(section, dict):
        raise UsageError("config 'serve' must be a mapping")
    _reject_unknown(section, _SERVE_KEYS, "serve")
    url = url or section.get("url")
    if url is None:
        return None
    if not section.get("table"):
        raise UsageError("--serve-to needs serve.table (and serve.key_columns) in the --config profile")
    target = ServeTarget(url=url, table=str(section["table"]),
                         key_columns=_names(section.get("key_columns"), "serve.key_columns"),
                         credentials_file=section.get("credentials_file"))
    serving.validate(target)
    serving.credentials(target)  # present now, or exit 2 before anything is read
    return target


def _range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int | float) for v in value)
            or value[0] > value[1]):
        raise UsageError(f"config 'prediction_range' {value!r} must be [low, high]")
    return float(value[0]), float(value[1])


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"config '{what}' must be a mapping")
    return {str(k): str(v) for k, v in value.items()}


def _normalized(table: str) -> tuple[str, ...]:
    """catalog.db.table, lower-cased, with Spark's defaults for the parts left out."""
    parts = tuple(p.lower() for p in table.split("."))
    defaults = ("spark_catalog", "default") if len(parts) == 1 else ("spark_catalog",)
    return (*defaults, *parts)[-3:]


def _profile_partitions(value: Any) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError("config 'partitions' must map a column to a value or a list of values")
    flags = []
    for col, values in value.items():
        listed = values if isinstance(values, list) else [values]
        if not listed or any(v is None or isinstance(v, dict | list) for v in listed):
            raise UsageError(f"config 'partitions': {col} needs one value or a non-empty list of values")
        flags += [f"{col}={v}" for v in listed]
    return parse_partition_flags(flags)


def _require(value: Any, flag: str) -> str:
    if value is None:
        raise UsageError(f"{flag} is required (as a flag or in the --config profile)")
    if not isinstance(value, str):
        raise UsageError(f"{flag} must be a string, got {value!r}")
    return value


def _reject_unknown(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise UsageError(f"config {where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
