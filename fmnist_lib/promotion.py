"""How a model becomes the champion without being raced or forged.

A candidate's validation accuracy is recomputed from the predictions its run recorded and the
true labels, never read from what the run reported; before it is promoted, its model is
copied into a run of the promoting account, checked, and scored by the model itself; after
the alias is set, it is pointed at the best version registered so far, so that two
promotions at once leave the better model champion.
"""

from __future__ import annotations

import numpy as np

from . import stores, tracking

CHAMPION_MODEL = "fashion-mnist"
CHAMPION_ALIAS = "champion"
CHAMPION_URI = f"models:/{CHAMPION_MODEL}@{CHAMPION_ALIAS}"

# A full-profile model is scored on all 10k test images; a quick one on 2k after training on
# 6k: never let the latter replace the former, whatever their accuracies.
_PROFILE_RANK = {"full": 1}


def rank(profile: str, validation_accuracy: float) -> tuple[int, float]:
    """What "better" means: the profile first, then validation accuracy (never the test set's,
    which would make the champion's reported test score optimistic)."""
    return (_PROFILE_RANK.get(profile, 0), validation_accuracy)


# What a run's recorded predictions may raise when they are missing or malformed.
UNREADABLE = (LookupError, ValueError, TypeError, OSError)


class PermissionRefused(PermissionError):
    """The tracking server refused this account a change of the registry."""


def refused(err) -> bool:
    return getattr(err, "error_code", "") in ("PERMISSION_DENIED", "UNAUTHENTICATED")


def validation_score(run_id: str, profile: str, validation_size: int) -> float:
    """A run's validation accuracy, from the predictions it recorded and the validation labels
    of its profile (the course's sizes for ``quick`` and ``full``; ``validation_size`` images
    for another): a run cannot raise it by reporting a better metric. `tracking.
    MissingRunError` if the run recorded none; ValueError if they do not fit."""
    from .config import PROFILES
    from .data import load_fashion_mnist

    if profile in PROFILES:
        validation_size = PROFILES[profile].val_size or PROFILES[profile].validation_size
    predicted = np.asarray(tracking.load_predictions(run_id)["validation"])
    labels = load_fashion_mnist().subset(val_size=validation_size).y_val
    if predicted.shape != labels.shape:
        raise ValueError(
            f"run {run_id} recorded {len(predicted)} validation predictions for "
            f"{len(labels)} images"
        )
    return float((predicted == labels).mean())


def current(client, name: str, alias: str | None = None):
    """The version of ``name`` with ``alias`` (or its newest version), or None."""
    from mlflow.exceptions import MlflowException

    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        versions = client.search_model_versions(f"name = '{name}'")
        return max(versions, key=lambda v: int(v.version), default=None)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def run_rank(client, run_id: str) -> tuple[int, float]:
    """The rank of the run a version was registered from (``version.run_id``, which nobody can
    change), from its recorded predictions; below any candidate if they cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
        profile = run.data.tags.get("profile", "")
        size = int(run.data.params["validation_size"])
        return rank(profile, validation_score(run_id, profile, size))
    except (*UNREADABLE, MlflowException):
        return (-1, 0.0)


def version_rank(version) -> tuple[int, float]:
    # A version registered before validation scores were kept ranks below any that has one.
    accuracy = float(version.tags.get("validation_accuracy", "-inf"))
    return rank(version.tags.get("profile", ""), accuracy)


CHAMPIONS_EXPERIMENT = "fashion-mnist-champions"


def champion_copy(client, candidate):
    """Copy the candidate's model into a run of the caller's in ``fashion-mnist-champions`` (on
    a team's server, the teacher's: once promoted, the files the API serves are out of their
    author's reach), check it (`artifact.verify`) and score it on the whole validation set with
    the model itself: recorded predictions can be forged, the model's answers cannot. Returns
    the copy's URI and run, and the candidate with that score."""
    import tempfile
    from dataclasses import replace

    from . import artifact
    from .data import load_fashion_mnist

    found = client.get_experiment_by_name(CHAMPIONS_EXPERIMENT)
    experiment = (
        found.experiment_id
        if found
        else client.create_experiment(
            CHAMPIONS_EXPERIMENT, tracking.local_artifact_root(tracking.tracking_uri())
        )
    )
    tags = {"copy_of": candidate.run_id, "process": stores.process_tag()}
    run = client.create_run(experiment, tags=tags, run_name=f"champion {candidate.model}").info
    try:
        with tempfile.TemporaryDirectory() as folder:
            local = tracking.download(candidate.model_uri, folder)
            model = artifact.load_folder(local, candidate.model_uri).unwrap_python_model()
            data = load_fashion_mnist()
            answers = model.classify(data.x_val)["class_id"].to_numpy()
            score = float((answers == data.y_val).mean())
            client.log_artifacts(run.run_id, local, "model")
        client.log_metric(run.run_id, "validation_accuracy", score)
        client.set_terminated(run.run_id)
    except BaseException:
        client.set_terminated(run.run_id, "FAILED")
        raise
    return (f"{run.artifact_uri}/model", run.run_id), replace(candidate, validation_accuracy=score)


def settle(client, tries: int = 20):
    """After setting the alias, point it at the best version registered so far, until a read
    agrees. Two `register` calls at once may each read the old champion, register, and set
    the alias in either order; the last to set it then reads every version made before its
    set, so the best one wins whatever the order."""
    for _ in range(tries):
        versions = client.search_model_versions(f"name = '{CHAMPION_MODEL}'")
        best = max(versions, key=lambda v: (version_rank(v), int(v.version)))
        holder = current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
        if holder is not None and holder.version == best.version:
            return holder
        client.set_registered_model_alias(CHAMPION_MODEL, CHAMPION_ALIAS, best.version)
    return current(client, CHAMPION_MODEL, CHAMPION_ALIAS)
