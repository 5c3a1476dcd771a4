"""Any image to the 28x28 grey levels the models expect: decoded bytes, PIL images or arrays.

Every way an input can be unusable raises `ImageError`, whose message is one sentence a
student understands (an empty file, not an image, a truncated file, an image too large to
decode safely, a wrong array shape). The app shows it; the API returns it as a 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 28
# Far below Pillow's own guard (~179 Mpx), which lets a 17 KB PNG of 12000x12000 through to a
# 0.5 s decode; 50 Mpx still admits any phone photo.
MAX_PIXELS = 50_000_000
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


class ImageError(ValueError):
    """An input that is not an image the model can classify; the message says why."""


def decode_base64(text: str) -> bytes:
    """The bytes of a base64 string (standard alphabet, padding optional)."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(
            "The text is not base64: send the image file's bytes base64-encoded."
        ) from None


def decode(data: bytes) -> Image.Image:
    """Open image file bytes (PNG, JPEG, WebP, GIF or BMP), refusing anything unsafe or broken.
    Orientation from EXIF is applied; an animation gives its first frame."""
    if not data:
        raise ImageError("The file is empty.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its two bomb limits: make that a refusal too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"The image is {width}x{height} pixels, too large to decode safely "
                    f"(at most {MAX_PIXELS // 1_000_000} megapixels)."
                )
            if image.format not in FORMATS:
                raise ImageError(
                    f"{image.format} images are not supported: send PNG, JPEG, WebP, GIF or BMP."
                )
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            "The file is not an image (expected PNG, JPEG, WebP, GIF or BMP)."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"The image is too large to decode safely (at most {MAX_PIXELS // 1_000_000} "
            "megapixels)."
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"The image file is damaged or truncated ({err}).") from None
    return ImageOps.exif_transpose(image)


def from_array(array) -> np.ndarray:
    """A 28x28 array of grey levels (0 = black background, 255 = white, as in the dataset) as
    uint8; a flat row of 784 values is accepted too."""
    try:
        values = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise ImageError("The array holds values that are not numbers.") from None
    if values.shape == (SIZE * SIZE,):
        values = values.reshape(SIZE, SIZE)
    if values.shape != (SIZE, SIZE):
        raise ImageError(
            f"An array image must be {SIZE}x{SIZE} grey levels; this one has shape {values.shape}."
        )
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255:
        raise ImageError("Array pixel values must be grey levels between 0 and 255.")
    return np.rint(values).astype(np.uint8)


def to_28x28(image: Image.Image) -> np.ndarray:
    """The plain conversion: grey levels, squeezed to 28x28, as uint8."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    grey = image.convert("L")
    return np.asarray(grey.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)


def prepare(item) -> np.ndarray:
    """One input as the model's 28x28 uint8 image: image file bytes, a base64 string of them,
    a PIL image, or an array of grey levels."""
    if isinstance(item, str):
        item = decode_base64(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        item = decode(bytes(item))
    if isinstance(item, Image.Image):
        return to_28x28(item)
    if item is None:
        raise ImageError("No image was given.")
    return from_array(item)


def encode_png(image: np.ndarray) -> bytes:
    """A 28x28 uint8 image as PNG bytes (how the tests and the API examples send images)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
