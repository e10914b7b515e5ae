"""One generation as its consumer saw it, and the rates computed from it.

Both sides produce the same record: the HTTP client from SSE chunk arrivals and the usage
object, the bare process from the tokens `Llama.generate` yields. Times are `perf_counter`
seconds (CLOCK_MONOTONIC on Linux, so comparable across processes).

The decode rate counts the tokens produced between the first and the last content token over
the time between them: the first token's wait (prompt evaluation, queueing, the request's
way in) is left to the time to first token, and an answer that ends early at the
end-of-generation token is not biased, only shorter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Stream:
    started: float  # the request was sent (server) or the call began (bare)
    first: float  # the first token with text arrived
    last: float  # the last token with text arrived
    completion_tokens: int  # every token sampled, the end-of-generation token included
    finish_reason: str  # "length" or "stop"
    prompt_tokens: int
    text: str

    @property
    def ttft(self) -> float:
        return self.first - self.started

    @property
    def decoded(self) -> int:
        """Tokens produced after the first content token, up to the last content token."""
        # The end-of-generation token counts in completion_tokens but carries no text.
        return self.completion_tokens - 1 - (1 if self.finish_reason == "stop" else 0)

    @property
    def rate(self) -> float | None:
        """Decode tokens per second; None for an answer of a single token."""
        span = self.last - self.first
        return self.decoded / span if self.decoded > 0 and span > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ttft_s": self.ttft, "decoded": self.decoded, "rate": self.rate}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stream:
        return cls(
            started=float(data["started"]),
            first=float(data["first"]),
            last=float(data["last"]),
            completion_tokens=int(data["completion_tokens"]),
            finish_reason=str(data["finish_reason"]),
            prompt_tokens=int(data["prompt_tokens"]),
            text=str(data["text"]),
        )


def batch_rate(streams: Sequence[Stream]) -> float | None:
    """Total decode tokens per second of concurrent streams: every stream's decoded tokens
    over the window from the earliest first token to the latest last one (conservative: a
    stream that finishes early does not make the others look faster)."""
    if not streams:
        return None
    span = max(s.last for s in streams) - min(s.first for s in streams)
    decoded = sum(max(s.decoded, 0) for s in streams)
    return decoded / span if span > 0 and decoded > 0 else None
