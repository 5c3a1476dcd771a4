"""One builder per architecture. Each body reads as the list of steps or layers of the model.

scikit-learn builders return an unfitted pipeline that takes flattened images, float32 rows
of 784 values in [0, 1]. Keras builders return an uncompiled model that takes (n, 28, 28, 1)
float32 images in [0, 1] and outputs the 10 class probabilities.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC as LibsvmSVC

try:  # Intel's scikit-learn-intelex: the same SVM, trained and run on every core (x86-64 only)
    from sklearnex.svm import SVC
except ImportError:  # elsewhere scikit-learn's own, single-threaded libsvm
    SVC = LibsvmSVC

from .config import SEED
from .data import IMAGE_SHAPE, INPUT_SHAPE

N_CLASSES = 10
# libsvm's kernel cache; its 200 MB default thrashes on tens of thousands of images.
CACHE_MB = 2000


# --- scikit-learn ------------------------------------------------------------------------------


class HogFeatures(TransformerMixin, BaseEstimator):
    """Histograms of oriented gradients (scikit-image's `hog`) of each image: (n, 784) rows
    in, (n, n_features) float32 out. Edges and their directions, pooled over small cells, are
    what tells a sandal from a sneaker, and they do not care about the exact pixel values."""

    def __init__(self, orientations=9, pixels_per_cell=4, cells_per_block=2):
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block

    def fit(self, X, y=None):
        return self

    @property
    def n_features(self) -> int:
        cells = IMAGE_SHAPE[0] // self.pixels_per_cell
        blocks = cells - self.cells_per_block + 1
        return blocks * blocks * self.cells_per_block**2 * self.orientations

    def transform(self, X):
        # One process: worker processes would cost more than they save (sending the features
        # back takes longer than computing them).
        X = np.asarray(X, dtype=np.float32).reshape(len(X), *IMAGE_SHAPE)
        return hog_features(X, self.orientations, self.pixels_per_cell, self.cells_per_block)


def hog_features(images: np.ndarray, orientations=9, pixels_per_cell=4, cells_per_block=2):
    """scikit-image's ``hog(image, orientations, (pixels_per_cell,) * 2, (cells_per_block,) * 2)``
    (L2-Hys block norm) for each image of ``images`` (n, height, width), as float32 rows: the
    same numbers to the last bit (tests/test_models.py compares them), about seven times faster,
    because whole batches go through NumPy instead of one image at a time. Its histogram adds a
    cell's pixels one by one in single precision, and so does this, in the same order."""
    # In batches of 2,000 images, so that memory stays near 100 MB whatever their number.
    batches = np.array_split(images, max(1, len(images) // 2000))
    args = (orientations, pixels_per_cell, cells_per_block)
    return np.concatenate([_hog_batch(batch, *args) for batch in batches])


def _hog_batch(x, orientations, cell, block, eps=1e-5):
    x = np.asarray(x, dtype=np.float32)
    n, rows, cols = x.shape
    # skimage.feature._hog: central differences, zero on the border, in the image's precision.
    g_row, g_col = np.zeros_like(x), np.zeros_like(x)
    g_row[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    g_col[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    g_row, g_col = g_row.astype(np.float64), g_col.astype(np.float64)
    # skimage.feature._hoghistogram: magnitude, and angle in degrees modulo 180 (the `where`s
    # are NumPy's `% 180` for angles in [-180, 180], without its slow general case).
    magnitude = np.hypot(g_col, g_row)
    angle = np.rad2deg(np.arctan2(g_row, g_col))
    angle = np.where(angle < 0, angle + 180, np.where(angle == 180, 0.0, angle))
    rows_c, cols_c = rows // cell, cols // cell
    cut = (slice(None), slice(0, rows_c * cell), slice(0, cols_c * cell))
    magnitude = magnitude[cut].reshape(n, rows_c, cell, cols_c, cell)
    angle = angle[cut].reshape(n, rows_c, cell, cols_c, cell)
    # Bin i holds angles in [w * i, w * (i + 1)), the edges in single precision; an angle
    # that rounds to 180 falls in none, and goes to an extra bin that is dropped.
    width = np.float32(180.0 / orientations)
    edges = np.array([width * np.float32(i) for i in range(orientations + 1)], np.float64)
    bins = np.searchsorted(edges, angle, side="right") - 1
    total = np.zeros((n, rows_c, cols_c, orientations + 1), np.float32)
    for r in range(cell):  # a cell's pixels row by row, each added in double, kept in single
        for c in range(cell):
            at = bins[:, :, r, :, c, None]
            added = np.take_along_axis(total, at, -1) + magnitude[:, :, r, :, c, None]
            np.put_along_axis(total, at, added.astype(np.float32), -1)
    histogram = (total[..., :orientations] / np.float32(cell * cell)).astype(np.float64)
    # Blocks of cells, each normalised (L2-Hys) as skimage does, in double.
    span_r, span_c = rows_c - block + 1, cols_c - block + 1
    blocks = np.stack(
        [
            np.stack([histogram[:, r : r + block, c : c + block] for c in range(span_c)], 1)
            for r in range(span_r)
        ],
        1,
    ).reshape(n, span_r, span_c, block * block * orientations)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=-1, keepdims=True) + eps**2)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=-1, keepdims=True) + eps**2)
    return blocks.astype(np.float32).reshape(n, span_r * span_c * block * block * orientations)


def build_svm_pixels(n_components=100, C=10.0, seed=SEED):
    """An RBF support-vector machine on the first principal components of the pixels."""
    return make_pipeline(
        PCA(n_components=n_components, random_state=seed),
        SVC(kernel="rbf", C=C, gamma="scale", cache_size=CACHE_MB, random_state=seed),
    )


class Rescale(TransformerMixin, BaseEstimator):
    """Divide every feature by one number learned on the training set.

    ``per="block"``: the square root of the summed feature variances, so that blocks of
    features joined side by side weigh the same whatever their size; ``per="all"``: the
    standard deviation of all values together, scikit-learn's reference for ``gamma="scale"``.
    """

    def __init__(self, per="block"):
        self.per = per

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        spread = X.var(axis=0).sum() if self.per == "block" else X.var()
        self.scale_ = float(np.sqrt(spread)) or 1.0
        return self

    def transform(self, X):
        # float64, as libsvm computes: scikit-learn-intelex's SVM in float32 loses digits in
        # its distances between long HOG vectors, and then differs from the served libsvm copy.
        return np.asarray(X, dtype=np.float64) / self.scale_


def build_svm_hog(n_pixel_components=50, C=10.0, gamma_factor=2.0, seed=SEED):
    """An RBF SVM on HOG features joined by a few principal components of the pixels.

    The two blocks are rescaled to the same total variance, so the 1,296 HOG features do not
    drown the 50 components, then to unit variance overall, so that the RBF width
    ``gamma = gamma_factor / n_features`` is ``gamma_factor`` times scikit-learn's "scale".
    """
    hog = HogFeatures()
    pixel_components = PCA(n_components=n_pixel_components, random_state=seed)
    n_features = hog.n_features + n_pixel_components
    return make_pipeline(
        make_union(
            make_pipeline(hog, Rescale("block")),
            make_pipeline(pixel_components, Rescale("block")),
        ),
        Rescale("all"),
        SVC(
            kernel="rbf",
            C=C,
            gamma=gamma_factor / n_features,
            cache_size=CACHE_MB,
            random_state=seed,
        ),
    )


def build_logistic_regression(C=1.0, seed=SEED):
    """Softmax (multinomial logistic) regression on standardised pixels: one weight per pixel
    and class, a bias per class, and a softmax. A dense network with no hidden layer.

    ``max_iter=100`` stops lbfgs before it converges (it warns): on the validation set that
    scored 0.849 here, against 0.843 after 300 iterations, in a third of the time."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=100, random_state=seed),
    )


def build_random_forest(n_estimators=100, max_features="sqrt", seed=SEED):
    """A forest of decision trees on raw pixels, each tree grown on a bootstrap sample."""
    return make_pipeline(
        RandomForestClassifier(
            n_estimators=n_estimators, max_features=max_features, n_jobs=-1, random_state=seed
        )
    )


# --- Keras -------------------------------------------------------------------------------------


def build_dense(hidden_units=(512, 256), dropout=0.4):
    """A multilayer perceptron: the image flattened, two hidden dense layers, softmax."""
    from keras import Input, Sequential, layers

    units_1, units_2 = hidden_units
    return Sequential(
        [
            Input(shape=INPUT_SHAPE),
            layers.Flatten(),
            layers.Dense(units_1, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(units_2, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(N_CLASSES, activation="softmax"),
        ],
        name="dense",
    )


def build_dropout_cnn(filters=(32, 64), dense_units=128, conv_dropout=0.25, dense_dropout=0.5):
    """Two blocks of convolution, max-pooling and dropout, then a dense head with dropout.

    Set both dropout rates to 0 for the same network without dropout.
    """
    from keras import Input, Sequential, layers

    filters_1, filters_2 = filters
    return Sequential(
        [
            Input(shape=INPUT_SHAPE),
            layers.Conv2D(filters_1, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(conv_dropout),
            layers.Conv2D(filters_2, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(conv_dropout),
            layers.Flatten(),
            layers.Dense(dense_units, activation="relu"),
            layers.Dropout(dense_dropout),
            # Probabilities in 32-bit floats when the rest computes in bfloat16
            layers.Dense(N_CLASSES, activation="softmax", dtype="float32"),
        ],
        name="dropout_cnn",
    )


def augmentation_layers(translate=0.1, zoom=0.1, rotation=0.03, flip=True, erasing=0.25):
    """Random changes applied to each training image, a new one at every epoch; Keras skips
    them at prediction time. ``translate`` and ``zoom`` are fractions of the image size,
    ``rotation`` a fraction of a full turn (0.03: up to about 11 degrees), ``erasing`` the
    largest chance that a random patch is blanked out. Empty space is filled with black, the
    background of every Fashion-MNIST image."""
    from keras import layers

    fill = {"fill_mode": "constant", "fill_value": 0.0}
    # Nearest pixel: a shift moves whole pixels instead of blurring the image between two.
    shift = layers.RandomTranslation(translate, translate, interpolation="nearest", **fill)
    steps = [shift] if translate else []
    steps += [layers.RandomFlip("horizontal")] if flip else []
    steps += [layers.RandomZoom(zoom, zoom, **fill)] if zoom else []
    steps += [layers.RandomRotation(rotation, **fill)] if rotation else []
    if erasing:
        steps.append(layers.RandomErasing(erasing, fill_value=0.0, value_range=(0, 1)))
    return steps


def build_augmented_cnn(
    filters=(32, 64),
    dense_units=128,
    conv_dropout=0.25,
    dense_dropout=0.5,
    translate=0.1,
    zoom=0.1,
    rotation=0.03,
    flip=True,
    erasing=0.25,
):
    """Chapter 4's dropout CNN, with the augmentation layers in front of it (which change the
    images in 32-bit floats whatever precision the CNN computes in)."""
    from keras import Input, Sequential

    cnn = build_dropout_cnn(filters, dense_units, conv_dropout, dense_dropout)
    with computing_in("float32"):
        augment = augmentation_layers(translate, zoom, rotation, flip, erasing)
    return Sequential([Input(shape=INPUT_SHAPE), *augment, *cnn.layers], name="augmented_cnn")


def fast_precision() -> str:
    """``"mixed_bfloat16"`` where this CPU computes in bfloat16 natively (AVX512-BF16 or AMX
    on Linux), else ``"float32"``: elsewhere TensorFlow emulates bfloat16, slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) else "float32"


@contextmanager
def computing_in(precision: str):
    """Layers built inside this ``with`` block compute in ``precision``: ``"float32"``, or
    ``"mixed_bfloat16"`` (16-bit arithmetic, weights kept in 32 bits). Precision is how a
    network is trained on a given CPU, not what the network is: the same layers either way."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def precision_of(model) -> str:
    """``"mixed_bfloat16"`` if any layer of a Keras ``model`` computes in bfloat16, else
    ``"float32"``."""
    names = {layer.dtype_policy.name for layer in model.layers}
    return "mixed_bfloat16" if "mixed_bfloat16" in names else "float32"


def build_bn_cnn(
    filters=(32, 64, 128),
    translate=0.07,
    zoom=0.0,
    rotation=0.0,
    flip=True,
    erasing=0.0,
):
    """A deeper CNN with batch normalisation, laid out like the speed-training networks
    (airbench): per block, a 3x3 convolution, max-pooling, then batch normalisation and ReLU,
    a second 3x3 convolution, batch normalisation and ReLU; a global max-pooling and one dense
    layer. Pooling right after the first convolution makes the rest of the block work on a
    quarter of the pixels. With the augmentation layers in front (light by default: shifts of
    up to 2 pixels, mirror images). Built inside `computing_in("mixed_bfloat16")`, the hidden
    layers compute in 16-bit floats; the output layer always computes in 32."""
    from keras import Input, Sequential, layers

    with computing_in("float32"):  # the images are changed in full precision in any case
        augment = augmentation_layers(translate, zoom, rotation, flip, erasing)
    stack = [Input(shape=INPUT_SHAPE), *augment]
    for width in filters:
        stack += [
            # No bias: the batch normalisation that follows has its own shift.
            layers.Conv2D(width, 3, padding="same", use_bias=False),
            layers.MaxPooling2D(2),
            layers.BatchNormalization(momentum=0.9),  # settles within a short run
            layers.ReLU(),
            layers.Conv2D(width, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
        ]
    stack += [
        layers.GlobalMaxPooling2D(),
        layers.Dense(N_CLASSES, activation="softmax", dtype="float32"),
    ]
    return Sequential(stack, name="bn_cnn")


def parameter_table(model):
    """A Keras model's layers with their output shapes and trainable parameter counts."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "layer": layer.name,
                "output shape": tuple(layer.output.shape[1:]),
                "parameters": layer.count_params(),
            }
            for layer in model.layers
        ]
    ).set_index("layer")


def count_parameters(model) -> int:
    """How many numbers a fitted model learned: a Keras model's weights; for a pipeline, the
    PCA components and means, the SVM's support vectors, dual coefficients and intercepts, and
    each tree's split features and thresholds plus its leaves' class counts."""
    if hasattr(model, "count_params"):
        return int(model.count_params())
    if hasattr(model, "steps") or hasattr(model, "transformer_list"):
        parts = model.steps if hasattr(model, "steps") else model.transformer_list
        return sum(count_parameters(part) for _, part in parts)
    if isinstance(model, PCA):
        return int(model.components_.size + model.mean_.size)
    if isinstance(model, LibsvmSVC):
        return int(model.support_vectors_.size + model.dual_coef_.size + model.intercept_.size)
    if isinstance(model, RandomForestClassifier):
        total = 0
        for tree in model.estimators_:
            leaves = tree.tree_.children_left == -1
            total += 2 * int((~leaves).sum()) + N_CLASSES * int(leaves.sum())
        return total
    if isinstance(model, LogisticRegression):
        return int(model.coef_.size + model.intercept_.size)
    if isinstance(model, StandardScaler):
        return int(model.mean_.size + model.scale_.size)
    if isinstance(model, Rescale):
        return 1
    return 0  # HOG features are computed, not learned
