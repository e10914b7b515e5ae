"""A stream leaves in as few writes as the upstream's reads: a 50-chunk answer that arrives
in one read goes to the client in a handful of writes (not one per chunk), with every chunk
intact and in order, on both doors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from tests.fakes.burst_upstream import BurstUpstream, sse_stream
from tests.support.asgi import asgi_messages

from modelport.http.app import App
from modelport.services.keys import create_key
from modelport.settings import load_settings
from modelport.store import open_store

TEXTS = [f"w{i} " for i in range(50)]


class Gateway:
    def __init__(self, app: App, key: str) -> None:
        self.app = app
        self.key = key

    async def writes(self, path: str, body: Any) -> list[bytes]:
        """The bodies of the response's ASGI messages, one per write."""
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {self.key}".encode()),
            ],
        }
        sent = await asgi_messages(self.app, scope, msgspec.json.encode(body))
        assert sent[0]["status"] == 200
        return [m["body"] for m in sent[1:] if m.get("body")]


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, BurstUpstream]]:
    async with BurstUpstream() as upstream:
        config = tmp_path / "c.toml"
        config.write_text(
            '[[models]]\nid = "test/burst"\nname = "Burst"\ndescription = "d"\n'
            "context_length = 32768\n"
            'pricing = { input_per_1k = "0.001", output_per_1k = "0.002" }\n'
            f'[[models.backends]]\nkind = "openai_compat"\nurl = "{upstream.base_url}"\n'
        )
        settings = load_settings(
            {"MODELPORT_DATA_DIR": str(tmp_path / "data"), "MODELPORT_CONFIG": str(config)}
        )
        store = open_store(settings)
        _record, secret = create_key(store, "t", role="admin")
        store.close()
        app = App(settings)
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        started = asyncio.Event()

        async def lifespan_send(message: dict[str, Any]) -> None:
            started.set()

        await queue.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(app({"type": "lifespan"}, queue.get, lifespan_send))
        await started.wait()
        yield Gateway(app, secret), upstream
        await queue.put({"type": "lifespan.shutdown"})
        await lifespan


def _data(writes: list[bytes]) -> list[Any]:
    lines = b"".join(writes).split(b"\n\n")
    return [
        line[6:] if line[6:] == b"[DONE]" else msgspec.json.decode(line[6:])
        for block in lines
        for line in block.split(b"\n")
        if line.startswith(b"data: ")
    ]


@pytest.mark.asyncio
async def test_a_stream_read_in_one_piece_leaves_in_a_few_writes(
    gateway: tuple[Gateway, BurstUpstream],
) -> None:
    app, upstream = gateway
    upstream.events = sse_stream(TEXTS, usage=(5, 100))
    request = {
        "model": "test/burst",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    writes = await app.writes("/v1/chat/completions", request)
    # The role chunk at once, then the one read: the text, the usage and the finish.
    assert len(writes) == 2
    chunks = _data(writes)
    assert chunks[-1] == b"[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"])
    assert text == "".join(TEXTS)
    assert chunks[-2]["usage"]["completion_tokens"] == 100


@pytest.mark.asyncio
async def test_the_anthropic_door_writes_a_read_at_once_too(
    gateway: tuple[Gateway, BurstUpstream],
) -> None:
    app, upstream = gateway
    upstream.events = sse_stream(TEXTS, usage=(5, 100))
    request = {
        "model": "test/burst",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    writes = await app.writes("/v1/messages", request)
    assert len(writes) == 2
    events = _data(writes)
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == "".join(TEXTS)
    assert events[-1]["type"] == "message_stop"


@pytest.mark.asyncio
async def test_a_paced_stream_still_sends_each_piece_as_it_comes(
    gateway: tuple[Gateway, BurstUpstream],
) -> None:
    app, upstream = gateway
    upstream.events = sse_stream(TEXTS[:4])
    upstream.pause = 0.03
    request = {
        "model": "test/burst",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    writes = await app.writes("/v1/chat/completions", request)
    assert len(writes) >= 5  # the role chunk, then each text as it arrived, then the end
    text = "".join(
        c["choices"][0]["delta"].get("content", "") for c in _data(writes)[:-1] if c["choices"]
    )
    assert text == "".join(TEXTS[:4])
