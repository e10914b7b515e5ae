"""The soak's readings of the server (`benchmarks.soak`): its process tree from /proc (RSS,
open descriptors by kind, threads, CPU), the client's counts and the server's usage count,
every few seconds; and what they show: growth, slopes, drift."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.probe import request
from benchmarks.procs import BenchError, Server, cpu_seconds, process_tree, rss_bytes
from benchmarks.soak_clients import Load

REST_S = 2.0  # from the clients' last connection closing to the reading at rest
TCP_STATES = {"01": "established", "06": "time-wait", "08": "close-wait", "0A": "listen"}


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tcp_sockets() -> dict[int, tuple[int, int, str]]:
    """Inode -> (local port, remote port, state) of every TCP socket of this network."""
    found: dict[int, tuple[int, int, str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            found[int(fields[9])] = (local, remote, TCP_STATES.get(fields[3], fields[3]))
    return found


def fd_kinds(
    pid: int, port: int, upstream: int, sockets: dict[int, tuple[int, int, str]]
) -> Counter[str]:
    """A process's open descriptors by what they are: TCP from clients (to `port`) and to the
    upstream (`upstream`) with their state, other sockets, pipes, event fds, files."""
    kinds: Counter[str] = Counter()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found = sockets.get(int(target[8:-1]))
            if found is None:
                kinds["socket (not TCP)"] += 1
                continue
            local, remote, state = found
            side = "client" if local == port else "upstream" if remote == upstream else "tcp"
            kinds["listen" if state == "listen" else f"{side} {state}"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target[11:].strip("[]")] += 1
        else:
            kinds[target.split(":")[0] if ":" in target else "file"] += 1
    return kinds


@dataclass(frozen=True)
class Sample:
    """One reading of the server's process tree, and the counts at that moment."""

    t: float  # seconds since the load began
    phase: str  # "warm-up", "load" or "rest"
    pids: list[int]
    rss: list[int]  # per process, the tree's order (supervisor first)
    fds: list[int]
    threads: list[int]
    fd_kinds: dict[str, int]  # the tree's
    cpu_s: float  # user + system of the tree, since it started
    outcomes: dict[str, int]  # the client's answers so far (Load.outcomes)
    usage_rows: int | None  # the server's count (GET /api/v1/usage), None if it failed
    chat_p50_ms: float | None  # whole chat answers since the last reading
    chat_p99_ms: float | None

    @property
    def answered(self) -> int:
        return sum(self.outcomes.values())

    @property
    def tree_rss(self) -> int:
        return sum(self.rss)

    @property
    def tree_fds(self) -> int:
        return sum(self.fds)

    @property
    def clients_open(self) -> int:
        return sum(n for kind, n in self.fd_kinds.items() if kind.startswith("client"))

    def line(self) -> str:
        rows = "?" if self.usage_rows is None else f"{self.usage_rows:,}"
        outcomes = " ".join(f"{k} {n:,}" for k, n in sorted(self.outcomes.items())) or "none"
        if self.phase == "rest":
            tail = "  " + ", ".join(f"{k} {n}" for k, n in sorted(self.fd_kinds.items()))
        elif self.chat_p50_ms is not None and self.chat_p99_ms is not None:
            tail = f"  chat p50 {self.chat_p50_ms:4.1f} p99 {self.chat_p99_ms:5.1f} ms"
        else:
            tail = ""
        return (
            f"  {self.t:6.0f}s {self.phase:<7} RSS {self.tree_rss / 2**20:6.1f} MB "
            f"(worker {self.rss[-1] / 2**20:5.1f})  fds {self.tree_fds:3} {self.fds}  "
            f"threads {sum(self.threads)}  cpu {self.cpu_s:6.1f}s  answers {outcomes}  "
            f"usage rows {rows}{tail}"
        )


class Sampler:
    """Readings of one server's process tree, beside the load's counts; each one printed."""

    def __init__(self, server: Server, upstream: Server, load: Load) -> None:
        self.server = server
        self.upstream = upstream
        self.load = load
        self.samples: list[Sample] = []
        self.phase = "warm-up"

    async def take(self) -> Sample:
        if self.server.process.poll() is not None and self.load.halted is None:
            self.load.halted = f"the server exited with status {self.server.process.returncode}"
            print(f"  HALTED: {self.load.halted}", file=sys.stderr)
        pids = process_tree(self.server.process.pid)
        latencies, self.load.latencies = sorted(self.load.latencies), []
        sockets = tcp_sockets()
        kinds: Counter[str] = Counter()
        for pid in pids:
            kinds += fd_kinds(pid, self.server.port, self.upstream.port, sockets)
        sample = Sample(
            t=time.monotonic() - self.load.begun,
            phase=self.phase,
            pids=pids,
            rss=[rss_bytes(pid) for pid in pids],
            fds=[open_fds(pid) for pid in pids],
            threads=[threads(pid) for pid in pids],
            fd_kinds=dict(kinds),
            cpu_s=cpu_seconds(pids),
            outcomes=dict(self.load.outcomes),
            usage_rows=await asyncio.to_thread(_usage_rows, self.server.port, self.load.key),
            chat_p50_ms=_quantile_ms(latencies, 0.5),
            chat_p99_ms=_quantile_ms(latencies, 0.99),
        )
        self.samples.append(sample)
        print(sample.line(), flush=True)
        return sample

    async def every(self, seconds: float) -> None:
        """A reading every `seconds`, unless one was just taken (at rest)."""
        while True:
            await asyncio.sleep(seconds)
            if time.monotonic() - self.load.begun - self.samples[-1].t > seconds / 2:
                await self.take()

    async def at_rest(self) -> Sample:
        """A reading with no client connected (after the load returned)."""
        self.phase = "rest"
        await asyncio.sleep(REST_S)
        return await self.take()


def _quantile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def api(port: int, path: str, key: str) -> Any:
    reply = request(port, "GET", path, key=key)
    if reply.status != 200:
        raise BenchError(f"GET {path}: status {reply.status}, {reply.body[:300]!r}")
    return json.loads(reply.body)


def _usage_rows(port: int, key: str) -> int | None:
    try:
        totals = api(port, "/api/v1/usage?by=key", key)["data"]
    except (BenchError, OSError, ValueError, KeyError):
        return None
    return sum(int(total["requests"]) for total in totals)


def _slope(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of y over x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


READINGS: dict[str, Callable[[Sample], int]] = {
    "rss_bytes": lambda s: s.tree_rss,
    "worker_rss_bytes": lambda s: s.rss[-1],
    "fds": lambda s: s.tree_fds,
    "threads": lambda s: sum(s.threads),
}


def growth(samples: list[Sample], start: Sample, end: Sample) -> dict[str, Any]:
    """RSS, fds and threads at rest after the warm-up and at the end, the maxima, the growth
    (absolute and per 1,000 requests) and the slopes over the loaded readings after warm-up
    (per hour and per 1,000 requests), and over their second half alone: memory that settles
    (allocator arenas fill up over the first few thousand streams) flattens there, a leak
    does not."""
    loaded = [s for s in samples if s.phase == "load"]
    answered = end.answered - start.answered
    figures: dict[str, Any] = {
        "requests_after_warmup": answered,
        "seconds_after_warmup": end.t - start.t,
        "server_cpu_us_per_request": (end.cpu_s - start.cpu_s) / answered * 1e6
        if answered
        else None,
        "drift": drift(loaded),
    }
    for name, read in READINGS.items():
        grew = read(end) - read(start)
        per_second = _slope([(s.t, read(s)) for s in loaded])
        per_request = _slope([(s.answered, read(s)) for s in loaded])
        late = _slope([(s.t, read(s)) for s in loaded[len(loaded) // 2 :]])
        figures[name] = {
            "after_warmup": read(start),
            "end": read(end),
            "max": max(read(s) for s in samples),
            "growth": grew,
            "growth_per_1000_requests": grew / answered * 1000 if answered else None,
            "slope_per_hour": None if per_second is None else per_second * 3600,
            "slope_per_1000_requests": None if per_request is None else per_request * 1000,
            "slope_per_hour_second_half": None if late is None else late * 3600,
        }
    return figures


def drift(loaded: list[Sample]) -> dict[str, Any]:
    """Server CPU per request and the whole chat answers' median latency, in the first and
    the second half of the loaded readings: whether requests got dearer as the run went on."""
    halves = (loaded[: len(loaded) // 2 + 1], loaded[len(loaded) // 2 :])
    figures: dict[str, Any] = {}
    for name, half in zip(("first_half", "second_half"), halves, strict=True):
        requests = half[-1].answered - half[0].answered if len(half) > 1 else 0
        p50s = sorted(s.chat_p50_ms for s in half[1:] if s.chat_p50_ms is not None)
        figures[name] = {
            "server_cpu_us_per_request": (
                (half[-1].cpu_s - half[0].cpu_s) / requests * 1e6 if requests else None
            ),
            "chat_p50_ms_median": p50s[len(p50s) // 2] if p50s else None,
        }
    return figures
