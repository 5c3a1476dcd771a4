"""The REST API's limits: an ASGI middleware in front of MLflow's scoring app, so that what a
request (or many at once) can make a server hold is bounded before any of it is parsed.

- A body over `MAX_BODY` is refused with 413, by its ``Content-Length`` before it is read or by
  the bytes that actually arrive (a chunked upload says no length).
- A body of over `MAX_VALUES` JSON values (numbers, mostly) is refused with 413 before MLflow
  parses it: the model refuses more than 256 images anyway.
- Only JSON is read (MLflow would also parse CSV and Parquet, whose compressed columns expand
  without bound), it must parse, and in the ``inputs`` and ``instances`` formats its text must
  not make a NumPy array over `MAX_TEXT_ARRAY` (see `checked`): 415, 400 or 413 otherwise.
- A body that takes over `BODY_SECONDS` to arrive (a slow upload holding a place) gets 408.
- At most `MAX_ACTIVE` requests are answered at once per worker process, `MAX_WAITING` more
  wait, and their bodies together hold at most `MAX_BUFFERED` bytes: beyond, 503 with a
  ``Retry-After`` at once, rather than a queue that grows with the traffic.
- Every error answer is MLflow's JSON shape (``error_code``, ``message``) without a
  ``stack_trace`` or the request echoed back: a client needs the sentence, not the server's
  code or its own data.

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
# Bodies arriving at once: half of uvicorn's connections, so that slow uploads (each held
# `BODY_SECONDS` at most) cannot take every place; per-client limits belong to a reverse proxy.
MAX_READING = 128
# An error answer longer than this is MLflow echoing a request back: a sentence is sent instead.
MAX_ERROR = 64 * 2**10
# How deep `checked` looks for text in a body (Python's own parser stops at ~1000 levels).
MAX_DEPTH = 64
# The NumPy array of text MLflow makes from the 'inputs' and 'instances' formats.
MAX_TEXT_ARRAY = 256 * 2**20
MAX_ACTIVE = 4  # MLflow predicts in asyncio's thread pool: cores + 4 threads
MAX_WAITING = 28  # a keep-alive client sends its next request as the last one's ends
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
        self.reading = 0  # requests whose body is arriving
        self.admitted = 0  # requests waiting or being answered
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
        # Reading a body costs only its bytes, not a place in the queue: slow uploads cannot
        # keep the others out, up to `MAX_READING` of them.
        if self.reading >= MAX_READING:
            return await busy()(send)
        self.reading += 1
        body = _Body(self)
        try:
            try:
                refusal = await asyncio.wait_for(body.read(receive), BODY_SECONDS)
            except asyncio.TimeoutError:
                refusal = too_slow()
            finally:
                self.reading -= 1
            if refusal is not None:
                if body.size > MAX_BODY and not body.ended:
                    await _drain(receive)
                return await refusal(send)
            if body.disconnected:
                return
            data = b"".join(body.chunks)
            body.chunks.clear()
            if self.admitted >= MAX_ACTIVE + MAX_WAITING:
                return await busy()(send)
            self.admitted += 1
            try:
                async with self.slots:
                    refusal = await asyncio.to_thread(
                        checked, data, _header(scope, b"content-type")
                    )
                    if refusal is not None:
                        return await refusal(send)
                    await self.app(scope, _replay(data, receive), _without_stack_trace(send))
            finally:
                self.admitted -= 1
        finally:
            self.buffered -= body.size


def checked(body: bytes, content_type: bytes | None):
    """The refusal for a body MLflow must not parse, or None: only JSON (MLflow would also
    read CSV and Parquet, whose compressed columns expand without bound), at most
    `MAX_VALUES` values, no deeper than `MAX_DEPTH`, and in the ``inputs`` and ``instances``
    formats, whose lists MLflow makes NumPy arrays, no strings whose array would be larger
    than `MAX_TEXT_ARRAY` bytes (NumPy gives every string the longest one's width, 4 bytes a
    character)."""
    kind = (content_type or b"").split(b";")[0].strip().lower()
    if kind != b"application/json":
        return _answer(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "The API reads JSON: send Content-Type: application/json (the README shows a request).",
        )
    if body.count(b",") > MAX_VALUES:
        return too_many_values()
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        where = f" (at character {err.pos})" if isinstance(err, json.JSONDecodeError) else ""
        return _answer(400, "MALFORMED_REQUEST", f"The body is not valid JSON{where}.")
    if isinstance(request, dict):
        for key in ("inputs", "instances"):
            if key in request:
                count, longest = _strings(request[key])
                if count * longest * 4 > MAX_TEXT_ARRAY:
                    return _answer(
                        413,
                        "REQUEST_TOO_LARGE",
                        f"In the {key!r} format, images as text are made one array whose every "
                        "cell is as wide as the longest: send image files in the "
                        "'dataframe_split' format (the README shows a request).",
                    )
    return None


def _strings(value, depth: int = 0) -> tuple[int, int]:
    """How many strings ``value`` holds, and the longest one's length."""
    if isinstance(value, str):
        return 1, len(value)
    items = value.values() if isinstance(value, dict) else value
    if not isinstance(items, (list, type({}.values()))) or depth > MAX_DEPTH:
        return 0, 0
    count = longest = 0
    for item in items:
        n, length = _strings(item, depth + 1)
        count, longest = count + n, max(longest, length)
    return count, longest


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
    """``send`` with every error answer made one JSON sentence (see `_cleaned`)."""
    start = None
    parts: list[bytes] = []
    size = 0

    async def sending(message):
        nonlocal start, size
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message  # held until the whole body is known (MLflow streams it)
            return
        if start is None or message["type"] != "http.response.body":
            return await send(message)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_ERROR:
            parts.append(chunk)
        else:
            parts.clear()  # MLflow's echo of a whole request: not sent back
        if message.get("more_body", False):
            return
        body = _cleaned(b"".join(parts), start["status"], size > MAX_ERROR)
        parts.clear()
        headers = [
            (k, v) for k, v in start["headers"] if k not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({**start, "headers": headers})
        start = None
        await send({"type": "http.response.body", "body": body})

    return sending


def _cleaned(body: bytes, status: int, too_long: bool) -> bytes:
    """An error answer as MLflow's JSON (``error_code``, ``message``): no ``stack_trace``,
    the model's sentence without the request's data echoed before it (`_echo`), a plain-text
    or FastAPI answer made a ``message``."""
    try:
        answer = None if too_long else json.loads(body)
    except ValueError:
        answer = body.decode("utf-8", "replace").strip()
    if not isinstance(answer, dict):
        message = answer if isinstance(answer, str) and answer else None
        answer = {"error_code": "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"}
        answer["message"] = message or (
            "The request could not be answered." if status < 500 else "The server failed."
        )
    answer.pop("stack_trace", None)
    if "message" not in answer and isinstance(answer.get("detail"), str):  # FastAPI's 404, 405
        answer["message"] = answer.pop("detail")
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
