"""Top-up codes end to end (docs/billing.md, "Top-up codes"): an admin makes codes over the
admin API and the CLI, a user made with the CLI redeems them over HTTP with their own key and
sees the balance, a code works once (also when two requests race for it), wrong codes are
throttled per account."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from tests.e2e.server import RunningServer

pytestmark = pytest.mark.e2e

NANO = 10**9
CODE = re.compile(r"^MPC(-[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{4}){4}$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("codes")
    with RunningServer(data_dir, env={"MODELPORT_KEY_CACHE_TTL": "0"}) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def _admin(server: RunningServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_key}"}


def _user(server: RunningServer, name: str, balance: str = "0") -> dict[str, str]:
    """A user and its key, made with the CLI; the key's headers."""
    made = server.cli("users", "create", name, "--balance", balance)
    assert made.returncode == 0, made.stderr
    key = server.cli("keys", "create", "--name", f"{name}-key", "--user", name)
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip().splitlines()[-1]
    return {"Authorization": f"Bearer {secret}"}


def _balance(http: httpx.Client, headers: dict[str, str]) -> int:
    answer = http.get("/api/v1/me", headers=headers)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["balance_nano"])


def _redeem(http: httpx.Client, headers: dict[str, str], code: Any) -> httpx.Response:
    return http.post("/api/v1/codes/redeem", headers=headers, json={"code": code})


def _create(http: httpx.Client, server: RunningServer, **body: Any) -> list[str]:
    answer = http.post("/api/v1/admin/codes", headers=_admin(server), json=body)
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert made["count"] == body["count"] == len(made["data"])
    return [item["code"] for item in made["data"]]


def test_an_admin_makes_codes_and_a_user_redeems_one_once(
    server: RunningServer, http: httpx.Client
) -> None:
    made = _create(http, server, count=3, amount="50", batch="e2e-api")
    assert all(CODE.match(code) for code in made)
    carol = _user(server, "carol", balance="1")
    assert _balance(http, carol) == 1 * NANO

    typed = made[0].lower().replace("-", " ")
    answer = _redeem(http, carol, typed)
    assert answer.status_code == 200, answer.text
    redeemed = answer.json()
    assert (redeemed["amount"], redeemed["amount_nano"]) == ("50", 50 * NANO)
    assert redeemed["account"]["name"] == "carol"
    assert redeemed["account"]["balance_nano"] == 51 * NANO
    assert _balance(http, carol) == 51 * NANO

    again = _redeem(http, carol, made[0])
    assert again.status_code == 400
    error = again.json()["error"]
    assert (error["message"], error["param"]) == ("this code is not valid", "code")
    assert _balance(http, carol) == 51 * NANO

    ledger = http.get("/api/v1/admin/users/carol/ledger", headers=_admin(server)).json()["data"]
    assert [(e["kind"], e["amount"], e["reason"]) for e in ledger][-1] == (
        "topup",
        "50",
        f"code {made[0][:8]}",
    )
    listed = http.get("/api/v1/admin/codes", params={"batch": "e2e-api"}, headers=_admin(server))
    assert listed.status_code == 200
    states = [(item["state"], item["redeemed_by"]) for item in listed.json()["data"]]
    assert states == [("redeemed", "carol"), ("unused", None), ("unused", None)]
    assert not any(code in listed.text for code in made)


def test_two_requests_racing_for_one_code_credit_it_once(
    server: RunningServer, http: httpx.Client
) -> None:
    [code] = _create(http, server, count=1, amount="7.5")
    dave = _user(server, "dave")
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def attempt() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as own:
            barrier.wait()
            statuses.append(_redeem(own, dave, code).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200, 400]
    assert _balance(http, dave) == 7_500_000_000


def test_only_admins_make_and_list_codes(server: RunningServer, http: httpx.Client) -> None:
    erin = _user(server, "erin")
    made = http.post("/api/v1/admin/codes", headers=erin, json={"count": 1, "amount": "5"})
    assert made.status_code == 403
    assert http.get("/api/v1/admin/codes", headers=erin).status_code == 403
    bad = http.post("/api/v1/admin/codes", headers=_admin(server), json={"count": 0, "amount": "5"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "count"


def test_wrong_codes_are_throttled_per_account(server: RunningServer, http: httpx.Client) -> None:
    [good] = _create(http, server, count=1, amount="1")
    frank = _user(server, "frank")
    for attempt in range(10):
        wrong = _redeem(http, frank, f"MPC-AAAA-AAAA-AAAA-AA{attempt:02d}".replace("0", "B"))
        assert wrong.status_code == 400, wrong.text
    limited = _redeem(http, frank, good)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert _balance(http, frank) == 0
    # Another account redeems as before.
    grace = _user(server, "grace")
    assert _redeem(http, grace, good).status_code == 200


def test_the_cli_prints_codes_once_and_lists_their_state(
    server: RunningServer, http: httpx.Client
) -> None:
    made = server.cli("codes", "create", "--count", "2", "--amount", "12.5", "--batch", "e2e-cli")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.strip().splitlines()
    assert "shown once" in lines[0] and "12.5 CNY" in lines[0] and "e2e-cli" in lines[0]
    printed = lines[-2:]
    assert all(CODE.match(code) for code in printed)

    henry = _user(server, "henry")
    assert _redeem(http, henry, printed[1]).status_code == 200
    assert _balance(http, henry) == 12_500_000_000

    listed = server.cli("codes", "list", "--batch", "e2e-cli")
    assert listed.returncode == 0, listed.stderr
    rows = msgspec.json.decode(listed.stdout)
    assert [(row["state"], row["redeemed_by"]) for row in rows] == [
        ("unused", None),
        ("redeemed", "henry"),
    ]
    assert all(row["created_by"] == "cli" and row["amount"] == "12.5" for row in rows)
    assert not any(code in listed.stdout for code in printed)

    as_json = server.cli("codes", "create", "--count", "1", "--amount", "1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [item] = msgspec.json.decode(as_json.stdout)["data"]
    assert CODE.match(item["code"]) and item["state"] == "unused"

    refused = server.cli("codes", "create", "--count", "1", "--amount", "0")
    assert refused.returncode == 1 and "amount" in refused.stderr
    too_many = server.cli("codes", "create", "--count", "1001", "--amount", "1")
    assert too_many.returncode == 2
