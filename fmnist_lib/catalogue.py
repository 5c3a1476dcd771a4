"""The models the course trains, by name: each one's builder, its hyperparameters for a profile,
and how to tell whether a fitted model is that model as the course defines it.

The chapters write their own `keras.Sequential([...])` and `make_pipeline(...)`; this catalogue
is what the command line (``python -m fmnist_lib train NAME``), chapter 8 and the tests
build, and what a chapter's run is compared with: a run is tagged ``variant=default`` only when it
trained exactly the catalogue's model with the catalogue's settings, so that a student's edit
never replaces the course's reference figures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from . import models
from .config import Profile

# How Keras models are trained, beside the epochs that the profile sets.
KERAS_FIT_DEFAULTS = {"batch_size": 128, "learning_rate": 1e-3, "schedule": "cosine"}
# Training settings only some networks set (chapter 7's): see `compile_keras`.
KERAS_FIT_EXTRAS = ("weight_decay", "label_smoothing", "ema", "precision")
FIT_PARAMS = ("epochs", *KERAS_FIT_DEFAULTS, *KERAS_FIT_EXTRAS)


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
    deeper: bool = False  # trains the profile's ``deeper_epochs``

    def epochs(self, profile: Profile) -> int:
        """How many epochs this network trains in ``profile``."""
        return (profile.deeper_epochs if self.deeper else None) or profile.epochs

    def default_params(self, profile: Profile) -> dict:
        """Every hyperparameter with its value for ``profile``: the builder's arguments, then
        for Keras the training settings."""
        signature = inspect.signature(self.builder)
        params = {name: p.default for name, p in signature.parameters.items() if name != "seed"}
        params.update(self.build_params)
        if self.family == "keras":
            params.update(epochs=self.epochs(profile), **{**KERAS_FIT_DEFAULTS, **self.fit_params})
        return params

    def params_with(self, profile: Profile, overrides: dict) -> dict:
        """The hyperparameters for ``profile`` with ``overrides`` applied; ValueError names an
        override the model does not have."""
        params = self.default_params(profile)
        unknown = set(overrides) - set(params)
        if unknown:
            raise ValueError(
                f"{self.name} has no hyperparameter {sorted(unknown)}; it has {sorted(params)}"
            )
        return {**params, **overrides}

    def build(self, params: dict, seed: int | None = None):
        """A new, unfitted model from its hyperparameters (training settings left out); a
        network with a ``precision`` setting computes in the one `fit_precision` chooses, any
        other in Keras's current policy."""
        kwargs = {k: v for k, v in params.items() if k not in FIT_PARAMS}
        if self.family != "keras":
            return self.builder(**kwargs, seed=seed)
        if "precision" not in params:
            return self.builder(**kwargs)
        with models.computing_in(fit_precision(params)):
            return self.builder(**kwargs)


PRECISIONS = ("auto", "float32", "mixed_bfloat16")


def fit_precision(params: dict) -> str:
    """The precision a network is trained in: ``params["precision"]`` (default float32), where
    ``"auto"`` means bfloat16 on a CPU that computes it natively and float32 elsewhere."""
    precision = params.get("precision", "float32")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return models.fast_precision() if precision == "auto" else precision


MODELS = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "logreg",
            "sklearn",
            models.build_logistic_regression,
            "Logistic (softmax) regression on the pixels",
        ),
        ModelSpec("svm", "sklearn", models.build_svm_pixels, "SVM (RBF) on PCA of the pixels"),
        ModelSpec("svm-hog", "sklearn", models.build_svm_hog, "SVM (RBF) on HOG features"),
        ModelSpec("rf", "sklearn", models.build_random_forest, "Random Forest on the pixels"),
        ModelSpec("dense", "keras", models.build_dense, "Dense network, two hidden layers"),
        # The CNNs train in bfloat16 where the CPU computes it natively ("auto"), about
        # twice as fast on such a CPU; elsewhere in float32, the same network either way.
        ModelSpec(
            "cnn", "keras", models.build_dropout_cnn, "CNN with dropout", {}, {"precision": "auto"}
        ),
        ModelSpec(
            "cnn-no-dropout",
            "keras",
            models.build_dropout_cnn,
            "The same CNN without dropout",
            {"conv_dropout": 0.0, "dense_dropout": 0.0},
            {"precision": "auto"},
        ),
        # Chapter 7. Light changes only (shifts of up to 2 pixels, mirror images): zoom,
        # rotation and erasing cost CPU and need far longer runs than the course's to pay off.
        ModelSpec(
            "cnn-aug",
            "keras",
            models.build_augmented_cnn,
            "The CNN with dropout, trained on shifted and mirrored images",
            {"translate": 0.07, "zoom": 0.0, "rotation": 0.0, "erasing": 0.0},
            {"precision": "auto"},
        ),
        # A recipe from the speed-training literature (airbench, "How to train your ResNet"):
        # batch normalisation, a short warm-up, AdamW, label smoothing, an average of the
        # weights, large batches. Each epoch costs it a fraction of the dropout CNN's.
        ModelSpec(
            "cnn-bn",
            "keras",
            models.build_bn_cnn,
            "Deeper CNN with batch normalisation, shifts and mirror images, AdamW with warm-up, "
            "label smoothing and an average of the weights",
            {},
            # precision "auto": bfloat16 where the CPU computes it natively, else float32
            # (chapter 7 times both). A way of fitting, not part of the model: the run
            # records the one used as its ``precision`` tag.
            {
                "batch_size": 256,
                "learning_rate": 3e-3,
                "schedule": "warmup-cosine",
                "weight_decay": 5e-4,
                "label_smoothing": 0.1,
                "ema": 0.99,
                "precision": "auto",
            },
            deeper=True,
        ),
    ]
}


def spec_named(name: str) -> ModelSpec:
    """The catalogue's model ``name``; an unknown name is an error that lists the known ones."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(MODELS)}.")
    return MODELS[name]


def _steps(params: dict, n_images: int) -> int:
    """Training steps of a run: ``epochs`` of ``n_images`` in batches of ``batch_size``."""
    return params["epochs"] * -(-n_images // params["batch_size"])


def learning_rate_schedule(params: dict, n_images: int):
    """The learning rate, or its schedule over the run, for ``params`` (``learning_rate``,
    ``schedule``, ``epochs``, ``batch_size``) on ``n_images`` training images."""
    import keras

    learning_rate = params["learning_rate"]
    steps = _steps(params, n_images)
    if params["schedule"] == "cosine":
        # Decays to zero over the whole run: large steps early, fine ones at the end.
        return keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    if params["schedule"] == "warmup-cosine":
        # Rises from 0 over a twentieth of the run (two epochs at most), while batch
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
    """Compile a course network as the chapters do for training on ``n_images`` images: Adam
    with the learning rate `learning_rate_schedule` gives, cross-entropy on class ids,
    accuracy reported. Chapter 7's settings, when ``params`` has them: ``weight_decay``
    (AdamW), ``label_smoothing`` (a share of each label spread over the other classes) and
    ``ema`` (the momentum of an average of the weights that replaces them when `fit` ends, in
    runs long enough for one)."""
    import keras

    from .losses import SmoothedCrossentropy

    rate = learning_rate_schedule(params, n_images)
    steps = _steps(params, n_images)
    # An average over the last 1 / (1 - ema) steps needs a run many times that long (the quick
    # profile's few steps would average the first, untrained weights): else the last weights.
    ema = params.get("ema") or 0.0
    average = {"use_ema": True, "ema_momentum": ema} if ema and steps * (1 - ema) >= 10 else {}
    if params.get("weight_decay"):
        optimizer = keras.optimizers.AdamW(rate, weight_decay=params["weight_decay"], **average)
    else:
        optimizer = keras.optimizers.Adam(rate, **average)
    smoothing = params.get("label_smoothing", 0.0)
    model.compile(
        optimizer=optimizer,
        loss=SmoothedCrossentropy(smoothing) if smoothing else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


# --- Is a fitted model the catalogue's? ------------------------------------------------------


def _without_names(value):
    """A Keras config with every ``name``, generated seed and ``dtype`` left out: two networks
    built from the same layer list compare equal whatever Keras numbered their layers and
    whatever precision the CPU computed them in (a way of fitting, recorded as a tag)."""
    if isinstance(value, dict):
        return {
            k: _without_names(v) for k, v in value.items() if k not in ("name", "seed", "dtype")
        }
    if isinstance(value, list | tuple):
        return [_without_names(v) for v in value]
    return value


def _keras_signature(model, batch_size, epochs) -> dict:
    """What defines a Keras training: the layers, the optimiser with its learning-rate
    schedule, the loss, the batch size and the number of epochs."""
    optimizer = getattr(model, "optimizer", None)
    return {
        "layers": [
            (layer.__class__.__name__, _without_names(layer.get_config())) for layer in model.layers
        ],
        "input": tuple(model.input_shape),
        "optimizer": None if optimizer is None else _without_names(optimizer.get_config()),
        "optimizer_class": type(optimizer).__name__,
        "loss": str(getattr(model, "loss", None)),
        "batch_size": batch_size,
        "epochs": epochs,
    }


def _sklearn_signature(estimator) -> dict:
    """What defines a scikit-learn model: its steps' classes and every parameter that is a
    plain value (nested estimators are described by their own entries). Seeds are left out:
    they are the chapter's to choose (and SEED's to fix), not part of the model."""
    from sklearn.base import BaseEstimator

    return {
        key: (type(value).__name__ if isinstance(value, BaseEstimator) else value)
        for key, value in estimator.get_params(deep=True).items()
        # A pipeline's ``steps`` list: its entries say it all.
        if not isinstance(value, list) and not key.endswith("random_state")
    }


def is_default(
    name: str, model, profile: Profile, n_train: int, batch_size=None, epochs=None
) -> bool:
    """Whether ``model`` (fitted by a chapter, with ``batch_size`` and ``epochs`` for Keras)
    is the catalogue's model ``name`` with its settings for ``profile``, on ``n_train``
    training images."""
    if name not in MODELS:
        return False
    spec = MODELS[name]
    params = spec.default_params(profile)
    reference = spec.build(params, seed=None)
    if spec.family == "sklearn":
        return _sklearn_signature(model) == _sklearn_signature(reference)
    compile_keras(reference, params, n_train)
    expected = _keras_signature(reference, params["batch_size"], params["epochs"])
    return _keras_signature(model, batch_size, epochs) == expected


# Models a chapter trains its own way, outside the catalogue, by the name its run records.
CHAPTER_MODELS = {
    "cnn-bn-cycle2": "Deeper CNN trained a second cycle from chapter 7's weights (chapter 8)",
}


def description(name: str) -> str:
    """What the model ``name`` is, in words; another model from outside the catalogue
    (chapter 10's capstone, say) by its own name."""
    if name in MODELS:
        return MODELS[name].description
    return CHAPTER_MODELS.get(name, name)
