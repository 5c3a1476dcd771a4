"""The MLflow artifact of a trained model: log it as a `Classifier` with its files, signature,
calibration and pinned packages; load one back from a run, a logged model or the registry."""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from . import _compat, model_files, preprocess, tracking
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
                ColSpec("string", "doubt"),
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


class ArtifactError(ValueError):
    """A model folder that is not an artifact this library logged: it is not loaded, since
    loading an MLflow model runs the code it carries."""


_CODE_FILE = Path(__file__).with_name("_serving_model.py")
# What `log_model` writes (and MLflow adds when it downloads a registered version), nothing else.
_EXPECTED_FILES = {
    "MLmodel", "_serving_model.py", "requirements.txt", "python_env.yaml", "conda.yaml",
    "input_example.json", "serving_input_example.json", "registered_model_meta",
}  # fmt: skip
_FLAVOR_KEYS = {
    "artifacts", "cloudpickle_version", "code", "config", "env", "loader_module",
    "model_code_path", "python_version", "streamable",
}  # fmt: skip


def verify(folder: str | Path, name: str | None = None) -> None:
    """Check that ``folder`` holds an artifact `log_model` made before anything in it runs: the
    code file MLflow executes identical to the installed library's, no pickled object, and
    only the files `log_model` writes (the model itself in its library's safe format: Keras
    with its safe mode, skops with the types listed in `model_files`). Raises `ArtifactError`
    saying what is wrong; ``name`` (a URI) names the model in that sentence."""
    import yaml

    folder = Path(folder)
    what = name or str(folder)

    def refuse(reason: str) -> ArtifactError:
        return ArtifactError(
            f"{what} is not a model this course logged ({reason}); it is not loaded, because "
            "loading a model runs the code it carries. Serve a model trained by the course."
        )

    try:
        spec = yaml.safe_load((folder / "MLmodel").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        spec = None
    if not isinstance(spec, dict) or not isinstance(spec.get("flavors"), dict):
        raise refuse("no readable MLmodel file")
    flavor = spec["flavors"].get("python_function")
    if set(spec["flavors"]) != {"python_function"} or not isinstance(flavor, dict):
        raise refuse("another flavor than the course's")
    # Only the keys log_model writes: MLflow acts on others (``data`` moves the folder it loads
    # from, ``code`` adds to the import path, ``python_model`` unpickles).
    if set(flavor) - _FLAVOR_KEYS or flavor.get("code") is not None:
        raise refuse(
            f"settings MLflow would act on: {', '.join(sorted(set(flavor) - _FLAVOR_KEYS))}"
        )
    if flavor.get("loader_module") != "mlflow.pyfunc.loaders.code_model":
        raise refuse("a pickled Python model, not the course's code file")
    # MLflow runs the file of this name in the folder: it must be ours, byte for byte.
    if Path(str(flavor.get("model_code_path", ""))).name != _CODE_FILE.name:
        raise refuse("another code file than _serving_model.py")
    code = folder / _CODE_FILE.name
    if not code.is_file() or _text(code) != _text(_CODE_FILE):
        raise refuse("its _serving_model.py differs from this version of the library's")
    config = flavor.get("config")
    family = config.get("family") if isinstance(config, dict) else None
    if family not in model_files.FAMILIES:
        raise refuse(f"an unknown model family {family!r}")
    # The files MLflow hands the model: only ours, inside the folder.
    files = flavor.get("artifacts")
    paths = {k: v.get("path") if isinstance(v, dict) else None for k, v in (files or {}).items()}
    expected = {"model": f"artifacts/{model_files.native_file(family)}"}
    if family == "keras" and "onnx" in paths:
        expected["onnx"] = "artifacts/model.onnx"
    if paths != expected:
        raise refuse("model files other than the course's")
    found = set()
    for root, dirs, names in os.walk(folder):  # symbolic links are refused, not followed
        for entry in [*dirs, *names]:
            path = Path(root, entry)
            if path.is_symlink():
                raise refuse(f"a symbolic link, {path.relative_to(folder)}")
            if entry in names:
                found.add(path.relative_to(folder).as_posix())
    allowed = _EXPECTED_FILES | set(expected.values())
    if found - allowed:
        raise refuse(f"unexpected files: {', '.join(sorted(found - allowed))}")
    if not set(expected.values()) <= found:
        raise refuse("no model file")
    requirement = re.compile(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!_-]+")
    for line in (
        _text(folder / "requirements.txt").splitlines() if "requirements.txt" in found else []
    ):
        if line.strip() and not requirement.fullmatch(line.strip()):
            raise refuse("a requirements.txt with more than pinned packages")


def _text(path: Path) -> str:
    # Line endings aside: a checkout on Windows may have written the code file with CRLF.
    return path.read_bytes().replace(b"\r\n", b"\n").decode("utf-8", errors="replace")


def load_pyfunc(model_uri: str):
    """The MLflow pyfunc model behind ``model_uri``, as `mlflow.pyfunc.load_model` gives it,
    once `verify` has checked its files (`ArtifactError` if it is not one the library logged).
    MLflow warns if the artifact's pinned packages differ from the installed ones (see
    `_compat.fast_pin_check`)."""
    # The files stay while the model lives: a network served through ONNX loads its Keras file
    # from there only when asked.
    folder = tempfile.mkdtemp(prefix="fmnist-model-")
    try:
        model = load_folder(tracking.download(model_uri, folder), model_uri)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(model.unwrap_python_model(), shutil.rmtree, folder, True)
    return model


def load_folder(folder: str | Path, name: str | None = None):
    """The MLflow pyfunc model in a local ``folder``, once `verify` has checked its files; its
    files must outlive the model."""
    verify(folder, name)
    with _compat.fast_pin_check():
        return mlflow.pyfunc.load_model(str(folder))


def load(model_uri: str) -> Classifier:
    """The `Classifier` behind a logged or registered artifact, e.g.
    ``models:/fashion-mnist@champion``, ready for `classify` and `predict_proba` (checked and
    loaded by `load_pyfunc`)."""
    return load_pyfunc(model_uri).unwrap_python_model()
