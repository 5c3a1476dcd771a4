"""Checks on the dataset itself: duplicate and near-duplicate images, near-blank images,
per-class pixel statistics. Images are uint8 arrays of shape (n, 28, 28)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def image_digests(images: np.ndarray) -> np.ndarray:
    """One SHA-1 hex digest per image: equal digests mean byte-identical images."""
    return np.array([hashlib.sha1(image.tobytes()).hexdigest() for image in images])


def exact_duplicates(images: np.ndarray) -> list[np.ndarray]:
    """Groups of indices (each of two or more) whose images are byte-identical."""
    _, inverse, counts = np.unique(image_digests(images), return_inverse=True, return_counts=True)
    return [np.flatnonzero(inverse == g) for g in np.flatnonzero(counts > 1)]


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
    queries: np.ndarray, references: np.ndarray, chunk: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the index of the closest reference image (Euclidean distance on
    pixels) and the mean absolute pixel difference to it, in grey levels (0-255).

    Works in chunks of ``chunk`` queries so that memory stays near chunk x len(references).
    """
    q = queries.reshape(len(queries), -1).astype(np.float32)
    r = references.reshape(len(references), -1).astype(np.float32)
    r_sq = (r**2).sum(axis=1)
    # |q - r|^2 = |q|^2 - 2 q.r + |r|^2; |q|^2 is the same for every r, so it is left out.
    # Scaling by -2 is exact in floating point; the product is written into one reused buffer,
    # so that the matrix product, not memory traffic, sets the pace.
    minus_2rt = np.ascontiguousarray(-2 * r.T)
    scores = np.empty((min(chunk, len(q)), len(r)), dtype=np.float32)
    nearest = np.empty(len(q), dtype=np.int64)
    for start in range(0, len(q), chunk):
        block = q[start : start + chunk]
        out = scores[: len(block)]
        np.matmul(block, minus_2rt, out=out)
        out += r_sq
        nearest[start : start + chunk] = out.argmin(axis=1)
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
