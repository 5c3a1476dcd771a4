"""The dataset as the course uses it: class names, the train / validation / test split, and
the views each kind of model takes (`acquisition` gets and verifies the files).

Run ``python -m fmnist_lib.data`` to see where the data comes from and check it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .acquisition import IDX_FILES, IMAGE_SHAPE, DatasetError, DataSource, RawFashionMNIST, load_raw
from .config import SEED, Profile, get_profile

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
INPUT_SHAPE = (*IMAGE_SHAPE, 1)  # what a Keras network of the course takes: one grey channel


def stratified_split(
    labels: np.ndarray, size: int, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``labels`` into (kept, taken), ``taken`` holding ``size`` of them with
    the class proportions of ``labels``. Both index arrays are sorted; same seed, same split.
    """
    if not 0 <= size <= len(labels):
        raise ValueError(f"cannot take {size} of {len(labels)} items")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels) if len(labels) else counts * 0.0
    quota = np.floor(exact).astype(int)
    # Largest remainders get the leftover places, so the quotas add up to exactly `size`.
    leftover = size - quota.sum()
    quota[np.argsort(exact - quota, kind="stable")[::-1][:leftover]] += 1
    taken = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == c))[:q]
            for c, q in zip(classes, quota, strict=True)
        ]
        + [np.empty(0, dtype=np.int64)]
    )
    taken.sort()
    kept = np.setdiff1d(np.arange(len(labels)), taken)
    return kept, taken


def keras_input(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) grey levels 0-255 -> (n, 28, 28, 1) float32 in [0, 1], as networks take them."""
    return (np.asarray(images, dtype=np.float32) / np.float32(255)).reshape(-1, *INPUT_SHAPE)


def sklearn_input(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) grey levels 0-255 -> (n, 784) float32 rows in [0, 1], as pipelines take them."""
    x = np.asarray(images, dtype=np.float32) / np.float32(255)
    return x.reshape(len(x), IMAGE_SHAPE[0] * IMAGE_SHAPE[1])


@dataclass(frozen=True, eq=False)
class FashionMNIST:
    """Train / validation / test splits as uint8 arrays, with class names and provenance.

    ``x_*`` have shape (n, 28, 28), ``y_*`` shape (n,). Use `keras` and `sklearn` for the
    views the models want, and `subset` for the smaller sets of the quick profile.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: DataSource
    class_names: tuple[str, ...] = CLASS_NAMES

    SPLITS = ("train", "val", "test")

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The (images, labels) of ``train``, ``val`` or ``test``."""
        if name not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, not {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def keras(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images as `keras_input` makes them, (n, 28, 28, 1) float32; labels as int64."""
        x, y = self.split(name)
        return keras_input(x), y.astype(np.int64)

    def sklearn(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images as `sklearn_input` makes them, (n, 784) float32; labels as int64."""
        x, y = self.split(name)
        return sklearn_input(x), y.astype(np.int64)

    def subset(
        self,
        train_size: int | None = None,
        test_size: int | None = None,
        val_size: int | None = None,
        seed: int = SEED,
    ) -> FashionMNIST:
        """A stratified sample of each split (``None``: keep it all). A smaller validation set
        is drawn from this one: the same images, fewer of them."""
        samples = []
        for x, y, size in [
            (self.x_train, self.y_train, train_size),
            (self.x_val, self.y_val, val_size),
            (self.x_test, self.y_test, test_size),
        ]:
            if size is not None and size < len(y):
                _, idx = stratified_split(y, size, seed)
                x, y = x[idx], y[idx]
            samples += [x, y]
        return FashionMNIST(*samples, self.source)

    def for_profile(self, profile: Profile | None = None) -> FashionMNIST:
        """The sizes the profile (default: the current one) asks for."""
        profile = profile or get_profile()
        return self.subset(profile.train_size, profile.test_size, val_size=profile.val_size)


@lru_cache(maxsize=8)
def _split(raw: RawFashionMNIST, validation_size: int, seed: int) -> FashionMNIST:
    train_idx, val_idx = stratified_split(raw.train_labels, validation_size, seed)
    return FashionMNIST(
        raw.train_images[train_idx],
        raw.train_labels[train_idx],
        raw.train_images[val_idx],
        raw.train_labels[val_idx],
        raw.test_images,
        raw.test_labels,
        raw.source,
    )


def load_fashion_mnist(validation_size: int | None = None, seed: int = SEED) -> FashionMNIST:
    """Fashion-MNIST split into train / validation / test, loaded once per process.

    The validation set (default: the profile's ``validation_size``, 6,000 images) is drawn
    from the 60,000 training images, stratified by class, with a fixed seed; the test set is
    the published 10,000. Raises `DatasetError` with a readable message on any fault.
    """
    if validation_size is None:
        validation_size = get_profile().validation_size
    return _split(load_raw(), validation_size, seed)


def main() -> int:
    try:
        raw = load_raw()
        data = load_fashion_mnist()
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST from {raw.source}")
    for spec in IDX_FILES:
        print(f"  {raw.source.path(spec.key).name:<28} SHA-256 of the content verified")
    for name in FashionMNIST.SPLITS:
        x, _ = data.split(name)
        print(f"  {name:<5} {len(x):>6} images of {x.shape[1]}x{x.shape[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
