"""Turning the generation benchmark's measurements into medians, ratios, the issue's targets
with pass/fail, and a printed table.

A measurement is one request (one client) or one batch (concurrent clients). The runner takes
them in pairs, bare and server back to back, in alternating order; the server/bare ratio of a
figure is the median over pairs of the ratio within each pair. Steal time on a shared VM moves
the speed of both sides by ±10 % over seconds: a ratio taken within a pair cancels most of it,
where a ratio of two medians taken apart would not.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.generation.timing import Stream, batch_rate
from benchmarks.report import quantile

SIDES = ("bare", "server")
PHASES = ("single", "concurrent")
MB = 1024 * 1024
# Allowed single-client shortfall of the server's decode rate against bare llama-cpp-python.
SINGLE_RATE_FLOOR = 0.95
# Four clients together against one, on the default configuration (issue 17).
PARALLEL_FLOOR = 1.6

Record = dict[str, Any]
Figures = dict[str, float | None]


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def figures(record: Record) -> Figures:
    """One measurement's figures: decode rate (per stream, median), total rate of a batch,
    time to first token (median over its streams), CPU per generated token."""
    streams = [Stream.from_dict(item) for item in record["streams"]]
    tokens = sum(s.completion_tokens for s in streams)
    return {
        "rate": _median([s.rate for s in streams]),
        "total_rate": batch_rate(streams),
        "ttft_ms": _median([s.ttft * 1000 for s in streams]),
        "cpu_ms_per_token": record["cpu_s"] / tokens * 1000 if tokens else None,
    }


def summarize(records: list[Record]) -> dict[str, Any]:
    measured = [(record, figures(record)) for record in records]
    summary: dict[str, Any] = {}
    for phase in PHASES:
        keys = ["rate", "ttft_ms", "cpu_ms_per_token"]
        if phase == "concurrent":
            keys.insert(0, "total_rate")
        entry: dict[str, Any] = {
            side: {
                key: _median(
                    [f[key] for r, f in measured if r["phase"] == phase and r["side"] == side]
                )
                for key in keys
            }
            for side in SIDES
        }
        pairs: dict[tuple[int, int], dict[str, Figures]] = {}
        for record, figure in measured:
            if record["phase"] == phase:
                pairs.setdefault((record["round"], record["number"]), {})[record["side"]] = figure
        complete = [pair for pair in pairs.values() if len(pair) == len(SIDES)]
        ratios = {
            key: [
                r
                for r in (_ratio(pair["server"][key], pair["bare"][key]) for pair in complete)
                if r is not None
            ]
            for key in keys
        }
        entry["ratio"] = {key: _median(values) for key, values in ratios.items()}
        # How far single pairs stray: the machine's noise, next to the median it blurs.
        entry["ratio_quartiles"] = {
            key: [quantile(values, 0.25), quantile(values, 0.75)] if values else None
            for key, values in ratios.items()
        }
        entry["pairs"] = len(complete)
        summary[phase] = entry
    summary["scaling"] = {side: _scaling(measured, side) for side in SIDES}
    summary["rounds"] = len({record["round"] for record in records})
    return summary


def _scaling(measured: list[tuple[Record, Figures]], side: str) -> float | None:
    """Median over rounds of (the round's concurrent total rate ÷ its one-client rate)."""

    def in_round(index: int, phase: str, key: str) -> float | None:
        return _median(
            [
                f[key]
                for r, f in measured
                if r["round"] == index and r["phase"] == phase and r["side"] == side
            ]
        )

    rounds = sorted({record["round"] for record, _ in measured})
    return _median(
        [
            _ratio(in_round(index, "concurrent", "total_rate"), in_round(index, "single", "rate"))
            for index in rounds
        ]
    )


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    strictly_above: bool  # ">" rather than "≥"

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value > self.limit if self.strictly_above else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "comparison": ">" if self.strictly_above else ">=",
            "passed": self.passed,
        }


def checks(summary: dict[str, Any]) -> list[Check]:
    """The targets: the server within 5 % of bare for one client; four clients together
    at least 1.6 times one client's rate on the default configuration (issue 17)."""
    return [
        Check(
            "1 client: server decode tok/s ÷ bare",
            summary["single"]["ratio"]["rate"],
            SINGLE_RATE_FLOOR,
            strictly_above=False,
        ),
        Check(
            "server: 4-client total decode tok/s ÷ 1-client tok/s",
            summary["scaling"]["server"],
            PARALLEL_FLOOR,
            strictly_above=False,
        ),
    ]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_table(summary: dict[str, Any], memory: dict[str, int], clients: int) -> str:
    single, many = summary["single"], summary["concurrent"]
    rows: list[tuple[str, float | None, float | None, float | None, int, str]] = []
    for label, entry, key, digits in (
        ("1 client: decode tok/s", single, "rate", 1),
        ("1 client: TTFT (ms)", single, "ttft_ms", 1),
        ("1 client: CPU per token (ms)", single, "cpu_ms_per_token", 2),
        (f"{clients} clients: total decode tok/s", many, "total_rate", 1),
        (f"{clients} clients: decode tok/s per stream", many, "rate", 1),
        (f"{clients} clients: TTFT (ms)", many, "ttft_ms", 1),
        (f"{clients} clients: CPU per token (ms)", many, "cpu_ms_per_token", 2),
    ):
        spread = entry["ratio_quartiles"][key]
        shown = f"{spread[0]:.2f}–{spread[1]:.2f}" if spread else "-"
        rows.append(
            (label, entry["bare"][key], entry["server"][key], entry["ratio"][key], digits, shown)
        )
    scaling = summary["scaling"]
    rows.append(
        (f"{clients} clients total ÷ 1 client", scaling["bare"], scaling["server"], None, 2, "")
    )
    bare_rss, server_rss = (memory.get(side) for side in SIDES)
    rows.append(
        (
            "RSS, models loaded (MB)",
            None if bare_rss is None else bare_rss / MB,
            None if server_rss is None else server_rss / MB,
            None,
            0,
            "",
        )
    )
    header = f"{'metric':<38}{'bare':>10}{'server':>10}{'srv/bare':>10}{'pairs IQR':>13}"
    lines = [header, "-" * len(header)]
    for label, bare, server, ratio, digits, spread in rows:
        lines.append(
            f"{label:<38}{_fmt(bare, digits):>10}{_fmt(server, digits):>10}"
            f"{_fmt(ratio, 3):>10}{spread:>13}"
        )
    lines.append(
        "srv/bare: median over back-to-back pairs of the ratio within the pair; pairs IQR: its "
        "quartiles"
    )
    return "\n".join(lines)


def format_checks(results: list[Check]) -> str:
    lines = ["Targets (local engine, issue 4):"]
    for check in results:
        sign = ">" if check.strictly_above else "≥"
        verdict = "PASS" if check.passed else "FAIL"
        lines.append(
            f"  {verdict}  {check.name}: {_fmt(check.value, 3)} (target {sign} {check.limit:g})"
        )
    return "\n".join(lines)
