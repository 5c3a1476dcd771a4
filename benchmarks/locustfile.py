"""The traffic `load.py` sends the REST API, as Locust users (run by `load.py`, or by hand:
``locust -f benchmarks/locustfile.py --host http://127.0.0.1:5001 Healthy``).

`Healthy`: what the course's users send, with a pause between requests: one dataset image as
PNG (most requests), a phone photo as JPEG, a batch of 16 dataset images. `Hostile`: what an
attacker sends, as fast as the server answers: decompression bombs, a palette bomb within the
pixel cap (decoded: the most expensive legal picture), a 7000x7000 palette bomb, bodies over
the size limit, batches of a thousand images, 32 MB of numbers in nested lists, and slow
uploads that send a byte a second. Every answer's status is counted by request name; a
hostile request succeeds when it is refused with the expected status and a sentence.

The request bodies are made once per process, from the dataset's test images (the first
ones: `load.py` checks the answers to them).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from locust import FastHttpUser, between, constant, events, task
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmnist_lib import custom_images, preprocess  # noqa: E402
from fmnist_lib.acquisition import load_test_set  # noqa: E402

STATUSES: dict[str, Counter] = {}
HEADERS = {"Content-Type": "application/json"}


def _split(*cells: bytes) -> bytes:
    rows = [[base64.b64encode(cell).decode()] for cell in cells]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def phone_photo(image: np.ndarray) -> bytes:
    """A product photo of a test image at 3000 pixels wide with sensor noise, as a phone's
    8-megapixel JPEG (about 1.2 MB)."""
    photo = custom_images.render_product_photo(image, np.random.default_rng(0))
    big = photo.resize((3000, round(3000 * photo.height / photo.width)), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(1).normal(0, 4, (big.height, big.width, 3))
    pixels = np.clip(np.asarray(big, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def rgba_bomb(side: int) -> bytes:
    """A transparent RGBA PNG of side x side, 4 bytes a pixel once decoded: the costliest
    picture the caps let through (24 megapixels: 96 MB decoded)."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (side // 3, side // 4, 2 * side // 3, 3 * side // 4))
    return _png(image, optimize=True)


def progressive_jpeg(side: int) -> bytes:
    """A progressive JPEG: libjpeg holds all its coefficients whatever the scale it decodes at."""
    image = Image.new("RGB", (side, side), "white")
    image.paste((0, 0, 0), (side // 3, side // 4, 2 * side // 3, 3 * side // 4))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, progressive=True)
    return buffer.getvalue()


def palette_bomb(side: int) -> bytes:
    """A transparent palette PNG of side x side with a dark square: tens of kilobytes."""
    image = Image.new("P", (side, side), 0)
    image.putpalette([255, 255, 255, 0, 0, 0] * 128)
    image.paste(1, (side // 3, side // 4, 2 * side // 3, 3 * side // 4))
    return _png(image, transparency=0, optimize=True)


@functools.cache
def bodies() -> dict[str, bytes]:
    images = load_test_set(download=False)[0]
    pngs = [preprocess.encode_png(image) for image in images[:16]]
    one = json.dumps(images[0].tolist()).encode()
    count = (32 * 2**20 - 100) // (len(one) + 1)  # just under the body limit
    numbers = b'{"inputs": {"image": [' + b",".join([one] * count) + b"]}}"
    return {
        "png": _split(pngs[0]),
        "phone jpeg": _split(phone_photo(images[0])),
        "batch of 16": _split(*pngs),
        "bomb 15000x15000": _split(_png(Image.new("1", (15000, 15000)))),
        "palette bomb 4900x4900": _split(palette_bomb(4900)),
        "palette bomb 7000x7000": _split(palette_bomb(7000)),
        "RGBA bomb 4900x4900": _split(rgba_bomb(4900)),
        "progressive JPEG 4900x4900": _split(progressive_jpeg(4900)),
        "4 RGBA bombs in one request": _split(*[rgba_bomb(4900)] * 4),
        "body of 40 MB": b'{"dataframe_split": "' + b"A" * (40 * 2**20) + b'"}',
        "1000 images": _split(*[pngs[0]] * 1000),
        "32 MB of numbers": numbers,
    }


@events.request.add_listener
def _count(name, response, exception, **_):
    status = getattr(response, "status_code", None) if response is not None else None
    STATUSES.setdefault(name, Counter())[str(status or type(exception).__name__)] += 1


@events.quitting.add_listener
def _write_statuses(environment, **_):
    path = os.environ.get("FMNIST_LOAD_STATUSES")
    if path:
        Path(path).write_text(json.dumps({k: dict(v) for k, v in STATUSES.items()}))


class _Poster(FastHttpUser):
    abstract = True
    connection_timeout = 10
    network_timeout = 90

    def post(self, name: str, expected: tuple[int, ...]) -> None:
        with self.client.post(
            "/invocations", data=bodies()[name], headers=HEADERS, name=name, catch_response=True
        ) as response:
            if response.status_code not in expected:
                response.failure(f"HTTP {response.status_code}")
            elif response.status_code >= 400 and "message" not in (response.json() or {}):
                response.failure("an error without a sentence")
            else:
                response.success()


class Healthy(_Poster):
    wait_time = between(0.2, 0.6)

    @task(8)
    def png(self):
        self.post("png", (200,))

    @task(1)
    def phone_jpeg(self):
        self.post("phone jpeg", (200,))

    @task(1)
    def batch(self):
        self.post("batch of 16", (200,))


class Hostile(_Poster):
    wait_time = constant(0)

    @task
    def bomb(self):
        self.post("bomb 15000x15000", (400, 503))

    @task
    def palette_bomb(self):  # within the caps: decoded, answered 200
        self.post("palette bomb 4900x4900", (200, 503))

    @task
    def large_palette_bomb(self):
        self.post("palette bomb 7000x7000", (400, 503))

    @task
    def oversized(self):
        self.post("body of 40 MB", (413, 503))

    @task
    def thousand(self):
        self.post("1000 images", (400, 503))

    @task
    def numbers(self):
        self.post("32 MB of numbers", (400, 503))

    @task
    def slow_upload(self):
        """Headers and a few bytes, then a byte a second: answered 408 (or 503 when the
        server is full), never held for ever."""
        host, port = self.host.removeprefix("http://").split(":")
        start = time.perf_counter()
        status, error = None, None
        try:
            with socket.create_connection((host, int(port)), timeout=60) as sock:
                sock.sendall(
                    b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b"\r\nContent-Length: 100000\r\n\r\n{"
                )
                sock.settimeout(1)
                reply = b""
                while time.perf_counter() - start < 60 and b"\r\n" not in reply:
                    try:
                        reply += sock.recv(4096)
                    except TimeoutError:
                        sock.sendall(b" ")
                status = int(reply.split()[1]) if reply else None
        except (OSError, ValueError, IndexError) as err:
            error = err
        if status not in (408, 503) and error is None:
            error = RuntimeError(f"HTTP {status}")
        events.request.fire(
            request_type="POST",
            name="slow upload",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=0,
            response=type("Answer", (), {"status_code": status})(),
            exception=error,
            context={},
        )
