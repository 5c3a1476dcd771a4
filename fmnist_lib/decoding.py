"""Image files and arrays in, safely: the decoding half of `preprocess`.

`decode` opens PNG, JPEG, WebP, GIF or BMP bytes and reduces the picture, as it decodes, to
the size the conversion uses, so that what one picture costs is bounded by design: a cap on
its pixels, a JPEG decoded already shrunk, no full-size copy in another mode, and at most two
large pictures decoded at once in a process. `from_array` checks a 28x28 array of grey levels,
`flatten` makes any decoded picture 8-bit RGB. Every way an input can be unusable raises
`ImageError`, whose message is one sentence a student understands; the API returns it as a
400.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import threading
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from .data import IMAGE_SHAPE

SIZE = IMAGE_SHAPE[0]
# `preprocess` converts pictures reduced to this longest edge: the item ends up 28 pixels tall
# anyway, and segmenting a phone photo at full size would take a second...
WORK_SIZE = 256
# ...and decoding keeps twice that (and no more), so that its last resize has pixels to smooth.
DECODE_SIZE = 2 * WORK_SIZE
# A JPEG is decoded already shrunk (libjpeg scales by 1/2 to 1/8 as it decodes), so its cap is
# any phone's photo; the other formats are decoded at full size first, 4 bytes a pixel at most:
# 25 megapixels keeps one such picture under 100 MB. Both far below Pillow's own guard
# (~179 Mpx), which lets a 17 KB PNG of 12000x12000 through to a 0.5 s decode.
MAX_PIXELS = 50_000_000
MAX_FULL_PIXELS = 25_000_000
# WebP's decoder holds about 16 bytes a pixel while it works (measured): a lower cap.
_FULL_SIZE_CAPS = {"WEBP": (8_000_000, " for WebP")}
MAX_FILE_BYTES = 20 * 2**20  # the app's upload limit too
MAX_SEGMENTS = 200  # a phone JPEG has about 20; an ICC profile in pieces, a few more
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
# A phone's JPEG with a depth map or a second view ("Multi-Picture Format") opens as MPO: its
# first frame is the JPEG.
_OPENED_AS = {"MPO": "JPEG"}
# Formats never parsed (`Image.open` only runs the five above) but named when recognised.
_OTHER_FORMATS = {b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"8BPS": "Photoshop"}
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif")
# Pictures decoded at over a megapixel take up to 100 MB each: at most two of them at once in
# this process, whatever the number of requests or app sessions. Smaller ones go straight.
LARGE_DECODE = 1_000_000
_LARGE_DECODES = threading.BoundedSemaphore(2)
# Modes that `Image.reduce` averages correctly; the others are converted first.
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBa", "La", "I", "F", "CMYK", "YCbCr"}


class ImageError(ValueError):
    """An input that is not an image the model can classify; the message says why."""


class PixelBudget:
    """How many pixels one request may decode in all (its images together), so that a batch
    of large pictures is refused in a sentence rather than held for minutes."""

    def __init__(self, pixels: int):
        self.left = pixels
        self.limit = pixels

    def spend(self, pixels: int) -> None:
        if pixels > self.left:
            raise ImageError(
                f"The images of this request add up to more than {self.limit // 1_000_000} "
                "megapixels to decode: send them in several requests."
            )
        self.left -= pixels


def decode_base64(text: str) -> bytes:
    """The bytes of a base64 string (standard alphabet, padding optional)."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(
            "The text is not base64: send the image file's bytes base64-encoded."
        ) from None


def _too_large(width: int, height: int, cap: int, what: str = "") -> ImageError:
    return ImageError(
        f"The image is {width}x{height} pixels, too large to decode safely "
        f"(at most {cap // 1_000_000} megapixels{what})."
    )


def _shrunk(image: Image.Image) -> Image.Image:
    """The decoded picture reduced to about `DECODE_SIZE` on its longest edge (box filter),
    a band of rows at a time: no full-size copy is made (`Image.reduce` would make one to
    premultiply transparency, `convert` one in the new mode). A palette, 1-bit or 16-bit
    picture is first subsampled, then converted."""
    factor = max(image.size) // DECODE_SIZE
    if image.mode not in _REDUCIBLE:
        step = factor // 4  # leaves a 4x4 box to average once converted
        if step > 1:
            size = (math.ceil(image.width / step), math.ceil(image.height / step))
            image = image.resize(size, Image.Resampling.NEAREST)
        if image.mode in ("P", "PA"):
            transparent = image.mode == "PA" or "transparency" in image.info
            image = image.convert("RGBA" if transparent else "RGB")
        else:
            image = image.convert("I" if image.mode.startswith("I;16") else "L")
        factor = max(image.size) // DECODE_SIZE
    if factor < 2:
        return image
    width, height = image.size
    shrunk = Image.new(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    rows = factor * max(1, 64 // factor)  # a whole number of boxes per band
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(top + rows, height))).reduce(factor)
        shrunk.paste(band, (0, top // factor))
    shrunk.info = dict(image.info)  # EXIF orientation, transparency
    return shrunk


def _check_jpeg_segments(data) -> None:
    """Refuse a JPEG with more than `MAX_SEGMENTS` segments before its picture: Pillow reads
    each in Python, so a file of empty ones costs seconds a megabyte."""
    view = memoryview(data)
    at, count = 2, 0
    while at + 4 <= len(view) and view[at] == 0xFF:
        marker = view[at + 1]
        if marker == 0xDA:  # start of scan: the picture follows
            return
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        count += 1
        if count > MAX_SEGMENTS:
            raise ImageError(
                f"The JPEG holds over {MAX_SEGMENTS} metadata segments: save it again from "
                "an image editor."
            )
        standalone = marker == 0x01 or 0xD0 <= marker <= 0xD8
        at += 2 if standalone else 2 + (view[at + 2] << 8 | view[at + 3])


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says. Only that tag is read: Pillow's
    `ImageOps.exif_transpose` rewrites every tag, a second a megabyte of crafted EXIF."""
    method = _TRANSPOSE.get(image.getexif().get(0x0112))
    return image.transpose(method) if method is not None else image


def decode(data: bytes | memoryview, budget: PixelBudget | None = None) -> Image.Image:
    """Open image file bytes (PNG, JPEG, WebP, GIF or BMP), refusing anything unsafe or broken,
    and reduce the picture to about `DECODE_SIZE` pixels on its longest edge (all the
    conversion uses). Orientation from EXIF is applied; an animation gives its first frame.
    ``budget``, if given, is charged with the pixels decoded."""
    if not data:
        raise ImageError("The file is empty.")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(
            f"The file is {len(data) / 2**20:.0f} MB; at most {MAX_FILE_BYTES // 2**20} MB per "
            "image (a phone's photo is a few MB)."
        )
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its two bomb limits: make that a refusal too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if bytes(data[:2]) == b"\xff\xd8":
                _check_jpeg_segments(data)  # before Pillow reads them one by one
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # no other parser runs
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise _too_large(width, height, MAX_PIXELS)
            kind = _OPENED_AS.get(image.format, image.format)
            if kind not in FORMATS:
                raise ImageError(
                    f"{image.format} images are not supported: send PNG, JPEG, WebP, GIF or BMP."
                )
            cap, what = _FULL_SIZE_CAPS.get(kind, (MAX_FULL_PIXELS, " for PNG, GIF and BMP"))
            full_size = kind != "JPEG" or "progressive" in image.info or "progression" in image.info
            if kind == "JPEG":
                # Shrunk as it decodes; a progressive JPEG still holds every coefficient at
                # full size, and a long thin one cannot shrink below 512 on its short side.
                image.draft(None, (DECODE_SIZE, DECODE_SIZE))
                if full_size:
                    cap, what = MAX_FULL_PIXELS, " for a progressive JPEG"
                elif image.width * image.height > MAX_FULL_PIXELS:
                    raise _too_large(width, height, MAX_FULL_PIXELS, " for a JPEG this shape")
            if full_size and width * height > cap:
                raise _too_large(width, height, cap, what)
            pixels = width * height if full_size else image.width * image.height
            if budget is not None:
                budget.spend(pixels)
            if pixels > LARGE_DECODE:
                with _LARGE_DECODES:
                    image.load()
                    image = _shrunk(image)
            else:
                image.load()
                image = _shrunk(image)
            return _upright(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        name = _OTHER_FORMATS.get(bytes(data[:4]))
        if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            name = "HEIC and AVIF"  # an iPhone's photo: its share menu exports a JPEG
        if name:
            raise ImageError(
                f"{name} images are not supported: send PNG, JPEG, WebP, GIF or BMP."
            ) from None
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


def from_array(array) -> np.ndarray:
    """A 28x28 array of grey levels (0 = black background, 255 = white, as in the dataset) as
    uint8; a flat row of 784 values is accepted too."""
    try:
        values = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise ImageError(
            f"An array image must be {SIZE}x{SIZE} numbers: this one has rows of different "
            "lengths or values that are not numbers."
        ) from None
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


def encode_png(image: np.ndarray) -> bytes:
    """A 28x28 uint8 image as PNG bytes (how the tests and the API examples send images)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
