"""The MLflow model registry: the best run of each approach, and the champion.

Each model of the course has a registered model ``fashion-mnist-<model>`` (for example
``fashion-mnist-cnn``) whose newest version is the best run found so far. The best of them
all is a version of the registered model ``fashion-mnist`` with the alias ``champion``:
``models:/fashion-mnist@champion`` is what the API serves.
Registering again promotes only a better model, better meaning a higher *validation* accuracy
(choices are made on validation; the test set only reports), computed here from the run's
recorded predictions and the true labels, never read from what the run reported. Every version
carries tags saying which run it comes from, its profile, its validation accuracy and its test
accuracy. On a team's server with accounts only the teacher's account may move the champion:
anyone else's `register` registers each approach's best and leaves the champion alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import accounts, tracking
from .catalogue import CHAPTER_MODELS, MODELS
from .promotion import (
    CHAMPION_ALIAS,
    CHAMPION_MODEL,
    CHAMPION_URI,
    UNREADABLE,
    PermissionRefused,
    champion_copy,
    current,
    rank,
    refused,
    run_rank,
    settle,
    validation_score,
    version_rank,
)


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
        return rank(self.profile, self.validation_accuracy)

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
    default``) that logged a serving artifact, by `validation_score` (recomputed for every run,
    not read from its metrics), for one profile or for all. Runs without recorded predictions
    (made before the course recorded them) are left out."""
    runs = tracking.find_runs(profile, variant="default")
    if runs.empty or "params.validation_size" not in runs:
        return []
    scored = []
    for _, run in runs.dropna(subset=["params.validation_size"]).iterrows():
        size = int(run["params.validation_size"])
        try:
            scored.append((validation_score(run["run_id"], run["tags.profile"], size), run))
        except UNREADABLE:  # no predictions, or not ones this library wrote: not a candidate
            continue
    candidates = {}
    for score, run in sorted(scored, key=lambda pair: pair[0], reverse=True):  # stable: newest
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
                validation_accuracy=score,
                accuracy=float(run["metrics.test_accuracy"]),
            )
    return list(candidates.values())


def _register(client, name: str, candidate: Candidate, description: str, copy=None):
    """A new version of ``name`` (created if missing) from the candidate's logged model, or
    from ``copy``, the URI and run of a copy of it in a run of the caller's
    (`promotion.champion_copy`)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, description=description)
    if copy:
        return client.create_model_version(name, copy[0], run_id=copy[1], tags=candidate.tags)
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
    from mlflow.exceptions import MlflowException

    client = tracking.client()
    rows = []
    candidates = best_runs(profile)
    for candidate in candidates:
        name = registered_name(candidate.model)
        latest = current(client, name)
        if latest is not None and (
            latest.run_id == candidate.run_id or run_rank(client, latest.run_id) >= candidate.rank
        ):
            version, action = latest, "kept"
        else:
            description = MODELS[candidate.model].description if candidate.model in MODELS else ""
            try:
                version, action = _register(client, name, candidate, description), "registered"
            except MlflowException as err:
                if not refused(err):
                    raise
                continue  # another member's registered model: not this account's to add to
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
    table = pd.DataFrame(rows)
    if candidates:
        top = max(candidates, key=lambda c: c.rank)
        try:
            champion = _promote_if_better(client, top)
        except PermissionRefused as err:
            champion, table.attrs["refused"] = current(client, CHAMPION_MODEL, CHAMPION_ALIAS), err
        table["champion"] = [
            champion is not None and row["model"] == champion.tags.get("model") for row in rows
        ]
    return table


def _promote_if_better(client, candidate: Candidate):
    """Make ``candidate`` the champion if it ranks above the current one; on a tracking server,
    by the validation accuracy its model scores on a copy the promoter owns
    (`promotion.champion_copy`: an HOG SVM takes minutes; a local store has a single writer,
    nobody to forge against). Returns the champion version after the decision;
    `PermissionRefused` for an account that may not move it."""
    from mlflow.exceptions import MlflowException

    champion = current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
    if champion is not None and (
        champion.tags.get("run_id") == candidate.run_id or candidate.rank <= version_rank(champion)
    ):
        return champion
    try:
        copy, scored = None, candidate
        if tracking.tracking_uri().startswith(("http://", "https://")):
            copy, scored = champion_copy(client, candidate)
        if champion is not None and scored.rank <= version_rank(champion):
            return champion  # the model scores less than its recorded predictions claimed
        description = "The course's best model: serve @champion."
        version = _register(client, CHAMPION_MODEL, scored, description, copy=copy)
        client.set_registered_model_alias(CHAMPION_MODEL, CHAMPION_ALIAS, version.version)
    except MlflowException as err:
        if not refused(err):
            raise
        who = accounts.member(tracking.tracking_uri()) or "anonymous"
        raise PermissionRefused(
            f"The tracking server let this account ({who}) register each model's best, "
            f"not move {CHAMPION_URI}: on a team's server only the teacher's account "
            "does. The champion is unchanged."
        ) from None
    return settle(client)


def register_result(result) -> dict:
    """Register one recorded fit (a `training_run` result, whatever its model) as
    ``fashion-mnist-<name>``, and promote it to champion if it ranks above the current one: the
    rule of `register_best` (profile, then validation accuracy). Returns what happened."""

    client = tracking.client()
    run = client.get_run(result.run_id)
    profile, size = run.data.tags["profile"], int(run.data.params["validation_size"])
    candidate = Candidate(
        model=result.name,
        run_id=result.run_id,
        model_uri=result.model_uri,
        profile=profile,
        validation_accuracy=validation_score(result.run_id, profile, size),
        accuracy=float(result.accuracy),
    )
    version = _register(
        client, registered_name(result.name), candidate, CHAPTER_MODELS.get(result.name, "")
    )
    found = {"registered model": version.name, "version": int(version.version)}
    try:
        champion = _promote_if_better(client, candidate)
    except PermissionRefused as err:
        return {**found, "champion": False, "refused": str(err)}
    return {**found, "champion": champion.tags.get("run_id") == candidate.run_id}


def no_model_message() -> str:
    """What to run when nothing is registered yet."""
    return (
        f"No model is registered as {CHAMPION_URI} in {tracking.shown_uri()}. Train one "
        "and register it: `python -m fmnist_lib train cnn` then `python -m fmnist_lib register`."
    )


def champion() -> dict[str, str]:
    """The champion's tags (model, run_id, profile, test_accuracy) and version."""
    client = tracking.client()
    version = current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
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
    top = current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
    if top is not None:
        found.append(_registered(top, champion=True))
    others = [
        current(client, model.name)
        for model in client.search_registered_models(f"name LIKE '{CHAMPION_MODEL}-%'")
    ]
    others = sorted((v for v in others if v is not None), key=version_rank, reverse=True)
    return found + [_registered(version) for version in others]
