"""Log lines: one JSON object per line whatever the message holds, the request id of the
request they were written for, and the access line's fields."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest

from modelport.core.trace import CURRENT, Trace, valid_request_id
from modelport.http.logs import AccessLog, JsonFormatter, TextFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("modelport.test", logging.WARNING, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_json_line_is_one_object_however_hostile_the_message() -> None:
    hostile = 'quote " newline \n {"level":"error"} \x00 \u2028 é'
    line = JsonFormatter().format(record("got %s", hostile, fields={"backend": hostile}))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "got " + hostile and parsed["backend"] == hostile
    assert parsed["level"] == "warning" and parsed["logger"] == "modelport.test"
    assert "request_id" not in parsed  # written outside any request


def test_lines_written_during_a_request_carry_its_id() -> None:
    token = CURRENT.set(Trace("req-42"))
    try:
        parsed = json.loads(JsonFormatter().format(record("inside")))
        text = TextFormatter().format(record("inside", fields={"backend": "b1"}))
    finally:
        CURRENT.reset(token)
    assert parsed["request_id"] == "req-42"
    assert text.endswith("modelport.test: inside backend=b1 [req-42]")


def test_an_exception_stays_inside_the_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    parsed = json.loads(JsonFormatter().format(made))
    assert "ValueError: boom" in parsed["exc"]


def test_the_access_line_carries_what_the_request_did() -> None:
    written: list[bytes] = []
    access = AccessLog("json", write=written.append)
    trace = Trace("abc", door="openai")
    trace.model, trace.backend, trace.account_id, trace.key_id = "m", "b", 3, 7
    trace.prompt_tokens, trace.completion_tokens, trace.cost_nano = 10, 5, 1234
    trace.fail("upstream_error", 502)
    access.log(trace, "POST", "/v1/chat/completions", 200, 0.25, "10.0.0.1")  # no loop: at once
    (data,) = written
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    line = json.loads(data)
    assert line["msg"] == "POST /v1/chat/completions 200" and line["request_id"] == "abc"
    assert (line["logger"], line["level"]) == ("modelport.access", "info")
    assert line["status"] == 200 and line["error_status"] == 502
    assert line["error_kind"] == "upstream_error" and line["latency_ms"] == 250.0
    assert (line["model"], line["backend"], line["account_id"], line["key_id"]) == ("m", "b", 3, 7)
    assert "reasoning_tokens" not in line  # unknown values are left out
    assert line["ts"][10] == "T" and line["ts"].endswith("+00:00")

    text = AccessLog("text", write=written.append)
    text.log(trace, "GET", "/v1/models", 404, 0.001, "::1")
    assert (
        written[-1].decode().rstrip().endswith("error_kind=upstream_error error_status=502 [abc]")
    )
    assert " INFO modelport.access: GET /v1/models 404 " in written[-1].decode()


def test_a_key_in_the_path_is_not_written_to_the_access_log() -> None:
    written: list[bytes] = []
    access = AccessLog("json", write=written.append)
    ours = "sk-mp-" + "Ab3" * 16 + "x"
    theirs = "sk-ant-api03-" + "Z9_-" * 10
    for path in (f"/v1/{ours}/chat", f"/v1/models?key={theirs}", f"/{ours[:-1]}%0a"):
        access.log(Trace("r"), "GET", path, 404, 0.001, "::1")
    lines = b"".join(written).decode()
    assert ours[:20] not in lines and theirs[14:] not in lines
    assert '"path":"/v1/sk-mp-Ab3A…/chat"' in lines  # enough of it to tell which key
    # paths without a key are left as they are
    access.log(Trace("r"), "GET", "/v1/models/task-abcdefghijklmnopqrst", 404, 0.001, "::1")
    assert '"path":"/v1/models/task-abcdefghijklmnopqrst"' in written[-1].decode()


@pytest.mark.asyncio
async def test_access_lines_are_gathered_into_one_write() -> None:
    written: list[bytes] = []
    access = AccessLog("json", write=written.append, linger=0.01)
    for number in range(5):
        access.log(Trace(f"r{number}"), "GET", "/", 200, 0.0, "127.0.0.1")
    assert written == []
    await asyncio.sleep(0.05)
    assert len(written) == 1
    assert [json.loads(line)["request_id"] for line in written[0].splitlines()] == [
        f"r{number}" for number in range(5)
    ]
    big = AccessLog("json", write=written.append, limit=200)
    big.log(Trace("x" * 300), "GET", "/", 200, 0.0, "127.0.0.1")  # over the limit: at once
    assert len(written) == 2


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("abc-123_x.y:z", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("-starts-with-dash", False),
        ("two words", False),
        ("line\nbreak", False),
        ("é", False),
        (None, False),
    ],
)
def test_which_incoming_request_ids_are_kept(value: str | None, valid: bool) -> None:
    assert valid_request_id(value) is valid
