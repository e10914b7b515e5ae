"""A rough prompt size for models whose tokenizer modelport does not have. Pure."""

from __future__ import annotations

import msgspec

from modelport.core.types import ChatRequest

# Characters per token in English prose and code for BPE tokenizers of this generation.
CHARS_PER_TOKEN = 4
# How much an estimated prompt size is padded where it is held against a balance.
ESTIMATE_PADDING = 1.25
ESTIMATE_SLACK = 16


def prompt_bytes(request: ChatRequest) -> int:
    """The size in bytes of the messages' parts and the tool definitions as JSON: at least
    the UTF-8 size of all the text a prompt is made of (the usage checks bound token counts
    by it), and what `estimate_tokens` divides."""
    size = 0
    for message in request.messages:
        for part in message.parts:
            size += len(msgspec.json.encode(part))
    for tool in request.tools:
        size += len(msgspec.json.encode(tool))
    return size


def estimate_tokens(request: ChatRequest, size: int | None = None) -> int:
    """The text of the messages and tool definitions, over four, plus a few tokens of framing
    per turn. An estimate: exact counts come from the backends that have the tokenizer.
    `size`: `prompt_bytes(request)`, when the caller has it already."""
    if size is None:
        size = prompt_bytes(request)
    size += 4 * CHARS_PER_TOKEN * len(request.messages)  # each turn's framing
    return max(1, -(-size // CHARS_PER_TOKEN))


def estimate_text_tokens(text: str) -> int:
    """Tokens in plain text, estimated the same way."""
    return -(-len(text) // CHARS_PER_TOKEN)
