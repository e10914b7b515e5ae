"""OpenAI Chat Completions request wire types, with the ranges the model pages document.

msgspec validates types and ranges while decoding; its error path names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from modelport.protocols.validation import INT64_MAX, TopK

UnitFloat = Annotated[float, Meta(ge=0.0, le=1.0)]
# Integers are bounded to what engines and the database hold: a larger one is a 400 naming
# the field (JSON allows any size; a 2**64 max_tokens once reached the hold as an overflow).
Int64 = Annotated[int, Meta(ge=-(2**63), le=INT64_MAX)]
Count = Annotated[int, Meta(ge=1, le=INT64_MAX)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
EffortName = Literal["xhigh", "high", "medium", "low", "minimal", "none"]


class TextContent(msgspec.Struct, frozen=True, tag="text"):
    text: str


class ImageURL(msgspec.Struct, frozen=True):
    url: str
    detail: str | None = None


class ImageContent(msgspec.Struct, frozen=True, tag="image_url"):
    image_url: ImageURL


ContentPart = TextContent | ImageContent


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str | dict[str, Any] = ""


class ToolCall(msgspec.Struct, frozen=True):
    function: FunctionCall
    id: str | None = None
    type: Literal["function"] = "function"


class WireMessage(msgspec.Struct, frozen=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None


class FunctionDef(msgspec.Struct, frozen=True):
    name: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(msgspec.Struct, frozen=True):
    function: FunctionDef
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct, frozen=True):
    name: str


class NamedToolChoice(msgspec.Struct, frozen=True):
    function: NamedFunction
    type: Literal["function"] = "function"


class JSONSchemaSpec(msgspec.Struct, frozen=True):
    name: str = "response"
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class FormatText(msgspec.Struct, frozen=True, tag="text"):
    pass


class FormatJSONObject(msgspec.Struct, frozen=True, tag="json_object"):
    pass


class FormatJSONSchema(msgspec.Struct, frozen=True, tag="json_schema"):
    json_schema: JSONSchemaSpec


class ReasoningConfig(msgspec.Struct, frozen=True):
    effort: EffortName | None = None
    max_tokens: Annotated[int, Meta(ge=0, le=INT64_MAX)] | None = None
    exclude: bool | None = None
    enabled: bool | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, frozen=True):
    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[WireMessage], Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: UnitFloat | None = None
    top_k: TopK | None = None
    min_p: UnitFloat | None = None
    top_a: UnitFloat | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    repetition_penalty: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    seed: Int64 | None = None
    max_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    response_format: FormatText | FormatJSONObject | FormatJSONSchema | None = None
    structured_outputs: bool | None = None
    stop: str | Annotated[list[str], Meta(max_length=16)] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    reasoning: ReasoningConfig | None = None
    reasoning_effort: EffortName | None = None
    include_reasoning: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    n: Count | None = None
    user: str | None = None


KNOWN_FIELDS = frozenset(ChatCompletionRequest.__struct_fields__)
