"""Each scoring run as an MLflow run, in the experiment `score-table/<output table>`: params (model, tables,
selection, engine), metrics (rows, duration, drift, challenger agreement), the report as an artifact, the
`scoring_run_id` as a tag; FAILED when the scoring run fails. Only the tracking store is written, never the
registry. Through MlflowClient with explicit ids: no process-global active run."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from spark_jobs.config import JobConfig
from spark_jobs.errors import one_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from spark_jobs.planning.prepare import Prepared
    from spark_jobs.scoring.job import RunResult
    from spark_jobs.scoring.lineage import RunLineage

log = logging.getLogger("score_table.mlflow")
TAG = "score_table.scoring_run_id"


@dataclass
class TrackedRun:
    client: MlflowClient
    run_id: str
    spark: SparkSession | None = None
    report_path: str | None = None  # set once the report is written (a Hadoop path)
    done: bool = field(default=False)

    def succeeded(self, result: RunResult) -> None:
        metrics = {"rows_read": result.counts.read, "rows_scored": result.counts.scored,
                   "rows_rejected": result.counts.rejected, "duration_s": result.seconds,
                   "rows_per_s": result.counts.read / result.seconds if result.seconds > 0 else 0.0}
        q = result.quality
        if q is not None and q.max_psi is not None:
            metrics["max_drift_psi"] = q.max_psi
        compared = [p.comparison for p in (q.partitions if q else ()) if p.comparison is not None]
        for name in ("agreement", "spearman"):  # the worst partition's
            values = [getattr(c, name) for c in compared if getattr(c, name) is not None]
            if values:
                metrics[f"challenger_{name}"] = min(values)
        self._end("FINISHED", metrics, {"engine": result.engine.engine if result.engine else "-"})

    def failed(self, error: BaseException) -> None:
        self._end("FAILED", {}, {}, {"error": one_line(error)[:5000]})

    def _end(self, status: str, metrics: dict[str, float], params: dict[str, str],
             tags: dict[str, str] | None = None) -> None:
        """Never the scoring run's failure: a tracking server that is down is logged and left."""
        if self.done:
            return
        self.done = True
        try:
            import time

            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                                  params=[Param(k, v) for k, v in params.items()],
                                  tags=[RunTag(k, v) for k, v in (tags or {}).items()])
            self._log_report()
            self.client.set_terminated(self.run_id, status)
        except Exception:
            log.warning("could not record the end of MLflow run %s", self.run_id, exc_info=True)

    def _log_report(self) -> None:
        if self.report_path is None or self.spark is None:
            return
        from spark_jobs import fs

        if not fs.exists(self.spark, self.report_path):
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "report.html")
            with open(local, "wb") as f:
                f.write(fs.read_bytes(self.spark, self.report_path))
            self.client.log_artifact(self.run_id, local)


def _artifacts_beside(tracking_uri: str | None) -> str | None:
    """A SQLite store keeps new experiments' artifacts in ./mlruns of whatever folder the job runs in; put
    them beside the database instead. Servers choose their own."""
    if tracking_uri is None or not tracking_uri.startswith("sqlite:///"):
        return None
    database = tracking_uri.removeprefix("sqlite:///")
    return Path(os.path.abspath(database)).parent.joinpath("mlartifacts").as_uri()


def start(spark: SparkSession, cfg: JobConfig, job: Prepared, lineage: RunLineage) -> TrackedRun | None:
    """The MLflow run of this scoring run; None (logged) when the tracking store cannot take one."""
    try:
        client = MlflowClient(cfg.tracking_uri) if cfg.tracking_uri else MlflowClient()
        experiment = client.get_experiment_by_name(cfg.experiment)
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(
            cfg.experiment, artifact_location=_artifacts_beside(cfg.tracking_uri))
        params = {
            "model_uri": cfg.model_uri, "model_name": lineage.model_name, "model_version": lineage.model_version or "-",
            "input_table": cfg.input_table, "output_table": cfg.output_table,
            "selection": job.scoring.selection.text[:6000], "engine_requested": cfg.engine,
        }
        if job.challenger is not None:
            params["challenger_uri"] = cfg.challenger_uri or ""
            params["challenger_version"] = job.challenger.model.ref.version or "-"
        run = client.create_run(experiment_id, run_name=f"score {lineage.scoring_run_id[:8]}",
                                tags={TAG: lineage.scoring_run_id})
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    except Exception as e:
        log.warning("not recorded in MLflow (%s); --no-mlflow-run turns this off", one_line(e))
        return None
    log.info("MLflow run %s in experiment %s", run.info.run_id, cfg.experiment)
    return TrackedRun(client, run.info.run_id, spark)
