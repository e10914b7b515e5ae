"""The generation benchmark: `python -m benchmarks.generation [--quick] [--rounds N] ...`.

Starts the real server with the local SmolLM2 model (N instances, T threads each) and a bare
llama-cpp-python process with N `Llama` objects on the same file, threads and context; checks
that both turn the same request into the same prompt and the same greedy answer; then, round by
round, alternates the two sides request by request (bare, server, server, bare, ...): streamed
one-client requests, then batches of N concurrent clients. Prints medians over rounds beside
the issue's targets and writes everything to benchmarks/results/generation-<time>.json.

Exit status: 0 when every measurement ran, 1 when one failed (its message is printed; the
figures so far are still reported), 2 when the benchmark could not start. With
--check-targets, a missed target is 1 too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.generation import report
from benchmarks.generation.bare import BareProcess
from benchmarks.generation.client import GenerationClient, concurrent
from benchmarks.generation.params import (
    MODEL_ID,
    MODEL_PATH,
    PROMPT,
    Parameters,
    request_body,
)
from benchmarks.generation.server import start_server, write_config
from benchmarks.generation.timing import Stream, batch_rate
from benchmarks.procs import BenchError, Server
from benchmarks.run import RESULTS, machine_info

# Fewer decoded tokens than this and a rate says little: the prompt must make a long answer.
MIN_DECODED = 16
# The server may still be loading its instances when it first listens.
READY_TIMEOUT_S = 120.0


def _parse(argv: list[str] | None) -> tuple[Parameters, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generation", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 short rounds (~1 minute)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; quick 2)")
    parser.add_argument("--requests", type=int, help="1-client requests per side per round")
    parser.add_argument("--batches", type=int, help="concurrent batches per side per round")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 4)")
    parser.add_argument(
        "--instances", type=int, help="the server's engine instances (default: the machine's)"
    )
    parser.add_argument("--max-tokens", type=int, help="tokens per answer (default 128)")
    parser.add_argument("--threads", type=int, help="llama.cpp threads per instance (default 1)")
    parser.add_argument("--n-ctx", type=int, help="context per instance (default 2048)")
    parser.add_argument("--check-targets", action="store_true", help="exit 1 on a missed target")
    parser.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/…)")
    args = parser.parse_args(argv)
    params = Parameters.quick() if args.quick else Parameters.default()
    names = ("rounds", "requests", "batches", "clients", "instances", "max_tokens", "threads")
    for name in (*names, "n_ctx"):
        value = getattr(args, name)
        if value is not None:
            params = replace(params, **{name: max(1, value)})
    return params, args


class Session:
    """Both sides, started; runs the checks, the warm-up and the rounds, keeps every record."""

    def __init__(self, params: Parameters, server: Server, key: str, bare: BareProcess) -> None:
        self.params = params
        self.server = server
        self.bare = bare
        self.body = request_body(params.max_tokens)
        self.clients = [GenerationClient(server.port, key) for _ in range(params.clients)]
        self.records: list[dict[str, Any]] = []
        self.reference = ""  # the greedy answer both sides gave in the preflight
        self.mismatches = 0  # measured answers whose text differs from the reference

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    async def _server_stream_when_ready(self) -> Stream:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            self.server.check_alive()
            try:
                return await self.clients[0].stream(self.body)
            except (BenchError, OSError, asyncio.IncompleteReadError) as exc:
                await self.clients[0].close()
                if time.monotonic() > deadline:
                    raise BenchError(f"the server never answered correctly: {exc}") from None
                await asyncio.sleep(0.5)

    async def preflight(self) -> None:
        """One answer from each side: same prompt tokens, same text, long enough to time."""
        served = await self._server_stream_when_ready()
        self.server.settle_tree()
        (bare,) = await asyncio.to_thread(self.bare.run, 1)
        if served.prompt_tokens != self.bare.prompt_tokens:
            raise BenchError(
                f"the server counted {served.prompt_tokens} prompt tokens, the bare side "
                f"{self.bare.prompt_tokens}: they do not render the same prompt"
            )
        if served.text != bare.text:
            raise BenchError(
                "the sides answered differently to the same greedy request:\n"
                f"  server: {served.text[:200]!r}\n  bare:   {bare.text[:200]!r}"
            )
        if min(served.decoded, bare.decoded) < MIN_DECODED:
            raise BenchError(
                f"the answer is only {served.completion_tokens} tokens long: too short to time"
            )
        self.reference = served.text
        print(
            f"preflight: {served.prompt_tokens} prompt tokens; both sides answer the same "
            f"{served.completion_tokens} tokens (finish: {served.finish_reason})"
        )

    async def warmup(self) -> None:
        """One unrecorded batch per side: every instance has loaded the prompt once."""
        for side in ("bare", "server"):
            for stream in await self._generate(side, self.params.clients):
                if stream.text != self.reference:
                    raise BenchError(f"{side}: a concurrent answer differs from the reference")

    async def _generate(self, side: str, clients: int) -> list[Stream]:
        if side == "bare":
            return await asyncio.to_thread(self.bare.run, clients)
        if clients == 1:
            return [await self.clients[0].stream(self.body)]
        return await concurrent(self.clients[:clients], self.body)

    def _cpu(self, side: str) -> float:
        return self.bare.cpu_seconds() if side == "bare" else self.server.cpu_seconds()

    async def measure(self, index: int, phase: str, side: str, number: int) -> None:
        clients = 1 if phase == "single" else self.params.clients
        before = self._cpu(side)
        streams = await self._generate(side, clients)
        cpu = self._cpu(side) - before
        self.mismatches += sum(s.text != self.reference for s in streams)
        self.records.append(
            {
                "round": index,
                "phase": phase,
                "side": side,
                "number": number,
                "cpu_s": cpu,
                "streams": [s.as_dict() for s in streams],
            }
        )
        ttft = sorted(s.ttft for s in streams)[len(streams) // 2] * 1000
        if phase == "single":
            rate, what = streams[0].rate, "tok/s"
        else:
            rate, what = batch_rate(streams), "tok/s total"
        shown = "-" if rate is None else f"{rate:6.1f}"
        print(
            f"  round {index + 1}  {clients} client{'s' if clients > 1 else ' '}  {side:<6} "
            f"{shown} {what:<11}  TTFT {ttft:7.1f} ms"
        )

    async def run_round(self, index: int) -> None:
        # The order alternates from one measurement to the next, and starts the other way
        # round in the next round, so neither side always follows the other.
        for phase, count in (("single", self.params.requests), ("concurrent", self.params.batches)):
            for number in range(count):
                order = ("bare", "server") if (index + number) % 2 == 0 else ("server", "bare")
                for side in order:
                    await self.measure(index, phase, side, number)
                    await asyncio.sleep(self.params.pause)


async def _measure(session: Session, failures: dict[str, str]) -> None:
    try:
        await session.preflight()
        await session.warmup()
    except BenchError:
        await session.close()
        raise
    try:
        for index in range(session.params.rounds):
            await session.run_round(index)
    except (BenchError, OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        server = session.server
        if server.process.poll() is not None:
            message += (
                f"\nthe server exited with status {server.process.returncode}; its log ends "
                f"with:\n{server.log_tail(8)}"
            )
        failures["rounds"] = message
        print(f"  ABORTED: {message}", file=sys.stderr)
    finally:
        await session.close()


def _cpu_times() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, irq, softirq, steal)."""
    try:
        with open("/proc/stat") as stat:
            return [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return []


def _steal_share(before: list[int], after: list[int]) -> float | None:
    """The share of CPU time the hypervisor gave to other guests: a VM's noise, in one number."""
    if len(before) < 8 or len(after) < 8:
        return None
    total = sum(after) - sum(before)
    return (after[7] - before[7]) / total if total > 0 else None


def _memory(server: Server, bare: BareProcess) -> dict[str, int]:
    # The server's models live in its worker (the deepest process of its tree).
    return {"bare": bare.rss(), "server": server.memory().worker_rss}


def _document(
    params: Parameters,
    session: Session,
    started: datetime,
    load: dict[str, Any],
    memory: dict[str, int],
    failures: dict[str, str],
) -> dict[str, Any]:
    summary = report.summarize(session.records)
    return {
        "date": started.isoformat(),
        "machine": machine_info(),
        "load": load,
        "parameters": {
            **asdict(params),
            "model": MODEL_ID,
            "model_path": MODEL_PATH,
            "prompt": PROMPT,
            "rendered_prompt": session.bare.prompt,
            "prompt_tokens": session.bare.prompt_tokens,
            "sampling": "temperature 0 (greedy)",
            "server": "python -m modelport serve, 1 worker, SQLite, auth on, streamed over HTTP",
            "bare": "llama_cpp.Llama.generate in its own process, one thread per instance",
        },
        "records": session.records,
        "text_mismatches": session.mismatches,
        "memory_rss_bytes": memory,
        "summary": summary,
        "targets": [c.as_dict() for c in report.checks(summary)],
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    params, args = _parse(argv)
    started = datetime.now(UTC)
    clock = time.monotonic()
    load: dict[str, Any] = {"start": list(os.getloadavg())}
    cpu_before = _cpu_times()
    work = Path(tempfile.mkdtemp(prefix="modelport-bench-gen-"))
    request_file = work / "request.json"
    request_file.write_bytes(request_body(params.max_tokens))
    server: Server | None = None
    bare: BareProcess | None = None
    failures: dict[str, str] = {}
    print(f"generation benchmark: {params}; logs in {work}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in load['start'])}")
    try:
        config = write_config(work, params)
        server, key = start_server(work, config)
        bare = BareProcess(config, request_file, work / "bare.log", params.clients)
        session = Session(params, server, key, bare)
        print(f"both sides loaded in {time.monotonic() - clock:.0f} s")
        uvloop.run(_measure(session, failures))
        memory = _memory(server, bare)
    except BenchError as exc:
        print(f"benchmark could not run: {exc}\n(logs kept in {work})", file=sys.stderr)
        return 2
    finally:
        if bare is not None:
            bare.stop()
        if server is not None:
            server.stop()
    load["end"] = list(os.getloadavg())
    load["steal_share"] = _steal_share(cpu_before, _cpu_times())
    document = _document(params, session, started, load, memory, failures)
    print()
    print(report.format_table(document["summary"], memory, params.clients))
    print()
    print(report.format_checks(report.checks(document["summary"])))
    if session.mismatches:
        print(f"\nNOTE: {session.mismatches} measured answers differed from the reference text")
    steal = load["steal_share"]
    print(
        f"load average at end: {' '.join(f'{v:.2f}' for v in load['end'])}; CPU steal during "
        f"the run: {'-' if steal is None else f'{steal:.0%}'}"
    )
    output = args.output or RESULTS / f"generation-{started.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {output} (the run took {time.monotonic() - clock:.0f} s)")
    if failures:
        print(f"\nABORTED: {failures['rounds']}\n(logs kept in {work})", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    if args.check_targets and not all(c["passed"] for c in document["targets"]):
        return 1
    return 0
