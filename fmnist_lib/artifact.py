"""The MLflow artifact of a trained model: log it as a `Classifier` with its files, signature,
calibration and pinned packages; load one back from a run, a logged model or the registry."""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import weakref
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from . import _compat, preprocess, tracking
from .calibration import Calibration
from .model_files import export_onnx, save_native
from .serving import INPUT_COLUMN, Classifier, images_frame


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
    model,
    family: str,
    example_images: np.ndarray,
    name: str = "model",
    calibration: Calibration | None = None,
):
    """Log ``model`` wrapped as the serving artifact in the active MLflow run. The input
    example is two of ``example_images`` as base64 PNG, as the API receives them; the size of
    the model file is logged as the metric ``model_size_mb``; ``calibration`` (from the
    validation set: `calibration.calibrate`) goes into the artifact, and is logged as the
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
                {
                    "temperature": calibration.temperature,
                    "not_sure_threshold": calibration.threshold,
                }
            )
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
    # The files stay while the classifier lives: a network served through ONNX loads its
    # Keras file from there only when asked.
    folder = tempfile.mkdtemp(prefix="fmnist-model-")
    try:
        local = tracking.download(model_uri, folder)
        with _compat.fast_pin_check():
            classifier = mlflow.pyfunc.load_model(local).unwrap_python_model()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(classifier, shutil.rmtree, folder, True)
    return classifier
