"""The benchmark runner: `python -m benchmarks.run [--quick] [--rounds N] [--duration S]`.

Starts the mock upstream, the gateway and the bare proxy; checks one answer from each for every
phase; then, round by round, runs every phase against every target in turn (the order rotates
per round) with wrk, and the time-to-first-token client. Prints medians over rounds beside the
issue's targets and writes everything, per round, to benchmarks/results/bench-<time>.json.

Exit status: 0 when every run was clean, 1 when a phase was aborted for errors (its message is
printed), 2 when the benchmark could not start. With --check-targets, a missed target is 1 too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import pages, report
from benchmarks.phases import (
    LOAD_PHASES,
    PACE_EVERY_MS,
    PACE_FIRST_MS,
    TTFT_CHUNKS,
    Parameters,
    Phase,
    phase_body,
    ttft_body,
)
from benchmarks.probe import validate
from benchmarks.procs import BenchError, Server
from benchmarks.targets import (
    Target,
    direct_target,
    start_bare,
    start_gateway,
    start_mock,
)
from benchmarks.ttft import TTFTClient, measure_interleaved
from benchmarks.wrk import require_wrk, run_wrk

RESULTS = Path(__file__).resolve().parent / "results"
# A streamed answer read by wrk must be at least this share of the size checked by the probe
# (wrk counts headers and chunk framing too, so a whole answer is always above it).
MIN_BYTES_SHARE = 0.9


def _parse(argv: list[str] | None) -> tuple[Parameters, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round, short runs (~1 minute)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 5; quick 2)")
    parser.add_argument("--ttft-requests", type=int, help="TTFT samples per target per round")
    parser.add_argument("--check-targets", action="store_true", help="exit 1 on a missed target")
    parser.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/…)")
    args = parser.parse_args(argv)
    params = Parameters.quick() if args.quick else Parameters.default()
    if args.rounds is not None:
        params = replace(params, rounds=max(1, args.rounds))
    if args.duration is not None:
        params = replace(params, duration=max(1.0, args.duration))
    if args.ttft_requests is not None:
        params = replace(params, ttft_requests=max(1, args.ttft_requests))
    return params, args


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class Bench:
    """One benchmark session over started targets; collects runs, failures and memory."""

    def __init__(self, params: Parameters, targets: list[Target], mock: Server) -> None:
        self.params = params
        self.targets = targets
        self.mock = mock
        self.runs: list[dict[str, Any]] = []
        self.ttft: list[dict[str, list[float]]] = []
        self.failures: dict[str, str] = {}
        self.sizes: dict[tuple[str, str], int] = {}
        self.memory: dict[str, dict[str, Any]] = {}
        self.pages: dict[str, Any] = {}

    def preflight(self) -> None:
        """One validated answer per phase and target (and for TTFT), retried while starting."""
        for target in self.targets:
            for phase in LOAD_PHASES:
                self.sizes[phase.name, target.name] = _validate_when_ready(
                    target, phase_body(phase), phase.chunks
                )
            _validate_when_ready(target, ttft_body(), TTFT_CHUNKS)
            target.server.settle_tree()
            if target.name != "direct" and len(target.server.pids) < 2:
                raise BenchError(f"{target.name}: expected a granian worker process")

    def record_memory(self, when: str) -> None:
        for target in self.targets:
            self.memory.setdefault(target.name, {})[when] = target.server.memory().as_dict()

    def warmup(self) -> None:
        if self.params.warmup <= 0:
            return
        for phase in LOAD_PHASES:
            for target in self.targets:
                try:
                    run_wrk(
                        target.url,
                        phase_body(phase),
                        target.key,
                        connections=phase.connections,
                        duration=self.params.warmup,
                    )
                except BenchError as exc:
                    self._fail(f"{phase.name}/{target.name}", target, f"warm-up: {exc}")
                time.sleep(self.params.pause)

    def _fail(self, key: str, target: Target, message: str) -> None:
        """Record an aborted phase, saying whether the target's server is still running."""
        if target.server.process.poll() is not None:
            message += (
                f"\n{target.name}'s server exited with status {target.server.process.returncode}"
                f"; its log ends with:\n{target.server.log_tail(8)}"
            )
        self.failures[key] = message
        print(f"  ABORTED {key}: {message}", file=sys.stderr)

    def load_round(self, index: int) -> None:
        shift = index % len(self.targets)
        order = self.targets[shift:] + self.targets[:shift]
        for phase in LOAD_PHASES:
            for target in order:
                key = f"{phase.name}/{target.name}"
                if key in self.failures:
                    continue
                try:
                    self.runs.append(self._load_run(index, phase, target))
                except BenchError as exc:
                    self._fail(key, target, str(exc))
                time.sleep(self.params.pause)

    def _load_run(self, index: int, phase: Phase, target: Target) -> dict[str, Any]:
        server_before = target.server.cpu_seconds()
        mock_before = self.mock.cpu_seconds()
        result = run_wrk(
            target.url,
            phase_body(phase),
            target.key,
            connections=phase.connections,
            duration=self.params.duration,
        )
        server_cpu = target.server.cpu_seconds() - server_before
        mock_cpu = self.mock.cpu_seconds() - mock_before
        where = f"{target.name}, {phase.title}, round {index + 1}"
        if result.error_count:
            raise BenchError(
                f"{where}: wrk counted errors {result.errors} in {result.requests} requests "
                f"(status = answers ≥ 400){_log_note(target)}"
            )
        if result.requests == 0:
            raise BenchError(f"{where}: no request completed")
        per_response = result.bytes / result.requests
        expected = self.sizes[phase.name, target.name]
        if per_response < MIN_BYTES_SHARE * expected:
            raise BenchError(
                f"{where}: {per_response:.0f} bytes per answer, but a whole answer has "
                f"{expected} bytes of body: answers were cut short"
            )
        seconds = result.seconds
        print(
            f"  round {index + 1}  {phase.title:<24} {target.name:<8} "
            f"{result.rate:>9,.0f}/s  p50 {result.latency_us['p50'] / 1000:6.2f} ms  "
            f"p99 {result.latency_us['p99'] / 1000:6.2f} ms"
        )
        return {
            "round": index,
            "phase": phase.name,
            "target": target.name,
            "wrk": result.as_dict(),
            "server_cpu_s": server_cpu,
            "mock_cpu_s": mock_cpu,
            "server_cpu_us_per_request": server_cpu / result.requests * 1e6,
            "mock_cpu_us_per_request": mock_cpu / result.requests * 1e6,
            "server_cpu_share": server_cpu / seconds,
            "mock_cpu_share": mock_cpu / seconds,
            "wrk_cpu_share": result.wrk_cpu_seconds / seconds,
            "bytes_per_response": per_response,
        }

    def ttft_round(self, index: int) -> None:
        if "ttft" in self.failures:
            return
        clients = [TTFTClient(t.name, t.port, t.key) for t in self.targets]
        try:
            samples = uvloop.run(
                measure_interleaved(clients, ttft_body(), self.params.ttft_requests)
            )
        except (BenchError, OSError, ValueError, EOFError) as exc:
            self.failures["ttft"] = f"round {index + 1}: {exc}"
            print(f"  ABORTED ttft: {exc}", file=sys.stderr)
            return
        self.ttft.append(samples)
        medians = "  ".join(
            f"{name} {report.quantile(values, 0.5) * 1000:.2f} ms"
            for name, values in samples.items()
        )
        print(f"  round {index + 1}  TTFT p50: {medians}")


def _log_note(target: Target) -> str:
    tail = target.server.log_tail(8)
    return f"; the server's log ends with:\n{tail}" if tail else "; the server logged nothing"


def _validate_when_ready(target: Target, body: bytes, chunks: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        target.server.check_alive()
        try:
            return validate(target.name, target.port, body, target.key, chunks)
        except (BenchError, OSError) as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"{target.name} never answered correctly: {exc}") from None
            time.sleep(0.2)


def _document(bench: Bench, params: Parameters, started: datetime) -> dict[str, Any]:
    summary = report.summarize(bench.runs, bench.ttft)
    return {
        "date": started.isoformat(),
        "machine": machine_info(),
        "parameters": {
            **asdict(params),
            "wrk": "wrk -t1 --latency, post.lua",
            "ttft": {"chunks": TTFT_CHUNKS, "pace_ms": [PACE_FIRST_MS, PACE_EVERY_MS]},
            "gateway": "python -m modelport serve, 1 worker, SQLite, auth on",
            "bare": "granian ASGI 1 worker uvloop + aiohttp",
        },
        "runs": bench.runs,
        "ttft_samples_s": bench.ttft,
        "memory": bench.memory,
        "summary": summary,
        "pages": bench.pages,
        "targets": [c.as_dict() for c in report.checks(summary, bench.memory, bench.pages)],
        "failures": bench.failures,
    }


def main(argv: list[str] | None = None) -> int:
    params, args = _parse(argv)
    started = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    servers: list[Server] = []
    try:
        require_wrk()
        print(f"benchmark: {params}; logs in {work}")
        mock = start_mock(work)
        servers.append(mock)
        gateway = start_gateway(work, mock)
        servers.append(gateway.server)
        bare = start_bare(work, mock)
        servers.append(bare.server)
        bench = Bench(params, [direct_target(mock), bare, gateway], mock)
        bench.preflight()
        bench.record_memory("idle")
        print("warming up")
        bench.warmup()
        for index in range(params.rounds):
            bench.load_round(index)
            bench.ttft_round(index)
        bench.record_memory("after")
        print("model pages")
        bench.pages = pages.measure(f"http://127.0.0.1:{gateway.port}")
    except BenchError as exc:
        print(f"benchmark could not run: {exc}\n(logs kept in {work})", file=sys.stderr)
        return 2
    finally:
        for server in reversed(servers):
            server.stop()
    document = _document(bench, params, started)
    print()
    print(report.format_table(document["summary"], bench.memory))
    print()
    print(report.format_ceilings(document["summary"]))
    print()
    print(report.format_checks(report.checks(document["summary"], bench.memory, bench.pages)))
    if bench.pages:
        print(
            f"\nmodel pages: rendered in {bench.pages['render_ms_median']:.2f} ms (median, the "
            f"slowest model), fetched over HTTP in {bench.pages['fetch_ms_median']:.2f} ms"
        )
    output = args.output or RESULTS / f"bench-{started.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {output}")
    if bench.failures:
        print("\nABORTED phases (their figures are missing or partial):", file=sys.stderr)
        for key, message in bench.failures.items():
            print(f"  {key}: {message}", file=sys.stderr)
        print(f"(logs kept in {work})", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    if args.check_targets and not all(c["passed"] for c in document["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
