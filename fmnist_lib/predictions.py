"""Many images, one at a time, for people: what the app shows of each image and prediction.

`examine` turns one input (an uploaded file, a test image, a generated image) into what the
model sees, the preprocessing steps to show, and a preview; an unusable input gets its
`ImageError` sentence instead, so that one bad file never stops the others. `predict` runs a
`serving.Classifier` on every usable image in one batch, and `results_table` lays the outcome
out as the table the app shows and lets you download.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import custom_images, preprocess
from .calibration import Calibration
from .data import CLASS_NAMES
from .preprocess import ImageError

PREVIEW = 256  # longest edge of the pictures kept for display
INK = 250  # a canvas with no pixel darker than this is blank (anti-aliasing leaves greys)


@dataclass(frozen=True)
class Item:
    """One image to classify: an image file's bytes (or a view of them), or a 28x28 uint8
    array (a test image). ``label`` is the true class id when it is known."""

    name: str
    data: bytes | memoryview | np.ndarray | None  # None: a file that could not be read
    label: int | None = None
    source: str = "upload"


@dataclass(frozen=True, eq=False)
class Examined:
    """An item as the model sees it (``image``, 28x28 uint8) with the preprocessing ``steps``
    and a ``preview`` of the input for display, or the ``error`` that stopped it; ``doubt``
    says why the item's mask is doubtful (`preprocess.mask_doubt`): any answer is then "not
    sure"."""

    item: Item
    image: np.ndarray | None = None
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    preview: np.ndarray | None = None
    error: str | None = None
    doubt: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _thumbnail(image: np.ndarray | Image.Image) -> np.ndarray:
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if max(picture.size) > PREVIEW:
        picture = picture.copy()
        picture.thumbnail((PREVIEW, PREVIEW), Image.Resampling.LANCZOS)
    return np.asarray(picture)


def examine(item: Item) -> Examined:
    """Preprocess one item as the served model does (`preprocess.prepare`), keeping each step
    for display (large ones shrunk to at most 256 pixels)."""
    if item.data is None:
        return Examined(item, error="The file could not be read.")
    try:
        if isinstance(item.data, np.ndarray):
            image = preprocess.from_array(item.data)
            return Examined(item, image, {"as it is": image}, image)
        picture = preprocess.decode(item.data)
        steps = preprocess.fashion_mnist_steps(picture)
        preview = _thumbnail(preprocess.flatten(picture))
    except ImageError as err:
        return Examined(item, error=str(err))
    image = list(steps.values())[-1]
    doubt = preprocess.mask_doubt(steps["mask"]) if "mask" in steps else None
    shown = {k: _thumbnail(v) for k, v in steps.items()}
    return Examined(item, image, shown, preview, doubt=doubt)


def predict(classifier, examined: list[Examined]) -> list[np.ndarray | None]:
    """The 10 class probabilities of each usable image (one batch through the classifier),
    None for an image that could not be read."""
    usable = [e.image for e in examined if e.ok]
    proba = iter(classifier.predict_proba(np.stack(usable)) if usable else [])
    return [next(proba) if e.ok else None for e in examined]


def top_classes(probabilities: np.ndarray, k: int = 3) -> pd.DataFrame:
    """The ``k`` most probable classes, most probable first: columns class, probability."""
    order = np.argsort(probabilities, kind="stable")[::-1][:k]
    return pd.DataFrame(
        {"class": [CLASS_NAMES[i] for i in order], "probability": probabilities[order]}
    )


def results_table(
    examined: list[Examined],
    predictions: dict[str, list[np.ndarray | None]],
    calibrations: dict[str, Calibration] | None = None,
) -> pd.DataFrame:
    """One row per image: its name, source and true class (when known), then for each model
    (``predictions`` maps a model's name to `predict`'s output) the predicted class, its
    probability, whether the model is sure of it (when ``calibrations`` gives the model's)
    and whether it is right (never sure where the mask is doubtful: ``doubt`` says why);
    ``error`` says why an image was not classified."""
    rows = []
    for k, e in enumerate(examined):
        label = e.item.label
        row = {
            "image": e.item.name,
            "source": e.item.source,
            "true class": CLASS_NAMES[label] if label is not None else "",
        }
        for model, outputs in predictions.items():
            proba = outputs[k]
            best = int(np.argmax(proba)) if proba is not None else None
            row[f"{model}: class"] = CLASS_NAMES[best] if best is not None else ""
            row[f"{model}: probability"] = float(proba[best]) if best is not None else np.nan
            if calibrations and model in calibrations:
                sure = best is not None and bool(calibrations[model].sure(proba[None])[0])
                row[f"{model}: sure"] = (sure and e.doubt is None) if best is not None else None
            row[f"{model}: right"] = (
                (best == label) if best is not None and label is not None else None
            )
        row["doubt"] = e.doubt or ""
        row["error"] = e.error or ""
        rows.append(row)
    return pd.DataFrame(rows)


def test_gallery(images: np.ndarray, labels: np.ndarray, per_class: int = 10) -> list[Item]:
    """The first ``per_class`` test images of each class, class by class, named after their
    position in the test file ("test #0" is its first image)."""
    items = []
    for class_id in range(len(CLASS_NAMES)):
        for index in np.flatnonzero(labels == class_id)[:per_class]:
            items.append(Item(f"test #{index}", np.asarray(images[index]), class_id, "test set"))
    return items


def generated_gallery(folder: Path) -> list[custom_images.CustomImage]:
    """The images `create_img.py` wrote to ``folder`` (empty if it has not run)."""
    if not (Path(folder) / custom_images.LABELS_FILE).is_file():
        return []
    return custom_images.read_labels(folder)


def generated_item(folder: Path, image: custom_images.CustomImage) -> Item:
    """A generated image, read from disk, with its label (no data if it cannot be read)."""
    try:
        data = (Path(folder) / image.file).read_bytes()
    except OSError:
        data = None
    return Item(image.file, data, image.label, "generated")


def drawing_item(pixels, name: str = "drawing") -> Item | None:
    """A drawing from the app's canvas, an RGBA (or RGB) array of strokes on a transparent or
    white background, as a PNG file: it then goes through the same conversion as an upload.
    None while nothing is drawn."""
    array = np.asarray(pixels)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"a drawing is an RGB(A) array (height, width, 3 or 4), not {array.shape}")
    mode = "RGBA" if array.shape[2] == 4 else "RGB"
    picture = preprocess.flatten(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode))
    if np.asarray(picture.convert("L")).min() >= INK:
        return None
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Item(name, buffer.getvalue(), source="drawing")
