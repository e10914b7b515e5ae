"""The website's routes: pages (`web/site.py`) and their two static files, with ETags (a
browser's revalidation gets a 304 without a body). No key is needed."""

from __future__ import annotations

from modelport.core.errors import NotFound, clip
from modelport.http.exchange import Exchange
from modelport.http.state import AppState
from modelport.web.site import HTML, Page

PAGES = ("/", "/models", "/get-apikey")
MODEL_PAGES = "/models/"
STATIC = "/static/"


async def page(state: AppState, exchange: Exchange) -> None:
    """Home, the catalog, a model page (`/models/{id}`, ids contain a slash) or the key page
    (which sends a logged-in visitor on to the console's keys)."""
    if exchange.path == "/get-apikey":
        from modelport.http.console_routes import current_session

        if await current_session(state, exchange) is not None:
            headers = (("location", "/console/keys"), ("cache-control", "no-store"))
            await exchange.respond(303, b"", HTML, headers)
            return
    found = await state.site.page(
        exchange.path,
        query=exchange.query,
        cookie=exchange.header("cookie"),
        accept_language=exchange.header("accept-language"),
        host=exchange.header("host"),
    )
    assert found is not None, exchange.path
    await _send(exchange, found, HTML, (("cache-control", "no-cache"),))


async def static(state: AppState, exchange: Exchange) -> None:
    """A file under /static/ (404 when there is none of that name)."""
    name = exchange.path[len(STATIC) :]
    found = state.site.static(name)
    if found is None:
        raise NotFound(f"No such file: /static/{clip(name, 100)}.")
    content_type = dict(found.headers)["content-type"]
    headers = tuple(h for h in found.headers if h[0] != "content-type")
    await _send(exchange, Page(found.body, found.etag), content_type, headers)


async def _send(
    exchange: Exchange,
    found: Page,
    content_type: str,
    extra: tuple[tuple[str, str], ...],
) -> None:
    headers = [("etag", found.etag), *extra, *found.headers]
    if found.status == 200 and _matches(exchange.header("if-none-match"), found.etag):
        await exchange.respond(304, b"", content_type, headers)
        return
    body = b"" if exchange.method == "HEAD" else found.body
    await exchange.respond(found.status, body, content_type, headers)


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return header.strip() == "*" or etag in (
        tag.strip().removeprefix("W/") for tag in header.split(",")
    )
