"""Instructions per request, counted by valgrind (callgrind): a figure that does not move with
the machine's noise, for comparing two versions of the request path.

    python -m benchmarks.instructions               # non-stream and 50-chunk streams
    python -m benchmarks.instructions --stream 0    # non-stream only
    PYTHONPATH=/path/to/worktree/src:/path/to/worktree python -m benchmarks.instructions

The driver (this file run with `--drive`) builds the app in-process with the benchmark's
configuration (a paying user's key, the model `bench/mock` on the mock upstream, SQLite), and
calls its RSGI entry directly, with plain objects standing in for granian's scope and protocol,
`concurrency` requests at a time on uvloop; the upstream is the real mock, over real HTTP, in
its own process (valgrind does not follow it). Everything the server process does per request
counts, the write-behind thread's SQLite work included; granian's own work (HTTP parsing, the
response's bytes) does not. Two runs differ only in how many requests they measure after the
same warm-up; their difference over the extra requests is the figure. Counts of one version
repeat within about 1 %; a 50-chunk stream's count also depends on how its chunks were batched.

Needs valgrind (Debian: `apt-get install -y valgrind`). Each pair of runs takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

WARM = 64
FEW, MANY = 64, 576
_COLLECTED = re.compile(r"Collected : (\d+)")


# ----------------------------------------------------------------------------- the driver


class _Headers(dict[str, str]):
    """granian's headers: a mapping with `get`."""


class _Scope:
    proto = "http"
    method = "POST"
    path = "/v1/chat/completions"
    query_string = ""
    client = "127.0.0.1:50000"
    scheme = "http"
    http_version = "1.1"
    server = "127.0.0.1:8000"
    authority = None

    def __init__(self, headers: _Headers) -> None:
        self.headers = headers


class _Transport:
    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    async def send_bytes(self, data: bytes) -> None:
        self._protocol.sent += len(data)

    async def send_str(self, data: str) -> None:
        self._protocol.sent += len(data)


class _Protocol:
    """granian's protocol object for one request: the body, then one way to answer."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.status = 0
        self.sent = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            yield self._body

        return chunks()

    async def __call__(self) -> bytes:
        return self._body

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.sent += len(body)

    def response_str(self, status: int, headers: Any, body: str) -> None:
        self.status = status
        self.sent += len(body)

    def response_empty(self, status: int, headers: Any) -> None:
        self.status = status

    def response_stream(self, status: int, headers: Any) -> _Transport:
        self.status = status
        return _Transport(self)

    async def client_disconnect(self) -> None:
        await asyncio.Event().wait()  # the client never leaves


def _drive(requests: int, stream: bool, concurrency: int) -> None:
    import uvloop

    from benchmarks.targets import MODEL, _gateway_config, clean_env, create_key, start_mock

    work = Path(tempfile.mkdtemp(prefix="modelport-instr-"))
    mock = start_mock(work)
    try:
        env = clean_env(
            {
                "MODELPORT_WORKERS": "1",
                "MODELPORT_DATA_DIR": str(work / "data"),
                "MODELPORT_LOG_LEVEL": "warning",
                "MODELPORT_CONFIG": str(_gateway_config(work, mock)),
            }
        )
        key = create_key(env, "bench")
        os.environ.update(env)
        from modelport.http.server import app_from_environment

        app = app_from_environment()
        content = "hello there" + (" chunks=50" if stream else "")
        body = json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream}
        ).encode()
        headers = _Headers(
            {"authorization": f"Bearer {key}", "content-type": "application/json", "host": "x"}
        )

        async def one() -> None:
            protocol = _Protocol(body)
            await app.__rsgi__(_Scope(headers), protocol)
            if protocol.status != 200 or not protocol.sent:
                raise SystemExit(f"the gateway answered {protocol.status}")

        async def run(total: int) -> None:
            async def client(count: int) -> None:
                for _ in range(count):
                    await one()

            await asyncio.gather(*(client(total // concurrency) for _ in range(concurrency)))

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        app.__rsgi_init__(loop)
        loop.run_until_complete(run(WARM))
        loop.run_until_complete(run(requests))
        app.__rsgi_del__(loop)
        loop.close()
    finally:
        mock.stop()


# ----------------------------------------------------------------------------- the counts


def _count(requests: int, stream: bool, concurrency: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        argv = [
            *("valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out"),
            *(sys.executable, "-m", "benchmarks.instructions", "--drive", str(requests)),
            *("--stream", str(int(stream)), "--concurrency", str(concurrency)),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the counted run failed:\n{done.stderr[-3000:]}")
    return int(found.group(1))


def per_request(stream: bool, concurrency: int) -> float:
    """Instructions per request: the two runs side by side (one per core)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        few, many = pool.map(lambda n: _count(n, stream, concurrency), (FEW, MANY))
    return (many - few) / (MANY - FEW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", type=int, choices=(0, 1), help="only this kind (default both)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive is not None:
        _drive(args.drive, bool(args.stream), args.concurrency)
        return
    kinds = (False, True) if args.stream is None else (bool(args.stream),)
    for stream in kinds:
        figure = per_request(stream, args.concurrency)
        name = "50-chunk streams" if stream else "non-stream"
        print(f"{name:18s} {figure / 1000:8.1f}k instructions per request", flush=True)


if __name__ == "__main__":
    main()
