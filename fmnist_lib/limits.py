"""The REST API's limits: an ASGI middleware in front of MLflow's scoring app, so that what a
request (or many at once) can make a server hold is bounded before any of it is parsed.

- A body over `MAX_BODY` is refused with 413, by its ``Content-Length`` before it is read or by
  the bytes that actually arrive (a chunked upload says no length).
- A body of over `MAX_VALUES` JSON values (numbers, mostly) is refused with 413 before MLflow
  parses it: the model refuses more than 256 images anyway.
- A body that takes over `BODY_SECONDS` to arrive (a slow upload holding a place) gets 408.
- At most `MAX_ACTIVE` requests are answered at once per worker process, `MAX_WAITING` more
  wait, and their bodies together hold at most `MAX_BUFFERED` bytes: beyond, 503 with a
  ``Retry-After`` at once, rather than a queue that grows with the traffic.
- Error answers keep MLflow's JSON shape (``error_code``, ``message``) without a
  ``stack_trace``: a client needs the sentence, not the server's code.

What one image may cost is bounded in `preprocess` (its pixels, decoded at the size the
conversion uses) and `serving` (images and pixels per request): those apply wherever the model
is served, `mlflow models serve` included; these limits apply to `./course api`.
"""

from __future__ import annotations

import asyncio
import json

MAX_BODY = 32 * 2**20  # a few phone photos, base64-encoded
BODY_SECONDS = 30.0
# A body over the limit is still read (and dropped) for this long before the 413, unless the
# client asked first ("Expect: 100-continue"): a client that is still sending when the server
# closes gets a broken pipe, not the answer.
DRAIN_SECONDS = 10.0
# JSON values (counted by their commas) in a body: 256 arrays of 28x28 numbers and room to
# spare. MLflow parses a body into Python objects and deep-copies them: 32 MB of small numbers
# would take 18 s and 400 MB before the model could refuse them.
MAX_VALUES = 300_000
MAX_ACTIVE = 4  # MLflow predicts in asyncio's thread pool: cores + 4 threads
MAX_WAITING = 12
MAX_BUFFERED = 128 * 2**20
# uvicorn's own guard on open connections per worker (it answers "Service Unavailable"): far
# above what the gate lets through, it only stops a flood of idle connections.
MAX_CONNECTIONS = 256


def _answer(status: int, code: str, message: str, retry: bool = False):
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry:
        headers.append((b"retry-after", b"1"))
    # The rest of an unread body is not waited for: the connection closes after this answer.
    headers.append((b"connection", b"close"))

    async def app(send):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def too_large(size: int | None = None) -> object:
    what = f"The request is {size / 2**20:.0f} MB" if size else "The request is too large"
    return _answer(
        413,
        "REQUEST_TOO_LARGE",
        f"{what}; at most {MAX_BODY // 2**20} MB is accepted: send fewer or smaller images "
        "(a JPEG of a few megapixels is enough, the model sees 28x28 pixels).",
    )


def too_many_values() -> object:
    return _answer(
        413,
        "REQUEST_TOO_LARGE",
        f"The request holds over {MAX_VALUES:,} values: 256 images of 28x28 numbers fit in "
        "one; send the others in more requests, or send image files.",
    )


def busy() -> object:
    return _answer(
        503,
        "SERVER_BUSY",
        "The server is answering as many requests as it can: try again in a second.",
        retry=True,
    )


def too_slow() -> object:
    return _answer(
        408,
        "REQUEST_TIMEOUT",
        f"The request's body did not arrive within {BODY_SECONDS:.0f} seconds.",
    )


class Limits:
    """The ASGI middleware (see the module's docstring)."""

    def __init__(self, app):
        self.app = app
        self.admitted = 0  # requests reading their body, waiting or being answered
        self.buffered = 0  # bytes of bodies held
        self.slots = asyncio.Semaphore(MAX_ACTIVE)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _content_length(scope)
        if length is not None and length > MAX_BODY:
            if not _header(scope, b"expect"):
                await _drain(receive)
            return await too_large(length)(send)
        if scope["method"] in ("GET", "HEAD"):  # /ping, /health, /version: always answered
            return await self.app(scope, receive, _without_stack_trace(send))
        if self.admitted >= MAX_ACTIVE + MAX_WAITING:
            return await busy()(send)
        self.admitted += 1
        reading = _Body(self)
        try:
            try:
                refusal = await asyncio.wait_for(reading.read(receive), BODY_SECONDS)
            except asyncio.TimeoutError:
                refusal = too_slow()
            if refusal is not None:
                if reading.size > MAX_BODY and not reading.ended:
                    await _drain(receive)
                return await refusal(send)
            if reading.disconnected:
                return
            body = b"".join(reading.chunks)
            reading.chunks.clear()
            if body.count(b",") > MAX_VALUES:
                return await too_many_values()(send)
            async with self.slots:
                await self.app(scope, _replay(body, receive), _without_stack_trace(send))
        finally:
            self.admitted -= 1
            self.buffered -= reading.size


class _Body:
    """A request's body as it arrives, counted against its limit and the worker's."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.chunks: list[bytes] = []
        self.size = 0
        self.disconnected = False
        self.ended = False

    async def read(self, receive):
        """None once the body is read whole, else the refusal to answer with."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                return None
            chunk = message.get("body", b"")
            self.ended = not message.get("more_body", False)
            self.size += len(chunk)
            self.limits.buffered += len(chunk)
            if self.size > MAX_BODY:
                return too_large()
            if self.limits.buffered > MAX_BUFFERED:
                return busy()
            self.chunks.append(chunk)
            if self.ended:
                return None


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _content_length(scope) -> int | None:
    try:
        return int(_header(scope, b"content-length"))
    except (TypeError, ValueError):
        return None


async def _drain(receive) -> None:
    """Read and drop the rest of a body, for `DRAIN_SECONDS` at most."""

    async def drop():
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(drop(), DRAIN_SECONDS)
    except asyncio.TimeoutError:
        pass


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # a disconnect, later

    return replayed


def _without_stack_trace(send):
    """``send`` with MLflow's JSON error answers cleaned: no ``stack_trace``, and the model's
    sentence without the request's data before it (see `_echo`)."""
    start = None
    parts: list[bytes] = []

    async def sending(message):
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message  # held until the whole body is known (MLflow streams it)
            return
        if start is None or message["type"] != "http.response.body":
            return await send(message)
        parts.append(message.get("body", b""))
        if message.get("more_body", False) and sum(map(len, parts)) < 2**20:
            return
        body = b"".join(parts)
        parts.clear()
        if not message.get("more_body", False):
            body = _cleaned(body)
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            start = {**start, "headers": [*headers, (b"content-length", b"%d" % len(body))]}
        await send(start)
        start = None
        await send({**message, "body": body})

    return sending


def _cleaned(body: bytes) -> bytes:
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if not isinstance(answer, dict):
        return body
    answer.pop("stack_trace", None)
    answer["message"] = _echo(answer) or answer.get("message")
    return json.dumps(answer).encode()


def _echo(answer: dict) -> str | None:
    """The model's own sentence from an answer where MLflow 3.17 put the request's data
    before it ("Failed to predict data '<the table>'. Error: <sentence>"), or None."""
    message = answer.get("message")
    if isinstance(message, str) and message.startswith("Failed to predict data '"):
        head, separator, sentence = message.rpartition("\nError: ")
        return sentence if separator else None
    return None


def __getattr__(name: str):
    # The app uvicorn imports by name ("fmnist_lib.limits:app", so that each worker process
    # builds its own): MLflow's scoring app, for the model `_compat.serve_model_at` named.
    if name == "app":
        from mlflow.pyfunc.scoring_server.app import app as scoring

        from .processes import give_back_freed_memory

        give_back_freed_memory()
        return Limits(scoring)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
