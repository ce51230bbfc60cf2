"""spark_jobs.config without Spark: flags over a YAML profile, every problem a UsageError that names it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from spark_jobs import config
from spark_jobs.config import JobConfig, embedded_tracking_uri, parse_args, parse_partition_flags, parse_rollback_args
from spark_jobs.errors import UsageError

MODEL = ["--model-uri", "models:/churn@champion"]
TABLES = ["--input-table", "lake.features", "--output-table", "lake.scored"]
FLAGS = [*MODEL, *TABLES]


@pytest.fixture(autouse=True)
def _no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's registry fixture exports MLFLOW_TRACKING_URI; these tests set it themselves."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def write_profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return str(path)


PROFILE = """
model_uri: models:/churn/3
input_table: lake.features
output_table: lake.scored
batch_size: 500
output_format: delta"""


def parse(*argv: str, profile: str | None = None) -> JobConfig:
    return parse_args([*argv, "--config", profile] if profile is not None else list(argv))


# --- flags over profile -------------------------------------------------------------------------------------------

def test_profile_values_are_used_when_no_flag_is_given(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, PROFILE + """
partitions: {ds: "2024-01-01"}
mlflow: {tracking_uri: "http://profile:5000", registry_uri: "http://registry:5000"}
spark: {local_defaults: false, conf: {spark.sql.shuffle.partitions: 8}}
""")
    cfg = parse(profile=profile)
    assert (cfg.model_uri, cfg.input_table, cfg.output_table) == ("models:/churn/3", "lake.features", "lake.scored")
    assert (cfg.batch_size, cfg.output_format) == (500, "delta")
    assert cfg.partitions == {"ds": ("2024-01-01",)}
    assert (cfg.tracking_uri, cfg.registry_uri) == ("http://profile:5000", "http://registry:5000")
    assert cfg.local_defaults is False
    assert cfg.spark_conf == {"spark.sql.shuffle.partitions": "8"}


def test_flags_override_the_profile(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, PROFILE + """
partitions: {ds: ["2024-01-01", "2024-01-02"], h: 7}
""")
    cfg = parse("--model-uri", "models:/churn@champion", "--output-table", "lake.other", "--batch-size", "20",
                "--output-format", "parquet", "--partition", "ds=2024-02-02", profile=profile)
    assert cfg.model_uri == "models:/churn@champion"
    assert cfg.input_table == "lake.features"  # not given as a flag: the profile's
    assert cfg.output_table == "lake.other"
    assert (cfg.batch_size, cfg.output_format) == (20, "parquet")
    # --partition replaces the profile's selection as a whole; it does not merge into it
    assert cfg.partitions == {"ds": ("2024-02-02",)}


def test_defaults_without_profile() -> None:
    cfg = parse(*FLAGS)
    assert (cfg.batch_size, cfg.output_format) == (50_000, "parquet")
    assert (cfg.on_bad_rows, cfg.partition_mode) == ("fail", "all")
    assert cfg.partitions == {}
    assert (cfg.rejects, cfg.runs) == ("lake.scored_rejects", "lake.scored_runs")


# --- unknown keys ---------------------------------------------------------------------------------------------------

def test_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, "model_uri: models:/churn/3\nbatchsize: 10\n")
    with pytest.raises(UsageError, match=r"unknown key\(s\) batchsize; allowed: .*batch_size"):
        parse(*FLAGS, profile=profile)


@pytest.mark.parametrize(("section", "key"), [("mlflow", "trackinguri"), ("spark", "master")])
def test_unknown_key_in_a_section_is_rejected(tmp_path: Path, section: str, key: str) -> None:
    profile = write_profile(tmp_path, f"{section}:\n  {key}: x\n")
    with pytest.raises(UsageError, match=rf"{section}: unknown key\(s\) {key};"):
        parse(*FLAGS, profile=profile)


@pytest.mark.parametrize("text", ["mlflow: just-a-string\n", "spark: [1, 2]\n"])
def test_section_that_is_not_a_mapping_is_rejected(tmp_path: Path, text: str) -> None:
    section = text.split(":")[0]
    with pytest.raises(UsageError, match=f"'{section}' must be a mapping"):
        parse(*FLAGS, profile=write_profile(tmp_path, text))


def test_missing_profile_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^cannot read config .*nope\.yaml"):
        parse(*FLAGS, profile=str(tmp_path / "nope.yaml"))


# --- required flags and table names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--model-uri", "--input-table", "--output-table"])
def test_missing_required_flag_is_named(flag: str) -> None:
    i = FLAGS.index(flag)
    argv = FLAGS[:i] + FLAGS[i + 2:]
    with pytest.raises(UsageError, match=f"^{flag} is required"):
        parse(*argv)


@pytest.mark.parametrize("name", ["db.t; DROP TABLE x", "a.b.c.d", "db.", ".t", "db.t`x", "", "1db.t", "db t"])
def test_invalid_table_name_is_rejected(name: str) -> None:
    with pytest.raises(UsageError, match=rf"^--output-table {re.escape(repr(name))} is not a valid table name"):
        parse(*MODEL, "--input-table", "lake.features", "--output-table", name)


@pytest.mark.parametrize("name", ["db.t; DROP TABLE x", "a.b.c.d", "db.t`x"])
def test_invalid_input_table_name_is_rejected(name: str) -> None:
    with pytest.raises(UsageError, match=rf"^--input-table {re.escape(repr(name))} is not a valid table name"):
        parse(*MODEL, "--input-table", name, "--output-table", "lake.scored")


@pytest.mark.parametrize("name", ["t", "db.t", "cat.db.t", "Lake_2.Scored_T"])
def test_valid_table_name_is_accepted(name: str) -> None:
    cfg = parse(*MODEL, "--input-table", "lake.features", "--output-table", name)
    assert cfg.output_table == name
    assert cfg.rejects == f"{name}_rejects"


@pytest.mark.parametrize(("input_table", "output_table"), [
    ("lake.t", "lake.t"),
    ("default.t", "t"),
    ("t", "default.t"),
    ("lake.T", "LAKE.t"),
    ("spark_catalog.lake.t", "lake.t"),
])
def test_output_table_equal_to_input_is_rejected(input_table: str, output_table: str) -> None:
    with pytest.raises(UsageError, match=rf"--output-table {re.escape(repr(output_table))} is the input table"):
        parse(*MODEL, "--input-table", input_table, "--output-table", output_table)


@pytest.mark.parametrize(("input_table", "output_table"), [
    ("lake.t", "other.t"), ("t", "lake.t"), ("lake.t", "lake.t2"),
])
def test_different_tables_are_accepted(input_table: str, output_table: str) -> None:
    cfg = parse(*MODEL, "--input-table", input_table, "--output-table", output_table)
    assert (cfg.input_table, cfg.output_table) == (input_table, output_table)


def test_same_table_name_in_another_catalog_is_accepted() -> None:
    cfg = parse(*MODEL, "--input-table", "main.lake.t", "--output-table", "dev.lake.t")
    assert cfg.output_table == "dev.lake.t"


@pytest.mark.parametrize("flag", ["--rejects-table", "--runs-table"])
@pytest.mark.parametrize("name", ["lake.features", "LAKE.scored"])
def test_side_tables_must_differ_from_input_and_output(flag: str, name: str) -> None:
    with pytest.raises(UsageError, match=rf"^{flag} {re.escape(repr(name))} must differ"):
        parse(*FLAGS, flag, name)


# --- partitions -----------------------------------------------------------------------------------------------------

def partitions_from_flags(*values: str) -> dict[str, tuple[str, ...]]:
    argv: list[str] = [*FLAGS]
    for v in values:
        argv += ["--partition", v]
    return dict(parse(*argv).partitions)


@pytest.mark.parametrize(("flags", "expected"), [
    (["ds=2024-01-01"], {"ds": ("2024-01-01",)}),
    (["ds=b", "ds=a", "ds=c"], {"ds": ("b", "a", "c")}),  # kept in the order given
    (["ds=b", "ds=a", "ds=b"], {"ds": ("b", "a")}),  # repeats dropped
    (["ds=a", "h=1", "ds=c"], {"ds": ("a", "c"), "h": ("1",)}),
    (["ds=a=b'c\""], {"ds": ("a=b'c\"",)}),  # split at the first '=', the rest verbatim
    (["ds= a "], {"ds": (" a ",)}),
    (["ds=x' OR '1'='1"], {"ds": ("x' OR '1'='1",)}),
])
def test_partition_flags(flags: list[str], expected: dict[str, tuple[str, ...]]) -> None:
    got = partitions_from_flags(*flags)
    assert got == expected
    assert list(got) == list(expected)  # columns in first-seen order


@pytest.mark.parametrize(("flag", "message"), [
    ("ds", "must look like COLUMN=VALUE"),
    ("=2024-01-01", "must look like COLUMN=VALUE"),
    ("ds=", "has an empty value"),
    ("1ds=x", "'1ds' is not a valid column name"),
    ("d s=x", "'d s' is not a valid column name"),
    ("ds;drop=x", "'ds;drop' is not a valid column name"),
    ("`ds`=x", "'`ds`' is not a valid column name"),
])
def test_bad_partition_flag_is_rejected(flag: str, message: str) -> None:
    with pytest.raises(UsageError, match=f"^--partition {re.escape(repr(flag))}.*{re.escape(message)}"):
        partitions_from_flags("ds=ok", flag)


def test_parse_partition_flags_directly() -> None:
    assert parse_partition_flags(["h=1", "ds=a", "h=2", "h=1"]) == {"h": ("1", "2"), "ds": ("a",)}
    assert parse_partition_flags([]) == {}


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ('partitions: {ds: "2024-01-01"}', {"ds": ("2024-01-01",)}),
    ("partitions: {ds: 2024-01-01}", {"ds": ("2024-01-01",)}),  # YAML reads a date; kept as its ISO text
    ("partitions:\n  ds: [2024-01-01, 2024-01-02, 2024-01-01]\n  h: 7", {"ds": ("2024-01-01", "2024-01-02"),
                                                                        "h": ("7",)}),
    ("partitions: {ds: [\"a=b'c\\\"\"]}", {"ds": ("a=b'c\"",)}),
])
def test_profile_partitions_scalar_or_list(
    tmp_path: Path, yaml_text: str, expected: dict[str, tuple[str, ...]]
) -> None:
    cfg = parse(*FLAGS, profile=write_profile(tmp_path, yaml_text + "\n"))
    assert dict(cfg.partitions) == expected


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("partitions: ds=2024-01-01", "'partitions' must be a mapping of a column to a value or a list of values"),
    ("partitions: {ds: ''}", "has an empty value"),
    ("partitions: {'1ds': x}", "'1ds' is not a valid column name"),
])
def test_bad_profile_partitions_are_rejected(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(*FLAGS, profile=write_profile(tmp_path, yaml_text + "\n"))


def test_profile_partition_with_null_value_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ds"):
        parse(*FLAGS, profile=write_profile(tmp_path, "partitions: {ds: null}\n"))


def test_profile_partition_with_empty_list_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ds"):
        parse(*FLAGS, profile=write_profile(tmp_path, "partitions: {ds: []}\n"))


# --- batch size -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1"])
def test_batch_size_flag_must_be_positive(value: str) -> None:
    with pytest.raises(UsageError, match=f"^batch size {value} must be a whole number of rows from 1"):
        parse(*FLAGS, "--batch-size", value)


def test_batch_size_flag_must_be_an_int(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse's own usage error: exit 2 like every usage error
        parse(*FLAGS, "--batch-size", "1.5")
    assert exc.value.code == 2
    assert "--batch-size: invalid int value: '1.5'" in capsys.readouterr().err


@pytest.mark.parametrize(("yaml_value", "shown"), [
    ("0", "0"), ("-5", "-5"), ("1.5", "1.5"), ('"100"', "'100'"), ("true", "True"), ("[1]", "[1]"),
])
def test_batch_size_in_profile_must_be_a_positive_int(tmp_path: Path, yaml_value: str, shown: str) -> None:
    profile = write_profile(tmp_path, f"batch_size: {yaml_value}\n")
    with pytest.raises(UsageError, match=rf"batch_size' must be a whole number of rows, got {re.escape(shown)}|"
                                         rf"^batch size {re.escape(shown)} must be a whole number of rows from 1"):
        parse(*FLAGS, profile=profile)


def test_batch_size_of_one_is_accepted() -> None:
    assert parse(*FLAGS, "--batch-size", "1").batch_size == 1


# --- MLflow tracking URI ------------------------------------------------------------------------------------------

PROFILE_URI = "mlflow:\n  tracking_uri: http://profile:5000\n"


@pytest.mark.parametrize(("env", "flag", "profile_text", "expected"), [
    ("http://env:5000", None, None, "http://env:5000"),
    ("http://env:5000", "http://flag:5000", None, "http://flag:5000"),
    ("http://env:5000", None, PROFILE_URI, "http://env:5000"),
    (None, None, PROFILE_URI, "http://profile:5000"),
    ("http://env:5000", "http://flag:5000", PROFILE_URI, "http://flag:5000"),
])
def test_tracking_uri_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    env: str | None, flag: str | None, profile_text: str | None, expected: str,
) -> None:
    if env is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    argv: Sequence[str] = [*FLAGS, *(["--tracking-uri", flag] if flag else [])]
    profile = write_profile(tmp_path, profile_text) if profile_text else None
    assert parse(*argv, profile=profile).tracking_uri == expected


def test_tracking_uri_defaults_to_embedded_registry_under_local_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = parse(*FLAGS, profile=write_profile(tmp_path, f"spark: {{local_home: '{home}'}}\n"))
    assert cfg.tracking_uri == f"sqlite:///{(home / 'mlflow.db').resolve()}" == embedded_tracking_uri(str(home))


def test_no_tracking_uri_without_local_defaults(tmp_path: Path) -> None:
    cfg = parse(*FLAGS, profile=write_profile(tmp_path, "spark: {local_defaults: false}\n"))
    assert cfg.tracking_uri is None


@pytest.mark.parametrize(("env", "flag", "expected"), [
    ("http://env-reg", None, "http://env-reg"),
    ("http://env-reg", "http://flag-reg", "http://flag-reg"),
    (None, None, "http://profile-reg"),
])
def test_registry_uri_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, flag: str | None, expected: str
) -> None:
    if env is not None:
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", env)
    profile = write_profile(tmp_path, "mlflow: {registry_uri: 'http://profile-reg'}\n")
    argv = [*FLAGS, *(["--registry-uri", flag] if flag else [])]
    assert parse(*argv, profile=profile).registry_uri == expected


# --- every profile key: type, range and finiteness (a wrong value is exit 2 naming the key) ------------------------

def _nested(key: str, value: str) -> str:
    """`spark.conf: V` as YAML: `spark:\n  conf: V`."""
    section, _, name = key.partition(".")
    return f"{section}:\n  {name}: {value}\n" if name else f"{key}: {value}\n"


@pytest.mark.parametrize("key", sorted(config.profile_checks()))
def test_every_profile_key_rejects_a_value_of_the_wrong_type(tmp_path: Path, key: str) -> None:
    with pytest.raises(UsageError, match=re.escape(key.rsplit(".", 1)[-1])) as e:
        parse(*FLAGS, profile=write_profile(tmp_path, _nested(key, "[[1]]")))
    assert "\n" not in str(e.value)


BAD_VALUES = [
    ("lock_stale_after_s: .nan", "lock_stale_after_s"), ("lock_stale_after_s: .inf", "lock_stale_after_s"),
    ("lock_stale_after_s: 0", "lock_stale_after_s"), ("lock_stale_after_s: -1", "lock_stale_after_s"),
    ("lock_stale_after_s: '10'", "lock_stale_after_s"), ("lock_stale_after_s: true", "lock_stale_after_s"),
    ("prediction_range: [.nan, 1]", "prediction_range"), ("prediction_range: [0, .inf]", "prediction_range"),
    ("prediction_range: [2, 1]", "prediction_range"), ("prediction_range: [1]", "prediction_range"),
    ("max_bad_fraction: .nan", "max-bad-fraction"), ("max_bad_fraction: 1.5", "max-bad-fraction"),
    ("max_bad_fraction: '0.1'", "max_bad_fraction"), ("keep_versions: -1", "keep_versions"),
    ("keep_versions: 1.5", "keep_versions"), ("keep_versions: true", "keep_versions"),
    ("batch_size: 99999999999", "batch size"), ("batch_size: .inf", "batch_size"),
    ("rejects_table: 123", "rejects_table"), ("runs_table: [a, b]", "runs_table"), ("latest_view: 5", "latest_view"),
    ("result_type: 5", "result_type"), ("spark:\n  local_home: 5", "local_home"), ("spark:\n  conf: [a]", "conf"),
    ("spark:\n  conf: {spark.x: [1]}", "conf"), ("spark:\n  local_defaults: 'yes'", "local_defaults"),
    ("serve:\n  url: 5", "url"), ("params: [a]", "params"), ("output_format: 5", "output_format"),
]


@pytest.mark.parametrize(("text", "named"), BAD_VALUES, ids=[t for t, _ in BAD_VALUES])
def test_bad_profile_values_are_usage_errors_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(UsageError, match=re.escape(named)):
        parse(*FLAGS, profile=write_profile(tmp_path, text + "\n"))


@pytest.mark.parametrize(("flag", "value", "named"), [
    ("--batch-size", "99999999999", "batch size"), ("--batch-size", "2147483648", "batch size"),
    ("--max-bad-fraction", "nan", "max-bad-fraction"), ("--max-bad-fraction", "-0.1", "max-bad-fraction"),
    ("--keep-versions", "-1", "keep_versions"), ("--profile-rows", "0", "profile_rows"),
    ("--profile-rows", "1000001", "profile_rows"),
])
def test_bad_numeric_flags_are_usage_errors(flag: str, value: str, named: str) -> None:
    with pytest.raises(UsageError, match=re.escape(named)):
        parse(*FLAGS, flag, value)


def test_largest_batch_size_and_yaml_booleans_in_spark_conf_are_accepted(tmp_path: Path) -> None:
    cfg = parse(*FLAGS, "--batch-size", str(2**31 - 1),
                profile=write_profile(tmp_path, "spark:\n  conf: {spark.sql.adaptive.enabled: false}\n"))
    assert cfg.batch_size == 2**31 - 1 and cfg.spark_conf == {"spark.sql.adaptive.enabled": "false"}


@pytest.mark.parametrize("value", [".nan", "0", "-5", "'x'"])
def test_rollback_rejects_a_lock_timeout_that_never_holds(tmp_path: Path, value: str) -> None:
    profile = write_profile(tmp_path, f"lock_stale_after_s: {value}\n")
    with pytest.raises(UsageError, match="lock_stale_after_s"):
        parse_rollback_args(["--config", profile, "--output-table", "lake.scored", "--partition", "ds=1"])
