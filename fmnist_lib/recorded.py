"""Earlier runs read back from MLflow: a later chapter builds on an earlier chapter's model,
its predictions or its class scores without training it again (`reuse_or_train` trains only
what no run recorded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import artifact, tracking
from .catalogue import spec_named
from .config import SEED, Profile, get_profile
from .data import load_fashion_mnist
from .evaluation import evaluate
from .training import TrainingResult, prepare_fit, train


def reuse_or_train(
    name: str, profile: Profile | None = None, verbose: int = 0, seed: int = SEED, **overrides
) -> TrainingResult:
    """The model ``name`` with these hyperparameters and ``seed`` for this profile: loaded from
    the newest finished run that trained exactly it (same hyperparameters, seed and data sizes,
    with its serving artifact), or trained and logged by `train` when there is none. A rebuilt
    chapter reuses its models instead of training them again."""
    spec, profile, data, params, logged = prepare_fit(name, profile, None, overrides)
    runs = tracking.find_runs(profile.name, name)
    for _, run in runs.iterrows():
        same = all(run.get(f"params.{k}") == str(v) for k, v in logged.items())
        if same and run.get("tags.dataset") == "course" and run.get("tags.seed") == str(seed):
            uri = tracking.serving_model_uri(run)
            if uri is not None:
                return _reload(spec, run, uri, params, data)
    return train(name, profile, verbose=verbose, seed=seed, **overrides)


def trained(name: str, profile: Profile | None = None) -> TrainingResult:
    """The newest run of the course's model ``name`` (trained by its chapter, or by ``python -m
    fmnist_lib train``), reloaded from MLflow and scored on the validation and test sets; never
    trained here: a later chapter builds on an earlier one's model. No such run is an error
    that says how to make one."""
    spec = spec_named(name)
    profile = profile or get_profile()
    run = tracking.latest_runs(profile.name, [name], require=True).iloc[0]
    uri = tracking.serving_model_uri(run)
    if uri is None:
        raise tracking.MissingRunError(
            f"The newest run of {name} ({run['run_id']}) has no model to reload: train it "
            f"again (`python -m fmnist_lib train {name} --profile {profile.name}`)."
        )
    data = load_fashion_mnist().for_profile(profile)
    return _reload(spec, run, uri, spec.default_params(profile), data)


def predictions(name: str, profile: Profile | None = None) -> dict[str, np.ndarray]:
    """The class ids that the newest run of the course's model ``name`` predicted for the
    ``validation`` and ``test`` images, as that run recorded them, for paired comparisons across
    chapters. A run made before runs recorded predictions is reloaded and run once, and its
    predictions recorded in it."""

    profile = profile or get_profile()
    run = tracking.latest_runs(profile.name, [name], require=True).iloc[0]
    try:
        return tracking.load_predictions(run["run_id"])
    except tracking.MissingRunError:
        result = reuse_or_train(name, profile)
        found = {"validation": result.validation.y_pred, "test": result.evaluation.y_pred}
        # Added to the finished run, never reopened: an error here leaves it FINISHED.
        tracking.log_predictions(found, run_id=run["run_id"])
        return found


@dataclass(frozen=True, eq=False)
class RecordedScores:
    """A run's class scores per split (``{"validation": (n, 10), "test": (n, 10)}``) and how
    long its model trained."""

    name: str
    run_id: str
    fit_time: float
    scores: dict[str, np.ndarray]


def recorded_scores(name: str, profile: Profile | None = None) -> RecordedScores:
    """The class scores (probabilities, or an SVM's vote shares) that the newest run of the
    course's model ``name`` recorded for the validation and test images: chapter 8 votes with
    chapter 2's HOG SVM without running it again. A run made before runs recorded scores is
    reloaded and run once, and its scores recorded in it."""

    profile = profile or get_profile()
    run = tracking.latest_runs(profile.name, [name], require=True).iloc[0]
    try:
        scores = tracking.load_scores(run["run_id"])
    except tracking.MissingRunError:
        result = reuse_or_train(name, profile)
        tracking.log_scores(result.scores, run_id=result.run_id)
        return RecordedScores(name, result.run_id, result.fit_time, result.scores)
    return RecordedScores(name, run["run_id"], float(run["metrics.fit_time_s"]), scores)


def _reload(spec, run, model_uri, params, data) -> TrainingResult:
    classifier = artifact.load(model_uri)

    scores, scored = {}, {}
    for split, name in (("val", "validation"), ("test", "test")):
        images, labels = data.split(split)
        proba = classifier.predict_proba(images)
        scores[name] = proba / proba.sum(axis=1, keepdims=True)  # float32 rows, in float64
        # An SVM's vote shares are not probabilities: no log-loss, as when it was trained.
        kept = scores[name] if classifier.has_probabilities else None
        scored[name] = evaluate(labels, scores[name].argmax(axis=1), data.class_names, kept)

    history = tracking.load_history(run["run_id"]) if spec.family == "keras" else None
    return TrainingResult(
        name=spec.name,
        classifier=classifier,
        run_id=run["run_id"],
        model_uri=model_uri,
        params=params,
        evaluation=scored["test"],
        validation=scored["validation"],
        history=history,
        fit_time=float(run["metrics.fit_time_s"]),
        predict_time=float(run["metrics.predict_time_s"]),
        n_test=len(data.y_test),
        scores=scores,
    )
