"""Canonical completion / events -> Anthropic Messages wire: one `message` body, or SSE events.

The stream encoder numbers content blocks the way Anthropic does (0, 1, 2… among the blocks it
actually sends), opens and closes them around the canonical deltas, and precomputes each open
block's frame prefix, so a text delta costs one small JSON string encode and a concatenation.
Pure: imports only core, msgspec and stdlib.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgspec

from modelport.core.collect import Completion
from modelport.core.errors import MalformedModelOutput, ModelportError
from modelport.core.events import (
    Error,
    Event,
    Logprobs,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.types import FinishReason
from modelport.protocols.anthropic.errors import error_body

_encode = msgspec.json.encode

_STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}


def thinking_signature(text: str) -> str:
    """An opaque, deterministic signature for a thinking block of `text`.

    Clients must echo a thinking block's signature back in later turns; nothing here verifies
    it, so it only has to be non-empty and stable.
    """
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return "mpsig1." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def stop_reason(stop: Stop, stop_sequences: tuple[str, ...]) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for a canonical stop.

    A stop on one of the client's stop strings is "stop_sequence" with that string, as the
    backend names it in `stop.stop_sequence` (the local engine's match; vLLM's `stop_reason`
    and SGLang's `matched_stop` upstream). `stop_sequences` are the request's: a string not
    among them (an engine's own stop word) is an ordinary end of turn.
    """
    if stop.finish_reason == "stop" and stop.stop_sequence in stop_sequences:
        return "stop_sequence", stop.stop_sequence
    return _STOP_REASONS[stop.finish_reason], None


def usage_object(usage: Usage) -> dict[str, Any]:
    """Anthropic usage: its `input_tokens` leaves out the tokens read from the prompt cache.
    `estimated`: the gateway counted without the model's tokenizer (docs/billing.md)."""
    body: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
    }
    if usage.estimated:
        body["estimated"] = True
    return body


def _tool_input(name: str, arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the JSON object Anthropic's `input` must be."""
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise MalformedModelOutput(
            f"The model called the tool '{name}' with arguments that are not a JSON object."
        )
    return value


def encode_message(
    completion: Completion,
    *,
    message_id: str,
    stop_sequences: tuple[str, ...] = (),
    exclude_reasoning: bool = False,
) -> bytes:
    """The non-streaming `message` body: thinking, then text, then tool_use blocks.

    Raises MalformedModelOutput if a tool call's arguments are not a JSON object.
    """
    content: list[dict[str, Any]] = []
    if completion.reasoning and not exclude_reasoning:
        content.append(
            {
                "type": "thinking",
                "thinking": completion.reasoning,
                "signature": thinking_signature(completion.reasoning),
            }
        )
    if completion.text:
        content.append({"type": "text", "text": completion.text})
    content.extend(
        {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": _tool_input(call.name, call.arguments),
        }
        for call in completion.tool_calls
    )
    # Completion does not carry Stop.stop_sequence; the native reason still names vLLM's match.
    reason, sequence = stop_reason(
        Stop(
            completion.finish_reason,
            completion.native_finish_reason,
            completion.stop_sequence,
        ),
        stop_sequences,
    )
    body = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_object(completion.usage),
    }
    return _encode(body)


def _frame(name: bytes, payload: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"


_PING = _frame(b"ping", b'{"type":"ping"}')
_MESSAGE_STOP = _frame(b"message_stop", b'{"type":"message_stop"}')
_TEXT_BLOCK = b'{"type":"text","text":""}'
_THINKING_BLOCK = b'{"type":"thinking","thinking":"","signature":""}'
_TEXT_DELTA = b'{"type":"text_delta","text":'
_THINKING_DELTA = b'{"type":"thinking_delta","thinking":'
_INPUT_JSON_DELTA = b'{"type":"input_json_delta","partial_json":'
_DELTA_TAIL = b"}}\n\n"  # closes the delta object and the event payload
_NO_BLOCK = -1


class MessageStreamEncoder:
    """Encodes one response's canonical events as Anthropic SSE events, in order.

    A block closes when a block with another canonical index opens, or at `Stop`; a thinking
    block gets a `signature_delta` for its whole text just before it closes. Empty deltas are
    dropped, so no empty block is sent (as in the non-streaming body). Excluded reasoning
    opens no block and takes no index.
    """

    __slots__ = (
        "_block",
        "_delta_head",
        "_exclude_reasoning",
        "_message_start",
        "_next_index",
        "_open",
        "_start_usage",
        "_stop_sequences",
        "_thinking",
        "_usage",
    )

    def __init__(
        self,
        *,
        message_id: str,
        model: str,
        input_tokens: int = 0,
        stop_sequences: tuple[str, ...] = (),
        exclude_reasoning: bool = False,
    ) -> None:
        # Until the backend reports usage, the prompt-size hint stands in for it.
        self._start_usage = _encode(
            {
                "input_tokens": input_tokens,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            }
        )
        message = (
            b'{"id":'
            + _encode(message_id)
            + b',"type":"message","role":"assistant","model":'
            + _encode(model)
            + b',"content":[],"stop_reason":null,"stop_sequence":null,"usage":'
            + self._start_usage
            + b"}"
        )
        self._message_start = _frame(
            b"message_start", b'{"type":"message_start","message":' + message + b"}"
        )
        self._stop_sequences = stop_sequences
        self._exclude_reasoning = exclude_reasoning
        self._open = _NO_BLOCK  # canonical index of the block being sent
        self._block = _NO_BLOCK  # its Anthropic index
        self._next_index = 0
        self._delta_head = b""  # the open block's content_block_delta prefix
        self._thinking: list[str] | None = None  # the open thinking block's text so far
        self._usage: Usage | None = None

    def encode(self, event: Event) -> bytes:
        """SSE bytes for `event` (possibly empty). `Stop` closes the message."""
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            opened = b""
            if event.index != self._open:
                opened = self._open_block(event.index, _TEXT_BLOCK, _TEXT_DELTA)
            return opened + self._delta_head + _encode(event.text) + _DELTA_TAIL
        if isinstance(event, ReasoningDelta):
            if self._exclude_reasoning or not event.text:
                return b""
            opened = b""
            if event.index != self._open:
                opened = self._open_block(event.index, _THINKING_BLOCK, _THINKING_DELTA)
                self._thinking = []
            assert self._thinking is not None
            self._thinking.append(event.text)
            return opened + self._delta_head + _encode(event.text) + _DELTA_TAIL
        if isinstance(event, ToolCallDelta):
            if not event.arguments:
                return b""
            return self._delta_head + _encode(event.arguments) + _DELTA_TAIL
        if isinstance(event, ToolCallStart):
            block = _encode({"type": "tool_use", "id": event.id, "name": event.name, "input": {}})
            return self._open_block(event.index, block, _INPUT_JSON_DELTA)
        if isinstance(event, Start):
            return self._message_start + _PING
        if isinstance(event, Usage):
            self._usage = event
            return b""
        if isinstance(event, Stop):
            return self._close_block() + self._message_end(event)
        if isinstance(event, Logprobs):
            return b""
        assert isinstance(event, Error)
        return self.encode_error(event.error)

    def encode_batch(self, events: list[Event]) -> bytes:
        """SSE bytes for a batch of events, in order (one write)."""
        encode = self.encode
        return b"".join([encode(event) for event in events])

    def encode_error(self, error: ModelportError) -> bytes:
        """A failure after streaming began: an `error` event, which ends the stream. Nothing
        is closed first; clients stop reading at the error."""
        return _frame(b"error", error_body(error))

    def _open_block(self, canonical: int, block: bytes, delta: bytes) -> bytes:
        """Close the open block, open `block`, and make `delta` (a delta object's opening up
        to its value) the prefix of the new block's deltas."""
        closed = self._close_block()
        self._block = self._next_index
        self._next_index += 1
        self._open = canonical
        index = str(self._block).encode()
        self._delta_head = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + index
            + b',"delta":'
            + delta
        )
        started = b'{"type":"content_block_start","index":' + index + b',"content_block":'
        return closed + _frame(b"content_block_start", started + block + b"}")

    def _close_block(self) -> bytes:
        if self._block == _NO_BLOCK:
            return b""
        index = str(self._block).encode()
        out = b""
        if self._thinking is not None:
            signature = thinking_signature("".join(self._thinking))
            out = _frame(
                b"content_block_delta",
                b'{"type":"content_block_delta","index":'
                + index
                + b',"delta":{"type":"signature_delta","signature":'
                + _encode(signature)
                + b"}}",
            )
            self._thinking = None
        self._block = self._open = _NO_BLOCK
        return out + _frame(
            b"content_block_stop", b'{"type":"content_block_stop","index":' + index + b"}"
        )

    def _message_end(self, stop: Stop) -> bytes:
        reason, sequence = stop_reason(stop, self._stop_sequences)
        # The full usage, input_tokens included: the SDK's stream helper takes them from here.
        usage = self._start_usage if self._usage is None else _encode(usage_object(self._usage))
        delta = _encode({"stop_reason": reason, "stop_sequence": sequence})
        payload = b'{"type":"message_delta","delta":' + delta + b',"usage":' + usage + b"}"
        return _frame(b"message_delta", payload) + _MESSAGE_STOP
