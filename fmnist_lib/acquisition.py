"""Get the Fashion-MNIST files: find them, download them if none is found, verify and parse them.

The four IDX files are looked for, in order, in ``$FMNIST_DATA_DIR``, the project's ``data/``
cache, ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``) and
``~/.keras/datasets/fashion-mnist``; if none holds all four, they are downloaded into
``$FMNIST_DATA_DIR`` (or ``data/``). Every file is checked against the SHA-256 of its
decompressed payload, so a recompressed copy (Debian's) passes and a corrupt one does not.

Run ``python -m fmnist_lib.data`` to see where the data comes from and check it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import socket
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import DATA_CACHE

IMAGE_SHAPE = (28, 28)  # of every image the files hold
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_DIR = Path.home() / ".keras" / "datasets" / "fashion-mnist"
# The dataset's own mirror first, then the copy Keras downloads from. FMNIST_MIRROR (a base
# URL, or several separated by commas) replaces both, e.g. for a local server.
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)


class DatasetError(RuntimeError):
    """The dataset cannot be found, downloaded or read. The message says which file and why."""


@dataclass(frozen=True)
class IdxFile:
    """One of the four files: its name, the rank of its array and its published checksum."""

    key: str
    filename: str
    ndim: int
    sha256: str

    @property
    def kind(self) -> str:
        return "image" if self.ndim == 3 else "label"


IDX_FILES = (
    IdxFile(
        "train-images",
        "train-images-idx3-ubyte.gz",
        3,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    IdxFile(
        "train-labels",
        "train-labels-idx1-ubyte.gz",
        1,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    IdxFile(
        "test-images",
        "t10k-images-idx3-ubyte.gz",
        3,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    IdxFile(
        "test-labels",
        "t10k-labels-idx1-ubyte.gz",
        1,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
)
_IDX_DTYPES = {0x08: np.uint8}  # the only type Fashion-MNIST uses


# --- Reading and checking one file -------------------------------------------------------------


def read_payload(path: Path) -> bytes:
    """The bytes of an IDX file, decompressed when its name ends in .gz."""
    path = Path(path)
    compressed = path.name.endswith(".gz")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror}).") from err
    return gunzip(raw, path) if compressed else raw


def gunzip(raw: bytes, source: str | Path) -> bytes:
    """Decompress gzip bytes; ``source`` names them in the error if they are not gzip."""
    if raw[:2] != b"\x1f\x8b":
        raise DatasetError(f"{source}: is not a gzip file, though its name ends in .gz.")
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise DatasetError(f"{source}: the gzip data is truncated or corrupt ({err}).") from err


def parse_idx(payload: bytes, source: str | Path, ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes into an array, checking the header against the payload.

    ``source`` names the file in error messages; ``ndim`` (1 for labels, 3 for images) is the
    rank the caller expects, so that a label file under an image file's name is caught.
    """
    if len(payload) < 4:
        raise DatasetError(f"{source}: too short to be an IDX file ({len(payload)} bytes).")
    zero, dtype_code, rank = struct.unpack(">HBB", payload[:4])
    if zero != 0:
        raise DatasetError(
            f"{source}: not an IDX file (magic number 0x{payload[:4].hex()} should start "
            "with two zero bytes)."
        )
    if dtype_code not in _IDX_DTYPES:
        raise DatasetError(
            f"{source}: IDX data type 0x{dtype_code:02x} is not unsigned bytes (0x08), "
            "which Fashion-MNIST uses."
        )
    if ndim is not None and rank != ndim:
        expected = "an image file (3 dimensions)" if ndim == 3 else "a label file (1 dimension)"
        found = {1: "a label file", 3: "an image file"}.get(rank, "an IDX file")
        raise DatasetError(
            f"{source}: expected {expected}, found {found} with {rank} dimension(s); "
            "is the file misnamed?"
        )
    header_size = 4 + 4 * rank
    if len(payload) < header_size:
        raise DatasetError(f"{source}: the header is truncated ({len(payload)} bytes).")
    shape = struct.unpack(f">{rank}I", payload[4:header_size])
    expected_size = int(np.prod(shape, dtype=np.int64))
    actual_size = len(payload) - header_size
    if actual_size != expected_size:
        what = "truncated" if actual_size < expected_size else "longer than its header says"
        raise DatasetError(
            f"{source}: {what}: the header announces shape {shape} ({expected_size} bytes of "
            f"data) but the file holds {actual_size}."
        )
    if rank == 3 and shape[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{source}: images are {shape[1]}x{shape[2]}, not 28x28.")
    dtype = _IDX_DTYPES[dtype_code]
    return np.frombuffer(payload, dtype=dtype, offset=header_size).reshape(shape)


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def read_idx_file(path: Path, spec: IdxFile) -> np.ndarray:
    """Read, parse and checksum one of the four files; raise `DatasetError` on any fault."""
    payload = read_payload(path)
    array = parse_idx(payload, path, ndim=spec.ndim)
    digest = sha256_hex(payload)
    if digest != spec.sha256:
        raise DatasetError(
            f"{path}: the content does not match the published {spec.filename} "
            f"(SHA-256 of the decompressed data is {digest[:16]}..., expected "
            f"{spec.sha256[:16]}...). The file is corrupt or not Fashion-MNIST: delete it "
            "and run `python -m fmnist_lib.data` to fetch a fresh copy."
        )
    return array


# --- Finding the files -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSource:
    """Where the four files were found: a directory, a description, and each file's path
    (in the order of `IDX_FILES`)."""

    directory: Path
    description: str
    paths: tuple[Path, ...]

    def path(self, key: str) -> Path:
        """The path of the file ``key`` (``train-images``, ``test-labels``, ...)."""
        return self.paths[[spec.key for spec in IDX_FILES].index(key)]

    def __str__(self) -> str:
        return f"{self.description} ({self.directory})"


def _file_in(directory: Path, spec: IdxFile) -> Path | None:
    """The file for ``spec`` in ``directory``, gzipped or not, if it is there."""
    for name in (spec.filename, spec.filename.removesuffix(".gz")):
        if (directory / name).is_file():
            return directory / name
    return None


def candidate_dirs() -> list[tuple[Path, str]]:
    """The directories searched, in order, each with a description for the user."""
    dirs = []
    env_dir = os.environ.get("FMNIST_DATA_DIR")
    if env_dir:
        dirs.append((Path(env_dir).expanduser(), "FMNIST_DATA_DIR"))
    dirs += [
        (DATA_CACHE, "the project's data/ cache"),
        (DEBIAN_DIR, "Debian package dataset-fashion-mnist"),
        (KERAS_DIR, "the Keras download cache"),
    ]
    return dirs


def download_dir() -> Path:
    """Where missing files are downloaded: ``$FMNIST_DATA_DIR`` if set, else ``data/``."""
    env_dir = os.environ.get("FMNIST_DATA_DIR")
    return Path(env_dir).expanduser() if env_dir else DATA_CACHE


def find_data(download: bool = True) -> DataSource:
    """Locate the four files (see the module docstring); download them if allowed and needed."""
    for directory, description in candidate_dirs():
        paths = tuple(_file_in(directory, spec) for spec in IDX_FILES)
        if all(paths):
            return DataSource(directory, description, paths)
    target = download_dir()
    if not download:
        searched = ", ".join(str(d) for d, _ in candidate_dirs())
        raise DatasetError(f"Fashion-MNIST was not found in any of: {searched}.")
    paths = tuple(_file_in(target, spec) or download_file(spec, target) for spec in IDX_FILES)
    return DataSource(target, "downloaded", paths)


# --- Downloading -------------------------------------------------------------------------------


def mirrors() -> list[str]:
    """Base URLs to download from: ``$FMNIST_MIRROR`` (comma-separated) or the defaults."""
    env = os.environ.get("FMNIST_MIRROR")
    if env:
        return [url.strip() for url in env.split(",") if url.strip()]
    return list(MIRRORS)


def _progress(name: str, done: int, total: int) -> None:
    if total:
        bar = "#" * (30 * done // total)
        line = f"\r{name}  [{bar:<30}] {done / 1e6:5.1f}/{total / 1e6:.1f} MB"
    else:
        line = f"\r{name}  {done / 1e6:5.1f} MB"
    print(line, end="", file=sys.stderr, flush=True)


def _why(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = getattr(err, "reason", err)
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError, socket.timeout)):
        return f"{reason} (are you offline?)"
    return str(reason)


def download_file(spec: IdxFile, target: Path, progress: bool = True) -> Path:
    """Download ``spec`` into ``target`` atomically and return its path.

    The bytes go to a temporary file in ``target``, are verified (gzip, IDX header, checksum),
    and only then renamed to the final name: an interrupted or bad download leaves nothing
    behind under the final name.
    """
    target.mkdir(parents=True, exist_ok=True)
    final = target / spec.filename
    failures = []
    for base in mirrors():
        url = base.rstrip("/") + "/" + spec.filename
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=target)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        _progress(spec.filename, done, total)
            if progress:
                print(file=sys.stderr)
            if total and done != total:
                raise DatasetError(f"{url}: received {done} of {total} bytes.")
            payload = gunzip(tmp.read_bytes(), url)
            parse_idx(payload, url, ndim=spec.ndim)
            if sha256_hex(payload) != spec.sha256:
                raise DatasetError(f"{url}: the downloaded file fails its checksum.")
            os.replace(tmp, final)
            return final
        except (OSError, http.client.HTTPException, DatasetError) as err:
            failures.append(f"  {url}: {_why(err)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(
        f"Could not download {spec.filename}:\n"
        + "\n".join(failures)
        + "\nWithout internet, install the Debian package dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or copy the four .gz files into "
        f"{target} (or point FMNIST_DATA_DIR at them)."
    )


# --- The dataset -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RawFashionMNIST:
    """The two files as published: 60,000 training and 10,000 test images, in file order.

    Images are uint8 arrays of shape (n, 28, 28), labels uint8 arrays of shape (n,).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: DataSource


@lru_cache(maxsize=4)
def _load_raw_from(source: DataSource) -> RawFashionMNIST:
    # Each file's checksum pins its content, so counts and labels need no further check.
    arrays = {spec.key: read_idx_file(source.path(spec.key), spec) for spec in IDX_FILES}
    return RawFashionMNIST(
        arrays["train-images"],
        arrays["train-labels"],
        arrays["test-images"],
        arrays["test-labels"],
        source,
    )


def load_raw(download: bool = True) -> RawFashionMNIST:
    """The verified files in their published order, read once per process and source."""
    return _load_raw_from(find_data(download=download))


def load_test_set(download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Only the 10,000 test images and labels, verified: a fifth of the reading `load_raw`
    does, for the app's gallery."""
    source = find_data(download=download)
    specs = {spec.key: spec for spec in IDX_FILES}
    return tuple(
        read_idx_file(source.path(key), specs[key]) for key in ("test-images", "test-labels")
    )
