"""The API's limits (`fmnist_lib.limits`) in front of an ASGI app that holds each request until
told to answer: which requests get through, which are refused, and with what sentence. The
real server behind the same middleware is tested in tests/test_api.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from fmnist_lib import limits


class Held:
    """An app that reads the whole body, then answers once ``release`` is set."""

    def __init__(self, status: int = 200, answer: bytes = b"{}"):
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0
        self.status, self.answer = status, answer

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.running += 1
        self.most = max(self.most, self.running)
        await self.release.wait()
        self.running -= 1
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        # Streamed in two parts, as MLflow's scoring app does through its middleware.
        await send({"type": "http.response.body", "body": self.answer, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def text(size: int) -> bytes:
    """A JSON string of ``size`` bytes in all."""
    return b'"' + b"x" * (size - 2) + b'"'


async def call(app, body: bytes = b"{}", chunks: int = 1, length: bool = True, pause=None):
    """One POST through ``app``: its status and decoded JSON answer."""
    headers = [(b"content-type", b"application/json")]
    headers += [(b"content-length", str(len(body)).encode())] if length else []
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    size = -(-len(body) // chunks) or 1
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent = []

    async def receive():
        if messages:
            if pause is not None and len(messages) == 1:
                await pause.wait()
            return messages.pop(0)
        await asyncio.Event().wait()  # no disconnect during the test

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(data), dict(start["headers"])


def test_a_body_over_the_limit_is_refused_by_its_length_or_by_what_arrives():
    async def scenario():
        app = limits.Limits(Held())
        big = text(limits.MAX_BODY + 1)
        for length in (True, False):  # announced, or a chunked upload that says nothing
            status, answer, _ = await call(app, big, chunks=40, length=length)
            assert status == 413 and answer["error_code"] == "REQUEST_TOO_LARGE"
            assert f"at most {limits.MAX_BODY // 2**20} MB" in answer["message"]
        assert app.admitted == 0 and app.buffered == 0

    asyncio.run(scenario())


def test_beyond_the_active_and_waiting_requests_the_answer_is_503_at_once():
    async def scenario():
        inner = Held()
        app = limits.Limits(inner)
        room = limits.MAX_ACTIVE + limits.MAX_WAITING
        held = [asyncio.create_task(call(app)) for _ in range(room)]
        await asyncio.sleep(0.05)
        assert inner.running == limits.MAX_ACTIVE  # the others wait their turn
        status, answer, headers = await call(app)
        assert status == 503 and "try again" in answer["message"]
        assert headers[b"retry-after"] == b"1"
        inner.release.set()
        assert [status for status, *_ in await asyncio.gather(*held)] == [200] * room
        assert inner.most == limits.MAX_ACTIVE
        assert (await call(app))[0] == 200  # and the room is back
        assert app.admitted == 0 and app.buffered == 0

    asyncio.run(scenario())


def test_bodies_held_together_are_bounded(monkeypatch):
    monkeypatch.setattr(limits, "MAX_BUFFERED", 3 * 2**20)

    async def scenario():
        inner = Held()
        app = limits.Limits(inner)
        one_mb = text(2**20)
        held = [asyncio.create_task(call(app, one_mb)) for _ in range(3)]
        await asyncio.sleep(0.05)
        status, answer, _ = await call(app, one_mb)
        assert status == 503 and answer["error_code"] == "SERVER_BUSY"
        inner.release.set()
        await asyncio.gather(*held)
        assert app.buffered == 0

    asyncio.run(scenario())


def test_a_slow_upload_gets_408_and_gives_its_place_back(monkeypatch):
    monkeypatch.setattr(limits, "BODY_SECONDS", 0.2)

    async def scenario():
        app = limits.Limits(Held())
        never = asyncio.Event()
        status, answer, _ = await call(app, text(1000), chunks=2, pause=never)
        assert status == 408 and "did not arrive within" in answer["message"]
        assert app.admitted == 0 and app.buffered == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "mlflow_answer",
    [
        {"error_code": "BAD_REQUEST", "message": "Encountered an error", "stack_trace": "File"},
        {
            "error_code": "INVALID_PARAMETER_VALUE",
            "message": "Failed to predict data '   image\n0  iVB...'. \nError: The file is empty.",
        },
    ],
)
def test_error_answers_lose_the_stack_trace_and_the_echoed_data(mlflow_answer):
    async def scenario():
        inner = Held(400, json.dumps(mlflow_answer).encode())
        inner.release.set()
        status, answer, headers = await call(limits.Limits(inner))
        assert status == 400 and "stack_trace" not in answer
        assert not answer["message"].startswith("Failed to predict data")
        assert answer["message"] in ("Encountered an error", "The file is empty.")
        assert int(headers[b"content-length"]) == len(json.dumps(answer).encode())

    asyncio.run(scenario())


def test_a_body_of_too_many_values_is_refused_before_it_is_parsed():
    async def scenario():
        inner = Held()
        inner.release.set()
        app = limits.Limits(inner)
        numbers = b"[" + b"0," * (limits.MAX_VALUES + 1) + b"0]"
        status, answer, _ = await call(app, numbers)
        assert status == 413 and "values" in answer["message"] and inner.most == 0
        status, _, _ = await call(app, b"[" + b"0," * 1000 + b"0]")
        assert status == 200 and inner.most == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [
        (b"text/csv", b"image\nAAAA\n", 415, "The API reads JSON"),
        (b"application/vnd.apache.parquet", b"PAR1", 415, "The API reads JSON"),
        (b"application/json", b'{"inputs": [', 400, "not valid JSON"),
        (b"application/json", b"\xff\xfe{}", 400, "not valid JSON"),
        (b"application/json", b"[" * 100_000, 400, "not valid JSON"),
        (
            b"application/json",
            json.dumps({"instances": [{"image": "A" * 2**20}] + [{"image": ""}] * 100}).encode(),
            413,
            "'dataframe_split' format",
        ),
    ],
)
def test_bodies_mlflow_must_not_parse_are_refused(content_type, body, status, words):
    refusal = limits.checked(body, content_type)
    assert refusal is not None

    async def scenario():
        sent = []

        async def send(message):
            sent.append(message)

        await refusal(send)
        answer = json.loads(sent[1]["body"])
        assert sent[0]["status"] == status and words in answer["message"]

    asyncio.run(scenario())


def test_image_files_in_any_format_pass_the_check():
    png = "iVBORw0KGgo" * 1000
    for body in (
        {"dataframe_split": {"columns": ["image"], "data": [[png]] * 64}},
        {"inputs": {"image": [png] * 8}},
        {"inputs": {"image": [[[0] * 28] * 28] * 256}},
    ):
        assert limits.checked(json.dumps(body).encode(), b"application/json; charset=utf-8") is None


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (b"Request processing time exceeded limit", 504, "Request processing time exceeded limit"),
        (b'{"detail": "Not Found"}', 404, "Not Found"),
        (
            b'{"error_code": "X", "message": "' + b"data " * 20_000 + b'"}',
            400,
            "The request could not",
        ),
    ],
)
def test_every_error_answer_is_one_json_sentence(answer, status, message):
    async def scenario():
        inner = Held(status, answer)
        inner.release.set()
        got, body, headers = await call(limits.Limits(inner))
        assert got == status and body["message"].startswith(message)
        assert headers[b"content-type"] == b"application/json"
        assert int(headers[b"content-length"]) < limits.MAX_ERROR

    asyncio.run(scenario())
