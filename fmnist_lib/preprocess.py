"""Any image to the 28x28 grey levels the models expect: decoded bytes, PIL images or arrays.

Pictures go through `fashion_mnist_steps`, the conversion Fashion-MNIST's authors applied to
Zalando's product photos (trim, resize the longest edge to 28, centre, negate), so that
a photo of a dark shoe on a white table reaches the model as a light shoe on black.

Every way an input can be unusable raises `ImageError`, whose message is one sentence a
student understands (an empty file, not an image, a truncated file, an image too large to
decode safely, a wrong array shape); the API returns it as a 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import IMAGE_SHAPE

SIZE = IMAGE_SHAPE[0]  # square: the longest edge of an item becomes this many pixels
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


def flatten(image: Image.Image) -> Image.Image:
    """Any decoded image as 8-bit RGB: the first frame of an animation, transparency composited
    on white (a product photo's background), palettes expanded, CMYK and 16-bit converted."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: keep the 8 most significant bits.
        values = np.asarray(image, dtype=np.uint32)
        shift = 8 if values.max() > 255 else 0
        image = Image.fromarray((values >> shift).astype(np.uint8), mode="L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def to_28x28(image: Image.Image) -> np.ndarray:
    """The naive conversion: grey levels squeezed to 28x28, nothing else. Chapter 6 shows why
    it fails on photos."""
    grey = flatten(image).convert("L")
    return np.asarray(grey.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)


# How far from the background colour a pixel must be to belong to the object: 5% of the
# intensity range, the tolerance Fashion-MNIST's authors trimmed Zalando's photos with.
TRIM_TOLERANCE = 0.05 * 255


def _border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def fashion_mnist_steps(image: Image.Image) -> dict[str, np.ndarray]:
    """Convert any picture of one item the way Fashion-MNIST was made from Zalando's product
    photos, returning every intermediate image (uint8 arrays, in order) for display:

    ``grey``: 8-bit grey levels; ``dark item on light``: negated first if the background (the
    median of the border) is dark; ``trimmed``: cropped to the pixels that differ from the
    background by more than 5%; ``resized``: longest edge to 28 pixels; ``centred``: on a
    28x28 canvas of the background colour; ``negated``: a light item on black;
    ``stretched``: background to 0, brightest pixel to 255 (every Fashion-MNIST image spans the
    full range). The last one is what the model sees.

    A 28x28 image that already has a dark background is taken as a Fashion-MNIST image and
    left as it is. An image in which nothing stands out from the background raises
    `ImageError`.
    """
    grey = np.asarray(flatten(image).convert("L"), dtype=np.uint8)
    steps = {"grey": grey}
    background = float(np.median(_border(grey)))
    if grey.shape == (SIZE, SIZE) and background < 128:
        steps["as it is"] = grey
        return steps
    if background < 128:
        grey = 255 - grey
        background = 255 - background
    steps["dark item on light"] = grey

    rows, cols = np.nonzero(np.abs(grey.astype(np.float64) - background) > TRIM_TOLERANCE)
    if len(rows) == 0:
        raise ImageError("The image is blank: nothing stands out from its background.")
    trimmed = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    steps["trimmed"] = trimmed

    height, width = trimmed.shape
    scale = SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(trimmed).resize(size, Image.Resampling.LANCZOS)
    steps["resized"] = np.asarray(resized, dtype=np.uint8)

    canvas = Image.new("L", (SIZE, SIZE), round(background))
    # An odd spare pixel goes before the item, as in 99% of Fashion-MNIST images.
    canvas.paste(resized, ((SIZE - size[0] + 1) // 2, (SIZE - size[1] + 1) // 2))
    centred = np.asarray(canvas, dtype=np.uint8)
    steps["centred"] = centred
    negated = 255 - centred
    steps["negated"] = negated

    floor = 255 - background
    span = max(float(negated.max()) - floor, 1.0)
    stretched = np.clip((negated.astype(np.float64) - floor) * 255 / span, 0, 255)
    steps["stretched"] = np.rint(stretched).astype(np.uint8)
    return steps


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
    """The 28x28 uint8 image the model sees: the last of `fashion_mnist_steps`."""
    return list(fashion_mnist_steps(image).values())[-1]


def prepare(item) -> np.ndarray:
    """One input as the model's 28x28 uint8 image: image file bytes, a base64 string of them,
    or a PIL image (converted by `to_fashion_mnist`), or an array of grey levels (already in
    the model's format, checked only)."""
    if isinstance(item, str):
        item = decode_base64(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        item = decode(bytes(item))
    if isinstance(item, Image.Image):
        return to_fashion_mnist(item)
    if item is None:
        raise ImageError("No image was given.")
    return from_array(item)


def encode_png(image: np.ndarray) -> bytes:
    """A 28x28 uint8 image as PNG bytes (how the tests and the API examples send images)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
