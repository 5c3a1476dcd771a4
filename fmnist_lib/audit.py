"""Checks on the dataset itself: duplicate and near-duplicate images, near-blank images,
per-class pixel statistics. Images are uint8 arrays of shape (n, 28, 28)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd


def image_digests(images: np.ndarray) -> np.ndarray:
    """One SHA-1 hex digest per image: equal digests mean byte-identical images."""
    return np.array([hashlib.sha1(image.tobytes()).hexdigest() for image in images])


def exact_duplicates(images: np.ndarray) -> list[np.ndarray]:
    """Groups of indices (each of two or more) whose images are byte-identical, in the order of
    their first image."""
    flat = np.ascontiguousarray(images).reshape(len(images), math.prod(images.shape[1:]))
    # Each image as one opaque block of bytes: np.unique then sorts with memcmp, 30 times faster
    # on the 60,000 training images than np.unique(axis=0), which compares pixel by pixel.
    rows = flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).ravel()
    _, first, inverse, counts = np.unique(
        rows, return_index=True, return_inverse=True, return_counts=True
    )
    repeated = np.flatnonzero(counts > 1)
    return [np.flatnonzero(inverse == g) for g in repeated[np.argsort(first[repeated])]]


def shared_images(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairs ``(i, j)`` with ``a[i]`` byte-identical to ``b[j]``, shape (n_pairs, 2)."""
    index_in_a: dict[str, list[int]] = {}
    for i, digest in enumerate(image_digests(a)):
        index_in_a.setdefault(digest, []).append(i)
    pairs = [
        (i, j) for j, digest in enumerate(image_digests(b)) for i in index_in_a.get(digest, [])
    ]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def nearest_neighbours(
    queries: np.ndarray, references: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the index of the closest reference image (Euclidean distance on
    pixels; the first one on a tie) and the mean absolute pixel difference to it, in grey levels
    (0-255).

    scikit-learn searches in blocks, so that memory stays small whatever the number of images.
    """
    from sklearn.metrics import pairwise_distances_argmin

    q = queries.reshape(len(queries), -1).astype(np.float32)
    r = references.reshape(len(references), -1).astype(np.float32)
    nearest = pairwise_distances_argmin(q, r)
    mean_abs_diff = np.abs(q - r[nearest]).mean(axis=1)
    return nearest, mean_abs_diff


def near_duplicates(
    queries: np.ndarray, references: np.ndarray, max_mean_abs_diff: float = 3.0
) -> pd.DataFrame:
    """Query images whose nearest reference differs by at most ``max_mean_abs_diff`` grey
    levels per pixel on average, closest first: columns ``query``, ``reference``,
    ``mean_abs_diff``."""
    nearest, diff = nearest_neighbours(queries, references)
    close = np.flatnonzero(diff <= max_mean_abs_diff)
    table = pd.DataFrame(
        {"query": close, "reference": nearest[close], "mean_abs_diff": diff[close]}
    )
    return table.sort_values("mean_abs_diff", ignore_index=True)


def ink_fraction(images: np.ndarray) -> np.ndarray:
    """The share of non-zero pixels in each image, shape (n,): how much of the frame the item
    covers (the background of Fashion-MNIST is exactly 0)."""
    return (images.reshape(len(images), -1) > 0).mean(axis=1)


def class_pixel_stats(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> pd.DataFrame:
    """Per class: image count, mean and standard deviation of pixel intensity (0-255), and mean
    share of non-zero pixels. One row per class, indexed by class name."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    ink = ink_fraction(images)
    rows = []
    for c, name in enumerate(class_names):
        mask = labels == c
        rows.append(
            {
                "class": name,
                "images": int(mask.sum()),
                "mean intensity": float(flat[mask].mean()),
                "std intensity": float(flat[mask].std()),
                "non-zero pixels": float(ink[mask].mean()),
            }
        )
    return pd.DataFrame(rows).set_index("class")


def class_counts(labels_by_split: dict[str, np.ndarray], class_names: tuple[str, ...]):
    """A table of images per class (rows) and split (columns)."""
    return pd.DataFrame(
        {
            split: np.bincount(labels, minlength=len(class_names))
            for split, labels in labels_by_split.items()
        },
        index=pd.Index(class_names, name="class"),
    )


def mean_image_distances(images: np.ndarray, labels: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """Root-mean-square pixel difference between the mean images of every pair of classes,
    (n_classes, n_classes), in grey levels: small numbers mark classes that look alike."""
    means = np.stack(
        [images[labels == c].reshape(-1, images[0].size).mean(axis=0) for c in range(n_classes)]
    )
    diff = means[:, None, :] - means[None, :, :]
    return np.sqrt((diff**2).mean(axis=-1))
