"""Small IDX files written by the tests themselves, and where Debian keeps the real ones."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08, magic_prefix: int = 0) -> bytes:
    """Encode ``array`` as IDX: two magic bytes, the type code, the rank, the dimensions."""
    header = struct.pack(">HBB", magic_prefix, dtype_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, payload: bytes) -> Path:
    """Write IDX bytes, gzipped when the name ends in .gz."""
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path
