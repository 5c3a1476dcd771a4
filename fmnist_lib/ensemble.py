"""Several answers, averaged: soft voting over models, and test-time augmentation of one model.

Soft voting averages the class probabilities of several models and takes the most probable
class: models that err on different images correct each other. Test-time augmentation (TTA)
does the same with one model, on slightly changed copies of each image (mirrored, shifted by a
pixel), the changes the model saw during training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def soft_vote(probabilities: Sequence[np.ndarray], weights: Sequence[float] | None = None):
    """The weighted mean of several (n, 10) probability arrays (equal weights by default)."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    if stacked.ndim != 3 or len(stacked) == 0:
        raise ValueError("soft_vote needs one or more (n, classes) arrays of the same shape")
    weights = np.ones(len(stacked)) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(stacked),) or (weights < 0).any() or weights.sum() == 0:
        raise ValueError("one non-negative weight per model, not all zero")
    return np.tensordot(weights / weights.sum(), stacked, axes=1)


def _shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Images moved by (dy, dx) pixels, the uncovered border black like the background."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = images[
        :, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def tta_views(images: np.ndarray, flip: bool = True, shift: int = 1) -> list[np.ndarray]:
    """The images as they are, mirrored left-right (with ``flip``), and moved by ``shift``
    pixels up, down, left and right (with ``shift`` > 0): each (n, 28, 28) like the input."""
    images = np.asarray(images)
    views = [images]
    if flip:
        views.append(images[:, :, ::-1])
    if shift:
        views += [
            _shift(images, dy, dx) for dy, dx in ((shift, 0), (-shift, 0), (0, shift), (0, -shift))
        ]
    return views


def tta_proba(classifier, images: np.ndarray, flip: bool = True, shift: int = 1) -> np.ndarray:
    """A classifier's (n, 10) probabilities averaged over `tta_views` of the images."""
    return soft_vote([classifier.predict_proba(view) for view in tta_views(images, flip, shift)])
