"""Broken and hostile image files, made on the fly, for the preprocessing and API tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bomb(side: int) -> bytes:
    """A real side x side PNG of one bit per pixel: a huge image in a few kilobytes."""
    return encode(Image.new("1", (side, side)), "PNG")


def png_header(width: int, height: int) -> bytes:
    """A PNG that announces width x height and holds no pixels at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def truncated(fmt: str) -> bytes:
    """The first two thirds of a 200x200 noise image: cut off mid-transfer."""
    noise = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    return data[: len(data) * 2 // 3]
