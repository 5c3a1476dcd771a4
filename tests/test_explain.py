"""Saliency maps: which models get one, and that they point where the evidence is."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from fmnist_lib import explain, models, plots, serving


def _quadrant_network(conv: bool) -> keras.Sequential:
    """A network whose class 0 score is the sum of the top-left quadrant's pixels and class 1
    that of the bottom-right one; with ``conv``, through a 1x1 convolution that copies its
    input. Its maps must light up exactly the lit pixels of the quadrant of the class asked."""
    layers = [keras.Input((28, 28, 1))]
    if conv:
        layers.append(keras.layers.Conv2D(1, 1, activation="relu"))
    layers += [keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    model = keras.Sequential(layers)
    if conv:
        model.layers[0].set_weights([np.ones((1, 1, 1, 1)), np.zeros(1)])
    kernel = np.zeros((28, 28, 10), dtype=np.float32)
    kernel[:14, :14, 0] = 1
    kernel[14:, 14:, 1] = 1
    model.layers[-1].set_weights([kernel.reshape(784, 10), np.zeros(10)])
    return model


@pytest.fixture
def lit() -> np.ndarray:
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 4:24] = 200  # a square across all four quadrants
    image[6, 6] = 100  # a dimmer pixel in the top-left
    return image


@pytest.mark.parametrize(("conv", "name"), [(True, "HiResCAM"), (False, "gradient × input")])
def test_the_map_lights_the_pixels_that_made_the_class(conv, name, lit):
    classifier = serving.Classifier.from_model(_quadrant_network(conv), "keras")
    assert explain.method(classifier) == name
    maps = explain.saliency(classifier, np.stack([lit, lit]), [0, 1])
    assert maps.shape == (2, 28, 28) and maps.max() == pytest.approx(1)
    for heat, quadrant in zip(maps, [np.s_[:14, :14], np.s_[14:, 14:]], strict=True):
        expected = np.zeros((28, 28))
        expected[quadrant] = lit[quadrant] / 200  # each pixel's share, the brightest at 1
        np.testing.assert_allclose(heat, expected, atol=1e-5)


def test_the_course_networks_get_maps_and_classical_models_none(lit):
    for build, name in [
        (models.build_dropout_cnn, "HiResCAM"),
        (models.build_dense, "gradient × input"),
    ]:
        classifier = serving.Classifier.from_model(build(), "keras")
        assert explain.method(classifier) == name
        heat = explain.saliency(classifier, lit[np.newaxis], [3])
        assert heat.shape == (1, 28, 28) and 0 <= heat.min() and heat.max() <= 1
    forest = serving.Classifier.from_model(
        DummyClassifier().fit(np.zeros((2, 784)), [0, 1]), "sklearn"
    )
    assert explain.method(forest) is None
    with pytest.raises(ValueError, match="no saliency map"):
        explain.saliency(forest, lit[np.newaxis], [0])


def test_one_class_per_image_is_required(lit):
    classifier = serving.Classifier.from_model(_quadrant_network(True), "keras")
    with pytest.raises(ValueError, match="2 images but 1 classes"):
        explain.saliency(classifier, np.stack([lit, lit]), [0])


def test_the_overlay_shows_the_image_where_the_map_is_zero(lit):
    heat = np.zeros((28, 28))
    heat[0, 0] = 1.0
    rgb = plots.heat_overlay(lit, heat, scale=2)
    assert rgb.shape == (56, 56, 3) and rgb.dtype == np.uint8
    # Unlit by the map: the grey image (dimmed a little); lit: the colour map's top colour.
    assert (rgb[10, 10] == rgb[10, 10, 0]).all() and rgb[10, 10, 0] == round(200 / 255 * 0.8 * 255)
    assert not (rgb[0, 0] == rgb[0, 0, 0]).all()
    assert plots.enlarge(lit, 3).shape == (84, 84)


def test_the_map_grid_is_the_last_convolutions_output_as_the_network_computes_it(lit):
    for build in (models.build_dropout_cnn, models.build_bn_cnn):
        network = build()
        classifier = serving.Classifier.from_model(network, "keras")
        convs = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
        last_conv = convs[-1]
        probe = keras.Model(network.inputs, last_conv.output)
        computed = probe(lit[np.newaxis, ..., np.newaxis].astype("float32") / 255).shape
        assert explain.map_grid(classifier) == (computed[1], computed[2])
    dense = serving.Classifier.from_model(models.build_dense(), "keras")
    assert explain.map_grid(dense) is None
