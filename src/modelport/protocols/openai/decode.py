"""OpenAI request body -> canonical `ChatRequest` (plus the door's own stream options)."""

from __future__ import annotations

from typing import Any

import msgspec

from modelport.core.errors import InvalidRequest, clip
from modelport.core.ids import tool_call_id
from modelport.core.types import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningPart,
    ResponseFormat,
    Sampling,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from modelport.protocols.openai import wire
from modelport.protocols.validation import INT32_MAX, decode_json_object, invalid_from_msgspec

MAX_TOKEN_ID = INT32_MAX  # engines keep token ids in 32-bit ints


class StreamSettings(msgspec.Struct, frozen=True):
    stream: bool
    include_usage: bool


def decode_chat_request(body: bytes) -> tuple[ChatRequest, StreamSettings]:
    """Validate an OpenAI chat completions body; raise InvalidRequest naming the field."""
    raw = decode_json_object(body, wire.ChatCompletionRequest)
    try:
        parsed = msgspec.convert(raw, wire.ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        raise invalid_from_msgspec(exc) from None
    extensions = {key: value for key, value in raw.items() if key not in wire.KNOWN_FIELDS}
    request = to_canonical(parsed, extensions)
    include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
    return request, StreamSettings(stream=bool(parsed.stream), include_usage=include_usage)


def _text_of(content: str | list[wire.ContentPart] | None, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, wire.TextContent):
            raise InvalidRequest(
                "Only text content parts are allowed here.", param=f"{where}.content[{index}]"
            )
        texts.append(part.text)
    return "".join(texts)


def _content_parts(content: str | list[wire.ContentPart] | None) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for part in content:
        if isinstance(part, wire.TextContent):
            parts.append(TextPart(part.text))
        else:
            parts.append(ImagePart(url=part.image_url.url, detail=part.image_url.detail))
    return parts


def _arguments(function: wire.FunctionCall) -> str:
    if isinstance(function.arguments, str):
        return function.arguments
    return msgspec.json.encode(function.arguments).decode()


def _message(message: wire.WireMessage, index: int) -> Message:
    where = f"messages[{index}]"
    if message.role in ("system", "developer"):
        return Message("system", (TextPart(_text_of(message.content, where)),), message.name)
    if message.role == "user":
        return Message("user", tuple(_content_parts(message.content)), message.name)
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest(
                "A tool message needs the tool_call_id it answers.", param=f"{where}.tool_call_id"
            )
        text = _text_of(message.content, where)
        return Message("tool", (ToolResultPart(message.tool_call_id, text),), message.name)
    parts: list[Part] = []
    reasoning = message.reasoning_content or message.reasoning
    if reasoning:
        parts.append(ReasoningPart(reasoning))
    parts.extend(_content_parts(message.content))
    for call in message.tool_calls or ():
        parts.append(
            ToolCallPart(
                id=call.id or tool_call_id(),
                name=call.function.name,
                arguments=_arguments(call.function),
            )
        )
    return Message("assistant", tuple(parts), message.name)


def _tool_choice(parsed: wire.ChatCompletionRequest, tool_names: set[str]) -> ToolChoice:
    choice = parsed.tool_choice
    if choice is None:
        return ToolChoice("auto")
    if isinstance(choice, wire.NamedToolChoice):
        if choice.function.name not in tool_names:
            raise InvalidRequest(
                f"tool_choice names the function {clip(choice.function.name)!r}, which is not "
                "in tools.",
                param="tool_choice",
            )
        return ToolChoice("named", choice.function.name)
    if choice == "required" and not tool_names:
        raise InvalidRequest('tool_choice "required" needs at least one tool.', param="tool_choice")
    return ToolChoice(choice)


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    if bias is None:
        return None
    result: dict[int, float] = {}
    for key, value in bias.items():
        # Digits only, and few enough to convert cheaply (int() of a 5,000-digit string fails).
        token = int(key) if key.isascii() and key.isdigit() and len(key) <= 10 else -1
        if not 0 <= token <= MAX_TOKEN_ID:
            raise InvalidRequest(
                f"logit_bias keys must be token ids from 0 to {MAX_TOKEN_ID} (integers as "
                f"strings), got {clip(key)!r}.",
                param="logit_bias",
            )
        result[token] = value
    return result


def _response_format(parsed: wire.ChatCompletionRequest) -> ResponseFormat:
    fmt = parsed.response_format
    if fmt is None or isinstance(fmt, wire.FormatText):
        return ResponseFormat("text")
    if isinstance(fmt, wire.FormatJSONObject):
        return ResponseFormat("json_object")
    spec = fmt.json_schema
    if spec.schema is None:
        raise InvalidRequest(
            "response_format json_schema needs a schema.",
            param="response_format.json_schema.schema",
        )
    return ResponseFormat(
        "json_schema", schema=spec.schema, name=spec.name, strict=bool(spec.strict)
    )


def _reasoning(parsed: wire.ChatCompletionRequest) -> Reasoning:
    config = parsed.reasoning or wire.ReasoningConfig()
    effort = config.effort or parsed.reasoning_effort
    exclude = bool(config.exclude) or parsed.include_reasoning is False
    enabled = config.enabled
    switch = (parsed.chat_template_kwargs or {}).get("enable_thinking")
    if enabled is None and isinstance(switch, bool):
        # vLLM's and SGLang's own switch, as clients of those engines send it: the same as
        # reasoning.enabled, so defaults, budgets and dialects without the kwargs follow it.
        enabled = switch
    return Reasoning(effort=effort, max_tokens=config.max_tokens, enabled=enabled, exclude=exclude)


def to_canonical(parsed: wire.ChatCompletionRequest, extensions: dict[str, Any]) -> ChatRequest:
    if parsed.n is not None and parsed.n != 1:
        raise InvalidRequest("Only n=1 is supported.", param="n")
    if parsed.top_logprobs is not None and parsed.top_logprobs > 0 and not parsed.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true.", param="top_logprobs")
    tools = tuple(
        Tool(
            name=tool.function.name,
            description=tool.function.description,
            parameters=tool.function.parameters or {"type": "object", "properties": {}},
            strict=bool(tool.function.strict),
        )
        for tool in parsed.tools or ()
    )
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("Tool names must be unique.", param="tools")
    stop: tuple[str, ...]
    if parsed.stop is None:
        stop = ()
    elif isinstance(parsed.stop, str):
        stop = (parsed.stop,) if parsed.stop else ()
    else:
        stop = tuple(item for item in parsed.stop if item)
    sampling = Sampling(
        temperature=parsed.temperature,
        top_p=parsed.top_p,
        top_k=parsed.top_k,
        min_p=parsed.min_p,
        top_a=parsed.top_a,
        frequency_penalty=parsed.frequency_penalty,
        presence_penalty=parsed.presence_penalty,
        repetition_penalty=parsed.repetition_penalty,
        seed=parsed.seed,
        logit_bias=_logit_bias(parsed.logit_bias),
        stop=stop,
    )
    messages = tuple(_message(message, index) for index, message in enumerate(parsed.messages))
    return ChatRequest(
        model=parsed.model,
        messages=messages,
        tools=tools,
        tool_choice=_tool_choice(parsed, set(names)),
        parallel_tool_calls=parsed.parallel_tool_calls is not False,
        sampling=sampling,
        max_output_tokens=parsed.max_completion_tokens or parsed.max_tokens,
        reasoning=_reasoning(parsed),
        response_format=_response_format(parsed),
        logprobs=bool(parsed.logprobs),
        top_logprobs=parsed.top_logprobs,
        verbosity=parsed.verbosity,
        chat_template_kwargs=parsed.chat_template_kwargs,
        extensions=extensions,
    )
