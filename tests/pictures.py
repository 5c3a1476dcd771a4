"""Test pictures several test modules share: garments on a print of wide stripes."""

from __future__ import annotations

import numpy as np


def on_stripes(image: np.ndarray, lefts: list[int], top: int = 130) -> np.ndarray:
    """A 400x400 grey picture of a light print with wide darker stripes (a coarse bedsheet)
    and, at each of ``lefts``, the 28x28 ``image`` as a dark garment five times larger: only
    its own pixels, so the stripes run on around it."""
    picture = np.full((400, 400), 235, np.uint8)
    picture[:, (np.arange(400) // 40) % 2 == 1] = 120
    big = np.kron(image, np.ones((5, 5), np.uint8))
    for left in lefts:
        region = picture[top : top + big.shape[0], left : left + big.shape[1]]
        garment = big > 25
        region[garment] = 255 - big[garment]
    return picture
