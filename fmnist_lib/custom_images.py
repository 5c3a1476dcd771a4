"""Custom test images: real test images re-rendered as product photos, written to a folder with
garments drawn from scratch (`drawings`). `create_img.py` writes them to ``generated_images/``;
chapter 6 classifies them.

Product photos start from a Fashion-MNIST test image (a light item on black) and undo what the
dataset did to Zalando's photos: a dark, coloured item on a light background, enlarged,
off-centre, with a little sensor noise, saved as JPEG or PNG. The studio and cluttered styles
add a drop shadow, uneven light and, for cluttered, a textured surface. Everything depends on
one seed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .data import CLASS_NAMES
from .drawings import draw_garment, random_colour


def render_product_photo(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A Fashion-MNIST image (28x28, light item on black) as a product photo: a dark item in a
    random colour on a light background, 6 to 14 times larger, off-centre, with noise."""
    factor = int(rng.integers(6, 15))
    size = 28 * factor
    enlarged = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    amount = np.asarray(enlarged, dtype=np.float64)[..., None] / 255
    background = np.array([rng.uniform(225, 250)] * 3) + rng.uniform(-5, 5, 3)
    item = np.array(random_colour(rng, dark=True), dtype=np.float64)
    item_pixels = background + (item - background) * amount
    width = int(size * rng.uniform(1.3, 2.0))
    height = int(size * rng.uniform(1.2, 1.8))
    photo = np.empty((height, width, 3), dtype=np.float64)
    photo[:] = np.clip(background, 0, 255)
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    photo[top : top + size, left : left + size] = item_pixels
    photo += rng.normal(0, 2.0, photo.shape)
    return Image.fromarray(np.clip(np.rint(photo), 0, 255).astype(np.uint8))


def _fabric(rng: np.random.Generator) -> np.ndarray:
    """A fabric's reflectance (RGB in 0-1): any hue, from pale to deep, never close to white."""
    import colorsys

    hue, saturation, value = rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.12, 0.6)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value))


def _placed_item(
    image: np.ndarray, rng: np.random.Generator, sizes: tuple[int, int], tilt: float
) -> tuple[np.ndarray, int, int]:
    """The item's coverage (0-1) of a Fashion-MNIST image, enlarged and tilted, placed
    off-centre on a larger canvas; also the item's size in pixels."""
    size = 28 * int(rng.integers(*sizes))
    enlarged = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    tilted = enlarged.rotate(rng.uniform(-tilt, tilt), Image.Resampling.BICUBIC, expand=True)
    amount = np.asarray(tilted, dtype=np.float32) / 255
    height, width = (
        int(amount.shape[0] * rng.uniform(1.25, 1.7)),
        int(amount.shape[1] * rng.uniform(1.25, 1.8)),
    )
    coverage = np.zeros((height, width), dtype=np.float32)
    top = int(rng.integers(0, height - amount.shape[0] + 1))
    left = int(rng.integers(0, width - amount.shape[1] + 1))
    coverage[top : top + amount.shape[0], left : left + amount.shape[1]] = amount
    return coverage, size


def _blurred(values: np.ndarray, sigma: float, shift: tuple[float, float] = (0, 0)) -> np.ndarray:
    """``values`` shifted and blurred (Gaussian, ``sigma`` pixels), computed at a quarter of
    the blur's scale and enlarged back: the same soft result, a hundred times faster."""
    from scipy import ndimage

    step = max(1, int(sigma // 4))
    small = values[::step, ::step]
    small = ndimage.shift(small, (shift[0] / step, shift[1] / step), order=1, mode="constant")
    small = ndimage.gaussian_filter(small, sigma / step)
    height, width = values.shape
    enlarged = Image.fromarray(small.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(enlarged, dtype=np.float32)


def _drop_shadow(coverage: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """How much light a soft drop shadow takes from the backdrop (0 = none): the item's
    silhouette blurred and shifted below and to one side, at most a quarter of the light."""
    shift = (size * rng.uniform(0.02, 0.06), size * rng.uniform(-0.06, 0.06))
    shadow = _blurred(coverage, size * rng.uniform(0.02, 0.05), shift)
    return np.float32(rng.uniform(0.1, 0.25) / max(float(shadow.max()), 1e-9)) * shadow


def _lighting(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Studio light on a seamless backdrop: a vertical gradient (grey at one end, full light at
    the other) times a vignette that darkens the corners."""
    height, width = shape
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    top, bottom = rng.uniform(0.72, 0.88), 1.0
    if rng.random() < 0.5:
        top, bottom = bottom, top
    gradient = top + (bottom - top) * y
    radius = x**2 + ((y - 0.5) * 2) ** 2
    return gradient * (1 - np.float32(rng.uniform(0.05, 0.15)) * radius)


def _as_photo(pixels: np.ndarray, rng: np.random.Generator) -> Image.Image:
    pixels += np.float32(1.5) * rng.standard_normal(pixels.shape, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(pixels, out=pixels), 0, 255).astype(np.uint8))


def render_studio_photo(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A Fashion-MNIST image as an online shop's product photo: a coloured item, tilted a few
    degrees, 280 to 980 pixels tall, on a light seamless backdrop that is not uniform (a
    vertical gradient from grey to white, a vignette, a faint tint) with a soft drop shadow."""
    coverage, size = _placed_item(image, rng, (10, 36), tilt=6)
    backdrop = (rng.uniform(0.9, 0.98) - rng.uniform(0, 0.05, 3)).astype(np.float32)
    shadow = _drop_shadow(coverage, size, rng)
    amount = coverage[..., None]
    fabric = _fabric(rng).astype(np.float32)
    reflectance = (1 - amount) * backdrop * (1 - shadow[..., None]) + amount * fabric
    return _as_photo(np.float32(255) * reflectance * _lighting(coverage.shape, rng)[..., None], rng)


SURFACES = ("wood planks", "woven fabric", "knitted fabric", "bedsheet", "tiles", "carpet")


def _texture(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A surface a garment is photographed on (RGB reflectance, 0-1), one of `SURFACES` at
    random, with its name."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = SURFACES[int(rng.integers(len(SURFACES)))]
    base = rng.uniform(0.3, 0.85) * np.array([1.0, rng.uniform(0.7, 1), rng.uniform(0.45, 1)])
    second = None  # a second colour: a print, a yarn, a grout
    if rng.random() < 0.5:  # the plank, the rows or the stitches run across or down
        x, y = y, x
    if kind == "wood planks":  # planks of their own shade, a wavy grain, dark joints
        plank = rng.uniform(40, 110)
        row = (y // plank).astype(int)
        shades = rng.uniform(0.8, 1.1, row.max() + 1)
        warp = _blurred(rng.normal(0, 1, shape).astype(np.float32), 30) * 400
        grain = 0.5 + 0.5 * np.sin((x * 0.05 + y + warp + 37 * row) / rng.uniform(2, 6))
        pattern = shades[row] * (0.8 + 0.35 * grain)
        pattern[(y % plank) < 2] = 0.35
    elif kind == "woven fabric":  # a fine cross-hatch of two yarns
        period = rng.uniform(2.5, 7)
        pattern = 0.75 + 0.25 * np.sin(x / period) * np.sin(y / period)
        second = _near(base, rng, 0.25)
        mix = (np.sin(x / period) > 0)[..., None]
    elif kind == "knitted fabric":  # rows of V-shaped stitches
        period = rng.uniform(5, 12)
        stitch = np.abs((x % period) / period - 0.5)
        pattern = 0.7 + 0.3 * np.abs(np.sin(np.pi * (y / period + stitch)))
    elif kind == "bedsheet":  # soft folds, and a print of dots or stripes
        folds = _blurred(rng.normal(0, 1, shape).astype(np.float32), rng.uniform(25, 60))
        pattern = 0.85 + 0.15 * folds / max(float(np.abs(folds).max()), 1e-6)
        second = _near(base, rng, 0.5)
        spacing = rng.uniform(14, 40)
        if rng.random() < 0.5:
            mix = ((x % spacing) < spacing / 4)[..., None]
        else:
            u, v = (x % spacing) - spacing / 2, (y % spacing) - spacing / 2
            mix = (u * u + v * v < (spacing / 6) ** 2)[..., None]
    elif kind == "tiles":  # squares of slightly different shades, joined by grout
        tile = int(rng.integers(35, 120))
        count = max(height, width) // tile + 1
        shades = rng.uniform(0.85, 1.05, (count, count))
        pattern = shades[(y // tile).astype(int), (x // tile).astype(int)]
        second = np.full(3, rng.choice([0.25, 0.9]))
        mix = ((y % tile < 3) | (x % tile < 3))[..., None]
    else:  # carpet: a dense pile of fibres in two tones
        pile = _blurred(rng.normal(0, 1, shape).astype(np.float32), 1.5)
        pattern = 0.85 + 0.6 * pile
        second = _near(base, rng, 0.12)
        mix = (_blurred(rng.normal(0, 1, shape).astype(np.float32), 4) > 0)[..., None]
    pattern = pattern + rng.normal(0, 0.04, shape).astype(np.float32)
    colour = base if second is None else np.where(mix, second, base)
    return np.clip(colour * pattern[..., None], 0, 1).astype(np.float32), kind


def _near(colour: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    """A colour near ``colour``: each channel moved by up to ``spread`` of the range."""
    return np.clip(colour + rng.uniform(-spread, spread, 3), 0.05, 0.95)


def _uneven_light(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Room light: the studio's gradient and vignette, then light falling off across the
    picture from a window on one side (down to 55% at the far edge)."""
    height, width = shape
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    across = (np.cos(angle) * x + np.sin(angle) * y) / np.float32(np.sqrt(2))  # -1..1
    falloff = 1 - np.float32(rng.uniform(0.1, 0.45)) * (across + 1) / 2
    return _lighting(shape, rng) * falloff


def render_cluttered_photo(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A Fashion-MNIST image photographed where a student would take it: on one of `SURFACES`
    (wood planks, a woven or knitted fabric, a printed bedsheet with folds, tiles, a carpet),
    under uneven room light, with a soft shadow; in a colour close to the surface's one time in
    four, touching the picture's edge one time in five."""
    return cluttered_photo_and_coverage(image, rng)[0]


def cluttered_photo_and_coverage(
    image: np.ndarray, rng: np.random.Generator
) -> tuple[Image.Image, np.ndarray]:
    """`render_cluttered_photo`, and how much of each pixel the item covers (0-1, float32): the
    true mask, which the surface-mask network (`surface_mask`) learns from."""
    coverage, size = _placed_item(image, rng, (8, 24), tilt=10)
    if rng.random() < 0.2:  # pushed against one edge of the frame
        rows, cols = np.nonzero(coverage > 0.05)
        side = int(rng.integers(4))
        shift = [
            -rows.min(),
            -cols.min(),
            coverage.shape[0] - 1 - rows.max(),
            coverage.shape[1] - 1 - cols.max(),
        ][side]
        coverage = np.roll(coverage, shift, axis=side % 2)
    surface, _ = _texture(coverage.shape, rng)
    shadow = _drop_shadow(coverage, size, rng)
    amount = coverage[..., None]
    if rng.random() < 0.25:  # a garment in the surface's own colours, a little darker
        fabric = (surface.mean(axis=(0, 1)) * rng.uniform(0.45, 0.75)).astype(np.float32)
    else:
        fabric = _fabric(rng).astype(np.float32)
    reflectance = (1 - amount) * surface * (1 - shadow[..., None]) + amount * fabric
    light = _uneven_light(coverage.shape, rng)[..., None]
    return _as_photo(np.float32(255) * reflectance * light, rng), coverage


STYLES = {
    "plain": render_product_photo,
    "studio": render_studio_photo,
    "cluttered": render_cluttered_photo,
}


@dataclass(frozen=True)
class CustomImage:
    file: str
    label: int
    class_name: str
    kind: str  # "drawn" or "photo"
    source: int  # the test image a photo was made from; -1 for a drawing
    style: str = ""  # a photo's rendering, one of STYLES; "" for a drawing


LABELS_FILE = "labels.csv"


def encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """A picture as the file bytes `generate` writes: JPEG (quality 90 by default) or PNG."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def generate(
    folder: Path,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    per_class: int = 3,
    photos: int = 60,
    seed: int = 0,
    styles: tuple[str, ...] = ("plain",),
) -> list[CustomImage]:
    """Write ``per_class`` drawings of each class and, for each of ``styles`` (see `STYLES`),
    ``photos`` product photos of test images (an even spread over the test set, the same
    images in every style) into ``folder``, with ``labels.csv``. Plain photos alternate JPEG
    and PNG; studio and cluttered ones are JPEGs of quality 75 to 92, as shops publish them.
    The same arguments give the same files, byte for byte. Files are written under temporary
    names and renamed, so an interrupted run leaves no half-written image."""
    unknown = set(styles) - set(STYLES)
    if unknown:
        raise ValueError(f"unknown style {sorted(unknown)}: choose from {sorted(STYLES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items: list[tuple[CustomImage, bytes]] = []
    for k in range(per_class):
        for class_id, name in enumerate(CLASS_NAMES):
            fmt = "PNG" if (k + class_id) % 2 else "JPEG"
            stem = f"drawn_{class_id}_{k:03d}.{'png' if fmt == 'PNG' else 'jpg'}"
            data = encode(draw_garment(class_id, rng), fmt)
            items.append((CustomImage(stem, class_id, name, "drawn", -1), data))
    picks = np.linspace(0, len(test_images) - 1, num=photos, dtype=int) if photos else []
    for style in styles:
        # The plain style draws from the main generator, so that its files stay those of
        # earlier versions; each other style has its own stream.
        stream = list(STYLES).index(style)
        style_rng = rng if style == "plain" else np.random.default_rng([seed, stream])
        for k, index in enumerate(picks):
            label = int(test_labels[index])
            picture = STYLES[style](test_images[index], style_rng)
            if style == "plain":
                fmt, quality = ("JPEG" if k % 2 == 0 else "PNG"), 90
                stem = f"photo_{int(index):05d}.{'jpg' if fmt == 'JPEG' else 'png'}"
            else:
                fmt, quality = "JPEG", int(style_rng.integers(75, 93))
                stem = f"{style}_{int(index):05d}.jpg"
            item = CustomImage(stem, label, CLASS_NAMES[label], "photo", int(index), style)
            items.append((item, encode(picture, fmt, quality)))
    for item, data in items:
        _write_atomic(folder / item.file, data)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "label", "class_name", "kind", "source", "style"])
    for item, _ in items:
        writer.writerow(
            [item.file, item.label, item.class_name, item.kind, item.source, item.style]
        )
    _write_atomic(folder / LABELS_FILE, text.getvalue().encode())
    return [item for item, _ in items]


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def read_labels(folder: Path) -> list[CustomImage]:
    """The images listed in ``folder/labels.csv``."""
    with open(Path(folder) / LABELS_FILE, newline="") as f:
        return [
            CustomImage(
                row["file"],
                int(row["label"]),
                row["class_name"],
                row["kind"],
                int(row["source"]),
                row.get("style") or ("plain" if row["kind"] == "photo" else ""),
            )
            for row in csv.DictReader(f)
        ]
