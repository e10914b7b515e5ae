"""Anthropic Messages API request wire types (`/v1/messages`, `/v1/messages/count_tokens`).

Unknown fields are ignored at every level (msgspec's default): real clients send many we do
not model (`cache_control`, `citations`, `context_management`, `defer_loading`, `safeguards`,
`service_tier`, `container`, `mcp_servers`, ...) and the API's own evolution keeps adding more.
Message content stays raw JSON objects here: `decode` dispatches each block on its `type`, so an
unsupported or misplaced block gets its own clear error instead of a failed union match.
Imports only msgspec and the standard library.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from modelport.protocols.validation import INT64_MAX, TopK

UnitFloat = Annotated[float, Meta(ge=0.0, le=1.0)]
# Integers bounded as on the OpenAI door (protocols/openai/wire.py): larger is a 400.
RawBlock = dict[str, Any]
AnthropicEffort = Literal["low", "medium", "high", "xhigh", "max"]

# Blocks of Anthropic's own server-run tools (web search, web fetch, code execution, tool
# search, MCP connector) that clients echo back in assistant history. We run none of them, so
# their calls and results carry nothing a model here could use.
SERVER_TOOL_BLOCKS = frozenset({"server_tool_use", "mcp_tool_use", "mcp_tool_result"})


def is_server_tool_block(block_type: str) -> bool:
    """True for a server tool's call or result block (`web_search_tool_result`, ...)."""
    return block_type in SERVER_TOOL_BLOCKS or (
        block_type.endswith("_tool_result") and block_type != "tool_result"
    )


# Content blocks, converted from a raw block once its `type` is known (the `type` key is
# ignored as an unknown field).


class TextBlock(msgspec.Struct, frozen=True):
    text: str


class Base64Source(msgspec.Struct, frozen=True, tag="base64"):
    media_type: str
    data: str


class URLSource(msgspec.Struct, frozen=True, tag="url"):
    url: str


class ImageBlock(msgspec.Struct, frozen=True):
    source: Base64Source | URLSource


class ToolUseBlock(msgspec.Struct, frozen=True):
    id: str
    name: Annotated[str, Meta(min_length=1)]
    input: dict[str, Any]


class ToolResultBlock(msgspec.Struct, frozen=True):
    tool_use_id: str
    content: str | list[RawBlock] | None = None
    is_error: bool | None = None


class ToolReferenceBlock(msgspec.Struct, frozen=True):
    """A tool search result inside a `tool_result`: names a tool the client now offers."""

    tool_name: str


class ThinkingBlock(msgspec.Struct, frozen=True):
    thinking: str
    signature: str | None = None  # "" or missing when the server that wrote it sent none


class MessageParam(msgspec.Struct, frozen=True):
    # "system" is not in the classic API; Claude Code sends such turns mid-conversation.
    role: Literal["user", "assistant", "system"]
    content: str | list[RawBlock]


class ToolDef(msgspec.Struct, frozen=True):
    name: Annotated[str, Meta(min_length=1)]
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    # None or "custom" for a client tool; anything else names one of Anthropic's own tools.
    type: str | None = None
    strict: bool | None = None


class ToolChoiceParam(msgspec.Struct, frozen=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingEnabled(msgspec.Struct, frozen=True, tag="enabled"):
    # Anthropic requires >= 1024; smaller budgets make sense for small local models.
    budget_tokens: Annotated[int, Meta(ge=0, le=INT64_MAX)]
    display: str | None = None


class ThinkingAdaptive(msgspec.Struct, frozen=True, tag="adaptive"):
    display: str | None = None


class ThinkingBetweenTools(msgspec.Struct, frozen=True, tag="between_tools"):
    pass


class ThinkingDisabled(msgspec.Struct, frozen=True, tag="disabled"):
    pass


ThinkingConfig = ThinkingEnabled | ThinkingAdaptive | ThinkingBetweenTools | ThinkingDisabled


class JSONSchemaFormat(msgspec.Struct, frozen=True, tag="json_schema"):
    """Structured output: the answer is JSON valid against `schema`."""

    schema: dict[str, Any]


class OutputConfig(msgspec.Struct, frozen=True):
    effort: AnthropicEffort | None = None
    format: JSONSchemaFormat | None = None


class Metadata(msgspec.Struct, frozen=True):
    user_id: str | None = None


class CountTokensRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The body of `/v1/messages/count_tokens`: what a prompt is made of."""

    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[MessageParam], Meta(min_length=1)]
    system: str | list[RawBlock] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    # The structured-outputs beta's spelling of output_config.format.
    output_format: JSONSchemaFormat | None = None


class MessagesRequest(CountTokensRequest, frozen=True, kw_only=True):
    """The body of `/v1/messages`: a prompt plus how to generate from it."""

    max_tokens: Annotated[int, Meta(ge=1, le=INT64_MAX)]
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: UnitFloat | None = None
    top_p: UnitFloat | None = None
    top_k: TopK | None = None
    metadata: Metadata | None = None
