"""The soak's checks at the end (`benchmarks.soak`): billing over the API while the server
runs, and in its database after a graceful stop; errors in its log."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.procs import BenchError, Server
from benchmarks.soak_clients import Expect
from benchmarks.soak_readings import api
from benchmarks.targets import Target

LOG_ERROR = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\"level\":\s*\"(error|critical)\"", re.I)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def billing_checks(
    database: Path, account_id: int, opening: int, expect: dict[str, Expect]
) -> tuple[list[Check], dict[str, Any]]:
    """After the server stopped: one usage row per id the client saw, as the client saw it,
    and the money where the ledger says it went."""
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            return _billing_checks(db, account_id, opening, expect)
    except sqlite3.Error as exc:
        return [Check(f"the database {database} could be read", False, str(exc))], {}


def _billing_checks(
    db: sqlite3.Connection, account_id: int, opening: int, expect: dict[str, Expect]
) -> tuple[list[Check], dict[str, Any]]:
    columns = {row[1] for row in db.execute("PRAGMA table_info(usage)")}
    trace = "trace_id" if "trace_id" in columns else "NULL"  # before migration 0008: none
    rows = {
        row[0]: row[1:]
        for row in db.execute(
            "SELECT request_id, status, completion_tokens, cost_nano, estimated, "
            f"{trace} FROM usage WHERE account_id = ?",
            (account_id,),
        )
    }
    free = _scalar(db, "SELECT balance_nano FROM accounts WHERE id = ?", account_id)
    leased = _scalar(
        db, "SELECT SUM(amount_nano) FROM credit_leases WHERE account_id = ?", account_id
    )
    spent = _scalar(db, "SELECT SUM(spent_nano) FROM api_keys WHERE account_id = ?", account_id)
    ledger = {
        kind: (count, total)
        for kind, count, total in db.execute(
            "SELECT kind, COUNT(*), SUM(amount_nano) FROM ledger WHERE account_id = ? "
            "GROUP BY kind",
            (account_id,),
        )
    }
    cost = sum(row[2] for row in rows.values())
    missing = sorted(set(expect) - set(rows))
    extra = sorted(set(rows) - set(expect))
    wrong = [
        f"{rid}: {e.kind} of {e.chunks}, {e.received} read: row {rows[rid][0]}, {rows[rid][1]}"
        for rid, e in expect.items()
        if rid in rows and not _as_seen(e, rows[rid][0], rows[rid][1])
    ]
    untraced = [
        f"{rid}: sent {e.trace}, row {rows[rid][4]}"
        for rid, e in expect.items()
        if rid in rows and rows[rid][4] != e.trace
    ]
    # Streams the client left: the upstream never reported their usage, so the server counted
    # what it relayed (an estimate where the model has no tokenizer): against what was read.
    left = [(rows[rid], e) for rid, e in expect.items() if rid in rows and e.status == "cancelled"]
    charges = ledger.get("charge", (0, 0))
    paid_rows = sum(1 for row in rows.values() if row[2] > 0)
    money = free + leased
    ledger_total = sum(total for _, total in ledger.values())
    checks = [
        Check(
            "one usage row per admitted request",
            not missing and not extra,
            f"{len(rows):,} rows, {len(expect):,} ids seen by the client; "
            f"missing {len(missing)} {missing[:5]}, extra {len(extra)} {extra[:5]}",
        ),
        Check(
            "usage rows say what the client saw",
            not wrong,
            f"{len(wrong)} differ (status, completion tokens) {wrong[:5]}",
        ),
        Check(
            "usage rows carry their request's X-Request-Id",
            not untraced,
            f"{len(untraced)} differ {untraced[:5]}",
        ),
        Check(
            "balance = opening − usage costs (database)",
            money == opening - cost,
            f"free {free:,} + leased {leased:,} = {money:,} nano; opening {opening:,} − "
            f"costs {cost:,} = {opening - cost:,}",
        ),
        Check("leases given back at stop", leased == 0, f"{leased:,} nano still leased"),
        Check(
            "one ledger charge per paid row, summing to the costs",
            charges == (paid_rows, -cost),
            f"charges {charges[0]:,} summing to {charges[1]:,}; paid rows {paid_rows:,}, "
            f"costs {cost:,}",
        ),
        Check(
            "the ledger adds up to the balance",
            ledger_total == money,
            f"ledger {ledger_total:,}, free + leased {money:,}",
        ),
        Check(
            "the key's spending = costs + leases",
            spent == cost + leased,
            f"spent {spent:,}, costs {cost:,}, leased {leased:,}",
        ),
    ]
    statuses = Counter(row[0] for row in rows.values())
    return checks, {
        "usage_rows": len(rows),
        "usage_statuses": dict(statuses),
        "cost_nano": cost,
        "free_nano": free,
        "leased_nano": leased,
        "key_spent_nano": spent,
        "ledger": {kind: {"count": c, "sum_nano": s} for kind, (c, s) in ledger.items()},
        "missing_ids": missing[:50],
        "extra_ids": extra[:50],
        "wrong_rows": wrong[:50],
        "untraced_rows": untraced[:50],
        "left_streams": {
            "rows": len(left),
            "estimated": sum(1 for row, _ in left if row[3]),
            "tokens_billed": sum(row[1] for row, _ in left),
            "pieces_read": sum(e.received for _, e in left),
        },
    }


def _as_seen(expect: Expect, status: str, tokens: int) -> bool:
    """Whether a usage row says what its client saw: a whole answer billed whole, a stream
    the client left cancelled (its tokens are the server's count of what it relayed)."""
    if expect.status is None:
        return True  # an unexpected answer, reported as such
    if expect.status == "ok":
        return status == "ok" and tokens == expect.chunks
    return status == "cancelled"


def _scalar(db: sqlite3.Connection, sql: str, account_id: int) -> int:
    """One number from the database; 0 for a sum over no rows."""
    row = db.execute(sql, (account_id,)).fetchone()
    return int(row[0] or 0) if row else 0


def live_checks(gateway: Target, opening: int, seen: int) -> tuple[list[Check], dict[str, Any]]:
    """Over the API, the server still running: the balance it shows and its usage totals."""
    assert gateway.key is not None
    try:
        me = api(gateway.port, "/api/v1/me", gateway.key)
        totals = api(gateway.port, "/api/v1/usage?by=key", gateway.key)["data"]
        requests = sum(int(t["requests"]) for t in totals)
        cost = sum(int(t["cost_nano"]) for t in totals)
        balance = int(me["balance_nano"])
    except (BenchError, OSError, ValueError, KeyError, TypeError) as exc:
        return [Check("the account API answered at the end", False, str(exc))], {}
    checks = [
        Check(
            "balance = opening − usage costs (API)",
            balance == opening - cost,
            f"balance {balance:,} nano (leased {int(me['leased_nano']):,}); opening "
            f"{opening:,} − costs {cost:,} = {opening - cost:,}",
        ),
        Check(
            "usage rows = admitted requests (API)",
            requests == seen,
            f"{requests:,} rows, {seen:,} ids seen by the client",
        ),
    ]
    return checks, {"me": me, "usage_by_key": totals}


def log_findings(server: Server) -> tuple[int, list[str]]:
    """Lines of the server's log, and those that report an error (at most 20)."""
    try:
        lines = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, []
    return len(lines), [line[:300] for line in lines if LOG_ERROR.search(line)][:20]
