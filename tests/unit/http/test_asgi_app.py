"""The app under any ASGI server: the same routes, answers and errors as under granian's RSGI
(which the end-to-end tests drive), through the ASGI adapter, in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script
from tests.support.asgi import asgi_messages

from modelport.http.app import App
from modelport.services.keys import create_key
from modelport.settings import load_settings
from modelport.store import open_store


class Client:
    def __init__(self, app: App) -> None:
        self.app = app

    async def request(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = [(b"content-type", b"application/json")]
        if key:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        payload = msgspec.json.encode(body) if body is not None else b""
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": b"",
            "headers": headers,
        }
        sent = await asgi_messages(self.app, scope, payload)
        start = sent[0]
        response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        data = b"".join(m.get("body", b"") for m in sent[1:])
        return start["status"], response_headers, data


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Client, str, FakeOpenAIUpstream]]:
    async with FakeOpenAIUpstream() as upstream:
        config = tmp_path / "c.toml"
        config.write_text(
            f'[[models]]\nid = "qwen/qwen3-8b"\n[[models.backends]]\nkind = "openai_compat"\n'
            f'url = "{upstream.base_url}"\n'
        )
        settings = load_settings(
            {
                "MODELPORT_DATA_DIR": str(tmp_path / "data"),
                "MODELPORT_CONFIG": str(config),
                "MODELPORT_MAX_REQUEST_BYTES": "4096",
            }
        )
        store = open_store(settings)
        _record, secret = create_key(store, "t", role="admin")  # postpaid: no balance needed
        store.close()
        app = App(settings)
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        replies: list[dict[str, Any]] = []
        started = asyncio.Event()

        async def lifespan_send(message: dict[str, Any]) -> None:
            replies.append(message)
            started.set()

        await queue.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(app({"type": "lifespan"}, queue.get, lifespan_send))
        await started.wait()
        assert replies[0]["type"] == "lifespan.startup.complete"
        yield Client(app), secret, upstream
        await queue.put({"type": "lifespan.shutdown"})
        await lifespan


@pytest.mark.asyncio
async def test_models_completion_stream_and_errors_over_asgi(
    client: tuple[Client, str, FakeOpenAIUpstream],
) -> None:
    http, key, upstream = client
    status, _, body = await http.request("GET", "/v1/models")
    assert status == 200
    assert "qwen/qwen3-8b" in {m["id"] for m in msgspec.json.decode(body)["data"]}

    upstream.enqueue(Script(text=["Hi", "!"], usage=(3, 2)))
    request = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "hello"}]}
    status, headers, body = await http.request("POST", "/v1/chat/completions", request, key)
    assert status == 200
    assert headers["content-type"] == "application/json"
    answer = msgspec.json.decode(body)
    assert answer["choices"][0]["message"]["content"] == "Hi!"
    assert answer["usage"]["total_tokens"] == 5

    upstream.enqueue(Script(text=["a", "b"], usage=(3, 2)))
    streaming = {**request, "stream": True, "stream_options": {"include_usage": True}}
    status, headers, body = await http.request(
        "POST", "/api/gpt/v1/chat/completions", streaming, key
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert body.endswith(b"data: [DONE]\n\n")
    assert b'"finish_reason":"stop"' in body

    status, _, body = await http.request("POST", "/v1/chat/completions", request)
    assert status == 401
    assert msgspec.json.decode(body)["error"]["type"] == "authentication_error"
    status, _, body = await http.request("POST", "/v1/chat/completions", {"model": 1}, key)
    assert status == 400
    assert msgspec.json.decode(body)["error"]["param"] == "model"
    status, _, _ = await http.request("DELETE", "/v1/models")
    assert status == 405
    too_big = {**request, "messages": [{"role": "user", "content": "x" * 5000}]}
    status, _, body = await http.request("POST", "/v1/chat/completions", too_big, key)
    assert status == 413
    assert msgspec.json.decode(body)["error"]["code"] == "payload_too_large"
