"""Canonical messages and tools -> OpenAI-style dicts, for upstream request bodies and for the
Hugging Face chat templates the local engine renders (they are written for the same shape).

One conversion serves both so that a conversation reaches a model the same way whichever
backend serves it. Pure: imports only core and the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from modelport.core.types import (
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)


def openai_tool(tool: Tool, *, with_strict: bool = True) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    # Upstreams validate `parameters` as an object schema; an empty one means "no arguments".
    function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
    if with_strict and tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def openai_messages(
    messages: Iterable[Message],
    *,
    reasoning_field: str | None = "reasoning_content",
    for_template: bool = False,
) -> list[dict[str, Any]]:
    """Canonical messages as OpenAI chat messages.

    - Tool results become `tool` messages of their own, placed first: the OpenAI format wants
      them right after the assistant turn that made the calls (an Anthropic-style user turn
      carries the results and the user's next words together).
    - Text parts are joined with newlines, as vLLM and SGLang do before templating.
    - Assistant reasoning goes in `reasoning_field` (None drops it).
    - `for_template`: the shape chat templates expect: tool-call arguments as an object when
      they are one (templates apply `| tojson`), and "" rather than null content.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        out.extend(_message(message, reasoning_field, for_template))
    return out


def _message(
    message: Message, reasoning_field: str | None, for_template: bool
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    has_image = False
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": part.content})
        elif isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            has_image = True
        elif isinstance(part, ReasoningPart):
            reasoning.append(part.text)
        elif isinstance(part, ToolCallPart):
            calls.append(_tool_call(part, for_template))
    if message.role == "tool":
        return out
    if out and not texts and not calls and not reasoning and not has_image:
        return out  # the turn carried only tool results
    wire: dict[str, Any] = {"role": message.role}
    if has_image:
        wire["content"] = [_content_part(part) for part in message.parts if _is_content(part)]
    elif texts:
        wire["content"] = "\n".join(texts)
    else:
        wire["content"] = None if calls and not for_template else ""
    if message.name is not None:
        wire["name"] = message.name
    if reasoning and reasoning_field is not None and message.role == "assistant":
        wire[reasoning_field] = "".join(reasoning)
    if calls:
        wire["tool_calls"] = calls
    out.append(wire)
    return out


def _tool_call(part: ToolCallPart, for_template: bool) -> dict[str, Any]:
    arguments: Any = part.arguments
    if not arguments.strip():
        # Some clients send "" back for a call without parameters: that is an empty object
        # (engines that decode arguments reject "", and templates would render `"arguments": }`).
        arguments = "{}"
    if for_template:
        try:
            decoded = json.loads(arguments)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            arguments = decoded
    return {
        "id": part.id,
        "type": "function",
        "function": {"name": part.name, "arguments": arguments},
    }


def _is_content(part: Part) -> bool:
    return isinstance(part, TextPart | ImagePart)


def _content_part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    assert isinstance(part, ImagePart)
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}
