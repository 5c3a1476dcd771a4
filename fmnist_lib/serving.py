"""The serving artifact: one MLflow pyfunc model from image bytes or arrays to predictions.

`Classifier` wraps a trained model (Keras or scikit-learn) with the library's preprocessing
and the class names. It is what every training run logs as its model, what the registry
holds, what `mlflow models serve` answers with, and what the app is to call: one code path from
bytes to probabilities.

Input: a table with one column ``image``; each cell is an image file (PNG, JPEG, WebP, GIF or
BMP) as base64 text or raw bytes, or a 28x28 array of grey levels 0-255. Output: one row per
image with ``class_id``, ``class_name``, ``probabilities`` (10 floats, in class-id order, as the
model gives them), ``confidence`` (the calibrated probability of the answer: temperature scaling
fitted on the validation set) and ``sure`` (false when the confidence is below the threshold
chosen on the validation set: the answer is then more likely wrong than usual, "not sure").
"""

from __future__ import annotations

import base64
import copy
import itertools
import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from . import _compat, preprocess
from .data import CLASS_NAMES, IMAGE_SHAPE, INPUT_SHAPE, keras_input, sklearn_input
from .evaluation import Calibration
from .preprocess import ImageError

INPUT_COLUMN = "image"
# Types beyond skops' safe defaults that our pipelines hold. Only files this library wrote are
# loaded with them: our own transformers, and the trees of the random forest.
SKOPS_TRUSTED_TYPES = [
    "fmnist_lib.models.HogFeatures",
    "fmnist_lib.models.Rescale",
    "sklearn.tree._tree.Tree",
]
_NATIVE_FILE = {"keras": "model.keras", "sklearn": "model.skops"}
_BATCH = 4096
# The ONNX export may differ from Keras by float rounding only; anything more and it is not used.
ONNX_TOLERANCE = 1e-4


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
        if isinstance(first, (str, bytes)) or np.ndim(first) == 2:
            return list(cell)
    return [cell]


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


def to_images(model_input) -> np.ndarray:
    """Every image of the input, preprocessed, as (n, 28, 28) uint8. A bad image raises
    `ImageError` naming its position, so that a caller knows which one to fix."""
    cells = _cells(model_input)
    if not cells:
        raise ImageError("No image was given.")
    images = np.empty((len(cells), *IMAGE_SHAPE), dtype=np.uint8)
    for i, cell in enumerate(cells):
        try:
            images[i] = preprocess.prepare(cell)
        except ImageError as err:
            raise ImageError(f"Image {i}: {err}" if len(cells) > 1 else str(err)) from None
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


class Classifier(mlflow.pyfunc.PythonModel):
    """A trained model with the library's preprocessing and the class names, as an MLflow
    pyfunc model. Use `from_model` in a session; MLflow calls `load_context` when it loads
    the logged artifact."""

    def __init__(self, family: str | None = None, calibration: Calibration | None = None):
        if family not in (None, *_NATIVE_FILE):
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
        x = sklearn_input(images)
        if hasattr(self.model, "predict_proba"):
            return self.model.predict_proba(x)
        return vote_shares(self.model, x)

    def _network(self, x: np.ndarray) -> np.ndarray:
        """The network's softmax output for a float32 batch (n, 28, 28, 1)."""
        if self._onnx is not None:
            return self._onnx.run(None, {self._onnx.get_inputs()[0].name: x})[0]
        return self._forward(x).numpy()

    def classify(self, model_input) -> pd.DataFrame:
        """Class id, class name and probabilities for every image of the input."""
        proba = self.predict_proba(to_images(model_input))
        ids = proba.argmax(axis=1)
        confidence = self.calibration.confidence(proba)
        return pd.DataFrame(
            {
                "class_id": ids.astype(np.int64),
                "class_name": [CLASS_NAMES[i] for i in ids],
                "probabilities": [row.tolist() for row in proba],
                "confidence": confidence,
                "sure": confidence >= self.calibration.threshold,
            }
        )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            return self.classify(model_input)
        except ImageError as err:
            # A 400 with this sentence, rather than a traceback, from `mlflow models serve`.
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None


def save_native(model, family: str, folder: Path) -> Path:
    """The model in its own library's format: a .keras file, or a skops file for sklearn."""
    path = Path(folder) / _NATIVE_FILE[family]
    if family == "keras":
        model.save(path)
    else:
        import skops.io

        from . import models

        skops.io.dump(models.with_libsvm(model), path)
    return path


def load_native(path, family: str):
    if family == "keras":
        import keras

        return keras.saving.load_model(path, compile=False)
    import skops.io

    return skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)


def onnx_session(path):
    """An onnxruntime session on an exported network, on the machine's cores."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1  # a chain of layers: nothing to run side by side
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(model, folder: Path, check: np.ndarray) -> Path | None:
    """The Keras network as ``model.onnx`` in ``folder``, if its onnxruntime predictions on
    ``check`` ((n, 28, 28) uint8 images) match Keras's within `ONNX_TOLERANCE`; else None
    (with a warning), and the artifact serves through TensorFlow."""
    import tensorflow as tf

    from . import models

    path = Path(folder) / "model.onnx"
    x = keras_input(check)
    model = models.in_float32(model)  # onnxruntime has no bfloat16 convolutions
    try:
        expected = model(tf.constant(x), training=False).numpy()
        network = models.inference_network(model)
        network(tf.constant(x[:1]))  # Keras exports only a network that has been called
        with _compat.quiet_onnx_export():
            network.export(str(path), format="onnx", verbose=False)
        session = onnx_session(path)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        difference = float(np.abs(got - expected).max())
    except Exception as err:  # noqa: BLE001  (any converter failure means: no ONNX)
        reason = f"{type(err).__name__}: {err}"
        warnings.warn(f"No ONNX export ({reason}); serving with TensorFlow.", stacklevel=2)
        path.unlink(missing_ok=True)
        return None
    if difference > ONNX_TOLERANCE:
        message = f"The ONNX export differs from Keras by {difference:.2g}: not used."
        warnings.warn(message, stacklevel=2)
        path.unlink()
        return None
    return path


def _requirements(family: str) -> list[str]:
    """Pinned packages the artifact needs. fmnist_lib itself is not on PyPI: serve with
    ``--env-manager local`` from the course's environment, where it is installed."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflow", "numpy", "pandas", "pillow", "scikit-learn"]
    keras = ["tensorflow-cpu", "keras", "onnxruntime"]
    names += keras if family == "keras" else ["scikit-image", "skops"]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    return pins


def log_model(
    model, family: str, example_images: np.ndarray, name: str = "model",
    calibration: Calibration | None = None,
):  # fmt: skip
    """Log ``model`` wrapped as the serving artifact in the active MLflow run. The input
    example is two of ``example_images`` as base64 PNG, as the API receives them; the size of
    the model file is logged as the metric ``model_size_mb``; ``calibration`` (from the
    validation set: `evaluation.calibrate`) goes into the artifact, and is logged as the
    metrics ``temperature`` and ``not_sure_threshold``. Returns
    the `mlflow.models.model.ModelInfo` (its ``model_uri`` loads the artifact back)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, Schema

    example = images_frame(
        base64.b64encode(preprocess.encode_png(image)).decode("ascii")
        for image in example_images[:2]
    )
    signature = ModelSignature(
        inputs=Schema([ColSpec(AnyType(), INPUT_COLUMN)]),
        outputs=Schema(
            [
                ColSpec("long", "class_id"),
                ColSpec("string", "class_name"),
                ColSpec(Array("double"), "probabilities"),
                ColSpec("double", "confidence"),
                ColSpec("boolean", "sure"),
            ]
        ),
    )
    with tempfile.TemporaryDirectory() as folder:
        native = save_native(model, family, Path(folder))
        mlflow.log_metric("model_size_mb", native.stat().st_size / 2**20)
        calibration = calibration or Calibration()
        if calibration != Calibration():
            mlflow.log_metrics(
                {"temperature": calibration.temperature,
                 "not_sure_threshold": calibration.threshold}
            )  # fmt: skip
        artifacts = {"model": str(native)}
        if family == "keras":
            onnx = export_onnx(model, Path(folder), example_images[:256])
            if onnx is not None:
                artifacts["onnx"] = str(onnx)
        quiet = logging.getLogger("mlflow.pyfunc")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # "Validating input example": noise in a chapter
        try:
            with _compat.fast_pin_check():
                return mlflow.pyfunc.log_model(
                    name=name,
                    python_model=Path(__file__).with_name("_serving_model.py"),
                    model_config={
                        "family": family,
                        "temperature": calibration.temperature,
                        "threshold": calibration.threshold,
                    },
                    artifacts=artifacts,
                    signature=signature,
                    input_example=example,
                    pip_requirements=_requirements(family),
                )
        finally:
            quiet.setLevel(level)


def load(model_uri: str) -> Classifier:
    """The `Classifier` behind a logged or registered artifact, e.g.
    ``models:/fashion-mnist@champion``, ready for `classify` and `predict_proba`. MLflow warns
    if the artifact's pinned packages differ from the installed ones (see
    `_compat.fast_pin_check`)."""
    from . import tracking

    # The course's store, not MLflow's default (./mlflow.db in whatever folder we run in).
    mlflow.set_tracking_uri(tracking.tracking_uri())
    with _compat.fast_pin_check():
        model = mlflow.pyfunc.load_model(model_uri)
    return model.unwrap_python_model()


def serve_api(model: str, host: str = "127.0.0.1", port: int = 5001, workers: int = 1) -> None:
    """Serve ``model`` (a local model folder or a ``models:/`` or ``runs:/`` URI) as the REST API
    of `mlflow models serve`: MLflow's own scoring app under uvicorn, until interrupted, with
    ``workers`` processes (see `_compat.TcpConfig` for why not through ``mlflow models serve``)."""
    import os

    import mlflow.artifacts
    import uvicorn
    from mlflow.pyfunc import scoring_server
    from mlflow.utils.file_utils import path_to_local_file_uri
    from uvicorn.supervisors import Multiprocess

    from . import tracking

    folder = Path(model)
    with tempfile.TemporaryDirectory() as scratch:
        if not folder.is_dir():
            mlflow.set_tracking_uri(tracking.tracking_uri())
            folder = Path(mlflow.artifacts.download_artifacts(model, dst_path=f"{scratch}/model"))
        # What `mlflow models serve` hands its uvicorn: the app reads the model's folder here.
        os.environ[scoring_server._SERVER_MODEL_PATH] = path_to_local_file_uri(str(folder))
        app = "mlflow.pyfunc.scoring_server.app:app"
        config = _compat.TcpConfig(app, host=host, port=port, workers=workers)
        if workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.Server(config).run()


@contextmanager
def api_server(model_uri: str, port: int | None = None, log: Path | None = None, workers: int = 1):
    """Serve ``model_uri`` as a REST API at 127.0.0.1 (`serve_api`, in a process of its own:
    ``python -m fmnist_lib serve``) for the length of a ``with`` block; yields its base URL once
    it answers. The same store as the library's is used; the server's output goes to ``log``
    (a temporary file by default).

    The model's files are fetched here first and the server started on that folder: it then
    starts about a second sooner, as it no longer opens the store itself."""
    import sys

    from . import tracking
    from .processes import env_with, free_port, running

    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_with(MLFLOW_TRACKING_URI=tracking.tracking_uri())
    with tempfile.TemporaryDirectory() as folder:
        import mlflow.artifacts

        mlflow.set_tracking_uri(tracking.tracking_uri())
        local = mlflow.artifacts.download_artifacts(model_uri, dst_path=f"{folder}/model")
        command = [sys.executable, "-m", "fmnist_lib", "serve", local, "--port", str(port)]
        command += ["--workers", str(workers)]
        log = log or Path(folder) / "serve.log"
        with running(command, f"{url}/ping", log, env=env):
            yield url
