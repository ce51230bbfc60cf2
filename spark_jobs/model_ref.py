"""Resolve a model URI once, on the driver, to one concrete version and its files, so that every row of a
run is scored by the same model and executors never call the registry."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient

from spark_jobs.errors import ScoringError, UsageError

_ALIAS = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?\Z")
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_VERSION = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)/?\Z")


@dataclass(frozen=True)
class ModelVersionRef:
    """What the registry says about the model a run uses: written into every scored row."""

    requested_uri: str
    uri: str  # concrete: models:/NAME/VERSION for registry models
    name: str
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
    client = MlflowClient()
    alias, version = _ALIAS.match(model_uri), _VERSION.match(model_uri)
    try:
        if alias:
            mv = client.get_model_version_by_alias(alias["name"], alias["alias"])
        elif version:
            mv = client.get_model_version(version["name"], version["version"])
        else:
            return ModelVersionRef(model_uri, model_uri, model_uri, None, None)
    except MlflowException as e:
        if e.error_code in _NOT_FOUND:
            raise UsageError(f"model {model_uri}: {_missing(client, alias or version)}") from None  # type: ignore[arg-type]
        raise ScoringError(f"model {model_uri}: registry lookup failed: {_first_line(e)}") from e
    return ModelVersionRef(
        requested_uri=model_uri,
        uri=f"models:/{mv.name}/{mv.version}",
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or None,
    )


def _missing(client: MlflowClient, match: re.Match[str]) -> str:
    """Say which part of the URI the registry lacks: the model itself, or its alias or version."""
    name = match["name"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        return f"registered model '{name}' not found"
    if "alias" in match.groupdict():
        return f"alias '{match['alias']}' of registered model '{name}' not found"
    return f"version {match['version']} of registered model '{name}' not found"


def download(ref: ModelVersionRef) -> LocalModel:
    try:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=ref.uri, dst_path=tempfile.mkdtemp(prefix="score-model-")
        )
        model = Model.load(path)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UsageError(f"model {ref.requested_uri} not found: {_first_line(e)}") from None
        raise ScoringError(f"model {ref.requested_uri}: download failed: {_first_line(e)}") from e
    except OSError as e:
        raise UsageError(f"model {ref.requested_uri} cannot be read: {e}") from None
    if ref.version is None and model.run_id:
        ref = ModelVersionRef(ref.requested_uri, ref.uri, ref.name, None, model.run_id)
    return LocalModel(ref=ref, path=path, signature=model.signature, output_names=_proba_names(model, path))


def _proba_names(model: Model, path: str) -> tuple[str, ...] | None:
    """A scikit-learn classifier whose pyfunc predicts predict_proba: one column per class, named by it."""
    if model.flavors.get("python_function", {}).get("predict_fn") != "predict_proba" or "sklearn" not in model.flavors:
        return None
    import mlflow.sklearn

    classes = getattr(mlflow.sklearn.load_model(path), "classes_", None)
    if classes is None:
        return None
    return tuple("proba_" + re.sub(r"\W", "_", str(c)) for c in classes)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
