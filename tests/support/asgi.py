"""One request through an ASGI app in-process: the body delivered at once, then a client that
stays until the response is complete."""

from __future__ import annotations

import asyncio
from typing import Any

from modelport.http.app import App


async def asgi_messages(app: App, scope: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """The messages the app sent for one request (`http.response.start` first)."""
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    done.set()
    return sent
