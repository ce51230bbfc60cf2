"""Deployment files agree with the CLI: the Databricks bundle's entry point and parameters, the cron line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from spark_jobs.config import parse_args

CONF = Path(__file__).resolve().parents[1] / "conf"


def substitute(text: str, variables: dict[str, Any]) -> str:
    """Bundle variables by their defaults; Databricks' dynamic value references by an example value."""
    text = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), text)
    return text.replace("{{job.parameters.run_date}}", "2026-11-23")


def test_databricks_bundle_runs_the_wheel_entry_point_with_valid_flags() -> None:
    bundle = yaml.safe_load((CONF / "databricks" / "databricks.yml").read_text())
    job = yaml.safe_load((CONF / "databricks" / "resources" / "score_job.yml").read_text())["resources"]["jobs"][
        "score_table"]
    setup = (CONF.parent / "setup.py").read_text()
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
