"""Garments drawn from scratch, for chapter 6's test of pictures that never were 28x28 photos.

A drawn garment is a simple silhouette (a T-shirt is a body and two short sleeves) in a random
colour, size, position and rotation, on a light or dark background, sometimes striped or
speckled. `custom_images.generate` writes them beside the product photos.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CANVAS = 256  # drawn garments are drawn on a 256x256 canvas, in units of that canvas


def _shape(class_id: int) -> list[list[tuple[float, float]]]:
    """Polygons of one garment, in [0, 1] coordinates (x right, y down), facing the viewer."""
    if class_id == 0:  # T-shirt/top: body, two short sleeves
        return [
            [(0.3, 0.15), (0.7, 0.15), (0.72, 0.9), (0.28, 0.9)],
            [(0.3, 0.15), (0.12, 0.3), (0.2, 0.42), (0.31, 0.33)],
            [(0.7, 0.15), (0.88, 0.3), (0.8, 0.42), (0.69, 0.33)],
        ]
    if class_id == 1:  # Trouser: waistband and two legs
        return [
            [(0.33, 0.05), (0.67, 0.05), (0.68, 0.2), (0.32, 0.2)],
            [(0.32, 0.18), (0.5, 0.18), (0.48, 0.95), (0.36, 0.95)],
            [(0.5, 0.18), (0.68, 0.18), (0.64, 0.95), (0.52, 0.95)],
        ]
    if class_id == 2:  # Pullover: body, long sleeves hanging down
        return [
            [(0.3, 0.12), (0.7, 0.12), (0.7, 0.88), (0.3, 0.88)],
            [(0.3, 0.12), (0.16, 0.25), (0.1, 0.88), (0.2, 0.88), (0.31, 0.35)],
            [(0.7, 0.12), (0.84, 0.25), (0.9, 0.88), (0.8, 0.88), (0.69, 0.35)],
        ]
    if class_id == 3:  # Dress: fitted top, flared skirt
        return [
            [(0.38, 0.05), (0.62, 0.05), (0.6, 0.4), (0.8, 0.95), (0.2, 0.95), (0.4, 0.4)],
        ]
    if class_id == 4:  # Coat: long body, long sleeves, open front
        return [
            [(0.28, 0.08), (0.72, 0.08), (0.74, 0.95), (0.26, 0.95)],
            [(0.28, 0.08), (0.13, 0.22), (0.08, 0.85), (0.18, 0.85), (0.29, 0.3)],
            [(0.72, 0.08), (0.87, 0.22), (0.92, 0.85), (0.82, 0.85), (0.71, 0.3)],
        ]
    if class_id == 5:  # Sandal: sole and thin straps
        return [
            [(0.05, 0.72), (0.95, 0.66), (0.95, 0.74), (0.05, 0.8)],
            [(0.15, 0.72), (0.3, 0.45), (0.36, 0.47), (0.23, 0.72)],
            [(0.42, 0.7), (0.55, 0.42), (0.61, 0.44), (0.5, 0.7)],
            [(0.68, 0.68), (0.8, 0.46), (0.86, 0.48), (0.76, 0.68)],
        ]
    if class_id == 6:  # Shirt: like a pullover, with a collar
        return [
            [(0.3, 0.12), (0.7, 0.12), (0.7, 0.9), (0.3, 0.9)],
            [(0.3, 0.12), (0.17, 0.24), (0.12, 0.82), (0.21, 0.82), (0.31, 0.33)],
            [(0.7, 0.12), (0.83, 0.24), (0.88, 0.82), (0.79, 0.82), (0.69, 0.33)],
            [(0.4, 0.08), (0.5, 0.2), (0.6, 0.08), (0.55, 0.05), (0.45, 0.05)],
        ]
    if class_id == 7:  # Sneaker: low upper, thick sole
        return [
            [
                (0.05, 0.55),
                (0.45, 0.45),
                (0.6, 0.3),
                (0.75, 0.3),
                (0.95, 0.6),
                (0.95, 0.72),
                (0.05, 0.72),
            ],
            [(0.03, 0.72), (0.97, 0.72), (0.97, 0.8), (0.03, 0.8)],
        ]
    if class_id == 8:  # Bag: body and handle
        return [
            [(0.15, 0.4), (0.85, 0.4), (0.9, 0.9), (0.1, 0.9)],
            [
                (0.3, 0.42),
                (0.33, 0.12),
                (0.67, 0.12),
                (0.7, 0.42),
                (0.63, 0.42),
                (0.6, 0.2),
                (0.4, 0.2),
                (0.37, 0.42),
            ],
        ]
    if class_id == 9:  # Ankle boot: shaft, foot, heel
        return [
            [(0.3, 0.1), (0.58, 0.1), (0.6, 0.5), (0.92, 0.68), (0.92, 0.85), (0.3, 0.85)],
            [(0.3, 0.85), (0.42, 0.85), (0.42, 0.93), (0.3, 0.93)],
        ]
    raise ValueError(f"class_id must be 0-9, not {class_id}")


def random_colour(rng: np.random.Generator, dark: bool) -> tuple[int, int, int]:
    base = rng.uniform(20, 110) if dark else rng.uniform(150, 235)
    return tuple(int(np.clip(base + rng.uniform(-40, 40), 0, 255)) for _ in range(3))


def draw_garment(class_id: int, rng: np.random.Generator) -> Image.Image:
    """One garment of class ``class_id``, drawn with random colour, size, position, rotation,
    background (light most of the time) and texture, as an RGB image."""
    light_background = rng.random() < 0.75
    background = random_colour(rng, dark=not light_background)
    item = random_colour(rng, dark=light_background)
    layer = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(layer)
    scale = rng.uniform(0.55, 0.9) * CANVAS
    x0 = rng.uniform(0, CANVAS - scale)
    y0 = rng.uniform(0, CANVAS - scale)
    for polygon in _shape(class_id):
        draw.polygon([(x0 + x * scale, y0 + y * scale) for x, y in polygon], fill=255)
    mask = layer.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BICUBIC)
    texture = rng.integers(3)
    fill = np.empty((CANVAS, CANVAS, 3), dtype=np.float64)
    fill[:] = item
    if texture == 1:  # stripes
        period = rng.integers(8, 24)
        stripes = (np.arange(CANVAS) // period) % 2 == 0
        fill[stripes] = np.clip(np.asarray(item) * 0.7 + 20, 0, 255)
    elif texture == 2:  # speckles
        fill += rng.normal(0, 18, fill.shape)
    picture = Image.new("RGB", (CANVAS, CANVAS), background)
    picture.paste(Image.fromarray(np.clip(fill, 0, 255).astype(np.uint8)), (0, 0), mask)
    return picture.filter(ImageFilter.GaussianBlur(0.8))
