"""The one streaming vocabulary. Backends emit these; front doors encode them.

Invariants (checked by `check_stream` in tests for every backend):
- exactly one `Start`, first;
- exactly one `Stop` or `Error`, last;
- content blocks are numbered 0, 1, 2, … in the order they open; each index has one kind
  (text, reasoning or tool call) and, once a later block opens, an earlier one gets no more
  deltas;
- a tool call block opens with `ToolCallStart`; its arguments follow as JSON text fragments in
  `ToolCallDelta`s;
- `Usage` events are running totals: a backend may send several (the local engine sends one
  after every piece, so that a client who leaves is billed for what was generated); each
  counts at least as much as the one before, and the last one before the final event is the
  request's usage. The metering stage turns them into exactly one `Usage`, right before the
  final event, for the front doors.
"""

from __future__ import annotations

import msgspec

from modelport.core.errors import ModelportError
from modelport.core.types import FinishReason, TokenLogprob


class Start(msgspec.Struct, frozen=True, tag="start"):
    model: str  # the model id as the catalog names it
    backend: str = ""  # which backend serves it, for usage records
    # The prompt's size in tokens, exactly, when the backend knows it when it starts (the local
    # engine tokenizes before it generates); None: reported with the usage at the end.
    prompt_tokens: int | None = None


class TextDelta(msgspec.Struct, frozen=True, tag="text"):
    index: int
    text: str


class ReasoningDelta(msgspec.Struct, frozen=True, tag="reasoning"):
    index: int
    text: str


class ToolCallStart(msgspec.Struct, frozen=True, tag="tool_call_start"):
    index: int
    id: str
    name: str


class ToolCallDelta(msgspec.Struct, frozen=True, tag="tool_call_delta"):
    index: int
    arguments: str


class Logprobs(msgspec.Struct, frozen=True, tag="logprobs"):
    index: int
    entries: tuple[TokenLogprob, ...]


class Usage(msgspec.Struct, frozen=True, tag="usage"):
    prompt_tokens: int
    completion_tokens: int  # reasoning tokens included
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    cost_nano: int | None = None  # what the request was billed, set by the gateway at the end
    # The counts are the gateway's estimate (no tokenizer for this model and none reported),
    # not an exact count: docs/billing.md.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Stop(msgspec.Struct, frozen=True, tag="stop"):
    finish_reason: FinishReason
    native_finish_reason: str | None = None
    stop_sequence: str | None = None  # the client's stop string that ended the answer, if one


class Error(msgspec.Struct, frozen=True, tag="error"):
    error: ModelportError


Event = (
    Start
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | Logprobs
    | Usage
    | Stop
    | Error
)
