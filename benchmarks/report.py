"""Turning per-round measurements into medians, the issue's targets with pass/fail, a printed
table, and the JSON document written under benchmarks/results/.

Every figure is computed per round first (e.g. gateway p50 − direct p50 in that round), then the
median over rounds is reported, so a disturbed round moves the result as little as possible.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

TARGET_NAMES = ("direct", "bare", "gateway")
MB = 1024 * 1024

Run = dict[str, Any]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _runs(runs: list[Run], phase: str, target: str) -> list[Run]:
    return [run for run in runs if run["phase"] == phase and run["target"] == target]


def _per_round(runs: list[Run], phase: str, target: str, value: Callable[[Run], float]) -> float:
    return _median([value(run) for run in _runs(runs, phase, target)]) or float("nan")


def _added(runs: list[Run], phase: str, target: str, key: str) -> float | None:
    """Median over rounds of (target's latency − direct's latency in the same round), in µs."""
    direct = {run["round"]: run["wrk"]["latency_us"][key] for run in _runs(runs, phase, "direct")}
    deltas = [
        run["wrk"]["latency_us"][key] - direct[run["round"]]
        for run in _runs(runs, phase, target)
        if run["round"] in direct
    ]
    return _median(deltas)


def _against_bare(
    runs: list[Run], phase: str, target: str, combine: Callable[[Run, Run], float]
) -> float | None:
    """Median over rounds of `combine(target's run, bare's run)` in the same round."""
    bare = {run["round"]: run for run in _runs(runs, phase, "bare")}
    return _median(
        [
            combine(run, bare[run["round"]])
            for run in _runs(runs, phase, target)
            if run["round"] in bare
        ]
    )


def _rate_ratio(run: Run, bare: Run) -> float:
    return float(run["wrk"]["rate"]) / float(bare["wrk"]["rate"]) if bare["wrk"]["rate"] else 0.0


def _p50_difference(run: Run, bare: Run) -> float:
    return float(run["wrk"]["latency_us"]["p50"]) - float(bare["wrk"]["latency_us"]["p50"])


def summarize(runs: list[Run], ttft: list[dict[str, list[float]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for phase in {run["phase"] for run in runs}:
        per_target: dict[str, Any] = {}
        for target in TARGET_NAMES:
            if not _runs(runs, phase, target):
                continue
            entry: dict[str, float | int | None] = {
                "rate": _per_round(runs, phase, target, lambda r: r["wrk"]["rate"]),
                "p50_us": _per_round(runs, phase, target, lambda r: r["wrk"]["latency_us"]["p50"]),
                "p99_us": _per_round(runs, phase, target, lambda r: r["wrk"]["latency_us"]["p99"]),
                "server_cpu_us_per_request": _per_round(
                    runs, phase, target, lambda r: r["server_cpu_us_per_request"]
                ),
                "mock_cpu_us_per_request": _per_round(
                    runs, phase, target, lambda r: r["mock_cpu_us_per_request"]
                ),
                "server_cpu_share": _per_round(
                    runs, phase, target, lambda r: r["server_cpu_share"]
                ),
                "mock_cpu_share": _per_round(runs, phase, target, lambda r: r["mock_cpu_share"]),
                "wrk_cpu_share": _per_round(runs, phase, target, lambda r: r["wrk_cpu_share"]),
                "rounds": len(_runs(runs, phase, target)),
            }
            if target != "direct":
                entry["added_p50_us"] = _added(runs, phase, target, "p50")
                entry["added_p99_us"] = _added(runs, phase, target, "p99")
            if target == "gateway":
                # Relative to the bare proxy in the same round (issue 12's targets): the two
                # share the machine's state of the moment, so the ratio drifts less than either.
                entry["rate_over_bare"] = _against_bare(runs, phase, target, _rate_ratio)
                entry["p50_over_bare_us"] = _against_bare(runs, phase, target, _p50_difference)
            per_target[target] = entry
        summary[phase] = per_target
    if ttft:
        summary["ttft"] = _ttft_summary(ttft)
    return summary


def _ttft_summary(rounds: list[dict[str, list[float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target in TARGET_NAMES:
        p50s = [quantile(r[target], 0.5) * 1000 for r in rounds if r.get(target)]
        p90s = [quantile(r[target], 0.9) * 1000 for r in rounds if r.get(target)]
        if not p50s:
            continue
        entry: dict[str, Any] = {"p50_ms": _median(p50s), "p90_ms": _median(p90s)}
        if target != "direct":
            over50 = [
                (quantile(r[target], 0.5) - quantile(r["direct"], 0.5)) * 1000 for r in rounds
            ]
            over90 = [
                (quantile(r[target], 0.9) - quantile(r["direct"], 0.9)) * 1000 for r in rounds
            ]
            entry["overhead_p50_ms"] = _median(over50)
            entry["overhead_p90_ms"] = _median(over90)
        out[target] = entry
    return out


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    unit: str
    at_least: bool
    issue: int = 3  # the issue that set the target

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
            "at_least": self.at_least,
            "passed": self.passed,
            "issue": self.issue,
        }


def _get(summary: dict[str, Any], *path: str) -> float | None:
    node: Any = summary
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if node is not None else None


def checks(
    summary: dict[str, Any], memory: dict[str, Any], pages: dict[str, Any] | None = None
) -> list[Check]:
    """The issues' targets, evaluated on the gateway: issue 3's absolute ones, then issue 12's,
    relative to the bare proxy measured in the same run, then issue 14's model page."""
    found = [*_issue3_checks(summary, memory), *_issue12_checks(summary, memory)]
    if pages:
        found.append(
            Check(
                "model page render, median (slowest model)",
                pages.get("render_ms_median"),
                5.0,
                "ms",
                False,
                issue=14,
            )
        )
    return found


def _gateway_memory(memory: dict[str, Any], key: str) -> list[float]:
    """The gateway's `key` at idle (after start and the probes) and after the run."""
    values = [memory.get("gateway", {}).get(when, {}).get(key) for when in ("idle", "after")]
    return [float(value) for value in values if value is not None]


def _issue3_checks(summary: dict[str, Any], memory: dict[str, Any]) -> list[Check]:
    added_p50 = _get(summary, "nonstream_c1", "gateway", "added_p50_us")
    added_p99 = _get(summary, "nonstream_c1", "gateway", "added_p99_us")
    worker_rss = [
        memory.get("gateway", {}).get(when, {}).get("worker_rss_bytes")
        for when in ("idle", "after")
    ]
    rss_values = [value for value in worker_rss if value]
    return [
        Check(
            "c=64 non-stream",
            _get(summary, "nonstream_c64", "gateway", "rate"),
            2000,
            "req/s",
            True,
        ),
        Check(
            "c=64 50-chunk streams",
            _get(summary, "stream_c64", "gateway", "rate"),
            1000,
            "streams/s",
            True,
        ),
        Check(
            "added latency c=1 p50",
            None if added_p50 is None else added_p50 / 1000,
            0.5,
            "ms",
            False,
        ),
        Check(
            "added latency c=1 p99",
            None if added_p99 is None else added_p99 / 1000,
            2.0,
            "ms",
            False,
        ),
        Check(
            "TTFT overhead p50",
            _get(summary, "ttft", "gateway", "overhead_p50_ms"),
            1.0,
            "ms",
            False,
        ),
        Check(
            "RSS of the worker (max of idle, after)",
            max(rss_values) / MB if rss_values else None,
            150,
            "MB",
            False,
        ),
    ]


def _issue12_checks(summary: dict[str, Any], memory: dict[str, Any]) -> list[Check]:
    over_bare_p50 = _get(summary, "nonstream_c1", "gateway", "p50_over_bare_us")
    tree_rss = _gateway_memory(memory, "tree_rss_bytes")
    loaded = _gateway_memory(memory, "processes_with_a_local_model")
    return [
        Check(
            "c=64 non-stream, gateway/bare",
            _get(summary, "nonstream_c64", "gateway", "rate_over_bare"),
            0.5,
            "× bare",
            True,
            issue=12,
        ),
        Check(
            "c=64 50-chunk streams, gateway/bare",
            _get(summary, "stream_c64", "gateway", "rate_over_bare"),
            0.5,
            "× bare",
            True,
            issue=12,
        ),
        Check(
            "added latency c=1 p50 over bare's",
            None if over_bare_p50 is None else over_bare_p50 / 1000,
            0.25,
            "ms",
            False,
            issue=12,
        ),
        Check(
            "server CPU per non-stream request (c=64)",
            _get(summary, "nonstream_c64", "gateway", "server_cpu_us_per_request"),
            250,
            "µs",
            False,
            issue=12,
        ),
        Check(
            "RSS of the process tree, local model unused (max of idle, after)",
            max(tree_rss) / MB if tree_rss and not any(loaded) else None,
            200,
            "MB",
            False,
            issue=12,
        ),
        Check(
            "processes that loaded the local model",
            max(loaded) if loaded else None,
            0,
            "",
            False,
            issue=12,
        ),
    ]


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(gateway: float | None, bare: float | None) -> str:
    if gateway is None or bare is None or bare == 0 or gateway != gateway or bare != bare:
        return "-"
    return f"{gateway / bare:.2f}"


def format_table(summary: dict[str, Any], memory: dict[str, Any]) -> str:
    rows: list[tuple[str, float | None, float | None, float | None]] = []

    def row(label: str, *path: str, scale: float = 1.0) -> None:
        values = []
        for target in TARGET_NAMES:
            value = _get(summary, path[0], target, *path[1:])
            values.append(None if value is None else value * scale)
        rows.append((label, values[0], values[1], values[2]))

    row("c=1 non-stream latency p50 (ms)", "nonstream_c1", "p50_us", scale=1e-3)
    row("c=1 non-stream latency p99 (ms)", "nonstream_c1", "p99_us", scale=1e-3)
    row("c=1 added latency p50 (ms)", "nonstream_c1", "added_p50_us", scale=1e-3)
    row("c=1 added latency p99 (ms)", "nonstream_c1", "added_p99_us", scale=1e-3)
    row("c=1 p50 over bare's (ms)", "nonstream_c1", "p50_over_bare_us", scale=1e-3)
    row("c=64 non-stream (req/s)", "nonstream_c64", "rate")
    row("c=64 non-stream, gw/bare per round", "nonstream_c64", "rate_over_bare")
    row("c=64 50-chunk streams (streams/s)", "stream_c64", "rate")
    row("c=64 streams, gw/bare per round", "stream_c64", "rate_over_bare")
    row("TTFT p50 (ms)", "ttft", "p50_ms")
    row("TTFT overhead p50 (ms)", "ttft", "overhead_p50_ms")
    row("TTFT overhead p90 (ms)", "ttft", "overhead_p90_ms")
    row("server CPU/req c=1 (µs)", "nonstream_c1", "server_cpu_us_per_request")
    row("server CPU/req c=64 non-stream (µs)", "nonstream_c64", "server_cpu_us_per_request")
    row("server CPU/req c=64 streams (µs)", "stream_c64", "server_cpu_us_per_request")
    row("mock CPU/req c=64 non-stream (µs)", "nonstream_c64", "mock_cpu_us_per_request")
    row("mock CPU/req c=64 streams (µs)", "stream_c64", "mock_cpu_us_per_request")
    for when in ("idle", "after"):
        for kind in ("worker", "tree"):
            values = [
                memory.get(t, {}).get(when, {}).get(f"{kind}_rss_bytes") for t in TARGET_NAMES
            ]
            scaled = [None if v is None else v / MB for v in values]
            rows.append((f"RSS {kind}, {when} (MB)", scaled[0], scaled[1], scaled[2]))

    header = ("metric", "direct", "bare", "gateway", "gw/bare")
    lines = [f"{header[0]:<38}{header[1]:>10}{header[2]:>10}{header[3]:>10}{header[4]:>9}"]
    lines.append("-" * len(lines[0]))
    for label, direct, bare, gateway in rows:
        lines.append(
            f"{label:<38}{_fmt(direct):>10}{_fmt(bare):>10}{_fmt(gateway):>10}"
            f"{_ratio(gateway, bare):>9}"
        )
    return "\n".join(lines)


def format_checks(results: list[Check]) -> str:
    lines: list[str] = []
    for issue in sorted({check.issue for check in results}):
        if lines:
            lines.append("")
        against = ", against the bare proxy in the same run" if issue == 12 else ""
        lines.append(f"Targets (gateway, issue {issue}{against}):")
        for check in results:
            if check.issue != issue:
                continue
            sign = "≥" if check.at_least else "≤"
            verdict = "PASS" if check.passed else "FAIL"
            unit = f" {check.unit}" if check.unit else ""
            value = _fmt(check.value, digits=2 if check.unit else 0)
            lines.append(
                f"  {verdict}  {check.name}: {value}{unit} (target {sign} {check.limit:g}{unit})"
            )
    return "\n".join(lines)


def format_ceilings(summary: dict[str, Any]) -> str:
    """The mock's and wrk's ceilings: the direct runs, and how busy each was meanwhile."""
    lines = ["Ceilings (wrk -t1 straight at the mock; CPU as a share of one core):"]
    for phase, label in (("nonstream_c64", "non-stream c=64"), ("stream_c64", "streams c=64")):
        rate = _get(summary, phase, "direct", "rate")
        mock = _get(summary, phase, "direct", "mock_cpu_share")
        wrk = _get(summary, phase, "direct", "wrk_cpu_share")
        lines.append(
            f"  {label}: {_fmt(rate)} /s; mock CPU {_fmt(mock)}, wrk CPU {_fmt(wrk)} "
            "(whichever is near 1.0 is the limit)"
        )
    return "\n".join(lines)
