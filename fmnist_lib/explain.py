"""What a neural network looked at: HiResCAM for a CNN, gradient × input for a dense network.

HiResCAM (Draelos and Carin, 2020), a variant of Grad-CAM, multiplies each of the last
convolution's feature maps by the gradient of the class score with respect to it, position by
position, sums over the maps, keeps the positive part and scales it up to 28x28: a coarse map
of the regions that made the model say that class. Grad-CAM averages the gradient over the
positions first; behind our CNNs' Flatten and Dense layers that blurs where the evidence
is, and one test image in eight got an empty map. A network without convolutions
gets the gradient of the class score with respect to each pixel times that pixel ("gradient
× input") instead: how much each lit pixel pushed towards the class. Both read the
score before the softmax: after it, a confident prediction has almost no gradient left.
Classical models (SVM, random forest) have no gradient to follow: `method` says None.
"""

from __future__ import annotations

import weakref

import numpy as np

from .data import IMAGE_SHAPE, INPUT_SHAPE, keras_input

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _last_conv(model):
    import keras

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    return convs[-1] if convs else None


def method(classifier) -> str | None:
    """ "HiResCAM", "gradient × input", or None for a model these maps do not apply to: a
    classical model (no gradient), or a network that is not a plain stack of layers."""
    import keras

    if getattr(classifier, "family", None) != "keras":
        return None
    if not isinstance(classifier.model, keras.Sequential):
        return None
    return "HiResCAM" if _last_conv(classifier.model) is not None else "gradient × input"


def map_grid(classifier) -> tuple[int, int] | None:
    """The (rows, columns) of a HiResCAM map before it is scaled up to 28x28: the size of the
    last convolution's output. None where `method` is not HiResCAM."""
    if method(classifier) != "HiResCAM":
        return None
    _, rows, columns, _ = _last_conv(classifier.model).output.shape
    return int(rows), int(columns)


def _compile(model):
    import keras
    import tensorflow as tf

    last = model.layers[-1]
    if not (isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax):
        raise ValueError("Saliency maps need a network whose last layer is a softmax Dense layer.")
    conv = _last_conv(model)
    # The layers up to the maps the gradient is taken of (the last convolution's output, or
    # the input itself), and those from there up to the softmax.
    layers = model.layers
    split = layers.index(conv) + 1 if conv is not None else 0
    base, head = layers[:split], layers[split:-1]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, *INPUT_SHAPE], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ],
        reduce_retracing=True,
    )
    def maps(x, classes):
        features = x
        for layer in base:
            features = layer(features, training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            hidden = features
            for layer in head:
                hidden = layer(hidden, training=False)
            logits = tf.matmul(hidden, last.kernel) + last.bias
            score = tf.gather(logits, classes, batch_dims=1)
        grads = tape.gradient(score, features)
        if conv is None:
            heat = tf.abs(grads * features)[..., 0]
        else:
            heat = tf.nn.relu(tf.reduce_sum(grads * features, axis=-1))
            heat = tf.image.resize(heat[..., tf.newaxis], IMAGE_SHAPE, "bilinear")[..., 0]
        peak = tf.reduce_max(heat, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(heat, peak)

    return maps


def saliency(classifier, images: np.ndarray, classes) -> np.ndarray:
    """(n, 28, 28) maps in [0, 1] (1 where the model looked hardest) for (n, 28, 28) uint8
    images and the class each map explains (usually the predicted one)."""
    name = method(classifier)
    if name is None:
        raise ValueError("This model has no saliency map: see explain.method.")
    model = classifier.model
    if model not in _COMPILED:
        _COMPILED[model] = _compile(model)
    images = keras_input(images)
    classes = np.asarray(classes, dtype=np.int32).reshape(-1)
    if len(classes) != len(images):
        raise ValueError(f"{len(images)} images but {len(classes)} classes")
    return _COMPILED[model](images, classes).numpy()
