"""The soak: `python -m benchmarks.soak [--minutes 30] [--concurrency 12] [--sample 10]`.

Not part of CI. Starts the mock upstream and the gateway as `benchmarks.run` does (`targets.py`:
`python -m modelport serve`, one worker, SQLite in a temporary data dir, a paying user's key,
the model `bench/mock` on the mock), then keeps a mixed load on it for `--minutes` from a fixed
number of concurrent clients on loopback: chat completions whole and streamed, Anthropic
messages streamed (and a few whole), a share of the streams left by the client part-way, bodies
the server must refuse (400), a wrong key every few seconds (401, below the per-address
throttle of 20 a minute) and the model list. Streams are paced by the mock's markers (20–50
chunks, 10–20 ms apart), so they last about as long as real ones.

Every `--sample` seconds it reads the server's process tree from /proc (supervisor and worker:
RSS, open file descriptors, threads), the client's counts and the server's usage count. After
the warm-up and at the end the clients close their connections and the tree is read at rest:
those two readings are the start and the end of the growth figures.

Checks, each printed PASS/FAIL: no unexpected answer (anything but the expected 200, 400 and
401, a stream cut short or a wrong content); descriptors at rest grew by at most `--fd-bound`;
the process tree did not change (no worker restarted); every request the server admitted left
exactly one usage row (the ids the client saw against the rows, with their status and, for whole
answers, their tokens); the balance the account shows is its opening balance less the rows'
costs, live over the API and, after a graceful stop, in the database (free balance + leases,
the ledger's charges, the key's spending); no error in the server's log.

Writes everything, every sample too, to benchmarks/results/soak-<UTC time>.json (not committed).
Exit status: 0 when every check passed, 1 when one failed, 2 when the soak could not start.

This module runs the phases and reports; `soak_clients.py` (the load), `soak_readings.py`
(/proc readings and what they show) and `soak_checks.py` (billing and the log) do the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.procs import BenchError, Server
from benchmarks.run import RESULTS, machine_info
from benchmarks.soak_checks import Check, billing_checks, live_checks, log_findings
from benchmarks.soak_clients import (
    BAD_KEY_EVERY_S,
    MIX,
    MODELS_EVERY_S,
    PACE_MS,
    STREAM_CHUNKS,
    Load,
)
from benchmarks.soak_readings import READINGS, Sample, Sampler, api, growth
from benchmarks.targets import Target, start_gateway, start_mock


@dataclass(frozen=True)
class Options:
    minutes: float
    concurrency: int
    sample_s: float
    warmup_s: float
    fd_bound: int
    seed: int

    @property
    def load_s(self) -> float:
        return self.minutes * 60

    @property
    def warmup(self) -> float:
        """The warm-up, at most half the run."""
        return min(self.warmup_s, self.load_s / 2)


def _parse(argv: list[str] | None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="load, warm-up included")
    parser.add_argument("--concurrency", type=int, default=12, help="concurrent clients")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between readings")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds (≤ half the run)")
    parser.add_argument("--fd-bound", type=int, default=8, help="most fds growth at rest")
    parser.add_argument("--seed", type=int, default=1, help="of the request mix")
    parser.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/…)")
    args = parser.parse_args(argv)
    options = Options(
        minutes=max(args.minutes, 0.1),
        concurrency=max(args.concurrency, 1),
        sample_s=max(args.sample, 1.0),
        warmup_s=max(args.warmup, 0.0),
        fd_bound=max(args.fd_bound, 0),
        seed=args.seed,
    )
    return options, args.output


@dataclass
class Run:
    sampler: Sampler
    start: Sample  # at rest after the warm-up
    end: Sample  # at rest after the load
    client_cpu_s: float  # this process, between them


async def soak(options: Options, gateway: Target, upstream: Server, load: Load) -> Run:
    """Warm-up, a reading at rest, the measured load, a reading at rest."""
    sampler = Sampler(gateway.server, upstream, load)
    ticking = asyncio.create_task(sampler.every(options.sample_s))
    try:
        await sampler.take()
        await load.run(options.warmup, options.concurrency)
        start = await sampler.at_rest()
        client_cpu = time.process_time()
        sampler.phase = "load"
        if load.halted is None:
            await load.run(options.load_s - options.warmup, options.concurrency)
        end = await sampler.at_rest()
    finally:
        ticking.cancel()
    return Run(sampler, start, end, time.process_time() - client_cpu)


def _change(value: float | None, rss: bool) -> str:
    if value is None:
        return "–"
    return f"{value / 2**20:+.2f} MB" if rss else f"{value:+.2f}"


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} µs"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def _level(value: int, rss: bool) -> str:
    return f"{value / 2**20:.1f} MB" if rss else f"{value:,}"


def format_summary(figures: dict[str, Any], load: Load) -> str:
    lines = [
        f"requests after warm-up: {figures['requests_after_warmup']:,}",
        "",
        f"{'':<11} {'after warm-up':>13} {'end':>9} {'max':>9} {'growth':>10} "
        f"{'per 1k req':>10} {'slope /h':>10} {'slope /1k req':>13} {'2nd half /h':>11}",
    ]
    titles = {"rss_bytes": "tree RSS", "worker_rss_bytes": "worker RSS"}
    for name in READINGS:
        f, rss = figures[name], "rss" in name
        lines.append(
            f"{titles.get(name, name):<11} {_level(f['after_warmup'], rss):>13} "
            f"{_level(f['end'], rss):>9} {_level(f['max'], rss):>9} "
            f"{_change(f['growth'], rss):>10} {_change(f['growth_per_1000_requests'], rss):>10} "
            f"{_change(f['slope_per_hour'], rss):>10} "
            f"{_change(f['slope_per_1000_requests'], rss):>13} "
            f"{_change(f['slope_per_hour_second_half'], rss):>11}"
        )
    first, second = figures["drift"]["first_half"], figures["drift"]["second_half"]
    lines += [
        "",
        f"server CPU per request: {_us(figures['server_cpu_us_per_request'])} after warm-up; "
        f"first half {_us(first['server_cpu_us_per_request'])}, second half "
        f"{_us(second['server_cpu_us_per_request'])}",
        f"whole chat answers, median of the readings' p50: first half "
        f"{_ms(first['chat_p50_ms_median'])}, second half {_ms(second['chat_p50_ms_median'])}",
        f"this client's CPU after warm-up: {figures['client_cpu_s']:.1f} s over "
        f"{figures['seconds_after_warmup']:.0f} s",
    ]
    lines += ["", "requests (whole run, warm-up included) by kind:"]
    for kind, counts in load.tally.items():
        detail = ", ".join(f"{outcome} {n:,}" for outcome, n in sorted(counts.items()))
        lines.append(f"  {kind:<20} {sum(counts.values()):>8,}  ({detail or 'none'})")
    return "\n".join(lines)


def format_checks(checks: list[Check]) -> str:
    return "\n".join(f"  {'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}" for c in checks)


# Where targets.start_gateway puts the gateway's SQLite database, under the work directory.
DATABASE = Path("gateway-data") / "modelport.db"


def main(argv: list[str] | None = None) -> int:
    options, output = _parse(argv)
    started = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="modelport-soak-"))
    servers: list[Server] = []
    print(f"soak: {options}; logs in {work}")
    try:
        mock = start_mock(work)
        servers.append(mock)
        gateway = start_gateway(work, mock)
        servers.append(gateway.server)
        assert gateway.key is not None
        me = api(gateway.port, "/api/v1/me", gateway.key)
        account_id, opening = int(me["id"]), int(me["balance_nano"])
        load = Load(gateway.port, gateway.key, random.Random(options.seed))
        run = uvloop.run(soak(options, gateway, mock, load))
        checks, live = live_checks(gateway, opening, len(load.expect))
    except BenchError as exc:
        print(f"soak could not run: {exc}\n(logs kept in {work})", file=sys.stderr)
        return 2
    finally:
        # A graceful stop (SIGINT): the server writes what it holds and gives its leases back.
        for server in reversed(servers):
            server.stop()
    stored_checks, stored = billing_checks(work / DATABASE, account_id, opening, load.expect)
    log_lines, log_errors = log_findings(gateway.server)
    figures = growth(run.sampler.samples, run.start, run.end)
    figures["client_cpu_s"] = run.client_cpu_s
    checks += stored_checks + _run_checks(options, run, gateway.server, load)
    checks.append(
        Check(
            "no error in the server's log",
            not log_errors,
            f"{log_lines} lines, {len(log_errors)} errors {log_errors[:3]}",
        )
    )
    print()
    print(format_summary(figures, load))
    print()
    print(format_checks(checks))
    document = {
        "date": started.isoformat(),
        "machine": machine_info(),
        "parameters": {
            **asdict(options),
            "mix_percent": MIX,
            "models_every_s": MODELS_EVERY_S,
            "bad_key_every_s": BAD_KEY_EVERY_S,
            "stream_chunks": STREAM_CHUNKS,
            "pace_ms": PACE_MS,
            "gateway": "python -m modelport serve, 1 worker, SQLite, auth on, paying user",
        },
        "growth": figures,
        "requests": {kind: dict(counts) for kind, counts in load.tally.items()},
        "unexpected_messages": load.messages,
        "billing": {"opening_nano": opening, "live": live, "stored": stored},
        "server_log": {"lines": log_lines, "errors": log_errors},
        "checks": [asdict(c) for c in checks],
        "samples": [
            {**asdict(s), "tree_rss": s.tree_rss, "tree_fds": s.tree_fds}
            for s in run.sampler.samples
        ],
    }
    path = output or RESULTS / f"soak-{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {path}")
    if all(c.passed for c in checks):
        shutil.rmtree(work, ignore_errors=True)
        return 0
    print(f"(logs kept in {work})", file=sys.stderr)
    return 1


def _run_checks(options: Options, run: Run, server: Server, load: Load) -> list[Check]:
    """The client's answers, the descriptors at rest, and the server's processes."""
    start, end = run.start, run.end
    trees = {tuple(s.pids) for s in run.sampler.samples}
    fds = end.tree_fds - start.tree_fds
    return [
        Check(
            "no unexpected answer",
            load.unexpected == 0,
            f"{load.unexpected:,} unexpected of {load.answered:,} {load.messages[:3]}",
        ),
        Check(
            f"fds at rest grew by at most {options.fd_bound}",
            fds <= options.fd_bound,
            f"{start.tree_fds} → {end.tree_fds} ({fds:+})",
        ),
        Check(
            "no client connection left open at rest",
            start.clients_open == 0 and end.clients_open == 0,
            f"after warm-up {start.clients_open}, at the end {end.clients_open}",
        ),
        Check(
            "the server ran to the end and stopped on SIGINT",
            load.halted is None and server.process.returncode != -signal.SIGKILL,
            f"{load.halted or 'ran'}; exit status {server.process.returncode}",
        ),
        Check("the process tree stayed the same", len(trees) == 1, f"pids seen: {trees}"),
    ]


if __name__ == "__main__":
    sys.exit(main())
