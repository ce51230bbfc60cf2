"""Resolve a model URI once, on the driver, to one concrete version and its files, so that every row of a
run is scored by the same model and executors never call the registry."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from packaging.requirements import InvalidRequirement, Requirement

from spark_jobs.errors import ScoringError, UsageError, one_line

log = logging.getLogger("score_table")
_ALIAS = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?\Z")
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_VERSION = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)/?\Z")
_LATEST = re.compile(r"models:/(?P<name>[^/@]+)/(?P<stage>[^/@0-9][^/@]*)/?\Z")  # latest, or a (legacy) stage
DIGEST_PREFIX = "sha256:"


@dataclass(frozen=True)
class ModelVersionRef:
    """What the registry says about the model a run uses: written into every scored row."""

    requested_uri: str
    uri: str  # concrete: models:/NAME/VERSION for registry models
    name: str  # the registered name; for a model outside the registry, its URI
    # The registry version; for a model outside the registry, `sha256:` and a digest of its files (set by
    # download()), so that two different unregistered models never pass for the same one.
    version: str | None
    run_id: str | None


@dataclass(frozen=True)
class LocalModel:
    ref: ModelVersionRef
    path: str
    signature: ModelSignature | None
    output_names: tuple[str, ...] | None = None  # proba_<class> for a classifier logged with predict_proba


def connect(tracking_uri: str | None, registry_uri: str | None) -> None:
    """Point this (driver) process at the registry: parts of MLflow's download path read only the globals."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    registry = registry_uri or tracking_uri
    if registry:
        mlflow.set_registry_uri(registry)


def resolve(model_uri: str) -> ModelVersionRef:
    """The concrete model behind a URI: an alias, `latest` or a stage resolves to one registry version."""
    client = MlflowClient()
    alias, version, latest = _ALIAS.match(model_uri), _VERSION.match(model_uri), _LATEST.match(model_uri)
    try:
        if alias:
            mv = client.get_model_version_by_alias(alias["name"], alias["alias"])
        elif version:
            mv = client.get_model_version(version["name"], version["version"])
        elif latest:
            mv = _latest(client, latest["name"], latest["stage"])
        else:
            return ModelVersionRef(model_uri, model_uri, model_uri, None, None)
    except MlflowException as e:
        if e.error_code in _NOT_FOUND:
            raise UsageError(f"model {model_uri}: {_missing(client, alias or version or latest)}") from None  # type: ignore[arg-type]
        raise ScoringError(f"model {model_uri}: registry lookup failed: {one_line(e)}") from e
    return ModelVersionRef(
        requested_uri=model_uri,
        uri=f"models:/{mv.name}/{mv.version}",
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or None,
    )


def _latest(client: MlflowClient, name: str, stage: str) -> Any:
    """`models:/NAME/latest` (or a legacy stage): the newest version, as MLflow itself resolves it."""
    stages = None if stage.lower() == "latest" else [stage]
    found = client.get_latest_versions(name, stages)
    if not found:
        raise UsageError(f"model models:/{name}/{stage}: registered model '{name}' has no version"
                         + ("" if stages is None else f" in stage '{stage}'"))
    return max(found, key=lambda mv: int(mv.version))


def _missing(client: MlflowClient, match: re.Match[str]) -> str:
    """Say which part of the URI the registry lacks: the model itself, or its alias or version."""
    name = match["name"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        return f"registered model '{name}' not found"
    if "alias" in match.groupdict():
        return f"alias '{match['alias']}' of registered model '{name}' not found"
    if "stage" in match.groupdict():
        return f"registered model '{name}' has no version in stage '{match['stage']}'"
    return f"version {match['version']} of registered model '{name}' not found"


def download(ref: ModelVersionRef) -> LocalModel:
    try:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=ref.uri, dst_path=tempfile.mkdtemp(prefix="score-model-")
        )
        model = Model.load(path)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UsageError(f"model {ref.requested_uri} not found: {one_line(e)}") from None
        raise ScoringError(f"model {ref.requested_uri}: download failed: {one_line(e)}") from e
    except OSError as e:
        raise UsageError(f"model {ref.requested_uri} cannot be read: {e}") from None
    if ref.version is None:  # outside the registry: its identity is its files (and the run that logged it)
        ref = replace(ref, version=digest(path), run_id=model.run_id or None)
    differences = environment_differences(path, model)
    if differences:
        log.warning("model %s was logged in another environment: %s; its predictions here may differ from "
                    "where it was trained", ref.requested_uri, "; ".join(differences))
    return LocalModel(ref=ref, path=path, signature=model.signature, output_names=_proba_names(model, path))


def environment_differences(path: str, model: Model) -> list[str]:
    """What of the environment the model was logged in this process lacks: each requirement of its
    requirements.txt that the installed distribution does not satisfy, and another Python (major.minor).
    MLflow checks the same at every load, but first maps every installed distribution to its modules (0.7
    CPU-seconds, in every Python worker that loads the model); here each requirement's distribution is asked
    by name, once per run, on the driver, and every load goes without MLflow's check (udfs.model_cache)."""
    found = []
    listed = Path(path) / "requirements.txt"
    lines = listed.read_text(encoding="utf-8").splitlines() if listed.exists() else []
    for line in (x.split("#", 1)[0].strip() for x in lines):
        try:
            wanted = Requirement(line)
        except InvalidRequirement:  # blank, an option (-r, -c), a path or a URL: nothing to compare
            continue
        if wanted.marker is not None and not wanted.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(wanted.name)
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{line} (not installed)")
            continue
        if not wanted.specifier.contains(installed, prereleases=True):
            found.append(f"{line} (installed: {installed})")
    python = model.flavors.get("python_function", {}).get("python_version")
    if python and str(python).split(".")[:2] != platform.python_version().split(".")[:2]:
        found.append(f"Python {python} (running: {platform.python_version()})")
    return found


def _proba_names(model: Model, path: str) -> tuple[str, ...] | None:
    """A scikit-learn classifier whose pyfunc predicts predict_proba: one column per class, named by it."""
    if model.flavors.get("python_function", {}).get("predict_fn") != "predict_proba" or "sklearn" not in model.flavors:
        return None
    import mlflow.sklearn

    classes = getattr(mlflow.sklearn.load_model(path), "classes_", None)
    if classes is None:
        return None
    return tuple("proba_" + re.sub(r"\W", "_", str(c)) for c in classes)


def digest(folder: str) -> str:
    """`sha256:` and 16 hex digits over every file's relative path and bytes: the same files, the same digest."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\0")
    return DIGEST_PREFIX + h.hexdigest()[:16]
