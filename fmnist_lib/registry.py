"""The MLflow model registry: the best run of each approach, and the champion.

Each model of the course has a registered model ``fashion-mnist-<model>`` (for example
``fashion-mnist-cnn``) whose newest version is the best run found so far. The best of them
all is a version of the registered model ``fashion-mnist`` with the alias ``champion``:
``models:/fashion-mnist@champion`` is what the API serves.
Registering again promotes only a better model, better meaning a higher *validation* accuracy
(choices are made on validation; the test set only reports). Every version carries tags saying
which run it comes from, its profile, its validation accuracy and its test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import tracking
from .catalogue import CHAPTER_MODELS, MODELS

CHAMPION_MODEL = "fashion-mnist"
CHAMPION_ALIAS = "champion"
CHAMPION_URI = f"models:/{CHAMPION_MODEL}@{CHAMPION_ALIAS}"
# A full-profile model is scored on all 10k test images; a quick one on 2k after training on
# 6k: never let the latter replace the former, whatever their accuracies.
_PROFILE_RANK = {"full": 1}


def _rank(profile: str, validation_accuracy: float) -> tuple[int, float]:
    """What "better" means: the profile first, then validation accuracy (never the test set's,
    which would make the champion's reported test score optimistic)."""
    return (_PROFILE_RANK.get(profile, 0), validation_accuracy)


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
    validation_accuracy: float
    accuracy: float  # on the test set: reported, never ranked on

    @property
    def rank(self) -> tuple[int, float]:
        return _rank(self.profile, self.validation_accuracy)

    @property
    def tags(self) -> dict[str, str]:
        return {
            "model": self.model,
            "run_id": self.run_id,
            "profile": self.profile,
            "validation_accuracy": f"{self.validation_accuracy:.6f}",
            "test_accuracy": f"{self.accuracy:.6f}",
        }


def best_runs(profile: str | None = None) -> list[Candidate]:
    """The best finished run of each model trained with the course's own settings (``variant
    default``) that logged a serving artifact, by validation accuracy, for one profile or for
    all. Runs without a validation score (made before the course recorded one) are left out."""
    runs = tracking.find_runs(profile, variant="default")
    if runs.empty or "metrics.validation_accuracy" not in runs:
        return []
    runs = runs.dropna(subset=["metrics.validation_accuracy"])
    candidates = {}
    for _, run in runs.sort_values(
        "metrics.validation_accuracy", ascending=False, kind="stable"
    ).iterrows():
        model = run["tags.model"]
        if model in candidates:
            continue
        uri = tracking.serving_model_uri(run)
        if uri is not None:
            candidates[model] = Candidate(
                model=model,
                run_id=run["run_id"],
                model_uri=uri,
                profile=run["tags.profile"],
                validation_accuracy=float(run["metrics.validation_accuracy"]),
                accuracy=float(run["metrics.test_accuracy"]),
            )
    return list(candidates.values())


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


def _version_rank(version) -> tuple[int, float]:
    # A version registered before validation scores were kept ranks below any that has one.
    accuracy = float(version.tags.get("validation_accuracy", "-inf"))
    return _rank(version.tags.get("profile", ""), accuracy)


def _register(client, name: str, candidate: Candidate, description: str):
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)
    # A tracking server insists on the logged model's id beside its URI.
    return client.create_model_version(
        name,
        candidate.model_uri,
        run_id=candidate.run_id,
        tags=candidate.tags,
        model_id=candidate.model_uri.removeprefix("models:/"),
    )


def register_best(profile: str | None = None) -> pd.DataFrame:
    """Register the best run of each approach, then promote the best of them to ``champion``
    if it beats the current one. Returns what happened, one row per approach."""
    client = tracking.client()
    rows = []
    candidates = best_runs(profile)
    for candidate in candidates:
        name = registered_name(candidate.model)
        current = _current(client, name)
        if current is not None and (
            current.tags.get("run_id") == candidate.run_id
            or _version_rank(current) >= candidate.rank
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
                "validation accuracy": float(version.tags.get("validation_accuracy", "nan")),
                "test accuracy": float(version.tags["test_accuracy"]),
                "profile": version.tags["profile"],
                "action": action,
            }
        )
    if candidates:
        top = max(candidates, key=lambda c: c.rank)
        champion = _promote_if_better(client, top)
        for row in rows:
            row["champion"] = row["model"] == champion.tags.get("model")
    return pd.DataFrame(rows)


def _promote_if_better(client, candidate: Candidate):
    """Make ``candidate`` the champion if it ranks above the current one; returns the champion
    version after the decision."""
    champion = _current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
    if champion is None or (
        champion.tags.get("run_id") != candidate.run_id and candidate.rank > _version_rank(champion)
    ):
        champion = _register(
            client, CHAMPION_MODEL, candidate, "The course's best model: serve @champion."
        )
        client.set_registered_model_alias(CHAMPION_MODEL, CHAMPION_ALIAS, champion.version)
    return champion


def register_result(result) -> dict:
    """Register one recorded fit (a `training_run` result, whatever its model) as
    ``fashion-mnist-<name>``, and promote it to champion if it ranks above the current one: the
    rule of `register_best` (profile, then validation accuracy). Returns what happened."""

    client = tracking.client()
    candidate = Candidate(
        model=result.name,
        run_id=result.run_id,
        model_uri=result.model_uri,
        profile=client.get_run(result.run_id).data.tags["profile"],
        validation_accuracy=float(result.validation.accuracy),
        accuracy=float(result.accuracy),
    )
    version = _register(
        client, registered_name(result.name), candidate, CHAPTER_MODELS.get(result.name, "")
    )
    champion = _promote_if_better(client, candidate)
    return {
        "registered model": version.name,
        "version": int(version.version),
        "champion": champion.tags.get("run_id") == candidate.run_id,
    }


def no_model_message() -> str:
    """What to run when nothing is registered yet."""
    return (
        f"No model is registered as {CHAMPION_URI} in {tracking.shown_uri()}. Train one "
        "and register it: `python -m fmnist_lib train cnn` then `python -m fmnist_lib register`."
    )


def champion() -> dict[str, str]:
    """The champion's tags (model, run_id, profile, test_accuracy) and version."""
    client = tracking.client()
    version = _current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
    if version is None:
        raise NoModelError(no_model_message())
    return {**version.tags, "version": str(version.version)}


@dataclass(frozen=True)
class Registered:
    """One registered model version the app and the API can load."""

    name: str
    version: int
    model: str
    profile: str
    accuracy: float
    champion: bool = False

    @property
    def uri(self) -> str:
        # The version, not the alias: a cache keyed on it reloads when the champion changes.
        return f"models:/{self.name}/{self.version}"

    @property
    def short(self) -> str:
        return f"{self.model} (champion)" if self.champion else f"{self.model} v{self.version}"

    @property
    def label(self) -> str:
        where = "champion" if self.champion else f"{self.name} v{self.version}"
        return f"{self.model} ({where}, {self.profile} profile, test accuracy {self.accuracy:.4f})"


def _registered(version, champion: bool = False) -> Registered:
    return Registered(
        name=version.name,
        version=int(version.version),
        model=version.tags.get("model", version.name),
        profile=version.tags.get("profile", "?"),
        accuracy=float(version.tags.get("test_accuracy", "nan")),
        champion=champion,
    )


def registered_models() -> list[Registered]:
    """The champion first, then the newest version of each ``fashion-mnist-<model>``, best
    first. Empty when nothing is registered. Reads the store, changes nothing."""

    client = tracking.client()
    found = []
    top = _current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
    if top is not None:
        found.append(_registered(top, champion=True))
    others = [
        _current(client, model.name)
        for model in client.search_registered_models(f"name LIKE '{CHAMPION_MODEL}-%'")
    ]
    others = sorted((v for v in others if v is not None), key=_version_rank, reverse=True)
    return found + [_registered(version) for version in others]
