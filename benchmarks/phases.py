"""What is measured: the phases, the request bodies they send, and the run parameters.

Markers in the user message tell the mock upstream how to answer (`chunks=N`, `pace=A,B`); they
ride in the message text so they reach the mock unchanged through the gateway, which always
re-encodes the request and always asks its upstream for a stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from benchmarks.targets import MODEL


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    stream: bool
    chunks: int
    connections: int


NONSTREAM_C1 = Phase("nonstream_c1", "non-stream, c=1", False, 1, 1)
NONSTREAM_C64 = Phase("nonstream_c64", "non-stream, c=64", False, 1, 64)
STREAM_C64 = Phase("stream_c64", "50-chunk streams, c=64", True, 50, 64)
LOAD_PHASES = (NONSTREAM_C1, NONSTREAM_C64, STREAM_C64)

# Time to first token: one request at a time; the mock waits PACE_FIRST_MS before the first
# content chunk, then sends one every PACE_EVERY_MS.
TTFT_CHUNKS = 5
PACE_FIRST_MS = 50
PACE_EVERY_MS = 10


@dataclass(frozen=True)
class Parameters:
    rounds: int
    duration: float  # seconds per wrk run
    warmup: float  # seconds of unrecorded load per phase and target before round 1
    ttft_requests: int  # TTFT samples per target per round
    pause: float  # seconds of quiet between two runs

    @classmethod
    def default(cls) -> Parameters:
        return cls(rounds=3, duration=5.0, warmup=1.0, ttft_requests=30, pause=0.5)

    @classmethod
    def quick(cls) -> Parameters:
        return cls(rounds=1, duration=2.0, warmup=1.0, ttft_requests=10, pause=0.3)


def chat_body(*, stream: bool, chunks: int, pace: tuple[int, int] | None = None) -> bytes:
    text = f"Say hello. chunks={chunks}"
    if pace is not None:
        text += f" pace={pace[0]},{pace[1]}"
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def phase_body(phase: Phase) -> bytes:
    return chat_body(stream=phase.stream, chunks=phase.chunks)


def ttft_body() -> bytes:
    return chat_body(stream=True, chunks=TTFT_CHUNKS, pace=(PACE_FIRST_MS, PACE_EVERY_MS))
