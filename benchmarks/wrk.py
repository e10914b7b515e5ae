"""Running wrk (one thread) with `post.lua` and reading its results.

The Lua `done()` hook prints one JSON line with counts, errors and latency percentiles; wrk's own
"Non-2xx or 3xx responses" line is read as a cross-check. wrk's CPU time is measured from the
rusage of the reaped child, so its own ceiling can be judged.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.procs import BenchError

SCRIPT = Path(__file__).with_name("post.lua")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    bytes: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    wrk_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rate": self.rate}


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk (or run `make bench`)")
    return path


def run_wrk(
    url: str, body: bytes, key: str | None, *, connections: int, duration: float
) -> WrkResult:
    env = {**os.environ, "BENCH_BODY": body.decode(), "BENCH_KEY": key or ""}
    argv = [
        require_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(SCRIPT),
        url,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if completed.returncode != 0:
        raise BenchError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise BenchError(f"wrk printed no summary:\n{completed.stdout}{completed.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors: dict[str, int] = data["errors"]
    non_2xx = _NON_2XX.search(completed.stdout)
    if non_2xx:
        errors["status"] = max(errors["status"], int(non_2xx.group(1)))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        bytes=data["bytes"],
        errors=errors,
        latency_us=data["latency_us"],
        wrk_cpu_seconds=cpu,
    )
