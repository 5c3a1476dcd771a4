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


def to_28x28(image: Image.Image) -> np.ndarray:
    """The naive conversion: grey levels squeezed to 28x28, nothing else. Chapter 6 shows why
    it fails on photos."""
    grey = flatten(image).convert("L")
    return np.asarray(grey.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)


# How far from the background colour a pixel must be to belong to the object: 5% of the
# intensity range, the tolerance Fashion-MNIST's authors trimmed Zalando's photos with.
TRIM_TOLERANCE = 0.05 * 255
# The backdrop is modelled from a band around the picture this share of its shorter side wide.
BORDER_BAND = 0.03
# A pixel belongs to the item when it differs from the modelled backdrop by more than Otsu's
# threshold, and by more than this share of the item's typical difference: a soft shadow, a
# fraction of the light taken from the backdrop, stays below it, while the fabric does not.
SHADOW_SHARE = 0.45
# Pieces of the mask smaller than this share of the largest are specks, not parts of the item.
PIECE_SHARE = 0.02
# How deep (a share of the picture's longest edge) the item is grown into its soft edge.
EDGE_DEPTH = 0.04
# An item whose colour channels differ by more than this (in reflectance, 0-1) is coloured.
COLOURED = 0.1
# A leaning item is turned upright when one of these angles (degrees, either way) makes it
# mirror-symmetric: at least this share of it matches its mirror image, this much more than
# upright.
MAX_TILT = 10
SYMMETRY = 0.9
SYMMETRY_GAIN = 0.04
# Below this (in reflectance, 0-1) a difference is JPEG noise or backdrop texture.
NOISE_LEVEL = 0.06
# A surface is textured (wood, fabric, tiles, a carpet) when its border band differs from the
# smooth backdrop model by more than this (median relative difference): a seamless backdrop
# stays under 0.006 with its JPEG and sensor noise, textured renderings start at 0.013.
TEXTURED = 0.01
# On a textured surface the picture is blurred (Gaussian, this many pixels of the working copy)
# before it is compared with the backdrop: the texture averages out to the surface's colour,
# the item's own colour stays. Both chosen on validation renderings (benchmarks/masks.py).
TEXTURE_SIGMA = 4.0


# A mask is doubtful, and the answer then "not sure", when it touches more than this share of
# the picture's edge, covers more than this share of the picture, or has a second piece at least
# this share of the largest: the surface, not the item, was probably taken along.
DOUBT_EDGE = 0.5
DOUBT_COVER = 0.8
DOUBT_PIECES = 0.25


def _border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def _working_copy(image: Image.Image) -> np.ndarray:
    """8-bit RGB of the picture, its longest edge reduced to `WORK_SIZE` at most."""
    rgb = flatten(image)
    scale = WORK_SIZE / max(rgb.size)
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.uint8)


def _coordinates(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
    """Pixel coordinates scaled to -1..1 across the picture."""
    return cols / max(shape[1] - 1, 1) * 2 - 1, rows / max(shape[0] - 1, 1) * 2 - 1


def backdrop_model(rgb: np.ndarray) -> np.ndarray:
    """The backdrop behind the item, per pixel and colour channel (float32, 1-255): a quadratic
    surface in x and y fitted to a band around the picture's border, which follows a gradient,
    a vignette and a tint. Border pixels far from the first fit (the item touching an edge)
    are left out of a second one."""
    height, width = rgb.shape[:2]
    band = max(1, min(round(BORDER_BAND * min(height, width)), min(height, width) // 4))
    border = np.zeros((height, width), dtype=bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    rows, cols = np.nonzero(border)
    step = max(1, len(rows) // 4000)  # a few thousand samples fix six coefficients
    rows, cols = rows[::step], cols[::step]
    u, v = _coordinates(rows, cols, (height, width))
    terms = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    values = rgb[rows, cols].astype(np.float64)
    # First the border pixels near its median colour (the backdrop, where an item touches the
    # edge), then those near the first fit (all of a gradient's range).
    residual = np.abs(values - np.median(values, axis=0)).max(axis=1)
    keep = residual <= max(float(np.median(residual)), 25.0)
    for _ in range(2):
        # Least squares by its normal equations: six unknowns, no need for an SVD.
        kept = terms[keep]
        coefficients = np.linalg.solve(kept.T @ kept + 1e-9 * np.eye(6), kept.T @ values[keep])
        residual = np.abs(values - terms @ coefficients).max(axis=1)
        keep = residual <= max(3 * float(np.median(residual[keep])), 6.0)
    u, v = _coordinates(np.arange(height)[:, None], np.arange(width)[None, :], (height, width))
    u, v = u.astype(np.float32), v.astype(np.float32)
    c = coefficients.astype(np.float32)
    model = np.empty((height, width, 3), dtype=np.float32)
    for k in range(3):
        model[..., k] = (c[0, k] + c[1, k] * u + c[3, k] * u * u) + v * (
            c[2, k] + c[4, k] * u + c[5, k] * v
        )
    return np.clip(model, 1.0, 255.0)


def roughness(rgb: np.ndarray, backdrop: np.ndarray) -> float:
    """How textured the surface is: the median relative difference, largest over the colour
    channels, between the border band and the smooth backdrop model."""
    height, width = rgb.shape[:2]
    band = max(1, min(round(BORDER_BAND * min(height, width)), min(height, width) // 4))
    difference = np.abs(rgb / backdrop - 1).max(axis=2)
    border = [
        difference[:band],
        difference[-band:],
        difference[:, :band].T,
        difference[:, -band:].T,
    ]
    return float(np.median(np.concatenate([b.ravel() for b in border])))


def item_mask(rgb: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """Where the item is: pixels whose colour differs from the modelled backdrop (relative
    difference, largest over the three channels, so that a yellow shirt on white counts) by
    more than Otsu's threshold and than `SHADOW_SHARE` of the item's typical difference;
    specks removed, grown `EDGE_DEPTH` into its soft edge, pieces much smaller than the largest
    dropped, holes filled. On a textured surface (`roughness` above `TEXTURED`) the picture is
    blurred first, by `TEXTURE_SIGMA`."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if roughness(rgb, backdrop) > TEXTURED:
        rgb = ndimage.gaussian_filter(rgb.astype(np.float32), (TEXTURE_SIGMA, TEXTURE_SIGMA, 0))
    ratio = rgb / backdrop  # float32, as the backdrop
    difference = np.abs(1 - ratio).max(axis=2)
    distance = ndimage.uniform_filter(difference, 3)  # JPEG blocks and sensor noise
    threshold = max(float(threshold_otsu(distance)), NOISE_LEVEL)
    above = distance[distance > threshold]
    if above.size:
        threshold = max(threshold, SHADOW_SHARE * float(np.percentile(above, 75)))
    mask = ndimage.binary_opening(distance > threshold, iterations=1)
    # The fabric's soft edge is below the threshold: grow the item into pixels that differ from
    # the backdrop at all (by more than the dataset's 5%), a few pixels deep only. This joins a
    # faint strap to its bag. A shadow only darkens the backdrop, keeping its hue: around a
    # coloured item, the growth keeps to pixels with some of the item's colour, and leaves the
    # shadow out; around a grey one, it cannot tell them apart.
    edge = difference > TRIM_TOLERANCE / 255
    hue = ndimage.uniform_filter(ratio.max(axis=2) - ratio.min(axis=2), 3)
    item_hue = float(np.median(hue[mask])) if mask.any() else 0.0
    if item_hue > COLOURED:
        edge &= hue > item_hue / 4
    depth = max(1, round(EDGE_DEPTH * max(mask.shape)))
    mask = ndimage.binary_dilation(mask, iterations=depth, mask=edge)
    labels, count = ndimage.label(mask)
    if count > 1:
        areas = np.bincount(labels.ravel())[1:]
        mask = np.isin(labels, 1 + np.flatnonzero(areas >= PIECE_SHARE * areas.max()))
    return ndimage.binary_fill_holes(mask)


def _lighter_than_backdrop(rgb: np.ndarray, backdrop: np.ndarray, mask: np.ndarray) -> bool:
    """Whether most of the item is lighter than the backdrop behind it (in luminance)."""
    if not mask.any():
        return False
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ratio = (rgb[mask] @ weights) / (backdrop[mask] @ weights)
    return float(np.median(ratio)) > 1.0


def mask_doubt(mask: np.ndarray) -> str | None:
    """Why a mask (`item_mask`, or the ``mask`` step) is probably not the item alone, as the
    end of a sentence ("the mask touches 64% of the picture's edge"), or None if it looks like
    one item. See `DOUBT_EDGE`, `DOUBT_COVER`, `DOUBT_PIECES`."""
    from scipy import ndimage

    mask = np.asarray(mask) > 0
    edge = float(_border(mask).mean())
    if edge > DOUBT_EDGE:
        return f"the mask touches {edge:.0%} of the picture's edge"
    cover = float(mask.mean())
    if cover > DOUBT_COVER:
        return f"the mask covers {cover:.0%} of the picture"
    labels, count = ndimage.label(mask)
    if count > 1:
        areas = np.sort(np.bincount(labels.ravel())[1:])[::-1]
        pieces = int((areas >= DOUBT_PIECES * areas[0]).sum())
        if pieces > 1:
            return f"the mask is in {pieces} pieces"
    return None


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


def fashion_mnist_steps(image: Image.Image, segment: bool = True) -> dict[str, np.ndarray]:
    """Convert any picture of one item the way Fashion-MNIST was made from Zalando's product
    photos, returning every intermediate image (uint8 arrays, in order) for display:

    ``grey``: 8-bit grey levels (of the picture reduced to `WORK_SIZE` at most);
    ``backdrop``: the backdrop modelled from the border (gradient, vignette, tint);
    ``mask``: the item, found by its difference from the backdrop (see `item_mask`);
    ``dark item on light``: the picture divided by its backdrop, which evens out the light,
    with everything outside the mask set to white (a light item on a dark backdrop is negated
    first); ``trimmed``: cropped to the mask; ``resized``: longest edge to 28 pixels;
    ``centred``: on a 28x28 white canvas; ``negated``: a light item on black; ``stretched``:
    background to 0, brightest pixel to 255 (every Fashion-MNIST image spans the full range).
    The last one is what the model sees.

    ``segment=False`` is the dataset's own recipe alone, for plain backdrops: the background is
    the median of the border, and trimming keeps what differs from it by more than 5%.

    A 28x28 image that already has a dark background is taken as a Fashion-MNIST image and
    left as it is. An image in which nothing stands out from the background raises
    `ImageError`.
    """
    rgb = _working_copy(image)
    grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)
    steps = {"grey": grey}
    background = float(np.median(_border(grey)))
    if grey.shape == (SIZE, SIZE) and background < 128:
        steps["as it is"] = grey
        return steps
    if background < 128:
        grey, rgb = 255 - grey, 255 - rgb
        background = 255 - background
    if segment:
        backdrop = backdrop_model(rgb)
        backdrop_rgb = Image.fromarray(np.rint(backdrop).astype(np.uint8))
        steps["backdrop"] = np.asarray(backdrop_rgb.convert("L"))
        mask = item_mask(rgb, backdrop)
        steps["mask"] = mask.astype(np.uint8) * 255
        if _lighter_than_backdrop(rgb, backdrop, mask):
            # A mid-grey surface: the border's brightness did not tell the item's polarity,
            # the item itself does. Turned into a dark item on light, as the dataset's are.
            rgb, backdrop = 255 - rgb, np.clip(np.float32(256) - backdrop, 1.0, 255.0)
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
