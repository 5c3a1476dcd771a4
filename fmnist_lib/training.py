"""Fit any model of the course through one entry point, `train`, with every fit an MLflow run.

A run records the hyperparameters, the profile, the seed, the dataset checksums and library
versions; per-epoch loss and accuracy for Keras models; test accuracy, macro-F1, log-loss and
per-class accuracy; fit and predict times; the confusion matrix, classification report,
learning curves and misclassified images; and the model itself with its signature.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from . import models, plots, serving, tracking
from .config import SEED, Profile, get_profile
from .data import IDX_FILES, FashionMNIST, load_fashion_mnist
from .evaluation import Evaluation, evaluate

# How Keras models are trained, beside the epochs that the profile sets.
KERAS_FIT_DEFAULTS = {"batch_size": 128, "learning_rate": 1e-3, "schedule": "cosine"}
_FIT_PARAMS = ("epochs", *KERAS_FIT_DEFAULTS)


@dataclass(frozen=True)
class ModelSpec:
    """A model the course trains: its builder, the builder arguments that differ from the
    builder's defaults, and whether it is a scikit-learn pipeline or a Keras network."""

    name: str
    family: str
    builder: Callable
    description: str
    build_params: dict = field(default_factory=dict)
    fit_params: dict = field(default_factory=dict)  # Keras: replaces KERAS_FIT_DEFAULTS

    def default_params(self, profile: Profile) -> dict:
        """Every hyperparameter with its value for ``profile``: the builder's arguments, then
        for Keras the training settings."""
        signature = inspect.signature(self.builder)
        params = {name: p.default for name, p in signature.parameters.items() if name != "seed"}
        params.update(self.build_params)
        if self.family == "keras":
            params.update(epochs=profile.epochs, **{**KERAS_FIT_DEFAULTS, **self.fit_params})
        return params


MODELS = {
    spec.name: spec
    for spec in [
        ModelSpec("svm", "sklearn", models.build_svm_pixels, "SVM (RBF) on PCA of the pixels"),
        ModelSpec("svm-hog", "sklearn", models.build_svm_hog, "SVM (RBF) on HOG features"),
        ModelSpec("rf", "sklearn", models.build_random_forest, "Random Forest on the pixels"),
        ModelSpec("dense", "keras", models.build_dense, "Dense network, two hidden layers"),
        ModelSpec("cnn", "keras", models.build_dropout_cnn, "CNN with dropout"),
        ModelSpec(
            "cnn-no-dropout",
            "keras",
            models.build_dropout_cnn,
            "The same CNN without dropout",
            {"conv_dropout": 0.0, "dense_dropout": 0.0},
        ),
        # Chapter 7. On 2 CPU cores zoom and rotation double the cost of an epoch of the
        # dropout CNN; shifts, flips and erasing cost less. Chapter 7 times each one.
        ModelSpec(
            "cnn-aug",
            "keras",
            models.build_augmented_cnn,
            "The CNN with dropout, trained on shifted, mirrored, erased images",
            {"zoom": 0.0, "rotation": 0.0},
        ),
        ModelSpec(
            "cnn-bn",
            "keras",
            models.build_bn_cnn,
            "Deeper CNN with batch normalisation, shifts and flips, warm-up and cosine",
            # Half the widths of build_bn_cnn's defaults: a third of the time per epoch here.
            {"filters": (16, 32, 64), "zoom": 0.0, "rotation": 0.0, "erasing": 0.0},
            {"learning_rate": 2e-3, "schedule": "warmup-cosine"},
        ),
    ]
}


@dataclass(frozen=True, eq=False)
class TrainingResult:
    """What one fit produced. ``history`` (one row per epoch) is None for scikit-learn."""

    name: str
    model: object
    run_id: str
    model_uri: str
    params: dict
    evaluation: Evaluation
    history: pd.DataFrame | None
    fit_time: float
    predict_time: float
    n_test: int

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy

    @property
    def predict_ms_per_image(self) -> float:
        return 1000 * self.predict_time / self.n_test


def learning_rate_schedule(params: dict, n_images: int):
    """The learning rate, or its schedule over the run, for ``params`` (``learning_rate``,
    ``schedule``, ``epochs``, ``batch_size``) on ``n_images`` training images."""
    import keras

    learning_rate = params["learning_rate"]
    steps = params["epochs"] * -(-n_images // params["batch_size"])
    if params["schedule"] == "cosine":
        # Decays to zero over the whole run: large steps early, fine ones at the end.
        return keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    if params["schedule"] == "warmup-cosine":
        # Rises from 0 over the first two epochs (a twentieth of the run at most), while batch
        # normalisation's statistics settle; then the same cosine decay.
        warmup = min(2 * -(-n_images // params["batch_size"]), steps // 20)
        return keras.optimizers.schedules.CosineDecay(
            0.0, steps - warmup, warmup_target=learning_rate, warmup_steps=warmup
        )
    if params["schedule"] != "constant":
        raise ValueError(
            f"schedule must be 'constant', 'cosine' or 'warmup-cosine', not {params['schedule']!r}"
        )
    return learning_rate


def compile_keras(model, params: dict, n_images: int) -> None:
    """Compile a course network for training on ``n_images`` images: Adam with the learning
    rate `learning_rate_schedule` gives, cross-entropy on class ids, accuracy reported."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(params, n_images)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def keras_batches(x, y, batch_size: int, shuffle: bool = True, seed: int = SEED):
    """Images and labels as a `tf.data` pipeline of batches, reshuffled every epoch.

    Keras can take the NumPy arrays themselves, but then it slices and converts them batch by
    batch in Python; here TensorFlow shuffles the image numbers and gathers each batch in one
    operation, ahead of the training step (``python -m fmnist_lib.bench`` compares both)."""
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


def fit_keras(
    model, params: dict, data: FashionMNIST, epochs=None, callbacks=(), verbose=0, seed=SEED
):
    """Compile ``model`` (see `compile_keras`) and train it on ``data``'s training set with
    ``params``' batch size, validating on its validation set after every epoch. Returns the
    Keras history. ``epochs`` (default ``params["epochs"]``) can stop early, e.g. to time one
    epoch; the learning-rate schedule still spans ``params["epochs"]``. ``seed`` draws the
    order of the training images."""
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


def build_network(spec: ModelSpec, params: dict):
    """A new, untrained network of ``spec`` from its hyperparameters (the training settings
    among them are left out)."""
    return spec.builder(**{k: v for k, v in params.items() if k not in _FIT_PARAMS})


def _fit_keras(spec, params, data, verbose):
    model = build_network(spec, params)
    history = fit_keras(model, params, data, callbacks=[tracking.epoch_logger()], verbose=verbose)
    return model, pd.DataFrame(history.history)


def _predict(spec, model, x):
    """(labels, probabilities or None) for a batch in the model's own input view."""
    if spec.family == "keras":
        proba = model.predict(x, batch_size=1024, verbose=0)
        return proba.argmax(axis=1), proba
    proba = model.predict_proba(x) if hasattr(model, "predict_proba") else None
    return (proba.argmax(axis=1) if proba is not None else model.predict(x)), proba


def _prepare(name, profile, data, overrides):
    """The spec, profile, profile-sized data, hyperparameters, variant and logged parameters
    of a fit, checked."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(MODELS)}.")
    spec = MODELS[name]
    profile = profile or get_profile()
    # "default": the model and data as the course defines them; chapters compare these runs.
    variant = "custom" if overrides or data is not None else "default"
    data = (data or load_fashion_mnist()).for_profile(profile)
    params = spec.default_params(profile)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"{name} has no hyperparameter {sorted(unknown)}; it has {sorted(params)}")
    params.update(overrides)
    logged = {
        **params,
        "train_size": len(data.y_train),
        "validation_size": len(data.y_val),
        "test_size": len(data.y_test),
    }
    return spec, profile, data, params, variant, logged


def train(
    name: str,
    profile: Profile | None = None,
    data: FashionMNIST | None = None,
    verbose: int = 0,
    **overrides,
) -> TrainingResult:
    """Train the model ``name`` (a key of `MODELS`) on the profile's training set, evaluate it
    on its test set and log everything as one MLflow run. ``data`` replaces the dataset (its
    profile-sized subset is used); the run is then tagged ``variant=custom``, as with overrides.

    ``overrides`` replace hyperparameters (see ``MODELS[name].default_params``); an unknown
    one is an error, so that a typo never trains the default model silently.
    """
    spec, profile, data, params, variant, logged = _prepare(name, profile, data, overrides)
    view = "keras" if spec.family == "keras" else "sklearn"
    x_test, y_test = getattr(data, view)("test")
    tags = {
        "profile": profile.name,
        "variant": variant,
        "family": spec.family,
        "seed": str(SEED),
        "data.source": str(data.source),
        **{f"data.sha256.{f.key}": f.sha256 for f in IDX_FILES},
        **tracking.library_versions(),
    }
    with tracking.training_run(name, tags, logged) as run:
        import mlflow

        start = time.perf_counter()
        if spec.family == "keras":
            import keras

            keras.utils.set_random_seed(SEED)
            model, history = _fit_keras(spec, params, data, verbose)
        else:
            model = spec.builder(**params, seed=SEED)
            model.fit(*data.sklearn("train"))
            history = None
        fit_time = time.perf_counter() - start
        mlflow.log_metric("n_parameters", models.count_parameters(model))

        start = time.perf_counter()
        y_pred, proba = _predict(spec, model, x_test)
        predict_time = time.perf_counter() - start

        evaluation = evaluate(y_test, y_pred, data.class_names, proba)
        mlflow.log_metrics(
            {
                **evaluation.metrics(),
                "fit_time_s": fit_time,
                "predict_time_s": predict_time,
                "predict_ms_per_image": 1000 * predict_time / len(y_test),
            }
        )
        _log_artifacts(name, data, evaluation, history)
        model_uri = serving.log_model(model, spec.family, data.split("test")[0]).model_uri
    return TrainingResult(
        name, model, run.info.run_id, model_uri, params, evaluation, history, fit_time,
        predict_time, len(y_test),
    )  # fmt: skip


def reuse_or_train(
    name: str, profile: Profile | None = None, verbose: int = 0, **overrides
) -> TrainingResult:
    """The model ``name`` with these hyperparameters for this profile: loaded from the newest
    finished run that trained exactly it (same hyperparameters and data sizes, with its
    serving artifact), or trained and logged by `train` when there is none. A rebuilt
    chapter reuses its models instead of training them again."""
    spec, profile, data, params, variant, logged = _prepare(name, profile, None, overrides)
    runs = tracking.find_runs(profile.name, name, variant)
    for _, run in runs.iterrows():
        if all(run.get(f"params.{k}") == str(v) for k, v in logged.items()):
            from . import registry

            uri = registry.serving_model_uri(run)
            if uri is not None:
                return _reload(spec, run, uri, params, data)
    return train(name, profile, verbose=verbose, **overrides)


def _reload(spec, run, model_uri, params, data) -> TrainingResult:
    classifier = serving.load(model_uri)
    x_test, y_test = data.split("test")
    proba = classifier.predict_proba(x_test)
    proba /= proba.sum(axis=1, keepdims=True)  # float32 softmax rows, summed in float64
    # An SVM's vote shares are not probabilities: no log-loss for it, as when it was trained.
    kept = proba if classifier.has_probabilities else None
    evaluation = evaluate(y_test, proba.argmax(axis=1), data.class_names, kept)
    history = tracking.load_history(run["run_id"]) if spec.family == "keras" else None
    return TrainingResult(
        spec.name, classifier.model, run["run_id"], model_uri, params, evaluation, history,
        float(run["metrics.fit_time_s"]), float(run["metrics.predict_time_s"]), len(y_test),
    )  # fmt: skip


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
    """One line a person reads: test accuracy and how long fitting and predicting took."""
    return (
        f"{result.name}: test accuracy {result.accuracy:.4f}, fit {result.fit_time:.1f} s, "
        f"predict {result.predict_ms_per_image:.3f} ms per image"
    )
