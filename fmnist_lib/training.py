"""Record what a chapter trained, as one MLflow run; and train the catalogue's models by name.

A chapter writes and fits its own model, then hands it to the run::

    with training_run("dense", data) as run:
        model.fit(x_train, y_train, batch_size=128, epochs=10, validation_data=(x_val, y_val))
        dense = run.record(model)

The run holds the profile, the seed, the dataset checksums and library versions; for Keras,
what MLflow's own ``mlflow.keras.autolog`` logs (the optimiser's settings, the batch size, the
epochs, loss and accuracy at every epoch); for scikit-learn, every parameter of the pipeline;
then `record` adds validation and test scores (test accuracy with its 95% interval), fit and
predict times, the predictions and class scores on both sets (`predictions`,
`recorded_scores`), the confusion matrix, classification report, learning curves and
misclassified images, and the serving artifact. A run is tagged ``variant=default`` only when
it trained the catalogue's model with the course's settings on the course's data
(`catalogue.is_default`).

`train` and `reuse_or_train` do the same for a model of the catalogue by name, for the command
line, chapters 7 and 8 and the tests.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import models, plots, serving, tracking
from .catalogue import MODELS, compile_keras, is_default, spec_named
from .config import SEED, Profile, get_profile
from .data import CLASS_NAMES, IDX_FILES, FashionMNIST, load_fashion_mnist
from .evaluation import Evaluation, calibrate, evaluate


@dataclass(frozen=True, eq=False, kw_only=True)
class TrainingResult:
    """What one fit produced. ``classifier`` predicts with it (`serving.Classifier`: for a
    reloaded run, the logged artifact, served through ONNX for a network); ``history`` (one row
    per epoch) is None for scikit-learn; ``validation`` scores the model on the validation set
    (what choices are made on), ``evaluation`` on the test set (what is reported)."""

    name: str
    classifier: serving.Classifier
    run_id: str
    model_uri: str
    params: dict
    evaluation: Evaluation
    validation: Evaluation
    history: pd.DataFrame | None
    fit_time: float
    predict_time: float
    n_test: int
    # Class scores per split, {"validation": (n, 10), "test": (n, 10)}: probabilities, or an
    # SVM's vote shares.
    scores: dict[str, np.ndarray]

    @property
    def model(self):
        """The Keras network or scikit-learn pipeline (a reloaded network is read from its file
        on first use)."""
        return self.classifier.model

    @property
    def accuracy(self) -> float:
        """Test accuracy."""
        return self.evaluation.accuracy

    @property
    def validation_accuracy(self) -> float:
        return self.validation.accuracy

    @property
    def predict_ms_per_image(self) -> float:
        return 1000 * self.predict_time / self.n_test


def _is_keras(model) -> bool:
    # A scikit-learn chapter never imports Keras (and TensorFlow): look before importing.
    return "keras" in sys.modules and isinstance(model, sys.modules["keras"].Model)


def _predict(model, keras: bool, x):
    """(labels, class scores, whether the scores are probabilities) for images in the model's
    own input view. An SVM's scores are its vote shares, as `serving.Classifier` serves them
    (their largest is ``SVC.predict``'s answer); a model with neither gets one-hot scores."""
    if keras:
        proba = model.predict(x, batch_size=1024, verbose=0)
        return proba.argmax(axis=1), proba, True
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
        return proba.argmax(axis=1), proba, True
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC  # sklearnex's SVC is a subclass

    if isinstance(model, Pipeline) and isinstance(model[-1], SVC):
        shares = serving.vote_shares(model, x)
        return shares.argmax(axis=1), shares, False
    labels = np.asarray(model.predict(x))
    return labels, np.eye(len(CLASS_NAMES))[labels], False


def _pipeline_params(model) -> dict:
    """A scikit-learn model's parameters that are plain values (``svc__C``, ``pca__n_components``
    ...), as ``mlflow.sklearn.autolog`` would log them (without its extra pass to score the
    training set, minutes for an SVM)."""
    from sklearn.base import BaseEstimator

    return {
        key: value
        for key, value in model.get_params(deep=True).items()
        if "__" in key and not isinstance(value, BaseEstimator | list)
    }


def _same_data(data: FashionMNIST, profile: Profile) -> bool:
    """Whether ``data`` is the course's dataset at ``profile``'s sizes, image for image."""
    course = load_fashion_mnist().for_profile(profile)
    return all(
        np.array_equal(a, b)
        for split in FashionMNIST.SPLITS
        for a, b in zip(data.split(split), course.split(split), strict=True)
    )


class TrainingRun:
    """One MLflow run around a chapter's own fit; see `training_run`."""

    def __init__(self, name: str, data: FashionMNIST, profile: Profile, seed: int, params):
        self.name, self.data, self.profile, self.seed = name, data, profile, seed
        self.params = params
        self.result: TrainingResult | None = None
        self._start = 0.0
        self._autolog = False

    def __enter__(self) -> TrainingRun:
        import mlflow

        tracking.use_experiment()
        tags = {
            "model": self.name,
            "profile": self.profile.name,
            "seed": str(self.seed),
            "data.source": str(self.data.source),
            **{f"data.sha256.{f.key}": f.sha256 for f in IDX_FILES},
            **tracking.library_versions(),
        }
        self.run = mlflow.start_run(run_name=self.name, tags=tags)
        sizes = {
            "train_size": len(self.data.y_train),
            "validation_size": len(self.data.y_val),
            "test_size": len(self.data.y_test),
        }
        mlflow.log_params({**(self.params or {}), **sizes})
        if "keras" in sys.modules:
            # MLflow's own logger for Keras: it reads the optimiser, the batch size and the
            # epochs from the chapter's `fit` call, and logs every epoch's scores.
            mlflow.keras.autolog(
                log_models=False, log_datasets=False, log_model_signatures=False, silent=True
            )
            self._autolog = True
        self._start = time.perf_counter()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        import mlflow

        if self._autolog:
            mlflow.keras.autolog(disable=True)
        if kind is None and self.result is None:
            warnings.warn(
                f"The run of {self.name!r} ended without `run.record(model)`: it is marked "
                "FAILED and no chapter will read it.",
                stacklevel=3,
            )
        # An exception, or nothing recorded: FAILED, never left RUNNING or counted.
        failed = kind is not None or self.result is None
        mlflow.end_run("FAILED" if failed else "FINISHED")

    def _logged_params(self) -> dict[str, str]:
        import mlflow

        return mlflow.get_run(self.run.info.run_id).data.params

    def _fit_settings(self, model, keras: bool) -> tuple:
        """(batch size, epochs) of a Keras fit, as autolog and Keras recorded them."""
        if not keras:
            return None, None
        logged = self._logged_params()
        batch = logged.get("batch_size")
        epochs = getattr(model, "history", None) and model.history.params.get("epochs")
        return (int(batch) if batch not in (None, "None") else None), epochs

    def _tag_variant(self, model, keras: bool) -> dict:
        """Tag the run ``default`` (the catalogue's model and settings, on the course's data)
        or ``custom``; returns the hyperparameters in the catalogue's terms, logged."""
        import mlflow

        batch_size, epochs = self._fit_settings(model, keras)
        course_data = _same_data(self.data, self.profile)
        # Another seed trains the same model to other weights: a variant, which the chapters'
        # "newest run of the course's model" and the registry's candidates leave out.
        default = (
            course_data
            and self.seed == SEED
            and is_default(
                self.name, model, self.profile, len(self.data.y_train), batch_size, epochs
            )
        )
        mlflow.set_tags(
            {
                "family": "keras" if keras else "sklearn",
                "variant": "default" if default else "custom",
                "dataset": "course" if course_data else "modified",
                # How it was fitted on this CPU, which `variant` leaves out on purpose.
                **({"precision": models.precision_of(model)} if keras else {}),
            }
        )
        params = dict(self.params or {})
        if default and not params:
            # The catalogue's names for what the chapter wrote, so that `reuse_or_train` and
            # the command line find this run.
            params = MODELS[self.name].default_params(self.profile)
            mlflow.log_params(params)
        if not keras:
            mlflow.log_params(_pipeline_params(model))
        return params

    def _score(self, model, keras: bool):
        """(validation scores, test scores, seconds to predict the test set, calibration on
        the validation set or None, class scores per split), not logged yet."""
        view = self.data.keras if keras else self.data.sklearn
        x_val, y_val = view("val")
        x_test, y_test = view("test")
        val_pred, val_scores, probabilistic = _predict(model, keras, x_val)
        start = time.perf_counter()
        y_pred, test_scores, _ = _predict(model, keras, x_test)
        predict_time = time.perf_counter() - start
        # An SVM's vote shares are not probabilities: no log-loss, and no "not sure" threshold
        # (chosen on validation) for it.
        kept = (val_scores, test_scores) if probabilistic else (None, None)
        validation = evaluate(y_val, val_pred, self.data.class_names, kept[0])
        evaluation = evaluate(y_test, y_pred, self.data.class_names, kept[1])
        calibration = calibrate(val_scores, y_val) if probabilistic else None
        scores = {"validation": val_scores, "test": test_scores}
        return validation, evaluation, predict_time, calibration, scores

    def record(self, model) -> TrainingResult:
        """Evaluate the fitted ``model`` on the validation and test sets and log it all to this
        run: scores, times, figures and the serving artifact. Returns what the fit produced."""
        import mlflow

        fit_time = time.perf_counter() - self._start
        mlflow.log_metric("fit_time_s", fit_time)
        keras = _is_keras(model)
        params = self._tag_variant(model, keras)
        history = pd.DataFrame(model.history.history) if keras else None
        # Trained in bfloat16 or not, a network is scored, served and saved in float32.
        model = models.in_float32(model) if keras else model
        validation, evaluation, predict_time, calibration, class_scores = self._score(model, keras)
        family = "keras" if keras else "sklearn"
        examples = self.data.split("test")[0]
        logged = serving.log_model(model, family, examples, calibration=calibration)
        # Logged after the model and linked to it: MLflow copies a run's metrics logged before
        # a model one query per metric (0.4 s a run).
        scores = {
            **validation.metrics("validation_"),
            **evaluation.metrics(),
            "n_parameters": models.count_parameters(model),
            "predict_time_s": predict_time,
            "predict_ms_per_image": 1000 * predict_time / len(evaluation.y_true),
        }
        mlflow.log_metrics(scores, model_id=logged.model_id)
        tracking.log_predictions({"validation": validation.y_pred, "test": evaluation.y_pred})
        tracking.log_scores(class_scores)
        _log_artifacts(self.name, self.data, evaluation, history)
        self.result = TrainingResult(
            name=self.name,
            classifier=serving.Classifier.from_model(model, family, calibration),
            run_id=self.run.info.run_id,
            model_uri=logged.model_uri,
            params=params,
            evaluation=evaluation,
            validation=validation,
            history=history,
            fit_time=fit_time,
            predict_time=predict_time,
            n_test=len(evaluation.y_true),
            scores=class_scores,
        )
        return self.result


def training_run(
    name: str,
    data: FashionMNIST,
    profile: Profile | None = None,
    seed: int = SEED,
    params: dict | None = None,
) -> TrainingRun:
    """A ``with`` block that records one fit as an MLflow run named ``name``: fit the model
    inside it, on ``data``'s training set, then call ``run.record(model)``. ``profile``
    (default: the current one) and ``seed`` are recorded as tags, ``params`` as the
    hyperparameters in the catalogue's terms (`train` passes them; a chapter's default model
    gets them from the catalogue). An exception inside marks the run FAILED."""
    return TrainingRun(name, data, profile or get_profile(), seed, params)


# --- The catalogue's models by name ------------------------------------------------------------


def _prepare(name, profile, data, overrides):
    """The spec, profile, profile-sized data, hyperparameters and logged parameters of a fit,
    checked."""
    spec = spec_named(name)
    profile = profile or get_profile()
    params = spec.params_with(profile, overrides)
    data = (data or load_fashion_mnist()).for_profile(profile)
    logged = {
        **params,
        "train_size": len(data.y_train),
        "validation_size": len(data.y_val),
        "test_size": len(data.y_test),
    }
    return spec, profile, data, params, logged


def train(
    name: str,
    profile: Profile | None = None,
    data: FashionMNIST | None = None,
    verbose: int = 0,
    seed: int = SEED,
    **overrides,
) -> TrainingResult:
    """Build, fit and record the catalogue's model ``name`` as the chapters do: a Keras network
    compiled by `catalogue.compile_keras` and fitted with ``model.fit`` on the arrays, or a
    scikit-learn pipeline fitted. ``data`` replaces the dataset (its profile-sized subset is
    used); ``overrides`` replace hyperparameters (see ``MODELS[name].default_params``), and an
    unknown one is an error, so that a typo never trains the default model silently. ``seed``
    draws the initial weights, the batches and the augmentations (or the forest's trees); a
    seed other than the course's makes a ``custom`` run."""
    spec, profile, data, params, _ = _prepare(name, profile, data, overrides)
    if spec.family == "keras":
        import keras  # before the run starts, so that it logs what autolog reads from `fit`
    with training_run(name, data, profile, seed=seed, params=params) as run:
        if spec.family == "keras":
            keras.utils.set_random_seed(seed)
            model = spec.build(params)
            x_train, y_train = data.keras("train")
            compile_keras(model, params, len(x_train))
            model.fit(
                x_train, y_train, batch_size=params["batch_size"], epochs=params["epochs"],
                validation_data=data.keras("val"), verbose=verbose,
            )  # fmt: skip
        else:
            model = spec.build(params, seed=seed)
            model.fit(*data.sklearn("train"))
        return run.record(model)


def reuse_or_train(
    name: str, profile: Profile | None = None, verbose: int = 0, seed: int = SEED, **overrides
) -> TrainingResult:
    """The model ``name`` with these hyperparameters and ``seed`` for this profile: loaded from
    the newest finished run that trained exactly it (same hyperparameters, seed and data sizes,
    with its serving artifact), or trained and logged by `train` when there is none. A rebuilt
    chapter reuses its models instead of training them again."""
    spec, profile, data, params, logged = _prepare(name, profile, None, overrides)
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
    import mlflow

    profile = profile or get_profile()
    run = tracking.latest_runs(profile.name, [name], require=True).iloc[0]
    try:
        return tracking.load_predictions(run["run_id"])
    except tracking.MissingRunError:
        result = reuse_or_train(name, profile)
        found = {"validation": result.validation.y_pred, "test": result.evaluation.y_pred}
        with mlflow.start_run(run_id=run["run_id"]):
            tracking.log_predictions(found)
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
    import mlflow

    profile = profile or get_profile()
    run = tracking.latest_runs(profile.name, [name], require=True).iloc[0]
    try:
        scores = tracking.load_scores(run["run_id"])
    except tracking.MissingRunError:
        result = reuse_or_train(name, profile)
        with mlflow.start_run(run_id=result.run_id):
            tracking.log_scores(result.scores)
        return RecordedScores(name, result.run_id, result.fit_time, result.scores)
    return RecordedScores(name, run["run_id"], float(run["metrics.fit_time_s"]), scores)


def _reload(spec, run, model_uri, params, data) -> TrainingResult:
    classifier = serving.load(model_uri)

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


def fit_keras(
    model, params: dict, data: FashionMNIST, epochs=None, callbacks=(), verbose=0, seed=SEED
):
    """Compile ``model`` (see `catalogue.compile_keras`) and train it on ``data``'s training set
    through a `keras_batches` pipeline, validating after every epoch; for Optuna's trials and
    the benchmark. Returns the Keras history. ``epochs`` (default ``params["epochs"]``) can
    stop early, e.g. to time one epoch; the learning-rate schedule still spans
    ``params["epochs"]``. ``seed`` draws the order of the training images."""
    x, y = data.keras("train")
    compile_keras(model, params, len(x))
    return model.fit(
        keras_batches(x, y, params["batch_size"], seed=seed),
        validation_data=keras_batches(*data.keras("val"), 1024, shuffle=False),
        epochs=params["epochs"] if epochs is None else epochs,
        shuffle=False,  # the pipeline shuffles
        callbacks=list(callbacks),
        verbose=verbose,
    )


def keras_batches(x, y, batch_size: int, shuffle: bool = True, seed: int = SEED):
    """Images and labels as a `tf.data` pipeline of batches, reshuffled every epoch: TensorFlow
    shuffles the image numbers and gathers each batch in one operation, ahead of the training
    step (``benchmarks/bench.py`` compares it with ``fit`` on the arrays)."""
    import tensorflow as tf

    images, labels = tf.constant(x), tf.constant(y)
    order = tf.data.Dataset.range(len(x))
    if shuffle:
        order = order.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    batches = order.batch(batch_size).map(
        lambda i: (tf.gather(images, i), tf.gather(labels, i)),
        # One gather at a time cannot keep up with a small network's steps.
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return batches.prefetch(tf.data.AUTOTUNE)


def _log_artifacts(name, data, evaluation, history):
    title = f"{name}: test accuracy {evaluation.accuracy:.4f}"
    tracking.log_figure(
        plots.confusion_matrix(evaluation.confusion, data.class_names, title),
        "confusion_matrix.png",
    )
    tracking.log_text(evaluation.report, "classification_report.txt")
    tracking.log_figure(
        plots.misclassified(
            data.x_test, evaluation.y_true, evaluation.y_pred, evaluation.misclassified,
            data.class_names, n=30,
        ),
        "misclassified.png",
    )  # fmt: skip
    if history is not None:
        tracking.log_figure(plots.learning_curves(history, title), "learning_curves.png")


def describe(result: TrainingResult) -> str:
    """One line a person reads: validation and test accuracy (with its 95% interval), and how
    long fitting and predicting took."""
    low, high = result.evaluation.accuracy_interval
    return (
        f"{result.name}: validation accuracy {result.validation_accuracy:.4f}, test accuracy "
        f"{result.accuracy:.4f} (95% CI {low:.4f}-{high:.4f}), fit {result.fit_time:.1f} s, "
        f"predict {result.predict_ms_per_image:.3f} ms per image"
    )
