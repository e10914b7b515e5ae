"""A rough prompt size for models whose tokenizer modelport does not have. Pure."""

from __future__ import annotations

import msgspec

from modelport.core.types import ChatRequest

# Characters per token in English prose and code for BPE tokenizers of this generation.
CHARS_PER_TOKEN = 4


def estimate_tokens(request: ChatRequest) -> int:
    """The text of the messages and tool definitions, over four, plus a few tokens of framing
    per turn. An estimate: exact counts come from the backends that have the tokenizer."""
    size = 0
    for message in request.messages:
        size += 4 * CHARS_PER_TOKEN  # the turn's framing
        for part in message.parts:
            size += len(msgspec.json.encode(part))
    for tool in request.tools:
        size += len(msgspec.json.encode(tool))
    return max(1, -(-size // CHARS_PER_TOKEN))


def estimate_text_tokens(text: str) -> int:
    """Tokens in plain text, estimated the same way."""
    return -(-len(text) // CHARS_PER_TOKEN)
