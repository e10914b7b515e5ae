"""The shapes the OpenAPI document (`http/openapi.py`) describes beside the request wire types:
response bodies, error bodies and the account API's request bodies, as msgspec Structs so that
`msgspec.json.schema_components` writes their JSON Schema the same way as the requests'.

The request bodies of the two doors are not here: the document takes them from
`protocols/openai/wire.py` and `protocols/anthropic/wire.py`, the types that validate them.
The encoders (`protocols/*/encode.py`, `protocols/*/models.py`, `protocols/*/errors.py`,
`services/accounts.py`) build their bodies as dicts for speed; tests validate their output
against these schemas (tests/unit/http/test_openapi.py) and the fuzz test validates every live
answer (tests/e2e/test_fuzz_api.py), so a field added or retyped there fails a test until it is
described here. Fields a body carries only sometimes default to None (not required).

Imports only msgspec, the standard library and `core`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from modelport.core.catalog import SamplingDefaults

# ------------------------------------------------------------------------------ errors


class OpenAIErrorObject(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(msgspec.Struct, frozen=True):
    """Every error on the OpenAI door and the account API."""

    error: OpenAIErrorObject


class AnthropicErrorObject(msgspec.Struct, frozen=True):
    type: str
    message: str


class AnthropicError(msgspec.Struct, frozen=True):
    """Every error on the Anthropic door."""

    type: Literal["error"]
    error: AnthropicErrorObject
    request_id: str | None = None


# ------------------------------------------------------------------------------ OpenAI door


class OpenAIPricing(msgspec.Struct, frozen=True):
    currency: str
    input_per_1k: str  # CNY per 1,000 tokens, an exact decimal string
    output_per_1k: str
    prompt: str  # CNY per token
    completion: str


class TopProvider(msgspec.Struct, frozen=True):
    context_length: int
    max_completion_tokens: int | None


class OpenAIModel(msgspec.Struct, frozen=True):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    name: str
    description: str
    context_length: int
    pricing: OpenAIPricing
    top_provider: TopProvider
    supported_parameters: list[str]
    default_parameters: SamplingDefaults
    default_parameters_by_mode: dict[str, SamplingDefaults]
    thinking: str
    tool_format: str
    configured: bool


class OpenAIModelList(msgspec.Struct, frozen=True):
    object: Literal["list"]
    data: list[OpenAIModel]


class FunctionCallOut(msgspec.Struct, frozen=True):
    name: str
    arguments: str  # JSON text


class ToolCallOut(msgspec.Struct, frozen=True):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(msgspec.Struct, frozen=True):
    role: Literal["assistant"]
    content: str | None
    reasoning: str | None
    reasoning_content: str | None
    refusal: None
    tool_calls: list[ToolCallOut] | None


class TopLogprob(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(msgspec.Struct, frozen=True):
    content: list[TokenLogprob]
    refusal: None


class Choice(msgspec.Struct, frozen=True):
    index: int
    message: AssistantMessage
    finish_reason: str
    native_finish_reason: str | None
    logprobs: ChoiceLogprobs | None


class CachedTokens(msgspec.Struct, frozen=True):
    cached_tokens: int


class ReasoningTokens(msgspec.Struct, frozen=True):
    reasoning_tokens: int


class OpenAIUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: CachedTokens
    completion_tokens_details: ReasoningTokens
    cost: float | None = None  # CNY, when the request was billed
    estimated: bool | None = None  # counted without the model's tokenizer


class ChatCompletion(msgspec.Struct, frozen=True):
    """The answer to a request with `stream` false or absent."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[Choice]
    usage: OpenAIUsage


class ChunkToolCall(msgspec.Struct, frozen=True):
    index: int
    function: dict[str, Any]
    id: str | None = None
    type: Literal["function"] | None = None


class ChunkDelta(msgspec.Struct, frozen=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None


class ChunkChoice(msgspec.Struct, frozen=True):
    index: int
    delta: ChunkDelta
    finish_reason: str | None
    native_finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct, frozen=True):
    """One `data:` line of a streamed answer (`stream: true`); the stream ends with
    `data: [DONE]`. A failure after the stream began is a chunk with finish_reason "error"
    and an `error` object."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChunkChoice]
    usage: OpenAIUsage | None = None
    error: OpenAIErrorObject | None = None


# ------------------------------------------------------------------------------ Anthropic door


class AnthropicTextBlock(msgspec.Struct, frozen=True, tag="text"):
    text: str


class AnthropicThinkingBlock(msgspec.Struct, frozen=True, tag="thinking"):
    thinking: str
    signature: str


class AnthropicToolUseBlock(msgspec.Struct, frozen=True, tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


AnthropicContentBlock = AnthropicTextBlock | AnthropicThinkingBlock | AnthropicToolUseBlock


class AnthropicUsage(msgspec.Struct, frozen=True):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    estimated: bool | None = None


class AnthropicMessage(msgspec.Struct, frozen=True):
    """The answer to a Messages request with `stream` false or absent. A streamed answer is
    Anthropic's `event:`-typed SSE (message_start, content_block_start/delta/stop,
    message_delta, message_stop, ping; an `error` event for a failure after it began)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[AnthropicContentBlock]
    stop_reason: str
    stop_sequence: str | None
    usage: AnthropicUsage


class CountTokensResponse(msgspec.Struct, frozen=True):
    input_tokens: int


class AnthropicModel(msgspec.Struct, frozen=True):
    type: Literal["model"]
    id: str
    display_name: str
    created_at: str  # RFC 3339
    max_input_tokens: int
    max_tokens: int | None
    lifecycle: str


class AnthropicModelList(msgspec.Struct, frozen=True):
    data: list[AnthropicModel]
    has_more: bool
    first_id: str | None
    last_id: str | None


# ------------------------------------------------------------------------------ server


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok"]


# ------------------------------------------------------------------------------ account API
# Money is an exact decimal string of CNY beside an integer of nano-yuan; times are ISO 8601.

Amount = str | int | float  # a CNY amount: a decimal string (exact) or a JSON number


class CreateUser(msgspec.Struct, frozen=True):
    """`POST /api/v1/admin/users`."""

    name: str
    balance: Amount = "0"  # the opening balance
    role: Literal["user", "admin"] | None = None  # admin: postpaid, may use the admin API


class TopUp(msgspec.Struct, frozen=True):
    """`POST /api/v1/admin/users/{name}/topup`: a negative amount adjusts down (never below
    zero); every change is recorded with its reason."""

    amount: Amount
    reason: str


class CreateKey(msgspec.Struct, frozen=True):
    """`POST /api/v1/admin/keys`: a key for `user` (default: "admin" for admin keys,
    "default" for others) with its limits."""

    name: str
    user: str | None = None
    role: Literal["user", "admin"] | None = None
    rpm: int | None = None  # requests a minute, at least 1
    tpm: int | None = None  # tokens a minute, at least 1
    limit: Amount | None = None  # the most this key may spend, CNY
    models: list[str] | None = None  # the model ids it may use
    expires_at: str | None = None  # ISO 8601 with a time zone


class Account(msgspec.Struct, frozen=True):
    id: int
    name: str
    role: str
    balance: str
    balance_nano: int
    leased: str  # the part of the balance servers hold as credit for requests
    leased_nano: int
    created_at: str
    disabled_at: str | None = None  # set when an admin disabled it: its keys do not work


class AccountList(msgspec.Struct, frozen=True):
    data: list[Account]


class KeyGrant(msgspec.Struct, frozen=True):
    id: int
    name: str
    prefix: str
    user: str
    role: str
    created_at: str
    revoked_at: str | None
    expires_at: str | None
    models: list[str] | None
    limit: str | None
    spent: str
    rpm: int | None
    tpm: int | None


class KeyList(msgspec.Struct, frozen=True):
    data: list[KeyGrant]


class CreatedKey(KeyGrant, frozen=True):
    secret: str  # shown once


class RevokedKey(msgspec.Struct, frozen=True):
    id: int
    revoked: Literal[True]


class LedgerEntry(msgspec.Struct, frozen=True):
    id: int
    amount: str
    amount_nano: int
    kind: str
    request_id: str | None
    reason: str | None
    created_at: str


class Ledger(msgspec.Struct, frozen=True):
    data: list[LedgerEntry]


class UsageRow(msgspec.Struct, frozen=True):
    id: str
    model: str
    backend: str | None
    created_at: str
    tokens_prompt: int
    tokens_completion: int
    tokens_reasoning: int
    tokens_cached: int
    total_cost: str
    cost_nano: int
    latency: float | None  # milliseconds to the first token
    generation_time: float  # milliseconds in all
    finish_reason: str | None
    native_finish_reason: str | None
    status: str
    error_code: str | None
    streamed: bool
    cancelled: bool
    estimated: bool
    anomaly: str | None
    key_id: int


class Generation(msgspec.Struct, frozen=True):
    data: UsageRow


class UsageTotal(msgspec.Struct, frozen=True):
    group: str  # a day (2026-11-29), a model id, or a key id as text
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost: str
    cost_nano: int


class UsageTotals(msgspec.Struct, frozen=True):
    by: Literal["day", "model", "key"]
    data: list[UsageTotal]
