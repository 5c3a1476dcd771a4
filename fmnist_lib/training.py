"""Record what a chapter trained, as one MLflow run; and train the catalogue's models by name.

A chapter writes and fits its own model, then hands it to the run::

    with training_run("dense", data) as run:
        model.fit(x_train, y_train, batch_size=128, epochs=10, validation_data=(x_val, y_val))
        dense = run.record(model)

The run holds the profile, the seed, the dataset checksums and library versions; for Keras,
what MLflow's own ``mlflow.keras.autolog`` logs (the optimiser's settings, the batch size, the
epochs, loss and accuracy at every epoch); for scikit-learn, every parameter of the pipeline;
then `record` adds validation and test scores (test accuracy with its 95% interval), fit and
predict times, the predictions and class scores on both sets (`recorded.predictions`,
`recorded.recorded_scores`), the confusion matrix, classification report, learning curves and
misclassified images, and the serving artifact. A run is tagged ``variant=default`` only when
it trained the catalogue's model with the course's settings on the course's data
(`catalogue.is_default`).

`train` does the same for a model of the catalogue by name, for the command line, the search
and the tests; `recorded` reads such runs back.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import artifact, model_files, models, plots, stores, tracking
from .acquisition import IDX_FILES
from .calibration import calibrate
from .catalogue import MODELS, compile_keras, is_default, spec_named
from .config import SEED, Profile, get_profile
from .data import FashionMNIST, load_fashion_mnist
from .evaluation import Evaluation, evaluate
from .serving import Classifier, sklearn_scores


@dataclass(frozen=True, eq=False, kw_only=True)
class TrainingResult:
    """What one fit produced. ``classifier`` predicts with it (`Classifier`: for a
    reloaded run, the logged artifact, served through ONNX for a network); ``history`` (one row
    per epoch) is None for scikit-learn; ``validation`` scores the model on the validation set
    (what choices are made on), ``evaluation`` on the test set (what is reported)."""

    name: str
    classifier: Classifier
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
    own input view, as `Classifier` scores them (`serving.sklearn_scores`)."""
    if keras:
        scores, probabilistic = model.predict(x, batch_size=1024, verbose=0), True
    else:
        scores, probabilistic = sklearn_scores(model, x)
    return scores.argmax(axis=1), scores, probabilistic


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
            "process": stores.process_tag(),  # a later start fails the run if this one dies
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
        return tracking.client().get_run(self.run.info.run_id).data.params

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
        model = model_files.in_float32(model) if keras else model
        validation, evaluation, predict_time, calibration, class_scores = self._score(model, keras)
        family = "keras" if keras else "sklearn"
        examples = self.data.split("test")[0]
        logged = artifact.log_model(model, family, examples, calibration=calibration)
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
            classifier=Classifier.from_model(model, family, calibration),
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


def prepare_fit(name, profile, data, overrides):
    """The spec, profile, profile-sized data, hyperparameters and logged parameters of a fit
    of the catalogue's model ``name``, checked (by `train`, and by `recorded.reuse_or_train` to
    find a run that made the same fit)."""
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
    spec, profile, data, params, _ = prepare_fit(name, profile, data, overrides)
    if spec.family == "keras":
        import keras  # before the run starts, so that it logs what autolog reads from `fit`
    with training_run(name, data, profile, seed=seed, params=params) as run:
        if spec.family == "keras":
            keras.utils.set_random_seed(seed)
            model = spec.build(params)
            x_train, y_train = data.keras("train")
            compile_keras(model, params, len(x_train))
            model.fit(
                x_train,
                y_train,
                batch_size=params["batch_size"],
                epochs=params["epochs"],
                validation_data=data.keras("val"),
                verbose=verbose,
            )
        else:
            model = spec.build(params, seed=seed)
            model.fit(*data.sklearn("train"))
        return run.record(model)


def _log_artifacts(name, data, evaluation, history):
    title = f"{name}: test accuracy {evaluation.accuracy:.4f}"
    tracking.log_figure(
        plots.confusion_matrix(evaluation.confusion, data.class_names, title),
        "confusion_matrix.png",
    )
    tracking.log_text(evaluation.report, "classification_report.txt")
    tracking.log_figure(
        plots.misclassified(
            data.x_test,
            evaluation.y_true,
            evaluation.y_pred,
            evaluation.misclassified,
            data.class_names,
            n=30,
        ),
        "misclassified.png",
    )
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
