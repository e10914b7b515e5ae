"""Checking answers before load is put on a target: one request, fully read and validated, so a
benchmark never measures a server that answers fast but wrong.

Uses the standard library's `http.client` (it decodes chunked bodies); speed does not matter here.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.mock_upstream import TOKEN
from benchmarks.procs import BenchError, Server

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


def request(
    port: int, method: str, path: str, body: bytes | None = None, key: str | None = None
) -> Reply:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.read())
    finally:
        connection.close()


def wait_until_healthy(server: Server, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            reply = request(server.port, "GET", path)
            if reply.status == 200:
                return
            last = f"status {reply.status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BenchError(f"{server.name} was not healthy within {timeout:g}s ({last})")


def _fail(target: str, what: str, reply: Reply) -> BenchError:
    return BenchError(f"{target}: {what}; status {reply.status}, body: {reply.body[:500]!r}")


def _stream_content(target: str, reply: Reply) -> tuple[str, bool]:
    """The concatenated content of an SSE answer, and whether a usage chunk came."""
    pieces: list[str] = []
    usage = False
    payloads = [
        line[6:] for line in reply.body.split(b"\n") if line.startswith(b"data: ") and line[6:]
    ]
    if not payloads or payloads[-1] != b"[DONE]":
        raise _fail(target, "the stream does not end with data: [DONE]", reply)
    for payload in payloads[:-1]:
        chunk: dict[str, Any] = json.loads(payload)
        if chunk.get("usage"):
            usage = True
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason") == "error":
                raise _fail(target, "the stream ended in an error chunk", reply)
            content = (choice.get("delta") or {}).get("content")
            if content:
                pieces.append(content)
    return "".join(pieces), usage


def validate(target: str, port: int, body: bytes, key: str | None, chunks: int) -> int:
    """Send one request as the load will; check status, content and usage. Returns the body size."""
    reply = request(port, "POST", CHAT_PATH, body, key)
    if reply.status != 200:
        raise _fail(target, "expected status 200", reply)
    expected = TOKEN * chunks
    if json.loads(body).get("stream") is True:
        content, usage = _stream_content(target, reply)
    else:
        try:
            completion = json.loads(reply.body)
            content = completion["choices"][0]["message"]["content"]
            usage = bool(completion.get("usage"))
        except (ValueError, KeyError, IndexError, TypeError):
            raise _fail(target, "not a chat.completion", reply) from None
    if content != expected:
        raise _fail(target, f"content {content!r} is not the mock's {expected!r}", reply)
    if not usage:
        raise _fail(target, "no usage in the answer", reply)
    return len(reply.body)
