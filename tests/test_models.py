"""Builders: the right shapes and parameter counts, and every pipeline fits and predicts."""

import numpy as np
import pytest

from fmnist_lib import _compat, model_files, models
from fmnist_lib.data import load_fashion_mnist


@pytest.fixture(scope="module")
def small():
    data = load_fashion_mnist().subset(train_size=400, test_size=100)
    return data.sklearn("train"), data.sklearn("test")


def test_dense_layers_and_parameter_count():
    model = models.build_dense()
    # 784*512+512, 512*256+256, 256*10+10
    assert model.count_params() == 401_920 + 131_328 + 2_570
    assert model.output_shape == (None, 10)
    assert [layer.units for layer in model.layers if hasattr(layer, "units")] == [512, 256, 10]
    rates = [layer.rate for layer in model.layers if layer.__class__.__name__ == "Dropout"]
    assert rates == [0.4, 0.4]


def test_dropout_cnn_layers_and_parameter_count():
    model = models.build_dropout_cnn()
    # conv 3x3x1x32+32, conv 3x3x32x64+64, dense 7*7*64*128+128, dense 128*10+10
    assert model.count_params() == 320 + 18_496 + 401_536 + 1_290
    assert model.output_shape == (None, 10)
    rates = [layer.rate for layer in model.layers if layer.__class__.__name__ == "Dropout"]
    assert rates == [0.25, 0.25, 0.5]
    no_dropout = models.build_dropout_cnn(conv_dropout=0.0, dense_dropout=0.0)
    assert no_dropout.count_params() == model.count_params()
    assert all(layer.rate == 0 for layer in no_dropout.layers if hasattr(layer, "rate"))


def test_keras_models_output_probabilities():
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    for model in (models.build_dense(), models.build_dropout_cnn()):
        proba = model.predict_on_batch(x)
        assert proba.shape == (3, 10)
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)


def test_hog_features_shape_and_content(small):
    (x, _), _ = small
    hog = models.HogFeatures()
    features = hog.fit_transform(x[:5])
    assert features.shape == (5, hog.n_features) == (5, 1296)
    assert features.dtype == np.float32 and features.max() > 0
    assert not np.allclose(features[0], features[1])
    assert hog.transform(x[:0]).shape == (0, 1296)


def test_hog_features_are_scikit_images_to_the_last_bit(small):
    """The batched HOG must be a faster scikit-image `hog`, not an approximation of it: the
    classical models' scores and the registered runs depend on every feature."""
    from skimage.feature import hog

    (x, _), (x_test, _) = small
    rng = np.random.default_rng(0)
    images = np.concatenate(
        [
            x.reshape(-1, 28, 28),
            x_test.reshape(-1, 28, 28),
            np.zeros((1, 28, 28)),  # no gradient anywhere
            np.full((1, 28, 28), 255.0),
            rng.integers(0, 256, (20, 28, 28)),  # every direction, both signs
            np.tile(np.arange(28.0) * 9, (28, 1))[None],  # one direction only (0 degrees)
            np.tile(np.arange(28.0)[:, None] * 9, (1, 28))[None],  # 90 degrees
        ]
    ).astype(np.float32)
    expected = np.stack([hog(i, 9, (4, 4), (2, 2), feature_vector=True) for i in images])
    features = models.HogFeatures().transform(images.reshape(len(images), -1))
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, expected.astype(np.float32))
    # Other cell and block sizes follow scikit-image too.
    other = models.hog_features(images[:50], orientations=6, pixels_per_cell=7, cells_per_block=3)
    expected = np.stack([hog(i, 6, (7, 7), (3, 3)) for i in images[:50]]).astype(np.float32)
    np.testing.assert_array_equal(other, expected)


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.build_svm_pixels(n_components=20),
        lambda: models.build_svm_hog(n_pixel_components=10),
        lambda: models.build_random_forest(n_estimators=20),
    ],
    ids=["svm", "svm-hog", "rf"],
)
def test_sklearn_pipelines_learn(small, build):
    (x, y), (x_test, y_test) = small
    model = build().fit(x, y)
    accuracy = (model.predict(x_test) == y_test).mean()
    assert accuracy > 0.5, "far above chance (0.1) even on 400 images"


def test_rescale_by_block_and_overall():
    rng = np.random.default_rng(0)
    x = rng.normal(scale=5.0, size=(500, 40))
    by_block = models.Rescale("block").fit(x).transform(x)
    assert by_block.var(axis=0).sum() == pytest.approx(1.0, rel=1e-3)
    overall = models.Rescale("all").fit(x).transform(x)
    assert overall.var() == pytest.approx(1.0, rel=1e-3)
    constant = models.Rescale("all").fit(np.zeros((3, 2)))
    assert constant.scale_ == 1.0, "a constant block is left as it is, not divided by zero"


def test_augmentation_changes_training_images_only():
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    for model in (models.build_augmented_cnn(), models.build_bn_cnn()):
        np.testing.assert_allclose(model(x, training=False), model(x, training=False))
    augment = models.augmentation_layers()
    assert [layer.__class__.__name__ for layer in augment] == [
        "RandomTranslation",
        "RandomFlip",
        "RandomZoom",
        "RandomRotation",
        "RandomErasing",
    ]
    seen = x
    for layer in augment:
        seen = layer(seen, training=True)
    assert seen.shape == x.shape and not np.allclose(seen, x)
    assert models.augmentation_layers(0, 0, 0, False, 0) == []


def test_bn_cnn_has_three_blocks_and_no_dense_hidden_layer():
    model = models.build_bn_cnn()
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 6 and kinds.count("BatchNormalization") == 6
    assert kinds[-2:] == ["GlobalMaxPooling2D", "Dense"]
    # Each block pools right after its first convolution: the rest works on fewer pixels.
    first = kinds.index("Conv2D")
    assert kinds[first : first + 4] == ["Conv2D", "MaxPooling2D", "BatchNormalization", "ReLU"]
    # The augmented CNN is chapter 4's network behind the augmentation layers.
    plain, augmented = models.build_dropout_cnn(), models.build_augmented_cnn()
    assert augmented.count_params() == plain.count_params()


def test_a_network_trained_in_bfloat16_predicts_in_float32():
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    with models.computing_in("mixed_bfloat16"):
        half = models.build_bn_cnn(filters=(8, 16, 32))
    assert half.layers[-4].dtype_policy.name == "mixed_bfloat16"
    assert half.layers[0].dtype_policy.name == "float32", "augmentation in full precision"
    assert models.precision_of(half) == "mixed_bfloat16"
    full = model_files.in_float32(half)
    assert {layer.dtype_policy.name for layer in full.layers} == {"float32"}
    assert [w.shape for w in full.weights] == [w.shape for w in half.weights]
    expected, got = half.predict(x, verbose=0), full.predict(x, verbose=0)
    assert got.dtype == np.float32 and not np.array_equal(got, expected), "computed again"
    np.testing.assert_allclose(got, expected, atol=0.05)  # bfloat16 keeps 3 digits
    single = models.build_bn_cnn(filters=(8, 16, 32))
    assert model_files.in_float32(single) is single and models.precision_of(single) == "float32"


def test_the_intelex_svm_answers_as_scikit_learns_libsvm_and_saves_as_it():
    """The chapters' SVM is scikit-learn-intelex's where it installs: it must give libsvm's
    answers, and its saved copy must be libsvm's with the same predictions."""
    import tempfile
    from pathlib import Path

    from sklearn.svm import SVC as LibsvmSVC

    if models.SVC is LibsvmSVC:
        pytest.skip("scikit-learn-intelex is not installed here (x86-64 only)")
    data = load_fashion_mnist().subset(train_size=3000, test_size=1000)
    (x, y), (x_test, _) = data.sklearn("train"), data.sklearn("test")
    intelex = models.build_svm_hog().fit(x, y)
    libsvm = models.build_svm_hog()
    settings = {k: v for k, v in libsvm[-1].get_params().items() if k != "n_jobs"}
    libsvm.steps[-1] = ("svc", LibsvmSVC(**settings))
    libsvm.fit(x, y)
    expected = intelex.predict(x_test)
    assert (expected == libsvm.predict(x_test)).mean() >= 0.998
    plain = _compat.with_libsvm(intelex)
    assert type(plain[-1]) is LibsvmSVC and type(intelex[-1]) is models.SVC
    np.testing.assert_array_equal(plain.predict(x_test), expected)
    with tempfile.TemporaryDirectory() as folder:
        path = model_files.save_native(intelex, "sklearn", Path(folder))
        loaded = model_files.load_native(path, "sklearn")
    assert type(loaded[-1]) is LibsvmSVC
    np.testing.assert_array_equal(loaded.predict(x_test), expected)
    assert models.count_parameters(loaded) == models.count_parameters(intelex)
