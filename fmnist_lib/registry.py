"""The MLflow model registry: the best run of each approach, and the champion.

Each model of the course has a registered model ``fashion-mnist-<model>`` (for example
``fashion-mnist-cnn``) whose newest version is the best run found so far. The best of them
all is a version of the registered model ``fashion-mnist`` with the alias ``champion``:
``models:/fashion-mnist@champion`` is what the API serves and the app loads by default.
Registering again promotes only a better model. Every version carries tags saying which run
it comes from, its profile and its test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import tracking

CHAMPION_MODEL = "fashion-mnist"
CHAMPION_ALIAS = "champion"
CHAMPION_URI = f"models:/{CHAMPION_MODEL}@{CHAMPION_ALIAS}"
# A full-profile model is scored on all 10k test images; a quick one on 2k after training on
# 6k: never let the latter replace the former, whatever their accuracies.
_PROFILE_RANK = {"full": 1}


class NoModelError(LookupError):
    """Nothing is registered yet; the message says which command makes a model."""


def registered_name(model: str) -> str:
    """The registered model holding the best run of one approach: ``fashion-mnist-<model>``."""
    return f"{CHAMPION_MODEL}-{model}"


@dataclass(frozen=True)
class Candidate:
    model: str
    run_id: str
    model_uri: str
    profile: str
    accuracy: float

    @property
    def rank(self) -> tuple[int, float]:
        return (_PROFILE_RANK.get(self.profile, 0), self.accuracy)

    @property
    def tags(self) -> dict[str, str]:
        return {
            "model": self.model,
            "run_id": self.run_id,
            "profile": self.profile,
            "test_accuracy": f"{self.accuracy:.6f}",
        }


def _client():
    import mlflow

    tracking.use_experiment()
    return mlflow.MlflowClient(tracking.tracking_uri())


def _serving_model_uri(client, run_id: str) -> str:
    """The serving artifact a run logged (``models:/m-...``)."""
    import mlflow

    models = mlflow.search_logged_models(
        experiment_ids=[client.get_run(run_id).info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
    if not models:
        raise LookupError(f"Run {run_id} has no logged model.")
    return models[0].model_uri


def best_runs(profile: str | None = None) -> list[Candidate]:
    """The best finished run of each model trained with the course's own settings (``variant
    default``), by test accuracy, for one profile or for all."""
    runs = tracking.find_runs(profile, variant="default")
    if runs.empty:
        return []
    client = _client()
    best = runs.sort_values("metrics.test_accuracy", ascending=False, kind="stable")
    best = best.drop_duplicates("tags.model")
    return [
        Candidate(
            model=row["tags.model"],
            run_id=row["run_id"],
            model_uri=_serving_model_uri(client, row["run_id"]),
            profile=row["tags.profile"],
            accuracy=float(row["metrics.test_accuracy"]),
        )
        for _, row in best.iterrows()
    ]


def _current(client, name: str, alias: str | None = None):
    """The version of ``name`` with ``alias`` (or its newest version), or None."""
    from mlflow.exceptions import MlflowException

    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        versions = client.search_model_versions(f"name = '{name}'")
        return max(versions, key=lambda v: int(v.version), default=None)
    except MlflowException:
        return None


def _rank(version) -> tuple[int, float]:
    return (
        _PROFILE_RANK.get(version.tags.get("profile", ""), 0),
        float(version.tags.get("test_accuracy", "-inf")),
    )


def _register(client, name: str, candidate: Candidate, description: str):
    import mlflow

    # register_model links the version to the logged model (a tracking server insists).
    version = mlflow.register_model(candidate.model_uri, name, tags=candidate.tags)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=description)
    return version


def register_best(profile: str | None = None) -> pd.DataFrame:
    """Register the best run of each approach, then promote the best of them to ``champion``
    if it beats the current one. Returns what happened, one row per approach."""
    from .training import MODELS

    client = _client()
    rows = []
    candidates = best_runs(profile)
    for candidate in candidates:
        name = registered_name(candidate.model)
        current = _current(client, name)
        if current is not None and (
            current.tags.get("run_id") == candidate.run_id or _rank(current) >= candidate.rank
        ):
            version, action = current, "kept"
        else:
            description = MODELS[candidate.model].description if candidate.model in MODELS else ""
            version, action = _register(client, name, candidate, description), "registered"
        rows.append(
            {
                "model": candidate.model,
                "registered model": name,
                "version": int(version.version),
                "test accuracy": float(version.tags["test_accuracy"]),
                "profile": version.tags["profile"],
                "action": action,
            }
        )
    if candidates:
        top = max(candidates, key=lambda c: c.rank)
        champion = _current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
        if champion is None or (
            champion.tags.get("run_id") != top.run_id and top.rank > _rank(champion)
        ):
            version = _register(
                client, CHAMPION_MODEL, top, "The course's best model: serve @champion."
            )
            client.set_registered_model_alias(CHAMPION_MODEL, CHAMPION_ALIAS, version.version)
            promoted = top.model
        else:
            promoted = None
        for row in rows:
            row["champion"] = row["model"] == (promoted or champion.tags.get("model"))
    return pd.DataFrame(rows)


def champion() -> dict[str, str]:
    """The champion's tags (model, run_id, profile, test_accuracy) and version."""
    client = _client()
    version = _current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
    if version is None:
        raise NoModelError(
            f"No model is registered as {CHAMPION_URI} in {tracking.tracking_uri()}. Train one "
            "and register it: `python -m fmnist_lib train cnn` then "
            "`python -m fmnist_lib register`."
        )
    return {**version.tags, "version": str(version.version)}
