"""The Responses API door (`POST /v1/responses`, also under /api/gpt/v1): decode, the same
metering and inference as the other doors, encode (protocols/openai/responses.py)."""

from __future__ import annotations

from modelport.http.auth import api_key_from
from modelport.http.exchange import Exchange, collect_whole
from modelport.http.state import AppState
from modelport.protocols.openai.responses import (
    ResponseStreamEncoder,
    decode_responses_request,
    encode_response,
)


async def create(state: AppState, exchange: Exchange) -> None:
    principal = await state.keys.authenticate(api_key_from(exchange))
    chat, options = decode_responses_request(await exchange.body(state.settings.max_request_bytes))
    generation = await state.metering.start(principal, chat, incremental=options.stream)
    response_id = "resp_" + generation.request_id
    if not options.stream:
        completion = await collect_whole(generation.in_batches(), exchange.disconnected)
        if completion is None:  # the client gave up: the generation was stopped
            return
        body = encode_response(
            completion, response_id=response_id, created=generation.created, options=options
        )
        await exchange.respond(200, body)
        return
    encoder = ResponseStreamEncoder(
        response_id=response_id, created=generation.created, options=options
    )
    await exchange.stream(generation.in_batches(), encoder.encode_batch)
