"""`verbosity` for models that have no such switch (Qwen3 among them): an instruction.

OpenAI's `verbosity` (low / medium / high) asks for shorter or longer answers. Qwen3 models
have no parameter for it, so the request carries the wish to the model in words: for "low"
and "high" an instruction is added at the end of the system message (one is created when the
conversation has none); "medium" is the model's natural length and changes nothing. The
instruction asks for a length, it cannot enforce one: max_tokens is the hard limit.
"""

from __future__ import annotations

import msgspec

from modelport.core.types import ChatRequest, Message, TextPart

INSTRUCTIONS = {
    "low": (
        "Answer as briefly as the question allows: the answer itself, without preamble, "
        "examples or elaboration unless asked for."
    ),
    "high": (
        "Answer thoroughly: explain your reasoning, cover the relevant details, edge cases and "
        "examples, and structure long answers with headings or lists."
    ),
}


def apply_verbosity(request: ChatRequest) -> ChatRequest:
    """`request` with its verbosity turned into a system instruction (unchanged for medium
    or none)."""
    instruction = INSTRUCTIONS.get(request.verbosity or "")
    if instruction is None:
        return request
    messages = list(request.messages)
    if messages and messages[0].role == "system":
        first = messages[0]
        text = "".join(part.text for part in first.parts if isinstance(part, TextPart))
        merged = f"{text}\n\n{instruction}" if text else instruction
        messages[0] = msgspec.structs.replace(first, parts=(TextPart(merged),))
    else:
        messages.insert(0, Message("system", (TextPart(instruction),)))
    return msgspec.structs.replace(request, messages=tuple(messages))
