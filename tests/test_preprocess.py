"""Image bytes, base64 text and arrays to 28x28, and a clear ImageError for every bad input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from fmnist_lib import preprocess
from fmnist_lib.data import load_fashion_mnist
from fmnist_lib.preprocess import ImageError


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return load_fashion_mnist().x_test[0]


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_a_dataset_image_survives_png_and_base64_exactly(sample):
    png = preprocess.encode_png(sample)
    assert np.array_equal(preprocess.prepare(png), sample)
    assert np.array_equal(preprocess.prepare(base64.b64encode(png).decode()), sample)
    assert np.array_equal(preprocess.prepare(sample), sample)
    assert np.array_equal(preprocess.prepare(sample.reshape(-1).tolist()), sample)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP"])
def test_every_supported_format_decodes_close_to_the_original(sample, fmt):
    data = encode(Image.fromarray(sample), fmt)
    error = np.abs(preprocess.prepare(data).astype(int) - sample).mean()
    assert error < 6, f"{fmt}: mean absolute error {error:.1f} grey levels"


def test_colour_and_large_images_become_28x28_grey(sample):
    big = Image.fromarray(sample).resize((280, 280), Image.Resampling.NEAREST).convert("RGB")
    out = preprocess.prepare(encode(big, "PNG"))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - sample).mean() < 3


def _bomb(side: int) -> bytes:
    # One bit per pixel: a huge image in a few kilobytes of PNG.
    return encode(Image.new("1", (side, side)), "PNG")


def _truncated(fmt: str) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    return data[: len(data) * 2 // 3]


BAD_FILES = {
    "empty": (lambda: b"", "The file is empty"),
    "text": (lambda: b"just some text, not a picture", "not an image"),
    "truncated-png": (lambda: _truncated("PNG"), "damaged or truncated"),
    "truncated-jpeg": (lambda: _truncated("JPEG"), "damaged or truncated"),
    "64-megapixels": (lambda: _bomb(8000), "too large"),  # our own limit
    "225-megapixels": (lambda: _bomb(15000), "too large"),  # Pillow's guard
    "tiff": (lambda: encode(Image.new("L", (28, 28)), "TIFF"), "not supported"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_one_clear_error(case):
    make, message = BAD_FILES[case]
    with pytest.raises(ImageError, match=message):
        preprocess.prepare(make())


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((27, 28)), "shape"),
        (np.zeros((3, 28, 28)), "shape"),
        (np.full((28, 28), 300.0), "between 0 and 255"),
        (np.full((28, 28), -1.0), "between 0 and 255"),
        (np.full((28, 28), np.nan), "between 0 and 255"),
        ([["a"] * 28] * 28, "not numbers"),
    ],
)
def test_bad_arrays_raise_one_clear_error(array, message):
    with pytest.raises(ImageError, match=message):
        preprocess.prepare(array)


def test_text_that_is_not_base64_is_refused():
    with pytest.raises(ImageError, match="not base64"):
        preprocess.prepare("this is ** not base64")
    with pytest.raises(ImageError, match="No image"):
        preprocess.prepare(None)
