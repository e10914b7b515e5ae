"""What the operations tests share: config entries for scripted upstreams, the server's JSON
log lines, its /metrics as samples, a set of scripted upstreams started and stopped together,
and a TCP gate in front of a database that a test can
close, stall and open again."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.server import RunningServer, free_port
from tests.fakes.openai_upstream import FakeOpenAIUpstream

# The shipped local model without its backend: these servers load no model.
BASE = '[[models]]\nid = "local/smollm2-135m-instruct"\nbackends = []\n'


class Fakes:
    """Scripted upstreams, one per concern (so that each one's request count means one
    thing): a subclass makes them as attributes, lists them in `all` and calls `start`."""

    all: tuple[FakeOpenAIUpstream, ...] = ()

    def start(self) -> None:
        for fake in self.all:
            fake.start_in_thread()

    def stop(self) -> None:
        for fake in self.all:
            fake.stop_thread()


def backend(url: str, name: str, **fields: Any) -> str:
    """An `openai_compat` backend entry, with any other fields (TOML values from JSON)."""
    lines = [
        "  [[models.backends]]",
        '  kind = "openai_compat"',
        f'  name = "{name}"',
        f'  url = "{url}"',
    ]
    lines += [f"  {key} = {json.dumps(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def model(model_id: str, *backends: str, priced: bool = True) -> str:
    """A model entry of its own (8k context; priced 0.002 / 0.006 CNY per 1k tokens)."""
    head = (
        f'\n[[models]]\nid = "{model_id}"\nname = "{model_id}"\n'
        'description = "A scripted upstream."\ncontext_length = 8192\n'
    )
    pricing = '  [models.pricing]\n  input_per_1k = "0.002"\n  output_per_1k = "0.006"\n'
    return head + (pricing if priced else "") + "".join(backends)


# ----------------------------------------------------------------------------- logs


def log_lines(server: RunningServer) -> list[dict[str, Any]]:
    """Every stderr line of the server, each parsed as one JSON object (or the test fails)."""
    parsed = []
    for number, line in enumerate(server.log_path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(value, dict), line[:300]
        parsed.append(value)
    return parsed


def access_lines(
    server: RunningServer, request_id: str, within: float = 5.0
) -> list[dict[str, Any]]:
    """A request's access lines, once there is one (access lines are written in batches)."""
    deadline = time.monotonic() + within
    while True:
        found = [
            line
            for line in log_lines(server)
            if line.get("request_id") == request_id and line["logger"] == "modelport.access"
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def lines_for(server: RunningServer, request_id: str, within: float = 5.0) -> list[dict[str, Any]]:
    """Every log line written for a request, once its access line is there."""
    if not access_lines(server, request_id, within):
        raise AssertionError(f"no access line for {request_id}:\n{server.output()}")
    return [line for line in log_lines(server) if line.get("request_id") == request_id]


# ----------------------------------------------------------------------------- metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(base_url: str, **kwargs: Any) -> Samples:
    """/metrics as {(sample name, sorted labels): value}."""
    answer = httpx.get(base_url + "/metrics", timeout=10, **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse_metrics(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_gauge(
    base_url: str, name: str, want: float, within: float = 5.0, **labels: str
) -> float:
    deadline = time.monotonic() + within
    while True:
        got = value(scrape(base_url), name, **labels)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


# ----------------------------------------------------------------------------- a database gate


class DatabaseGate:
    """A TCP relay to a database that the test controls: `close` cuts every connection and
    refuses new ones (a database that went away), `stall` holds every byte and leaves new
    connections waiting (one that stops answering without closing anything), `open` and
    `flow` undo them. Runs its own event loop in a thread."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._flowing: asyncio.Event = self._call(self._event())
        self.open()

    @staticmethod
    async def _event() -> asyncio.Event:
        flowing = asyncio.Event()
        flowing.set()
        return flowing

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def open(self) -> None:
        async def start() -> None:
            if self._server is None:
                self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

        self._call(start())

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(stop())

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def flow(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def stop(self) -> None:
        self.flow()
        self.close()
        self._call(asyncio.sleep(0.05))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    await self._flowing.wait()
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()
                self._writers.discard(sink)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
