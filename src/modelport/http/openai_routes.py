"""The OpenAI door: chat completions (JSON or SSE) and the model list. Thin: decode, call the
inference service, encode."""

from __future__ import annotations

from modelport.core.collect import collect
from modelport.http.asgi import Request, Send, send_body, send_stream
from modelport.http.state import AppState
from modelport.protocols.openai.decode import decode_chat_request
from modelport.protocols.openai.encode import ChunkEncoder, encode_completion


async def chat_completions(state: AppState, request: Request, send: Send) -> None:
    principal = await state.keys.authenticate(state.api_key(request))
    chat, options = decode_chat_request(await request.body(state.settings.max_request_bytes))
    generation = await state.inference.start(principal, chat, incremental=options.stream)
    completion_id = "chatcmpl-" + generation.request_id
    exclude = chat.reasoning.exclude
    if not options.stream:
        completion = await collect(generation.events)
        body = encode_completion(
            completion,
            completion_id=completion_id,
            created=generation.created,
            exclude_reasoning=exclude,
        )
        await send_body(send, 200, body)
        return
    encoder = ChunkEncoder(
        completion_id=completion_id,
        created=generation.created,
        model=generation.card.id,
        include_usage=options.include_usage,
        exclude_reasoning=exclude,
    )
    await send_stream(send, request.receive, generation.events, encoder.encode)


async def list_models(state: AppState, request: Request, send: Send) -> None:
    await send_body(send, 200, state.models_body)
