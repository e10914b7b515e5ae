"""Canonical request types: what every front door decodes into and every backend consumes.

Frozen msgspec Structs, data only. Imports nothing outside the standard library and msgspec.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
Effort = Literal["xhigh", "high", "medium", "low", "minimal", "none"]
Verbosity = Literal["low", "medium", "high"]


class TextPart(msgspec.Struct, frozen=True, tag="text"):
    text: str


class ImagePart(msgspec.Struct, frozen=True, tag="image"):
    url: str  # an http(s) URL or a data: URL
    detail: str | None = None


class ReasoningPart(msgspec.Struct, frozen=True, tag="reasoning"):
    """Reasoning an assistant produced earlier, sent back in the history."""

    text: str
    signature: str | None = None


class ToolCallPart(msgspec.Struct, frozen=True, tag="tool_call"):
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


class ToolResultPart(msgspec.Struct, frozen=True, tag="tool_result"):
    tool_call_id: str
    content: str
    is_error: bool = False


Part = TextPart | ImagePart | ReasoningPart | ToolCallPart | ToolResultPart


class Message(msgspec.Struct, frozen=True):
    role: Role
    parts: tuple[Part, ...]
    name: str | None = None


class Tool(msgspec.Struct, frozen=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)  # JSON Schema
    strict: bool = False


class ToolChoice(msgspec.Struct, frozen=True):
    mode: Literal["auto", "none", "required", "named"] = "auto"
    name: str | None = None  # set when mode == "named"


class Sampling(msgspec.Struct, frozen=True):
    """Sampler settings. None means "not given": the backend or the model card decides."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    top_a: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    logit_bias: dict[int, float] | None = None
    stop: tuple[str, ...] = ()


class Reasoning(msgspec.Struct, frozen=True):
    effort: Effort | None = None
    max_tokens: int | None = None  # an explicit thinking budget
    enabled: bool | None = None
    exclude: bool = False


class ResponseFormat(msgspec.Struct, frozen=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool = False


class ChatRequest(msgspec.Struct, frozen=True):
    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    sampling: Sampling = Sampling()
    max_output_tokens: int | None = None
    reasoning: Reasoning = Reasoning()
    response_format: ResponseFormat = ResponseFormat()
    logprobs: bool = False
    top_logprobs: int | None = None
    verbosity: Verbosity | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    # Fields the front door did not model, passed on to upstreams that accept extras.
    extensions: dict[str, Any] = msgspec.field(default_factory=dict)


class TokenLogprob(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top: tuple[tuple[str, float, tuple[int, ...] | None], ...] = ()
