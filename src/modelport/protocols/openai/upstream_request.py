"""Building an upstream's request body: a canonical `ChatRequest` -> the JSON body for
POST /chat/completions on an OpenAI-compatible server. Pure: no I/O.

The body always asks for a stream that ends with a usage chunk; what differs between kinds of
upstream (reasoning field, chat_template_kwargs, extra sampling keys) is read from the dialect's
row in `dialects.py`. Imports only core and msgspec.
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelport.core.types import (
    ChatRequest,
)
from modelport.protocols.openai.dialects import DialectRules
from modelport.protocols.openai.messages import openai_messages, openai_tool


def build_request_body(
    request: ChatRequest,
    *,
    model: str,
    rules: DialectRules,
    context_length: int | None = None,
    stream: bool = True,
    thinking_budget: int | None = None,
    enable_thinking: bool | None = None,
) -> dict[str, Any]:
    """The JSON body for POST /chat/completions. A stream always asks for a usage chunk; a
    whole answer (`stream=False`, for clients that read only the whole) carries usage anyway.

    Only fields the request sets are sent (an explicit 0 is set); `extensions` fill in keys the
    gateway did not set itself and never override them. `thinking_budget` goes where the
    dialect's engine reads one. `enable_thinking` is the switch of a hybrid model (None for
    models without one, or when the request leaves it to the template): it becomes
    `chat_template_kwargs.enable_thinking`, and off becomes the "/no_think" soft switch on
    dialects that drop the kwargs.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": openai_messages(request.messages, reasoning_field=rules.reasoning_field),
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.tools:
        body["tools"] = [openai_tool(tool) for tool in request.tools]
        choice = request.tool_choice
        if choice.mode == "named":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = choice.mode
        body["parallel_tool_calls"] = request.parallel_tool_calls
    _sampling(request, rules, body)
    if request.max_output_tokens is not None:
        limit = request.max_output_tokens
        body["max_tokens"] = min(limit, context_length) if context_length else limit
    response_format = _response_format(request)
    if response_format is not None:
        body["response_format"] = response_format
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs is not None:
            body["top_logprobs"] = request.top_logprobs
    reasoning = request.reasoning
    if reasoning.effort is not None:
        effort = rules.efforts.get(reasoning.effort, reasoning.effort)
        if effort is not None:
            body["reasoning_effort"] = effort
    if request.verbosity is not None:
        body["verbosity"] = request.verbosity
    if rules.chat_template_kwargs:
        template_kwargs = dict(request.chat_template_kwargs or {})
        if rules.thinking_switch and enable_thinking is not None:
            template_kwargs.setdefault("enable_thinking", enable_thinking)
        if template_kwargs:
            body["chat_template_kwargs"] = template_kwargs
    if thinking_budget is not None and rules.budget_path:
        *parents, last = rules.budget_path
        target = body
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = thinking_budget
    if enable_thinking is False and rules.soft_switch:
        _append_to_last_user_message(body["messages"], " /no_think")
    for key, value in request.extensions.items():
        body.setdefault(key, value)
    return body


def build_completion_body(
    request: ChatRequest,
    *,
    model: str,
    rules: DialectRules,
    prompt: str,
    max_tokens: int | None,
    stream: bool = True,
) -> dict[str, Any]:
    """The JSON body for POST /completions with a raw `prompt` (the second pass of Qwen's
    thinking budget): the request's sampling, stop strings and response format, and
    `max_tokens` when there is a limit. Logprobs are not asked for (the text completions
    format for them differs, and the pass's tokens would not line up with the answer)."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    _sampling(request, rules, body)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    response_format = _response_format(request)
    if response_format is not None:
        body["response_format"] = response_format
    for key, value in request.extensions.items():
        body.setdefault(key, value)
    return body


def _append_to_last_user_message(messages: list[dict[str, Any]], suffix: str) -> None:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = [*content, {"type": "text", "text": suffix.lstrip()}]
        else:
            message["content"] = (content or "") + suffix
        return


def _response_format(request: ChatRequest) -> dict[str, Any] | None:
    response_format = request.response_format
    if response_format.type == "json_object":
        return {"type": "json_object"}
    if response_format.type == "json_schema":
        schema: dict[str, Any] = {"name": response_format.name or "response"}
        if response_format.schema is not None:
            schema["schema"] = response_format.schema
        schema["strict"] = response_format.strict
        return {"type": "json_schema", "json_schema": schema}
    return None


def encode_request_body(body: dict[str, Any]) -> bytes:
    return msgspec.json.encode(body)


def _sampling(request: ChatRequest, rules: DialectRules, body: dict[str, Any]) -> None:
    sampling = request.sampling
    if sampling.temperature is not None:
        body["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        body["top_p"] = sampling.top_p
    if sampling.frequency_penalty is not None:
        body["frequency_penalty"] = sampling.frequency_penalty
    if sampling.presence_penalty is not None:
        body["presence_penalty"] = sampling.presence_penalty
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    for name, wire_name in rules.sampling_names.items():
        value = getattr(sampling, name)
        if value is not None:
            body[wire_name] = value
    if sampling.logit_bias:
        # JSON object keys are strings; the OpenAI API documents token ids as string keys.
        body["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias.items()}
    if sampling.stop:
        body["stop"] = list(sampling.stop)
