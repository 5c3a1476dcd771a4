"""Soft voting and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from fmnist_lib import ensemble


def test_soft_vote_is_the_weighted_mean():
    a = np.array([[0.6, 0.4], [0.1, 0.9]])
    b = np.array([[0.2, 0.8], [0.3, 0.7]])
    np.testing.assert_allclose(ensemble.soft_vote([a, b]), [[0.4, 0.6], [0.2, 0.8]])
    np.testing.assert_allclose(ensemble.soft_vote([a, b], [3, 1]), 0.75 * a + 0.25 * b)
    # Two models that are each wrong once can be right together.
    truth = np.array([0, 1])
    assert (a.argmax(1) == truth).all() and not (b.argmax(1) == truth).all()
    for bad in ([0, 0], [1, -1], [1]):
        with pytest.raises(ValueError, match="weight"):
            ensemble.soft_vote([a, b], bad)
    with pytest.raises(ValueError):
        ensemble.soft_vote([a, b[:1]])


def test_tta_views_mirror_and_shift_with_a_black_border():
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 5, 3] = 200
    views = ensemble.tta_views(image)
    assert len(views) == 6 and all(v.shape == image.shape for v in views)
    lit = [tuple(np.argwhere(v[0])[0]) for v in views]
    assert lit == [(5, 3), (5, 24), (6, 3), (4, 3), (5, 4), (5, 2)]
    edge = np.zeros((1, 28, 28), dtype=np.uint8)
    edge[0, 0, :] = 255
    assert ensemble.tta_views(edge, flip=False)[2][0, 0].sum() == 0  # moved down: row 0 black
    assert len(ensemble.tta_views(image, flip=False, shift=0)) == 1


def test_tta_averages_the_model_over_the_views():
    class Brightest:
        """'Class 1' in proportion to how lit the left half is."""

        calls = 0

        def predict_proba(self, images):
            Brightest.calls += 1
            left = images[:, :, :14].sum(axis=(1, 2)) / images.sum(axis=(1, 2))
            return np.stack([1 - left, left], axis=1)

    image = np.zeros((1, 28, 28))
    image[0, 10:20, 2:8] = 1  # all on the left
    proba = ensemble.tta_proba(Brightest(), image)
    assert Brightest.calls == 6
    # Five views keep it on the left, the mirror moves it right: 5/6 for class 1.
    np.testing.assert_allclose(proba, [[1 / 6, 5 / 6]])
