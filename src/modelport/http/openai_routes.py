"""The OpenAI door: chat completions (JSON or SSE) and the model list. Thin: decode, call the
inference service, encode."""

from __future__ import annotations

from modelport.http.auth import api_key_from
from modelport.http.exchange import Exchange, collect_whole, query_flag, unless_gone
from modelport.http.state import AppState
from modelport.protocols.openai.decode import decode_chat_request
from modelport.protocols.openai.encode import ChunkEncoder, encode_completion
from modelport.protocols.openai.models import encode_model
from modelport.services.catalog import resolve_model


async def chat_completions(state: AppState, exchange: Exchange) -> None:
    principal = await state.keys.authenticate(api_key_from(exchange))
    chat, options = decode_chat_request(await exchange.body(state.settings.max_request_bytes))
    generation = await unless_gone(
        state.metering.start(principal, chat, incremental=options.stream), exchange.disconnected
    )
    if generation is None:  # the client left while the answer was starting: it was stopped
        return
    completion_id = "chatcmpl-" + generation.request_id
    exclude = chat.reasoning.exclude
    if not options.stream:
        completion = await collect_whole(generation.in_batches(), exchange.disconnected)
        if completion is None:  # the client gave up: the generation was stopped
            return
        body = encode_completion(
            completion,
            completion_id=completion_id,
            created=generation.created,
            exclude_reasoning=exclude,
        )
        await exchange.respond(200, body)
        return
    encoder = ChunkEncoder(
        completion_id=completion_id,
        created=generation.created,
        model=generation.card.id,
        include_usage=options.include_usage,
        exclude_reasoning=exclude,
    )
    await exchange.stream(generation.in_batches(), encoder.encode_batch)


async def list_models(state: AppState, exchange: Exchange) -> None:
    """The models this server can answer; with `?all=true` the whole catalog."""
    body = state.all_models_body if query_flag(exchange, "all") else state.models_body
    await exchange.respond(200, body)


async def get_model(state: AppState, exchange: Exchange, model_id: str) -> None:
    """GET /v1/models/{id}: ids contain a slash (qwen/qwen3-8b), so the id is the whole rest
    of the path."""
    card = resolve_model(state.catalog, model_id)
    await exchange.respond(200, encode_model(card))
