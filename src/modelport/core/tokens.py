"""A rough prompt size for models whose tokenizer modelport does not have, and a floor no
prompt can be below. Pure."""

from __future__ import annotations

import msgspec

from modelport.core.types import ChatRequest, ImagePart

# Characters per token in English prose and code for BPE tokenizers of this generation.
CHARS_PER_TOKEN = 4
# How much an estimated prompt size is padded where it is held against a balance.
ESTIMATE_PADDING = 1.25
ESTIMATE_SLACK = 16
# The most text one token stands for, with room to spare: BPE vocabularies' longest tokens are
# runs of spaces or punctuation of a few dozen bytes, and no real prompt averages near them
# (prose and code: 3-5 bytes per token). A prompt is at least its text over this.
MAX_BYTES_PER_TOKEN = 32
# Every chat template frames each message with at least one token (a role marker).
MIN_TOKENS_PER_MESSAGE = 1


def prompt_bytes(request: ChatRequest, *, images: bool = True) -> int:
    """The size in bytes of the messages' parts and the tool definitions as JSON: at least
    the UTF-8 size of all the text a prompt is made of (the usage checks bound token counts
    by it), and what `estimate_tokens` divides. `images=False`: without the image parts."""
    size = 0
    for message in request.messages:
        for part in message.parts:
            if images or type(part) is not ImagePart:
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


def prompt_floor(request: ChatRequest, size: int | None = None) -> int:
    """Tokens the prompt has at least, whatever the tokenizer: its text over
    `MAX_BYTES_PER_TOKEN` plus one per message. Used to refuse, before any upstream sees it,
    a prompt that cannot fit a model whose tokenizer modelport does not have. Images are
    left out (engines count them by their pixels, not their bytes). `size`:
    `prompt_bytes(request)`, when the caller has it already."""
    if size is None or any(type(p) is ImagePart for m in request.messages for p in m.parts):
        size = prompt_bytes(request, images=False)
    return size // MAX_BYTES_PER_TOKEN + MIN_TOKENS_PER_MESSAGE * len(request.messages)
