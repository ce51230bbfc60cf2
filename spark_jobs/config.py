"""Job configuration: command-line flags over a YAML profile from `conf/` over built-in defaults, validated into
one typed object before Spark starts, so that usage errors cost nothing and exit 2.

Each option is declared once, as a field of the command's config class with an `Option` in its metadata: its
flag, profile key, type check, help and conversion. The argparse parser, the profile's allowed keys and their
type checks, and the merging of flag over environment over profile over default all come from those
declarations; adding an option is one field."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml

from spark_jobs.errors import UsageError
from spark_jobs.publishing import serving
from spark_jobs.publishing.serving import ServeTarget

OutputFormat = Literal["parquet", "delta"]
BadRowPolicy = Literal["fail", "quarantine", "pass"]
PartitionMode = Literal["all", "new"]
Engine = Literal["auto", "udf", "sql"]
Baseline = Literal["previous", "training"]
DriftAction = Literal["fail", "warn"]
DRIFT_METRICS = ("psi", "js", "ks")
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
BAD_ROW_POLICIES: tuple[str, ...] = get_args(BadRowPolicy)
PARTITION_MODES: tuple[str, ...] = get_args(PartitionMode)
ENGINES: tuple[str, ...] = get_args(Engine)
BASELINES: tuple[str, ...] = get_args(Baseline)
DRIFT_ACTIONS: tuple[str, ...] = get_args(DriftAction)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_BATCH_ROWS = 2**31 - 1  # Spark's arrow.maxRecordsPerBatch is a Java int
TABLE = "[CATALOG.]DB.TABLE"
ENGINE_HELP = ("sql: the model as Spark expressions, in the JVM (exit 2 if it does not translate); udf: the "
               "Arrow/pandas UDF; auto (default): sql when the model translates and passes verification, else udf")
VERIFY_HELP = "rows the sql engine is checked on against the model's own predictions, every run (default 10000)"


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_names(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))


def _is_scalar_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, str | int | float | bool) for x in v.values())


Check = tuple[Callable[[Any], bool], str]  # (accepts the profile's value?, what it must be)
STRING: Check = (_is_str, "a string")
NAMES: Check = (_is_names, "a column name or a list of column names")
MAPPING: Check = (lambda v: isinstance(v, dict), "a mapping")


@dataclass(frozen=True)
class Option:
    """One option of a command: where its value may come from and what it must be."""

    flag: str | None = None  # --flag on the command line, or None (profile only)
    profile: str | None = ""  # profile key ("" = the field's name; "spark.conf" = key conf of section spark)
    check: Check = STRING  # type check of the profile's value
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    flag_type: Callable[[str], Any] = str
    repeat: bool = False  # the flag may be given several times (a list)
    switch: bool = False  # a flag without value
    env: str | None = None  # an environment variable between the flag and the profile
    # the raw value (flag, environment or profile) -> the field's value; `from_flag` says which it came from
    convert: Callable[[Any, bool], Any] | None = None


def option(default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A config field and its Option, declared together."""
    meta = {"option": Option(**kw)}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# Sections of the profile that are not options themselves: each key's type check.
SECTIONS: dict[str, dict[str, Check]] = {
    "serve": {"url": STRING, "table": STRING, "key_columns": NAMES, "credentials_file": STRING},
}


def _partitions(raw: Any, from_flag: bool) -> dict[str, tuple[str, ...]]:
    return parse_partition_flags(raw) if from_flag else _profile_partitions(raw)


def _params(raw: Any, from_flag: bool) -> dict[str, str]:
    return parse_params(raw) if from_flag else _str_map(raw, "params")


def _transforms(raw: Any, from_flag: bool) -> dict[str, str]:
    """NAME -> Spark SQL expression, in the order given (a later one may use an earlier one's column)."""
    found = parse_params(raw, "--transform") if from_flag else _str_map(raw, "transform")
    for name, text in found.items():
        if not _IDENT.match(name):
            raise UsageError(f"transform {name!r}: the column name must be letters, digits and underscores")
        if not text.strip():
            raise UsageError(f"transform {name!r} has an empty expression")
    return found


def _drift_limits(raw: Any, from_flag: bool) -> dict[str, float]:
    """metric -> limit, from `--max-drift psi=0.25` flags or the profile's `max_drift: {psi: 0.25}`."""
    given = parse_params(raw, "--max-drift") if from_flag else (raw or {})
    if not isinstance(given, dict):
        raise UsageError("config 'max_drift' must map a metric (psi, js, ks) to a limit")
    limits = {}
    for metric, value in given.items():
        if metric not in DRIFT_METRICS:
            raise UsageError(f"--max-drift {metric}={value}: the metric must be one of {', '.join(DRIFT_METRICS)}")
        try:
            limit = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"--max-drift {metric}={value}: the limit must be a number") from None
        if not math.isfinite(limit) or limit < 0:
            raise UsageError(f"--max-drift {metric}={value}: the limit must be a finite number >= 0")
        limits[str(metric)] = limit
    return limits


PARTITION_HELP = "partition to score; repeat it: values of one column are OR-ed, columns AND-ed (default: all)"


@dataclass(frozen=True, kw_only=True)
class SparkOptions:
    """Where Spark runs: every command has them."""

    # Embedded-default settings (local master, Derby metastore, warehouse under local_home) are applied
    # only where Spark has no setting of its own (spark-submit --conf, spark-defaults.conf, a live session).
    local_defaults: bool = option(True, profile="spark.local_defaults",
                                  check=(lambda v: isinstance(v, bool), "true or false"))
    local_home: str = option(".local", profile="spark.local_home")
    spark_conf: Mapping[str, str] = option({}, profile="spark.conf",
                                           check=(_is_scalar_map, "a mapping of Spark settings to values"),
                                           convert=lambda raw, _: _spark_conf(raw))


@dataclass(frozen=True, kw_only=True)
class RegistryOptions:
    """Where the model is: the commands that resolve one."""

    tracking_uri: str | None = option(None, flag="--tracking-uri", profile="mlflow.tracking_uri",
                                      env="MLFLOW_TRACKING_URI",
                                      help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, then profile)")
    registry_uri: str | None = option(None, flag="--registry-uri", profile="mlflow.registry_uri",
                                      env="MLFLOW_REGISTRY_URI",
                                      help="MLflow registry URI (default: MLFLOW_REGISTRY_URI, then profile)")


@dataclass(frozen=True, kw_only=True)
class VerifyOptions:
    """How a translated model is checked against the model's own predictions (udfs.compiled.verify)."""

    verify_rows: int = option(10_000, flag="--verify-rows", flag_type=int, metavar="N", help=VERIFY_HELP,
                              check=(_is_int, "a whole number of rows"))
    # how far a floating output of the sql engine may be from the model's own
    engine_tolerance: float = option(1e-9, check=(_is_number, "a number from 0 to 1"))


@dataclass(frozen=True, kw_only=True)
class CommonConfig(SparkOptions):
    """Options every writing command has: the output table and its side tables, Spark, the lock."""

    output_table: str = option(flag="--output-table", metavar=TABLE, help="scored table to create or update")
    rejects_table: str | None = option(None, flag="--rejects-table", metavar=TABLE,
                                       help="quarantined rows (default: <output-table>_rejects)")
    runs_table: str | None = option(None, flag="--runs-table", metavar=TABLE,
                                    help="run history (default: <output-table>_runs)")
    lock_stale_after_s: float = option(600.0, check=(_is_number, "a number of seconds"),
                                       convert=lambda raw, _: check_stale_after(raw))
    break_lock: bool = option(False, flag="--break-lock", switch=True, profile=None,
                              help="take over the output table's lock from another run")
    # the serving copy in PostgreSQL: --serve-to (the URL) plus the profile's serve: section
    serve: ServeTarget | None = option(None, flag="--serve-to", profile=None, metavar="JDBC_URL",
                                       help="also load the rows into PostgreSQL (table and keys from the "
                                            "profile's serve:)")

    @property
    def rejects(self) -> str:
        return self.rejects_table or f"{self.output_table}_rejects"

    @property
    def runs(self) -> str:
        return self.runs_table or f"{self.output_table}_runs"


@dataclass(frozen=True, kw_only=True)
class JobConfig(CommonConfig, RegistryOptions, VerifyOptions):
    """`score-table`: score partitions of a table and publish them."""

    model_uri: str = option(flag="--model-uri",
                            help="MLflow model URI, e.g. models:/churn@champion or models:/churn/3")
    input_table: str = option(flag="--input-table", metavar=TABLE, help="partitioned table or view to score")
    # a view has no partition metadata: its partition columns are named (and the output is partitioned by them)
    input_partition_columns: tuple[str, ...] = option(
        (), flag="--partition-columns", metavar="A,B", check=NAMES,
        convert=lambda raw, _: _names(raw, "partition columns"),
        help="partition columns of a view given as --input-table (a table's own are used otherwise)")
    # per-row SQL expressions that add or replace columns before the model sees a row (spark_jobs.planning.transforms)
    transform: Mapping[str, str] = option(
        {}, flag="--transform", repeat=True, metavar="NAME=SQL", convert=_transforms,
        check=(_is_scalar_map, "a mapping of column names to Spark SQL expressions"),
        help="add or replace a column with a Spark SQL expression over the input's columns (repeatable; "
             "profile section transform:)")
    # column -> accepted values; several values of one column are OR-ed, several columns AND-ed
    partitions: Mapping[str, tuple[str, ...]] = option(
        {}, flag="--partition", repeat=True, metavar="COL=VALUE", help=PARTITION_HELP,
        check=(lambda v: isinstance(v, dict), "a mapping of a column to a value or a list of values"),
        convert=_partitions)
    output_format: OutputFormat = option("parquet", flag="--output-format", choices=OUTPUT_FORMATS,
                                         help="format of a new output table")
    batch_size: int = option(50_000, flag="--batch-size", flag_type=int, metavar="ROWS",
                             check=(_is_int, "a whole number of rows"), help="rows per Arrow batch sent to the model")
    on_bad_rows: BadRowPolicy = option("fail", flag="--on-bad-rows", choices=BAD_ROW_POLICIES,
                                       help="rows with null/NaN/infinite/uncastable features: fail the run "
                                            "(default), quarantine them in the rejects table, or pass them to "
                                            "the model")
    max_bad_fraction: float | None = option(None, flag="--max-bad-fraction", flag_type=float, metavar="F",
                                            check=(_is_number, "a number from 0 to 1"),
                                            help="fail before publishing when rejected rows exceed this share "
                                                 "of rows read")
    key_columns: tuple[str, ...] = option((), flag="--key-columns", metavar="A,B", check=NAMES,
                                          convert=lambda raw, _: _names(raw, "key columns"),
                                          help="columns that identify a row in messages")
    feature_columns: tuple[str, ...] = option((), flag="--feature-columns", metavar="A,B,C", check=NAMES,
                                              convert=lambda raw, _: _names(raw, "feature columns"),
                                              help="ordered numeric columns that feed a model with one tensor "
                                                   "input")
    result_type: str | None = option(None, flag="--result-type", metavar="DDL",
                                     help="output type for a model without output signature, e.g. double or "
                                          "'label string, score double'")
    params: Mapping[str, str] = option({}, flag="--param", repeat=True, metavar="KEY=VALUE",
                                       check=(_is_scalar_map, "a mapping of names to values"), convert=_params,
                                       help="MLflow predict parameter, typed by the model's params schema "
                                            "(repeatable)")
    partition_mode: PartitionMode = option("all", flag="--partition-mode", choices=PARTITION_MODES,
                                           help="all (default): every selected partition; new: only those whose "
                                                "published output is not from this model, or whose input files "
                                                "changed since they were scored")
    keep_versions: int = option(1, flag="--keep-versions", flag_type=int, metavar="N",
                                check=(_is_int, "a whole number"),
                                help="superseded versions kept per partition for rollback (default 1)")
    prediction_range: tuple[float, float] | None = option(
        None, check=(lambda v: isinstance(v, list), "[low, high]"), convert=lambda raw, _: _range(raw))
    latest_view: str | None = option(None)  # newest score per key_columns; default <output_table>_latest
    engine: Engine = option("auto", flag="--engine", choices=ENGINES, help=ENGINE_HELP)
    # quality: profiles and drift (spark_jobs.quality), champion vs challenger, the run in MLflow
    profiles_table: str | None = option(None, flag="--profiles-table", metavar=TABLE,
                                        help="profiles and drift of each run (default: <output-table>_profiles)")
    profile_rows: int = option(25_000, flag="--profile-rows", flag_type=int, metavar="N",
                               check=(_is_int, "a whole number of rows"),
                               help="profile a partition of more rows on a sample of about N rows (default "
                                    "25000, at most 1000000); its row count stays exact")
    baseline: Baseline = option("previous", flag="--baseline", choices=BASELINES,
                                help="drift against the previous published version of each partition (default) "
                                     "or the training profile stored with the model version")
    max_drift: Mapping[str, float] = option(
        {}, flag="--max-drift", repeat=True, metavar="METRIC=LIMIT", convert=_drift_limits,
        check=(_is_scalar_map, "a mapping of psi, js or ks to a limit"),
        help="fail before publishing when a column drifts past the limit, e.g. psi=0.25 (repeatable)")
    drift_action: DriftAction = option("fail", flag="--drift-action", choices=DRIFT_ACTIONS,
                                       help="over --max-drift: fail the run (default) or warn and publish")
    challenger_uri: str | None = option(None, flag="--challenger-uri",
                                        help="a second model scored on the same rows, e.g. models:/churn@challenger; "
                                             "its scores go to <output-table>_challenger")
    challenger_table: str | None = option(None, flag="--challenger-table", metavar=TABLE,
                                          help="the challenger's scores (default: <output-table>_challenger)")
    mlflow_experiment: str | None = option(None, flag="--mlflow-experiment", profile="mlflow.experiment",
                                           help="MLflow experiment of the run (default: score-table/<output-table>)")
    no_mlflow_run: bool = option(False, flag="--no-mlflow-run", switch=True, profile="mlflow.no_run",
                                 check=(lambda v: isinstance(v, bool), "true or false"),
                                 help="do not record the run as an MLflow run")

    @property
    def latest(self) -> str:
        return self.latest_view or f"{self.output_table}_latest"

    @property
    def profiles(self) -> str:
        return self.profiles_table or f"{self.output_table}_profiles"

    @property
    def challenger(self) -> str:
        return self.challenger_table or f"{self.output_table}_challenger"

    @property
    def experiment(self) -> str:
        return self.mlflow_experiment or f"score-table/{self.output_table}"


@dataclass(frozen=True, kw_only=True)
class RollbackConfig(CommonConfig):
    """`score-table rollback`: republish the previous kept version of a partition."""

    partitions: Mapping[str, tuple[str, ...]] = option(
        {}, flag="--partition", repeat=True, metavar="COL=VALUE", profile=None,
        help="the partition to roll back: one value for each partition column", convert=_partitions)


@dataclass(frozen=True, kw_only=True)
class BaselineConfig(SparkOptions, RegistryOptions):
    """`score-table baseline`: profile a (training) table's model inputs and store the profile with the
    model version, for `--baseline training`."""

    model_uri: str = option(flag="--model-uri", help="the model version the profile belongs to, e.g. "
                                                     "models:/churn/3 or models:/churn@champion")
    input_table: str = option(flag="--input-table", metavar=TABLE, help="the table the model was trained on")
    partitions: Mapping[str, tuple[str, ...]] = option(
        {}, flag="--partition", repeat=True, metavar="COL=VALUE", profile=None, help=PARTITION_HELP,
        convert=_partitions)


@dataclass(frozen=True, kw_only=True)
class ViewConfig(SparkOptions, RegistryOptions, VerifyOptions):
    """`score-table view`: a view over a table whose query computes the translated model, verified first."""

    model_uri: str = option(flag="--model-uri", help="MLflow model URI, e.g. models:/churn@champion")
    input_table: str = option(flag="--input-table", metavar=TABLE, help="the table (or view) the view reads")
    view: str = option(flag="--view", metavar=TABLE, help="the view to create or replace")


Config = TypeVar("Config", JobConfig, RollbackConfig)
Verified = TypeVar("Verified", JobConfig, ViewConfig)
COMMANDS: dict[str, tuple[type[Any], str]] = {
    "score-table": (JobConfig, "Score partitions of a warehouse table with an MLflow model and publish a scored "
                               "table. Subcommands: rollback, baseline, view (score-table view --help)."),
    "score-table rollback": (RollbackConfig, "Republish the previous kept version of a partition of an output "
                                             "table (and of its rejects and serving copy)."),
    "score-table baseline": (BaselineConfig, "Profile the model's inputs in a (training) table and store the "
                                             "profile with the model version (for --baseline training)."),
    "score-table view": (ViewConfig, "Create or replace a view over a table that scores every row with the model "
                                     "translated into SQL (verified on a sample first), for ad-hoc queries."),
}
REQUIRED = {"output_table": "--output-table", "model_uri": "--model-uri", "input_table": "--input-table",
            "view": "--view"}


def options(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Option]]:
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def profile_checks() -> dict[str, Check]:
    """Every profile key any command reads, with its type check."""
    checks: dict[str, Check] = {}
    for cls, _ in COMMANDS.values():
        for f, o in options(cls):
            if o.profile is not None:
                checks[o.profile or f.name] = o.check
    for section, keys in SECTIONS.items():
        checks.update({f"{section}.{k}": c for k, c in keys.items()})
    for key in list(checks):
        if "." in key:
            checks.setdefault(key.split(".", 1)[0], MAPPING)
    return checks


def build_parser(command: str = "score-table") -> argparse.ArgumentParser:
    cls, description = COMMANDS[command]
    p = argparse.ArgumentParser(prog=command, description=description)
    p.add_argument("--config", metavar="PATH", help="YAML profile (see conf/); flags override it")
    for f, o in options(cls):
        if o.flag is None:
            continue
        if o.switch:
            p.add_argument(o.flag, dest=f.name, action="store_true", default=None, help=o.help)
        else:
            p.add_argument(o.flag, dest=f.name, action="append" if o.repeat else "store", type=o.flag_type,
                           metavar=o.metavar, choices=o.choices, default=None, help=o.help)
    p.add_argument("--verbose", action="store_true", help="print the full traceback on failure")
    return p


def parse_args(argv: Sequence[str] | None = None) -> JobConfig:
    """`score-table`: flags over the profile over built-in defaults; every problem raises UsageError."""
    return validate(parse_command("score-table", argv))


def parse_rollback_args(argv: Sequence[str]) -> RollbackConfig:
    cfg: RollbackConfig = parse_command("score-table rollback", argv)
    several = [c for c, values in cfg.partitions.items() if len(values) > 1]
    if not cfg.partitions:
        raise UsageError("rollback needs --partition COL=VALUE for the partition to republish")
    if several:
        raise UsageError(f"rollback takes one value per partition column; {', '.join(several)} has several")
    return validate_side_tables(cfg)


def parse_baseline_args(argv: Sequence[str]) -> BaselineConfig:
    cfg: BaselineConfig = parse_command("score-table baseline", argv)
    validate_table_name(cfg.input_table, "--input-table")
    if not cfg.model_uri.strip():
        raise UsageError("--model-uri is empty")
    return cfg


def parse_view_args(argv: Sequence[str]) -> ViewConfig:
    cfg: ViewConfig = parse_command("score-table view", argv)
    validate_table_name(cfg.input_table, "--input-table")
    validate_table_name(cfg.view, "--view")
    if _normalized(cfg.view) == _normalized(cfg.input_table):
        raise UsageError(f"--view {cfg.view!r} is the input table")
    if not cfg.model_uri.strip():
        raise UsageError("--model-uri is empty")
    return validate_verification(cfg)


def validate_verification(cfg: Verified) -> Verified:
    if not _is_int(cfg.verify_rows) or not 1 <= cfg.verify_rows <= 1_000_000:
        raise UsageError(f"verify_rows {cfg.verify_rows!r} must be a whole number of rows from 1 to 1000000")
    tolerance = cfg.engine_tolerance
    if not _is_number(tolerance) or not 0 <= tolerance < 1:
        raise UsageError(f"engine_tolerance {tolerance!r} must be a number from 0 to below 1")
    return cfg


def parse_command(command: str, argv: Sequence[str] | None) -> Any:
    """Merge every option of `command`: flag, else its environment variable, else the profile, else the
    default; then convert it. Cross-option rules are `validate`'s."""
    cls, _ = COMMANDS[command]
    args = build_parser(command).parse_args(argv)
    profile = load_profile(args.config) if args.config else {}
    values: dict[str, Any] = {}
    for f, o in options(cls):
        raw, from_flag = getattr(args, f.name, None) if o.flag else None, True
        if raw is None and o.env:
            raw = os.environ.get(o.env) or None
        if raw is None and o.profile is not None:
            raw, from_flag = _lookup(profile, o.profile or f.name), False
        if f.name == "serve":
            values[f.name] = _serve(raw, profile.get("serve"))
        elif f.name in REQUIRED:
            values[f.name] = _require(raw, REQUIRED[f.name])
        elif raw is not None:
            values[f.name] = o.convert(raw, from_flag) if o.convert else raw
    cfg = cls(**values)
    if isinstance(cfg, RegistryOptions) and isinstance(cfg, SparkOptions) and cfg.tracking_uri is None \
            and cfg.local_defaults is True:
        cfg = dataclasses.replace(cfg, tracking_uri=embedded_tracking_uri(cfg.local_home))
    return cfg


def _lookup(profile: Mapping[str, Any], key: str) -> Any:
    section, _, name = key.partition(".")
    if not name:
        return profile.get(key)
    return (profile.get(section) or {}).get(name)


def embedded_tracking_uri(local_home: str) -> str:
    """The embedded default registry: a SQLite file beside the local metastore."""
    return f"sqlite:///{(Path(local_home) / 'mlflow.db').resolve()}"


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
    checks = profile_checks()
    _reject_unknown(data, {k for k in checks if "." not in k}, path)
    for section in {k.split(".", 1)[0] for k in checks if "." in k}:
        value = data.get(section) or {}
        if not isinstance(value, dict):
            raise UsageError(f"config {path}: '{section}' must be a mapping")
        _reject_unknown(value, {k.split(".", 1)[1] for k in checks if k.startswith(f"{section}.")},
                        f"{path}: {section}")
    for key, (check, expected) in checks.items():
        value = _lookup(data, key)
        if value is not None and not check(value):
            raise UsageError(f"config {path}: '{key}' must be {expected}, got {value!r}")
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
    """Rules between options, and ranges the type checks cannot express."""
    validate_table_name(cfg.input_table, "--input-table")
    if _normalized(cfg.input_table) == _normalized(cfg.output_table):
        raise UsageError(f"--output-table {cfg.output_table!r} is the input table: scores must go to another table")
    if cfg.output_format not in OUTPUT_FORMATS:
        raise UsageError(f"output_format {cfg.output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    if not _is_int(cfg.batch_size) or not 1 <= cfg.batch_size <= MAX_BATCH_ROWS:
        raise UsageError(f"batch size {cfg.batch_size!r} must be a whole number of rows from 1 to {MAX_BATCH_ROWS}")
    validate_side_tables(cfg, ("latest_view", cfg.latest), ("--profiles-table", cfg.profiles),
                         ("--challenger-table", cfg.challenger))
    if cfg.baseline not in BASELINES:
        raise UsageError(f"baseline {cfg.baseline!r} is not one of {', '.join(BASELINES)}")
    if cfg.drift_action not in DRIFT_ACTIONS:
        raise UsageError(f"drift_action {cfg.drift_action!r} is not one of {', '.join(DRIFT_ACTIONS)}")
    if cfg.challenger_uri is not None and not cfg.challenger_uri.strip():
        raise UsageError("--challenger-uri is empty")
    if cfg.challenger_uri is not None and cfg.challenger_uri.strip() == cfg.model_uri.strip():
        raise UsageError(f"--challenger-uri {cfg.challenger_uri!r} is the model itself")
    if cfg.mlflow_experiment is not None and not cfg.mlflow_experiment.strip():
        raise UsageError("--mlflow-experiment is empty")
    if cfg.partition_mode not in PARTITION_MODES:
        raise UsageError(f"partition_mode {cfg.partition_mode!r} is not one of {', '.join(PARTITION_MODES)}")
    if not _is_int(cfg.keep_versions) or cfg.keep_versions < 0:
        raise UsageError(f"keep_versions {cfg.keep_versions!r} must be a whole number >= 0")
    if cfg.on_bad_rows not in BAD_ROW_POLICIES:
        raise UsageError(f"on_bad_rows {cfg.on_bad_rows!r} is not one of {', '.join(BAD_ROW_POLICIES)}")
    fraction = cfg.max_bad_fraction
    if fraction is not None and (not _is_number(fraction) or not 0 <= fraction <= 1):
        raise UsageError(f"--max-bad-fraction {fraction!r} must be a number from 0 to 1")
    if fraction is not None and cfg.on_bad_rows == "pass":
        raise UsageError("--max-bad-fraction needs --on-bad-rows quarantine or fail: with pass nothing is rejected")
    if not cfg.model_uri.strip():
        raise UsageError("--model-uri is empty")
    if cfg.engine not in ENGINES:
        raise UsageError(f"engine {cfg.engine!r} is not one of {', '.join(ENGINES)}")
    validate_verification(cfg)
    if not _is_int(cfg.profile_rows) or not 1 <= cfg.profile_rows <= 1_000_000:
        # each partition's sample is profiled by one Python worker: bounded, so that it fits in one
        raise UsageError(f"profile_rows {cfg.profile_rows!r} must be a whole number of rows from 1 to 1000000")
    return cfg


def validate_side_tables(cfg: Config, *more: tuple[str, str]) -> Config:
    """The output table and the tables beside it: valid names, each different from the others (and from the
    input table, for a scoring run)."""
    validate_table_name(cfg.output_table, "--output-table")
    taken = {_normalized(cfg.output_table)}
    if isinstance(cfg, JobConfig):
        taken.add(_normalized(cfg.input_table))
    for flag, name in (("--rejects-table", cfg.rejects), ("--runs-table", cfg.runs), *more):
        validate_table_name(name, flag)
        if _normalized(name) in taken:
            raise UsageError(f"{flag} {name!r} must differ from the input, output and other tables of the run")
        taken.add(_normalized(name))
    return cfg


def check_stale_after(seconds: Any) -> float:
    """A lock goes stale after this long without a heartbeat: NaN, infinity or <= 0 would make every lock
    stale (or none), so only a finite positive number is accepted."""
    if not _is_number(seconds) or not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"lock_stale_after_s {seconds!r} must be a finite positive number of seconds")
    return float(seconds)


def parse_params(flags: Sequence[str], what: str = "--param") -> dict[str, str]:
    params: dict[str, str] = {}
    for flag in flags:
        key, sep, value = flag.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {flag!r} must look like KEY=VALUE")
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
    _reject_unknown(section, set(SECTIONS["serve"]), "serve")
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
    if (not isinstance(value, list) or len(value) != 2 or not all(_is_number(v) and math.isfinite(v) for v in value)
            or value[0] > value[1]):
        raise UsageError(f"config 'prediction_range' {value!r} must be [low, high] of finite numbers, low <= high")
    return float(value[0]), float(value[1])


def _spark_conf(section: Mapping[str, Any] | None) -> dict[str, str]:
    """Spark reads settings as text; YAML's true/false must reach it as Spark spells them."""
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in (section or {}).items()}


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
