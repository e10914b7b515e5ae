"""The Anthropic door: Messages (JSON or SSE), count_tokens, and the model list in Anthropic's
shape. Thin, like the OpenAI door: decode, call the same inference service, encode.

A stream's `message_start` carries the prompt's size: the local engine's count, or for an
upstream (which reports it only at the end) the count the metering stage made at admission.

Claude clients name Claude models: Claude Code sends `claude-…` ids unless ANTHROPIC_MODEL is
set. Such an id is served by the model the operator names in `MODELPORT_CLAUDE_MODEL`, or
answered with a 404 that says what to set. `max_tokens` above the model's output limit is
clamped to it (Claude Code asks for up to 128000), not refused.
"""

from __future__ import annotations

import msgspec

from modelport.core.catalog import ModelCard
from modelport.core.errors import ModelNotFound, clip
from modelport.core.types import ChatRequest
from modelport.http.auth import api_key_from
from modelport.http.exchange import Exchange, collect_whole, query_flag, unless_gone
from modelport.http.state import AppState
from modelport.protocols.anthropic.decode import (
    decode_count_tokens_request,
    decode_messages_request,
)
from modelport.protocols.anthropic.encode import MessageStreamEncoder, encode_message
from modelport.protocols.anthropic.models import encode_model
from modelport.services.catalog import resolve_model


async def messages(state: AppState, exchange: Exchange) -> None:
    principal = await state.keys.authenticate(api_key_from(exchange))
    chat, options = decode_messages_request(await exchange.body(state.settings.max_request_bytes))
    chat = _for_served_model(state, chat)
    generation = await unless_gone(
        state.metering.start(principal, chat, incremental=options.stream), exchange.disconnected
    )
    if generation is None:  # the client left while the answer was starting: it was stopped
        return
    message_id = "msg_" + generation.request_id
    stops = chat.sampling.stop
    exclude = chat.reasoning.exclude
    if not options.stream:
        completion = await collect_whole(generation.in_batches(), exchange.disconnected)
        if completion is None:  # the client gave up: the generation was stopped
            return
        body = encode_message(
            completion, message_id=message_id, stop_sequences=stops, exclude_reasoning=exclude
        )
        await exchange.respond(200, body)
        return
    # The local engine's exact count, or the one the metering stage made at admission (an
    # upstream reports the prompt's size only at the end).
    input_tokens = generation.prompt_tokens or 0
    encoder = MessageStreamEncoder(
        message_id=message_id,
        model=generation.card.id,
        input_tokens=input_tokens,
        stop_sequences=stops,
        exclude_reasoning=exclude,
    )
    await exchange.stream(generation.in_batches(), encoder.encode_batch)


async def count_tokens(state: AppState, exchange: Exchange) -> None:
    await state.keys.authenticate(api_key_from(exchange))
    chat = decode_count_tokens_request(await exchange.body(state.settings.max_request_bytes))
    chat = _for_served_model(state, chat)
    counted = await state.inference.count_tokens(chat)
    await exchange.respond(200, msgspec.json.encode({"input_tokens": counted}))


async def list_models(state: AppState, exchange: Exchange) -> None:
    """The models this server can answer; with `?all=true` the whole catalog."""
    all_models = query_flag(exchange, "all")
    body = state.all_anthropic_models_body if all_models else state.anthropic_models_body
    await exchange.respond(200, body)


async def get_model(state: AppState, exchange: Exchange, model_id: str) -> None:
    await exchange.respond(200, encode_model(_served_card(state, model_id)))


def _served_card(state: AppState, model_id: str) -> ModelCard:
    """The card for `model_id`, a Claude id standing for the operator's chosen model."""
    try:
        return resolve_model(state.catalog, model_id)
    except ModelNotFound:
        if not model_id.startswith("claude"):
            raise
        if state.settings.claude_model:
            return resolve_model(state.catalog, state.settings.claude_model)
        served = ", ".join(card.id for card in state.catalog.models if card.configured)
        raise ModelNotFound(
            f"The model '{clip(model_id)}' is a Claude model, which this server does not serve. "
            f"Name one of its models instead (Claude Code: set ANTHROPIC_MODEL and "
            f"ANTHROPIC_SMALL_FAST_MODEL): {served}. An operator can also serve Claude ids "
            f"with a model of their choice by setting MODELPORT_CLAUDE_MODEL.",
            param="model",
        ) from None


def _for_served_model(state: AppState, chat: ChatRequest) -> ChatRequest:
    """`chat` for the card that serves it, with max_tokens clamped to the card's limit."""
    card = _served_card(state, chat.model)
    limit = card.max_output_tokens or card.context_length
    requested = chat.max_output_tokens
    clamped = requested if requested is None or requested <= limit else limit
    if card.id == chat.model and clamped == requested:
        return chat
    return msgspec.structs.replace(chat, model=card.id, max_output_tokens=clamped)
