"""Anthropic Messages request body -> canonical `ChatRequest` (plus the door's own options).

What maps where, beyond the obvious:

- `system` (a string or text blocks) becomes the first system message; `role: "system"` turns
  inside `messages` (Claude Code sends them) stay system messages at their position.
- A `tool_result` becomes a `ToolResultPart` whose content is its text blocks joined by
  newlines; its image blocks follow it as `ImagePart`s of the same user message.
- Thinking blocks sent back become `ReasoningPart`s (an empty signature means none);
  `redacted_thinking` and the blocks of Anthropic's server-run tools are dropped: no model
  here can read them. Any other block type is a 400 naming its path.
- Thinking follows Anthropic's semantics: none unless asked for. `thinking.enabled` sets the
  budget (Anthropic's minimum of 1024 is not enforced: small local models think in less),
  `adaptive` switches it on, `display: "omitted"` hides it from the answer, and
  `output_config.effort` sets the effort (`max` is the canonical `xhigh`).
- Fields only Anthropic's platform acts on (caching, context management, containers, ...)
  are ignored and never forwarded upstream.

Errors name the field the way Anthropic does (`messages.3.content.1.type`), and their message
starts with that path. Pure: imports only core, the protocol validation helpers, msgspec and
stdlib.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TypeVar

import msgspec

from modelport.core.errors import InvalidRequest, clip
from modelport.core.types import (
    ChatRequest,
    Effort,
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
from modelport.protocols.anthropic import wire
from modelport.protocols.validation import (
    DETAIL_LIMIT,
    decode_json_object,
    invalid_from_msgspec,
)

T = TypeVar("T")

_EFFORTS: dict[wire.AnthropicEffort, Effort] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "xhigh",
}
_INDEX = re.compile(r"\[(\d+)\]")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
# Blocks that belong to one role only: in the other role they are a client bug, not a feature
# we lack, and the error says so.
_USER_ONLY = frozenset({"image", "tool_result"})
_ASSISTANT_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking"})


class MessagesOptions(msgspec.Struct, frozen=True):
    """What the Messages door needs besides the canonical request."""

    stream: bool
    metadata_user_id: str | None


def decode_messages_request(body: bytes) -> tuple[ChatRequest, MessagesOptions]:
    """Validate a `/v1/messages` body; raise InvalidRequest naming the field."""
    parsed = _convert(_decode(body, wire.MessagesRequest), wire.MessagesRequest, "")
    stop = tuple(item for item in parsed.stop_sequences or () if item)
    sampling = Sampling(
        temperature=parsed.temperature, top_p=parsed.top_p, top_k=parsed.top_k, stop=stop
    )
    request = _canonical(parsed, sampling=sampling, max_output_tokens=parsed.max_tokens)
    user_id = parsed.metadata.user_id if parsed.metadata is not None else None
    return request, MessagesOptions(stream=bool(parsed.stream), metadata_user_id=user_id)


def decode_count_tokens_request(body: bytes) -> ChatRequest:
    """Validate a `/v1/messages/count_tokens` body (no `max_tokens` needed)."""
    parsed = _convert(_decode(body, wire.CountTokensRequest), wire.CountTokensRequest, "")
    return _canonical(parsed, sampling=Sampling(), max_output_tokens=None)


def _canonical(
    parsed: wire.CountTokensRequest, *, sampling: Sampling, max_output_tokens: int | None
) -> ChatRequest:
    tools = _tools(parsed.tools or ())
    tool_choice, parallel = _tool_choice(parsed.tool_choice, {tool.name for tool in tools})
    return ChatRequest(
        model=parsed.model,
        messages=_messages(parsed),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        sampling=sampling,
        max_output_tokens=max_output_tokens,
        reasoning=_reasoning(parsed.thinking, parsed.output_config),
        response_format=_response_format(parsed),
    )


def _response_format(parsed: wire.CountTokensRequest) -> ResponseFormat:
    """Structured output (`output_config.format`, or the beta's `output_format`) as the
    canonical JSON-schema response format, enforced like OpenAI's `response_format`."""
    output = parsed.output_config
    found = output.format if output is not None and output.format is not None else None
    found = found or parsed.output_format
    if found is None:
        return ResponseFormat()
    return ResponseFormat("json_schema", schema=found.schema, name="output", strict=True)


# Errors


def _decode(body: bytes, shape: type) -> dict[str, object]:
    """The body as a JSON object; a number out of range is named the Anthropic way."""
    return decode_json_object(body, shape, lambda exc: _invalid(exc, ""))


def _convert(value: object, target: type[T], where: str) -> T:
    """msgspec.convert, with a failure reported at `where` plus msgspec's own path."""
    try:
        return msgspec.convert(value, target)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, where) from None


def _invalid(exc: msgspec.ValidationError, where: str) -> InvalidRequest:
    inner = invalid_from_msgspec(exc).param
    detail = str(exc)
    cut = detail.rfind(" - at `$")
    if cut >= 0:
        detail = detail[:cut]
    detail = clip(detail, DETAIL_LIMIT)  # msgspec repeats a wrong enum or tag value
    path = [where] if where else []
    if inner:
        path.append(_INDEX.sub(r".\1", inner))
    missing = _MISSING.match(detail)
    if missing is not None:
        path.append(missing["field"])
        detail = "Field required"
    return _error(".".join(path), detail)


def _error(param: str, detail: str) -> InvalidRequest:
    if not param:
        return InvalidRequest(f"Invalid request body: {detail}")
    return InvalidRequest(f"{param}: {detail}", param=param)


def _block_type(block: wire.RawBlock, where: str) -> str:
    kind = block.get("type")
    if kind is None:
        raise _error(f"{where}.type", "Field required")
    if not isinstance(kind, str):
        raise _error(f"{where}.type", f"Expected `str`, got `{type(kind).__name__}`")
    return kind


def _unsupported(kind: str, role: str, where: str) -> InvalidRequest:
    if role == "assistant":
        misplaced = kind in _USER_ONLY
    else:
        misplaced = kind in _ASSISTANT_ONLY or wire.is_server_tool_block(kind)
    if misplaced:
        return _error(f"{where}.type", f"A '{clip(kind)}' block is not allowed in {role} messages.")
    return _error(
        f"{where}.type", f"Content blocks of type '{clip(kind)}' are not supported on this server."
    )


# Messages


def _messages(parsed: wire.CountTokensRequest) -> tuple[Message, ...]:
    out: list[Message] = []
    if parsed.system is not None:
        system = _text_only(parsed.system, "system")
        if system:
            out.append(Message("system", tuple(system)))
    for index, message in enumerate(parsed.messages):
        where = f"messages.{index}.content"
        if message.role == "system":
            texts = _text_only(message.content, where)
            if texts:
                out.append(Message("system", tuple(texts)))
        elif message.role == "user":
            out.append(Message("user", tuple(_user_parts(message.content, where))))
        else:
            out.append(Message("assistant", tuple(_assistant_parts(message.content, where))))
    return tuple(out)


def _text_only(content: str | list[wire.RawBlock], where: str) -> list[Part]:
    """System content: a string or text blocks, empty text left out."""
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for index, block in enumerate(content):
        at = f"{where}.{index}"
        kind = _block_type(block, at)
        if kind != "text":
            raise _error(f"{at}.type", f"Only text blocks are allowed here, not '{clip(kind)}'.")
        text = _convert(block, wire.TextBlock, at).text
        if text:
            parts.append(TextPart(text))
    return parts


def _user_parts(content: str | list[wire.RawBlock], where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for index, block in enumerate(content):
        at = f"{where}.{index}"
        kind = _block_type(block, at)
        if kind == "text":
            text = _convert(block, wire.TextBlock, at).text
            if text:
                parts.append(TextPart(text))
        elif kind == "image":
            parts.append(_image(_convert(block, wire.ImageBlock, at)))
        elif kind == "tool_result":
            parts.extend(_tool_result(_convert(block, wire.ToolResultBlock, at), at))
        else:
            raise _unsupported(kind, "user", at)
    return parts


def _assistant_parts(content: str | list[wire.RawBlock], where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for index, block in enumerate(content):
        at = f"{where}.{index}"
        kind = _block_type(block, at)
        if kind == "text":
            text = _convert(block, wire.TextBlock, at).text
            if text:
                parts.append(TextPart(text))
        elif kind == "tool_use":
            call = _convert(block, wire.ToolUseBlock, at)
            arguments = json.dumps(call.input, ensure_ascii=False)
            parts.append(ToolCallPart(id=call.id, name=call.name, arguments=arguments))
        elif kind == "thinking":
            thinking = _convert(block, wire.ThinkingBlock, at)
            parts.append(ReasoningPart(thinking.thinking, thinking.signature or None))
        elif kind == "redacted_thinking" or wire.is_server_tool_block(kind):
            continue  # readable only by Anthropic's models, or about tools we do not run
        else:
            raise _unsupported(kind, "assistant", at)
    return parts


def _image(block: wire.ImageBlock) -> ImagePart:
    source = block.source
    if isinstance(source, wire.Base64Source):
        return ImagePart(url=f"data:{source.media_type};base64,{source.data}")
    return ImagePart(url=source.url)


def _tool_result(block: wire.ToolResultBlock, where: str) -> list[Part]:
    """The result itself, then the images it carried (canonical results are text only)."""
    texts: list[str] = []
    images: list[Part] = []
    if isinstance(block.content, str):
        texts.append(block.content)
    for index, item in enumerate(block.content if isinstance(block.content, list) else ()):
        at = f"{where}.content.{index}"
        kind = _block_type(item, at)
        if kind == "text":
            texts.append(_convert(item, wire.TextBlock, at).text)
        elif kind == "image":
            images.append(_image(_convert(item, wire.ImageBlock, at)))
        elif kind == "tool_reference":
            # Tool search's answer: the named tool is offered from now on. Tools marked
            # `defer_loading` are offered from the start here, so the name is all there is.
            texts.append(_convert(item, wire.ToolReferenceBlock, at).tool_name)
        else:
            raise _error(
                f"{at}.type", f"Tool result blocks of type '{clip(kind)}' are not supported here."
            )
    content = "\n".join(text for text in texts if text)
    result = ToolResultPart(block.tool_use_id, content, is_error=bool(block.is_error))
    return [result, *images]


# Tools


def _tools(tools: Sequence[wire.ToolDef]) -> tuple[Tool, ...]:
    out: list[Tool] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if tool.type not in (None, "custom"):
            raise _error(
                where,
                f"'{clip(tool.name)}' (type '{clip(tool.type)}') is one of Anthropic's server "
                "tools, which are not available on this server; define a custom tool with an "
                "input_schema.",
            )
        if tool.input_schema is None:
            raise _error(f"{where}.input_schema", "Field required")
        if tool.name in seen:
            raise _error(
                f"{where}.name", f"Tool names must be unique: '{clip(tool.name)}' repeats."
            )
        seen.add(tool.name)
        out.append(
            Tool(
                name=tool.name,
                description=tool.description,
                parameters=tool.input_schema,
                strict=bool(tool.strict),
            )
        )
    return tuple(out)


def _tool_choice(choice: wire.ToolChoiceParam | None, names: set[str]) -> tuple[ToolChoice, bool]:
    """The canonical choice and whether parallel tool calls stay allowed."""
    if choice is None:
        return ToolChoice("auto"), True
    parallel = not choice.disable_parallel_tool_use
    if choice.type == "tool":
        if not choice.name:
            raise _error("tool_choice.name", 'tool_choice "tool" needs the name of a tool.')
        if choice.name not in names:
            raise _error(
                "tool_choice.name",
                f"tool_choice names '{clip(choice.name)}', which is not in tools.",
            )
        return ToolChoice("named", choice.name), parallel
    if choice.type == "any":
        if not names:
            raise _error("tool_choice.type", 'tool_choice "any" needs at least one tool.')
        return ToolChoice("required"), parallel
    return ToolChoice(choice.type), parallel


# Thinking


def _reasoning(thinking: wire.ThinkingConfig | None, output: wire.OutputConfig | None) -> Reasoning:
    effort = _EFFORTS[output.effort] if output is not None and output.effort else None
    if isinstance(thinking, wire.ThinkingEnabled):
        return Reasoning(
            effort=effort,
            max_tokens=thinking.budget_tokens,
            enabled=True,
            exclude=thinking.display == "omitted",
        )
    if isinstance(thinking, wire.ThinkingAdaptive):
        return Reasoning(effort=effort, enabled=True, exclude=thinking.display == "omitted")
    if isinstance(thinking, wire.ThinkingBetweenTools):
        return Reasoning(effort=effort, enabled=True)
    return Reasoning(effort=effort, enabled=False)  # disabled, or not asked for
