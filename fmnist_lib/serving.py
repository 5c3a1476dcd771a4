"""The served classifier: from images (file bytes, base64 text or grey arrays) to calibrated
predictions, as an MLflow pyfunc model.

`Classifier` wraps a trained model (Keras or scikit-learn) with the library's preprocessing
and the class names. It is what every training run logs as its model, what the registry
holds, what `mlflow models serve` answers with, and what the app calls: one code path from
bytes to probabilities.

Input: a table with one column ``image``; each cell is an image file (PNG, JPEG, WebP, GIF or
BMP) as base64 text or raw bytes, or a 28x28 array of grey levels 0-255. Output: one row per
image with ``class_id``, ``class_name``, ``probabilities`` (10 floats, in class-id order, as the
model gives them), ``confidence`` (the calibrated probability of the answer: temperature scaling
fitted on the validation set) and ``sure`` (false when the confidence is below the threshold
chosen on the validation set: the answer is then more likely wrong than usual, "not sure").
"""

from __future__ import annotations

import copy
import itertools

import mlflow.pyfunc
import numpy as np
import pandas as pd

from . import preprocess
from .calibration import Calibration
from .data import CLASS_NAMES, IMAGE_SHAPE, INPUT_SHAPE, keras_input, sklearn_input
from .model_files import FAMILIES, load_native, onnx_session
from .preprocess import ImageError

INPUT_COLUMN = "image"
_BATCH = 4096
# One request's limits, where the model is served (`Classifier.predict`, what MLflow's
# scoring server calls): no request holds a server for more than a few seconds. A larger batch
# goes in several requests (a 28x28 image takes ~0.2 ms, a phone photo ~20 ms).
MAX_IMAGES = 256
# All of a request's pictures together, as decoded (a JPEG counts at the reduced size it is
# decoded at): about two seconds of decoding at most.
MAX_REQUEST_PIXELS = 100_000_000


def images_frame(images) -> pd.DataFrame:
    """The model's input table for a list of images (bytes, base64 text or 28x28 arrays)."""
    return pd.DataFrame({INPUT_COLUMN: list(images)})


def _expand(cell) -> list:
    """The images in one cell: itself, or several when the API's ``inputs`` format packed a
    whole list of images into a single cell."""
    if isinstance(cell, (str, bytes, bytearray, memoryview)) or cell is None:
        return [cell]
    if isinstance(cell, (list, tuple, np.ndarray)) and len(cell):
        first = cell[0]
        if isinstance(first, (str, bytes)) or _is_grid(first):
            return list(cell)
    return [cell]


def _is_grid(value) -> bool:
    """Whether ``value`` is a 2-D array of rows of equal length (a ragged list is not)."""
    try:
        return np.ndim(value) == 2
    except ValueError:  # NumPy refuses to make an array of a ragged list
        return False


def _cells(model_input) -> list:
    if isinstance(model_input, dict):
        if INPUT_COLUMN not in model_input:
            raise ImageError(f"The input needs a field named {INPUT_COLUMN!r}.")
        model_input = pd.DataFrame({INPUT_COLUMN: list(model_input[INPUT_COLUMN])})
    if isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN in model_input.columns:
            column = model_input[INPUT_COLUMN]
        elif model_input.shape[1] == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ImageError(f"The input table needs one column named {INPUT_COLUMN!r}.")
        return [image for cell in column for image in _expand(cell)]
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        # Numbers: one 28x28 image, or a stack of them.
        return [model_input] if model_input.ndim == 2 else list(model_input)
    return list(model_input)


def to_images(model_input, limited: bool = False, doubts: list | None = None) -> np.ndarray:
    """Every image of the input, preprocessed, as (n, 28, 28) uint8. A bad image raises
    `ImageError` naming its position, so that a caller knows which one to fix. ``limited``:
    refuse more than `MAX_IMAGES` images or `MAX_REQUEST_PIXELS` pixels to decode, as a
    server does. ``doubts``: a list that receives, per image, why its mask is doubtful
    (`preprocess.mask_doubt`) or None."""
    cells = _cells(model_input)
    if not cells:
        raise ImageError("No image was given.")
    if limited and len(cells) > MAX_IMAGES:
        raise ImageError(
            f"The request holds {len(cells)} images; at most {MAX_IMAGES} are classified per "
            "request: send them in several requests."
        )
    budget = preprocess.PixelBudget(MAX_REQUEST_PIXELS) if limited else None
    images = np.empty((len(cells), *IMAGE_SHAPE), dtype=np.uint8)
    for i, cell in enumerate(cells):
        try:
            images[i], doubt = preprocess.prepare_checked(cell, budget)
        except ImageError as err:
            raise ImageError(f"Image {i}: {err}" if len(cells) > 1 else str(err)) from None
        if doubts is not None:
            doubts.append(doubt)
    return images


def vote_shares(pipeline, x: np.ndarray) -> np.ndarray:
    """For an SVM pipeline: the share of its one-against-one duels that each class won. The
    class with most votes is exactly what ``SVC.predict`` answers (ties go to the lower class
    id, as in libsvm)."""
    svc = copy.copy(pipeline[-1])  # shares the fitted arrays; only the output shape changes
    svc.decision_function_shape = "ovo"
    duels = svc.decision_function(pipeline[:-1].transform(x))
    n = len(svc.classes_)
    votes = np.zeros((len(x), n))
    for k, (i, j) in enumerate(itertools.combinations(range(n), 2)):  # libsvm's duel order
        wins = duels[:, k] > 0
        votes[wins, i] += 1
        votes[~wins, j] += 1
    return votes / votes.sum(axis=1, keepdims=True)


def sklearn_scores(model, x: np.ndarray) -> tuple[np.ndarray, bool]:
    """A scikit-learn model's (n, 10) class scores for rows in its input view, and whether they
    are probabilities: ``predict_proba``'s, or for an SVM the shares of its duels won (whose
    largest is ``SVC.predict``'s answer), or else its answers one-hot."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x), True
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC  # sklearnex's SVC is a subclass

    if isinstance(model, Pipeline) and isinstance(model[-1], SVC):
        return vote_shares(model, x), False
    return np.eye(len(CLASS_NAMES))[np.asarray(model.predict(x))], False


class Classifier(mlflow.pyfunc.PythonModel):
    """A trained model with the library's preprocessing and the class names, as an MLflow
    pyfunc model. Use `from_model` in a session; MLflow calls `load_context` when it loads
    the logged artifact."""

    def __init__(self, family: str | None = None, calibration: Calibration | None = None):
        if family not in (None, *FAMILIES):
            raise ValueError(f"family must be 'keras' or 'sklearn', not {family!r}")
        self.family = family
        # An artifact logged without a calibration (or before there was one) is always sure.
        self.calibration = calibration or Calibration()
        self._model = None
        self._native_path = None
        self._forward = None
        self._onnx = None

    @classmethod
    def from_model(cls, model, family: str, calibration: Calibration | None = None) -> Classifier:
        classifier = cls(family, calibration)
        classifier._attach(model)
        return classifier

    @property
    def model(self):
        """The trained Keras network or scikit-learn pipeline. An artifact served through
        ONNX loads its Keras network (and TensorFlow) only when this is first asked for."""
        if self._model is None and self._native_path is not None:
            self._attach(load_native(self._native_path, self.family))
        return self._model

    @property
    def backend(self) -> str:
        """What computes the predictions: onnxruntime, tensorflow or scikit-learn."""
        if self._onnx is not None:
            return "onnxruntime"
        return "tensorflow" if self.family == "keras" else "scikit-learn"

    def _attach(self, model) -> None:
        self._model = model
        if self.family == "keras" and self._forward is None:
            import tensorflow as tf

            # One compiled graph for every batch size: about 1 ms for one image, where
            # model.predict spends ~30 ms setting itself up on each call.
            self._forward = tf.function(
                lambda x: model(x, training=False),
                input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.float32)],
                reduce_retracing=True,
            )

    def load_context(self, context) -> None:
        self.family = context.model_config["family"]
        self.calibration = Calibration(
            float(context.model_config.get("temperature", 1.0)),
            float(context.model_config.get("threshold", 0.0)),
        )
        self._native_path = context.artifacts["model"]
        if "onnx" in context.artifacts:
            # A tenth of TensorFlow's time per image, and no TensorFlow import at start-up.
            self._onnx = onnx_session(context.artifacts["onnx"])
        else:
            self._attach(load_native(self._native_path, self.family))

    @property
    def has_probabilities(self) -> bool:
        """False for SVMs: their ``probabilities`` are the shares of one-against-one votes
        each class won, not calibrated probabilities. The served class is always the most
        probable one."""
        return self.family == "keras" or hasattr(self.model, "predict_proba")

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(n, 10) class probabilities for (n, 28, 28) uint8 images."""
        if self._onnx is None and self.model is None:
            raise RuntimeError("No model attached: use Classifier.from_model or mlflow to load.")
        if self.family == "keras":
            x = keras_input(images)
            parts = [self._network(x[i : i + _BATCH]) for i in range(0, len(x), _BATCH)]
            return np.concatenate(parts).astype(np.float64)
        return sklearn_scores(self.model, sklearn_input(images))[0]

    def _network(self, x: np.ndarray) -> np.ndarray:
        """The network's softmax output for a float32 batch (n, 28, 28, 1)."""
        if self._onnx is not None:
            return self._onnx.run(None, {self._onnx.get_inputs()[0].name: x})[0]
        return self._forward(x).numpy()

    def classify(self, model_input, limited: bool = False) -> pd.DataFrame:
        """Class id, class name and probabilities for every image of the input (``limited``:
        see `to_images`); ``sure`` is False below the calibrated threshold and wherever the
        picture's mask is doubtful, which ``doubt`` explains ("" where it is not)."""
        doubts: list[str | None] = []
        proba = self.predict_proba(to_images(model_input, limited, doubts))
        ids = proba.argmax(axis=1)
        confidence = self.calibration.confidence(proba)
        clear = np.array([d is None for d in doubts])
        return pd.DataFrame(
            {
                "class_id": ids.astype(np.int64),
                "class_name": [CLASS_NAMES[i] for i in ids],
                "probabilities": [row.tolist() for row in proba],
                "confidence": confidence,
                "sure": (confidence >= self.calibration.threshold) & clear,
                "doubt": [d or "" for d in doubts],
            }
        )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            return self.classify(model_input, limited=True)
        except ImageError as err:
            # A 400 with this sentence, rather than a traceback, from `mlflow models serve`.
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
