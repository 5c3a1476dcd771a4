"""Dataset checks on small arrays whose answers are known by construction."""

import numpy as np
import pytest

from fmnist_lib import audit


@pytest.fixture
def stack():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    x[5] = x[1]  # an exact copy
    x[7] = x[1]  # and another
    x[6] = x[2]
    return x


def test_exact_duplicates_groups(stack):
    groups = sorted(g.tolist() for g in audit.exact_duplicates(stack))
    assert groups == [[1, 5, 7], [2, 6]]


def test_exact_duplicates_come_in_the_order_of_their_first_image():
    x = np.zeros((6, 28, 28), dtype=np.uint8)
    x[[1, 4]] = 9  # the later group's bytes sort first: the order is not the bytes' order
    x[[0, 3, 5]] = 200
    x[2] = 1
    assert [g.tolist() for g in audit.exact_duplicates(x)] == [[0, 3, 5], [1, 4]]
    assert audit.exact_duplicates(x[:0]) == [] and audit.exact_duplicates(x[:3]) == []


def test_shared_images_between_sets(stack):
    other = np.stack([stack[3], stack[0] ^ 1, stack[1]])
    pairs = audit.shared_images(stack, other)
    assert sorted(map(tuple, pairs.tolist())) == [(1, 2), (3, 0), (5, 2), (7, 2)]
    assert audit.shared_images(stack[:1], other[1:2]).shape == (0, 2)


def test_nearest_neighbours_matches_brute_force(stack):
    rng = np.random.default_rng(2)
    queries = rng.integers(0, 256, size=(13, 28, 28), dtype=np.uint8)
    nearest, diff = audit.nearest_neighbours(queries, stack)
    q = queries.reshape(13, -1).astype(float)
    r = stack.reshape(8, -1).astype(float)
    brute = ((q[:, None] - r[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(nearest, brute)
    np.testing.assert_allclose(diff, np.abs(q - r[brute]).mean(1), rtol=1e-6)


def test_nearest_neighbours_picks_the_first_of_equal_references(stack):
    # stack[5] and stack[7] copy stack[1], stack[6] copies stack[2]: exact ties at distance 0.
    nearest, diff = audit.nearest_neighbours(stack, stack)
    assert nearest.tolist() == [0, 1, 2, 3, 4, 1, 2, 1] and not diff.any()
    rng = np.random.default_rng(3)
    noisy = np.clip(stack[[7, 6]] + rng.integers(0, 3, (2, 28, 28)), 0, 255).astype(np.uint8)
    assert audit.nearest_neighbours(noisy, stack)[0].tolist() == [1, 2]


def test_near_duplicates_respects_the_threshold(stack):
    noisy = stack[[0, 3]].astype(int)
    noisy[0] += 2  # every pixel off by 2 grey levels (clipped at 255)
    noisy[1] = 255 - noisy[1]  # nothing like any reference
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    table = audit.near_duplicates(noisy, stack, max_mean_abs_diff=3.0)
    assert table["query"].tolist() == [0] and table["reference"].tolist() == [0]
    assert 0 < table["mean_abs_diff"][0] <= 2.0


def test_ink_fraction_and_class_tables():
    x = np.zeros((4, 28, 28), dtype=np.uint8)
    x[1, :14] = 200  # half the frame lit
    x[2] = 10
    labels = np.array([0, 1, 1, 0])
    np.testing.assert_allclose(audit.ink_fraction(x), [0, 0.5, 1, 0])
    stats = audit.class_pixel_stats(x, labels, ("a", "b"))
    assert stats.loc["b", "images"] == 2 and stats.loc["a", "non-zero pixels"] == 0
    assert stats.loc["b", "mean intensity"] == pytest.approx((100 + 10) / 2)
    counts = audit.class_counts({"train": labels, "test": np.array([1])}, ("a", "b"))
    assert counts.loc["a", "train"] == 2 and counts.loc["b", "test"] == 1


def test_mean_image_distances():
    x = np.zeros((3, 28, 28), dtype=np.uint8)
    x[1] = 30
    labels = np.array([0, 1, 2])
    d = audit.mean_image_distances(x, labels, n_classes=3)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0)
    assert d[0, 1] == pytest.approx(30) and d[0, 2] == 0
