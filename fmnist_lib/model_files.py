"""A trained model on disk: the Keras or skops file, the ONNX export, and the copies of a
network each format needs (float32 everywhere, no training-only layers)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from . import _compat
from .data import keras_input

# Types beyond skops' safe defaults that our pipelines hold. Only files this library wrote are
# loaded with them: our own transformers, and the trees of the random forest.
SKOPS_TRUSTED_TYPES = [
    "fmnist_lib.models.HogFeatures",
    "fmnist_lib.models.Rescale",
    "sklearn.tree._tree.Tree",
]
_NATIVE_FILE = {"keras": "model.keras", "sklearn": "model.skops"}
FAMILIES = tuple(_NATIVE_FILE)


def native_file(family: str) -> str:
    """The name of a model file of ``family`` (``keras`` or ``sklearn``)."""
    return _NATIVE_FILE[family]


# The ONNX export may differ from Keras by float rounding only; anything more and it is not used.
ONNX_TOLERANCE = 1e-4


def save_native(model, family: str, folder: Path) -> Path:
    """The model in its own library's format: a .keras file, or a skops file for sklearn."""
    path = Path(folder) / _NATIVE_FILE[family]
    if family == "keras":
        model.save(path)
    else:
        import skops.io

        skops.io.dump(_compat.with_libsvm(model), path)
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

    path = Path(folder) / "model.onnx"
    x = keras_input(check)
    model = in_float32(model)  # onnxruntime has no bfloat16 convolutions
    try:
        expected = model(tf.constant(x), training=False).numpy()
        network = inference_network(model)
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


def in_float32(model):
    """``model`` with every layer computing in 32-bit floats, its weights copied: a network
    trained in bfloat16 predicts in float32 everywhere (the course's ONNX runtime has no
    bfloat16 convolutions). A float32 model is returned as it is."""
    from keras import Input, Sequential

    if not isinstance(model, Sequential) or all(
        layer.dtype_policy.name == "float32" for layer in model.layers
    ):
        return model
    copies = [
        layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
        for layer in model.layers
    ]
    copy = Sequential([Input(shape=model.input_shape[1:]), *copies], name=model.name)
    for new, old in zip(copy.layers, model.layers, strict=True):
        new.set_weights(old.get_weights())
    return copy


def inference_network(model):
    """``model`` without the layers that act only in training (augmentation, dropout), sharing
    its weights: the same predictions, and a graph that exporters such as ONNX can convert."""
    from keras import Input, Sequential, layers

    if not isinstance(model, Sequential):
        return model
    training_only = (
        layers.Dropout,
        layers.RandomTranslation,
        layers.RandomFlip,
        layers.RandomZoom,
        layers.RandomRotation,
        layers.RandomErasing,
    )
    kept = [layer for layer in model.layers if not isinstance(layer, training_only)]
    return Sequential([Input(shape=model.input_shape[1:]), *kept], name=f"{model.name}_inference")
