"""What each stage of the stream path costs, in-process, for one 50-chunk upstream stream as
the benchmark's mock sends it: taking the HTTP chunks apart, the SSE blocks, decoding and
translating the chunks into events, and encoding them for the client. No server, no I/O: a
micro-benchmark to see where a stream's CPU goes (`make bench` measures the whole).

    .venv/bin/python -m benchmarks.stages [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from modelport.backends.http1.connection import Connection
from modelport.core.events import Event
from modelport.protocols.openai.encode import ChunkEncoder
from modelport.protocols.openai.sse import SSEParser
from modelport.protocols.openai.upstream_stream import StreamTranslator

CHUNKS = 50


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "bench/mock",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def upstream_body() -> tuple[bytes, bytes]:
    """The SSE text of a streamed answer, and the same as a chunked HTTP body."""
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": "tok "}) for _ in range(CHUNKS)]
    events.append(_chunk({}, "stop"))
    usage = {"prompt_tokens": 5, "completion_tokens": CHUNKS, "total_tokens": CHUNKS + 5}
    events.append({**_chunk({}), "choices": [], "usage": usage})
    blocks = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    blocks.append(b"data: [DONE]\n\n")
    chunked = b"".join(f"{len(b):x}\r\n".encode() + b + b"\r\n" for b in blocks) + b"0\r\n\r\n"
    return b"".join(blocks), chunked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args(argv)
    sse, chunked = upstream_body()

    def chunks() -> None:
        connection = Connection.__new__(Connection)  # the parser alone, no transport
        connection._whole_chunks(chunked, 0, len(chunked), [])

    def blocks() -> list[tuple[str | None, bytes]]:
        return SSEParser().feed(sse)

    parsed = blocks()

    def translate() -> list[Event]:
        translator = StreamTranslator()
        out: list[Event] = []
        for name, data in parsed:
            out += translator.feed(name, data)
            if translator.done:
                break
        return out + translator.finish()

    events = translate()

    def encode() -> bytes:
        encoder = ChunkEncoder(
            completion_id="chatcmpl-x", created=1, model="bench/mock", include_usage=True
        )
        return encoder.encode_batch(events)

    stages: list[tuple[str, Callable[[], object]]] = [
        ("HTTP chunks", chunks),
        ("SSE blocks", blocks),
        ("decode + translate", translate),
        ("encode", encode),
    ]
    print(f"one {CHUNKS}-chunk stream ({len(parsed)} SSE events), median of 5 × {args.repeat}:")
    for name, stage in stages:
        times = []
        for _ in range(5):
            began = time.perf_counter()
            for _ in range(args.repeat):
                stage()
            times.append((time.perf_counter() - began) / args.repeat * 1e6)
        print(f"  {name:20s} {sorted(times)[2]:7.1f} µs")


if __name__ == "__main__":
    main()
