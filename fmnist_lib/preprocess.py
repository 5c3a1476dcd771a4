"""Any image to the 28x28 grey levels the models expect: decoded bytes, PIL images or arrays.

Pictures go through `fashion_mnist_steps`, the conversion Fashion-MNIST's authors applied to
Zalando's product photos (trim, resize the longest edge to 28, centre, negate), so that
a photo of a dark shoe on a white table reaches the model as a light shoe on black.

Files and arrays come in through `decoding` (its names are re-exported here: `decode`,
`ImageError`...). Every way an input can be unusable raises `ImageError`, whose message is
one sentence a student understands (an empty file, not an image, a truncated file, an image
too large to decode safely, a wrong array shape); the API returns it as a 400.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .decoding import (  # noqa: F401  (the library's and the chapters' names for them)
    DECODE_SIZE,
    FORMATS,
    MAX_FULL_PIXELS,
    MAX_PIXELS,
    SIZE,
    WORK_SIZE,
    ImageError,
    PixelBudget,
    decode,
    decode_base64,
    encode_png,
    flatten,
    from_array,
)
from .masking import (  # noqa: F401  (the names chapter 6 and the tests know them by)
    DOUBT_COVER,
    DOUBT_EDGE,
    DOUBT_PIECES,
    ITEM_CHANCE,
    SURFACE_CLUSTERS,
    SURFACE_CUT,
    SURFACE_FLOOR,
    TEXTURE_SIGMA,
    TEXTURED,
    TRIM_TOLERANCE,
    _border,
    backdrop_model,
    item_grey,
    item_mask,
    lighter_than_backdrop,
    mask_doubt,
    roughness,
    surface_distance,
    textured,
)


def to_28x28(image: Image.Image) -> np.ndarray:
    """The naive conversion: grey levels squeezed to 28x28, nothing else. Chapter 6 shows why
    it fails on photos."""
    grey = flatten(image).convert("L")
    return np.asarray(grey.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)


# A leaning item is turned upright when one of these angles (degrees, either way) makes it
# mirror-symmetric: at least this share of it matches its mirror image, this much more than
# upright.
MAX_TILT = 10
SYMMETRY = 0.9
SYMMETRY_GAIN = 0.04


def _working_copy(image: Image.Image) -> np.ndarray:
    """8-bit RGB of the picture, its longest edge reduced to `WORK_SIZE` at most."""
    rgb = flatten(image)
    scale = WORK_SIZE / max(rgb.size)
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.uint8)


def _dark_border(grey: np.ndarray) -> bool:
    """Whether the picture's border is dark (median grey under 128): the conversion then
    negates it first, for a light backdrop as the dataset's photos have."""
    return float(np.median(_border(grey))) < 128


def light_backdrop_copy(image: Image.Image) -> np.ndarray:
    """The picture as the mask step sees it: the working copy (8-bit RGB, `WORK_SIZE` at
    most), negated where its border is dark."""
    rgb = _working_copy(image)
    return 255 - rgb if _dark_border(np.asarray(Image.fromarray(rgb).convert("L"))) else rgb


def tilt(mask: np.ndarray) -> float:
    """The angle (degrees, counter-clockwise) by which a mirror-symmetric item leans, or 0.
    Most of Fashion-MNIST's items (tops, trousers, dresses, coats, bags) stand upright and are
    symmetric about a vertical axis: the angle within `MAX_TILT` that makes the mask most
    symmetric is its lean, if the item is symmetric there (`SYMMETRY` of its area or more)
    and clearly more than upright. Shoes, not symmetric, are left as they are."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return 0.0
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    crop = Image.fromarray(box.astype(np.uint8) * 255)
    scale = 64 / max(crop.size)  # the angle, not the detail, matters: a small mask will do
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))))

    def symmetry(angle: float) -> float:
        turned = np.asarray(crop.rotate(-angle, Image.Resampling.BILINEAR, expand=True)) > 127
        r, c = np.nonzero(turned)
        if len(r) == 0:
            return 0.0
        item = turned[r.min() : r.max() + 1, c.min() : c.max() + 1]
        return float((item & item[:, ::-1]).sum() / max((item | item[:, ::-1]).sum(), 1))

    angles = np.arange(-MAX_TILT, MAX_TILT + 1)
    scores = [symmetry(a) for a in angles]
    best = int(np.argmax(scores))
    upright = scores[MAX_TILT]
    if scores[best] >= SYMMETRY and scores[best] - upright > SYMMETRY_GAIN:
        return float(angles[best])
    return 0.0


def fashion_mnist_steps(
    image: Image.Image, segment: bool = True, share: bool = True
) -> dict[str, np.ndarray]:
    """Convert any picture of one item the way Fashion-MNIST was made from Zalando's product
    photos, returning every intermediate image (uint8 arrays, in order) for display:

    ``grey``: 8-bit grey levels (of the picture reduced to `WORK_SIZE` at most);
    ``backdrop``: the backdrop modelled from the border (gradient, vignette, tint);
    ``mask``: the item, found by its difference from the backdrop (see `item_mask`);
    ``dark item on light``: the picture divided by its backdrop, which evens out the light,
    with everything outside the mask set to white (a light item on a dark backdrop is negated
    first); on a textured surface, each pixel's share of the item instead, read along the
    colour that tells the item from the surface (`item_grey`); ``trimmed``: cropped to the
    mask; ``resized``: longest edge to 28 pixels; ``centred``: on a 28x28 white canvas;
    ``negated``: a light item on black; ``stretched``: background to 0, brightest pixel to 255
    (every Fashion-MNIST image spans the full range). The last one is what the model sees.

    ``segment=False`` is the dataset's own recipe alone, for plain backdrops: the background is
    the median of the border, and trimming keeps what differs from it by more than 5%.
    ``share=False`` reads a textured surface's item by its brightness too, as before
    `item_grey` (chapter 6 compares the two).

    A 28x28 image that already has a dark background is taken as a Fashion-MNIST image and
    left as it is. An image in which nothing stands out from the background raises
    `ImageError`.
    """
    rgb = _working_copy(image)
    grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)
    steps = {"grey": grey}
    dark = _dark_border(grey)
    if grey.shape == (SIZE, SIZE) and dark:
        steps["as it is"] = grey
        return steps
    if dark:
        grey, rgb = 255 - grey, 255 - rgb
    background = float(np.median(_border(grey)))
    if segment:
        backdrop = backdrop_model(rgb)
        backdrop_rgb = Image.fromarray(np.rint(backdrop).astype(np.uint8))
        steps["backdrop"] = np.asarray(backdrop_rgb.convert("L"))
        rough = textured(rgb, backdrop)
        mask = item_mask(rgb, backdrop, rough)
        steps["mask"] = mask.astype(np.uint8) * 255
        if lighter_than_backdrop(rgb, backdrop, mask):
            # A mid-grey surface: the border's brightness did not tell the item's polarity,
            # the item itself does. Turned into a dark item on light, as the dataset's are.
            rgb, backdrop = 255 - rgb, np.clip(np.float32(256) - backdrop, 1.0, 255.0)
        shares = item_grey(rgb, backdrop, mask) if rough and share else None
        if shares is not None:
            grey = np.rint(shares).astype(np.uint8)
        else:
            evened = np.clip(np.float32(255) * rgb / backdrop, 0, 255)
            grey = np.asarray(Image.fromarray(np.rint(evened).astype(np.uint8)).convert("L"))
        grey = np.where(mask, grey, 255).astype(np.uint8)
        background = 255.0
        angle = tilt(mask)
        if angle:
            # Turn it back upright, as Fashion-MNIST's items stand.
            grey = np.asarray(
                Image.fromarray(grey).rotate(
                    -angle, Image.Resampling.BILINEAR, expand=True, fillcolor=255
                )
            )
            mask = (
                np.asarray(
                    Image.fromarray(mask.astype(np.uint8) * 255).rotate(
                        -angle, Image.Resampling.BILINEAR, expand=True
                    )
                )
                > 127
            )
        rows, cols = np.nonzero(mask)
    steps["dark item on light"] = grey
    if not segment:
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


def to_fashion_mnist(image: Image.Image, segment: bool = True) -> np.ndarray:
    """The 28x28 uint8 image the model sees: the last of `fashion_mnist_steps`."""
    return list(fashion_mnist_steps(image, segment).values())[-1]


def prepare(item, budget: PixelBudget | None = None) -> np.ndarray:
    """One input as the model's 28x28 uint8 image: image file bytes, a base64 string of them,
    or a PIL image (converted by `to_fashion_mnist`), or an array of grey levels (already in
    the model's format, checked only). ``budget``: see `decode`."""
    return prepare_checked(item, budget)[0]


def prepare_checked(item, budget: PixelBudget | None = None) -> tuple[np.ndarray, str | None]:
    """`prepare`, and why the picture's mask is doubtful (`mask_doubt`), or None: an array
    or a Fashion-MNIST image (no mask is made for them) has no doubt."""
    if isinstance(item, str):
        item = decode_base64(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        item = decode(bytes(item), budget)
    if isinstance(item, Image.Image):
        steps = fashion_mnist_steps(item)
        doubt = mask_doubt(steps["mask"]) if "mask" in steps else None
        return list(steps.values())[-1], doubt
    if item is None:
        raise ImageError("No image was given.")
    return from_array(item), None
