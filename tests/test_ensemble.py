"""Chapter 8's soft vote and test-time augmentation: the functions the chapter writes, taken
from its cells and run here on images whose answers are known."""

from __future__ import annotations

import numpy as np
from chapters import chapter_definitions


def chapter_functions(*names: str) -> dict:
    """Chapter 8's functions ``names``, defined from its code cells and nothing else."""
    return chapter_definitions("08_ensembles", names, {"np": np})


def test_soft_vote_is_the_weighted_mean():
    soft_vote = chapter_functions("soft_vote")["soft_vote"]
    a = np.array([[0.6, 0.4], [0.1, 0.9]])
    b = np.array([[0.2, 0.8], [0.3, 0.7]])
    np.testing.assert_allclose(soft_vote([a, b]), [[0.4, 0.6], [0.2, 0.8]])
    np.testing.assert_allclose(soft_vote([a, b], [3, 1]), 0.75 * a + 0.25 * b)
    np.testing.assert_array_equal(soft_vote([a, b], [0, 2]), b)  # a weight of 0 leaves it out
    # Two models that are each wrong once can be right together.
    truth = np.array([0, 1])
    assert (a.argmax(1) == truth).all() and not (b.argmax(1) == truth).all()


def test_tta_views_mirror_and_shift_with_a_black_border():
    views = chapter_functions("shifted", "views")["views"]
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 5, 3] = 200
    seen = views(image, flip=True, shift=1)
    assert len(seen) == 6 and all(v.shape == image.shape for v in seen)
    lit = [tuple(np.argwhere(v[0])[0]) for v in seen]
    assert lit == [(5, 3), (5, 24), (6, 3), (4, 3), (5, 4), (5, 2)]
    edge = np.zeros((1, 28, 28), dtype=np.uint8)
    edge[0, 0, :] = 255
    moved = views(edge, flip=False, shift=1)
    assert moved[1][0, 0].sum() == 0 and moved[2][0, 0].sum() == 0  # down: row 0 black
    assert moved[2][0, 27].sum() == 0  # up, and nothing wraps round to the bottom
    assert len(views(image, flip=False, shift=0)) == 1
    two = views(image, flip=False, shift=2)
    assert [tuple(np.argwhere(v[0])[0]) for v in two[1:]] == [(7, 3), (3, 3), (5, 5), (5, 1)]


def test_tta_averages_the_model_over_the_views():
    tta = chapter_functions("soft_vote", "shifted", "views", "tta")["tta"]

    class Brightest:
        """'Class 1' in proportion to how lit the left half is."""

        calls = 0

        def predict_proba(self, images):
            Brightest.calls += 1
            left = images[:, :, :14].sum(axis=(1, 2)) / images.sum(axis=(1, 2))
            return np.stack([1 - left, left], axis=1)

    image = np.zeros((1, 28, 28))
    image[0, 10:20, 2:8] = 1  # all on the left
    proba = tta(Brightest(), image, flip=True, shift=1)
    assert Brightest.calls == 6
    # Five views keep it on the left, the mirror moves it right: 5/6 for class 1.
    np.testing.assert_allclose(proba, [[1 / 6, 5 / 6]])
