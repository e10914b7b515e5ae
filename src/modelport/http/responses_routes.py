"""The Responses API door (`/v1/responses`, also under /api/gpt/v1): decode, the same metering
and inference as the other doors, encode (protocols/openai/responses.py).

A response is stored (`store`, OpenAI's default: true) with the conversation it continued and
its input items, for the account whose key made it, for `MODELPORT_RESPONSES_RETENTION_DAYS`:
`previous_response_id` continues it, `GET /v1/responses/{id}` returns it,
`GET /v1/responses/{id}/input_items` lists its input, `DELETE` removes it. Another account's
id is a 404, as is an expired one. Expired responses are purged at most once an hour."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from modelport.core.errors import NotFound, clip
from modelport.http.auth import api_key_from
from modelport.http.exchange import Exchange, collect_whole, unless_gone
from modelport.http.state import AppState
from modelport.protocols.openai.responses import (
    ResponseStreamEncoder,
    decode_responses_request,
    encode_response,
    output_as_messages,
    read_request,
)
from modelport.store.base import StoredResponse

PURGE_EVERY_S = 3600.0
_purged_at: dict[int, float] = {}


async def create(state: AppState, exchange: Exchange) -> None:
    principal = await state.keys.authenticate(api_key_from(exchange))
    raw = read_request(await exchange.body(state.settings.max_request_bytes))
    history: list[dict[str, Any]] | None = None
    previous = raw.get("previous_response_id")
    if previous is not None:
        stored = await _stored(state, previous, principal.account_id)
        history = [
            *json.loads(stored.conversation),
            *output_as_messages(json.loads(stored.response)),
        ]
    chat, options, conversation = decode_responses_request(raw, history, await _seal_key(state))
    generation = await unless_gone(
        state.metering.start(principal, chat, incremental=options.stream), exchange.disconnected
    )
    if generation is None:  # the client left while the answer was starting: it was stopped
        return
    response_id = "resp_" + generation.request_id
    if not options.stream:
        completion = await collect_whole(generation.in_batches(), exchange.disconnected)
        if completion is None:  # the client gave up: the generation was stopped
            return
        body = encode_response(
            completion, response_id=response_id, created=generation.created, options=options
        )
        if options.store:
            await _store(state, principal.account_id, response_id, conversation, raw, body)
        await exchange.respond(200, body)
        return
    encoder = ResponseStreamEncoder(
        response_id=response_id, created=generation.created, options=options
    )
    await exchange.stream(generation.in_batches(), encoder.encode_batch)
    if options.store and encoder.final is not None:
        final = json.dumps(encoder.final).encode()
        await _store(state, principal.account_id, response_id, conversation, raw, final)


SEAL_KEY = "responses_seal_key"
_seal_keys: dict[int, bytes] = {}


async def _seal_key(state: AppState) -> bytes:
    """The server's secret for sealed reasoning: made once, kept in the database, so that
    every worker and replica opens what another sealed."""
    key = _seal_keys.get(id(state))
    if key is None:
        store = state.store
        await asyncio.to_thread(store.set_meta, SEAL_KEY, secrets.token_hex(32), replace=False)
        stored = await asyncio.to_thread(store.get_meta, SEAL_KEY)
        assert stored is not None
        key = _seal_keys[id(state)] = bytes.fromhex(stored)
    return key


async def _stored(state: AppState, response_id: str, account_id: int) -> StoredResponse:
    found = await asyncio.to_thread(
        state.store.get_response, response_id, account_id, datetime.now(UTC)
    )
    if found is None:
        raise NotFound(
            f"No response with id {clip(response_id, 80)!r}.", param="previous_response_id"
        )
    return found


async def _store(
    state: AppState,
    account_id: int,
    response_id: str,
    conversation: list[dict[str, Any]],
    raw: dict[str, Any],
    body: bytes,
) -> None:
    now = datetime.now(UTC)
    items = raw.get("input")
    if isinstance(items, str):
        items = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}
        ]
    record = StoredResponse(
        id=response_id,
        account_id=account_id,
        conversation=json.dumps(conversation),
        input_items=json.dumps(items),
        response=body.decode(),
        created_at=now,
        expires_at=now + timedelta(days=state.settings.responses_retention_days),
    )
    await asyncio.to_thread(state.store.save_response, record)
    last = _purged_at.get(id(state), 0.0)
    if time.monotonic() - last > PURGE_EVERY_S:
        _purged_at[id(state)] = time.monotonic()
        await asyncio.to_thread(state.store.purge_responses, now)


async def by_id(state: AppState, exchange: Exchange, tail: str) -> None:
    """`GET|DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`."""
    principal = await state.keys.authenticate(api_key_from(exchange))
    response_id, _, rest = tail.partition("/")
    if exchange.method == "DELETE" and not rest:
        deleted = await asyncio.to_thread(
            state.store.delete_response, response_id, principal.account_id
        )
        if not deleted:
            raise NotFound(f"No response with id {clip(response_id, 80)!r}.")
        body = {"id": response_id, "object": "response.deleted", "deleted": True}
        await exchange.respond(200, json.dumps(body).encode())
        return
    found = await _stored(state, response_id, principal.account_id)
    if rest == "input_items":
        items = json.loads(found.input_items)
        listing = {
            "object": "list",
            "data": items,
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }
        await exchange.respond(200, json.dumps(listing).encode())
        return
    if rest:
        raise NotFound(f"No route for {exchange.method} {exchange.path}.")
    await exchange.respond(200, found.response.encode())
