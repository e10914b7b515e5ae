"""Accounts, prepaid CNY balances, billing and key limits, end to end (docs/billing.md).

One real server (SQLite) in front of the scripted upstream serves every test; each test makes
its own users, so balances, ledgers and usage rows never mix. Upstream answers are scripted
by a marker in the user message, with exact usage, so every cost is known to the nano-yuan:
qwen/qwen3-8b costs 0.0005 / 0.00175 CNY per 1,000 input / output tokens, that is 500 and
1,750 nano-yuan per token. What the gateway stored is read back through its own API and, for
holds and usage rows, from the SQLite file itself.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pytest
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, RecordedRequest, Script

pytestmark = pytest.mark.e2e

MODEL = "qwen/qwen3-8b"
OTHER_MODEL = "qwen/qwen3-coder"
INPUT_NANO = 500  # 0.0005 CNY per 1K tokens
OUTPUT_NANO = 1750  # 0.00175 CNY per 1K tokens
NANO = 10**9

CONFIG = """\
[[models]]
id = "local/smollm2-135m-instruct"
backends = []
{entries}"""
ENTRY = """
[[models]]
id = "{model}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{url}"
  dialect = "generic"
  upstream_model = "{upstream_model}"
"""


def cost_of(prompt: int, completion: int) -> int:
    return prompt * INPUT_NANO + completion * OUTPUT_NANO


@dataclass(frozen=True)
class User:
    """A user (account) made for one test, and the secret of its key."""

    name: str
    id: int
    key_id: int
    secret: str


@dataclass
class Gateway:
    """The running server, its scripted upstream, and what the tests ask of them."""

    server: RunningServer
    upstream: FakeOpenAIUpstream
    http: httpx.Client
    _markers: Iterator[int] = field(default_factory=itertools.count)

    # ----------------------------------------------------------------- scripting

    def script(self, script: Script) -> str:
        """A fresh marker the upstream answers with `script`; put it in the user message."""
        marker = self.marker()
        self.upstream.on(marker, script)
        return marker

    def marker(self) -> str:
        return f"mk{next(self._markers):04d}{uuid.uuid4().hex[:6]}"

    def sent_upstream(self, marker: str) -> list[RecordedRequest]:
        """The upstream requests whose body carries `marker`."""
        return [r for r in self.upstream.requests if marker in msgspec.json.encode(r.body).decode()]

    def upstream_saw_disconnect(self, marker: str) -> bool:
        """Whether the upstream request carrying `marker` was cut by the gateway (waiting a
        little: the gateway closes it once it notices its client has gone)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = self.sent_upstream(marker)
            if found and found[-1].disconnected:
                return True
            time.sleep(0.05)
        return False

    # ----------------------------------------------------------------- HTTP

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.call(self.server.admin_key, method, path, body)

    def call(self, secret: str, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}"}
        return self.http.request(method, path, json=body, headers=headers)

    def new_user(self, balance: str = "1", **key: Any) -> User:
        """A fresh user with `balance` CNY and one key with the limits in `key`."""
        name = f"user-{uuid.uuid4().hex[:10]}"
        created = self.admin("POST", "/api/v1/admin/users", {"name": name, "balance": balance})
        assert created.status_code == 201, created.text
        issued = self.admin(
            "POST", "/api/v1/admin/keys", {"name": f"{name}-key", "user": name, **key}
        )
        assert issued.status_code == 201, issued.text
        return User(name, created.json()["id"], issued.json()["id"], issued.json()["secret"])

    def client(self, user: User) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.server.base_url + "/v1", api_key=user.secret, max_retries=0
        )

    def balance(self, user: User) -> int:
        me = self.call(user.secret, "GET", "/api/v1/me")
        assert me.status_code == 200, me.text
        nano: int = me.json()["balance_nano"]
        assert Decimal(me.json()["balance"]) * NANO == nano
        return nano

    def ledger(self, user: User) -> list[dict[str, Any]]:
        answer = self.admin("GET", f"/api/v1/admin/users/{user.name}/ledger")
        assert answer.status_code == 200, answer.text
        entries: list[dict[str, Any]] = answer.json()["data"]
        return entries

    def prompt_tokens(self, marker: str) -> int:
        """The exact size of `ask`'s prompt for `marker` (Qwen3's tokenizer, as the gateway
        counts it), from the count_tokens endpoint (thinking on, as OpenAI clients get it)."""
        counted = self.http.post(
            "/v1/messages/count_tokens",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": f"{marker}: say something"}],
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            headers={"x-api-key": self.server.admin_key, "anthropic-version": "2023-06-01"},
        )
        assert counted.status_code == 200, counted.text
        tokens: int = counted.json()["input_tokens"]
        return tokens

    def generation(self, user: User, request_id: str) -> httpx.Response:
        return self.call(user.secret, "GET", f"/api/v1/generation?id={request_id}")

    # ----------------------------------------------------------------- the database

    def query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        path = self.server.data_dir / "modelport.db"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, args).fetchall()

    def usage_rows(self, user: User) -> list[sqlite3.Row]:
        """The user's usage rows in the database, once the server has written every settlement
        it made (they are written behind the responses; the account API flushes them)."""
        self.call(user.secret, "GET", "/api/v1/me")
        return self.query("SELECT * FROM usage WHERE account_id = ?", user.id)

    def wait_settled(self, user: User, requests: int) -> list[sqlite3.Row]:
        """The user's usage rows once `requests` are written (a request cut short by its
        client settles after the client has gone)."""
        deadline = time.monotonic() + 15
        while True:
            rows = self.usage_rows(user)
            if len(rows) >= requests or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def assert_books_balance(self, user: User, opening: int) -> None:
        """The invariants of docs/billing.md for one user with no request in flight: the
        ledger's charges equal the usage rows' costs, and the balance (credit leased to the
        server included) is the ledger's sum."""
        ledger = self.ledger(user)
        charges = sum(e["amount_nano"] for e in ledger if e["kind"] == "charge")
        costs = sum(row["cost_nano"] for row in self.usage_rows(user))
        assert charges == -costs
        assert sum(e["amount_nano"] for e in ledger) == self.balance(user) == opening - costs


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstream = FakeOpenAIUpstream(models=("Qwen/Qwen3-8B", "Qwen/Qwen3-Coder-30B-A3B-Instruct"))
    upstream.start_in_thread()
    try:
        data_dir: Path = tmp_path_factory.mktemp("billing")
        entries = ENTRY.format(model=MODEL, url=upstream.base_url, upstream_model="Qwen/Qwen3-8B")
        entries += ENTRY.format(
            model=OTHER_MODEL,
            url=upstream.base_url,
            upstream_model="Qwen/Qwen3-Coder-30B-A3B-Instruct",
        )
        config = data_dir / "modelport.toml"
        config.write_text(CONFIG.format(entries=entries))
        with (
            RunningServer(data_dir, config=config) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            yield Gateway(server, upstream, http)
    finally:
        upstream.stop_thread()


def ask(
    client: openai.OpenAI, marker: str, max_tokens: int, *, model: str = MODEL, **extra: Any
) -> Any:
    """One chat completion through the OpenAI SDK; `marker` picks the upstream's script."""
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"{marker}: say something"}],
        max_tokens=max_tokens,
        **extra,
    )


def chat_body(marker: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{marker}: say something"}],
        "max_tokens": max_tokens,
    }


# --------------------------------------------------------------------------- admin API and CLI


def test_admin_api_creates_users_and_records_every_balance_change(gateway: Gateway) -> None:
    name = f"ann-{uuid.uuid4().hex[:8]}"
    created = gateway.admin("POST", "/api/v1/admin/users", {"name": name, "balance": "50"})
    assert created.status_code == 201, created.text
    assert created.json()["balance"] == "50"
    assert created.json()["balance_nano"] == 50 * NANO
    assert created.json()["role"] == "user"

    topped = gateway.admin(
        "POST", f"/api/v1/admin/users/{name}/topup", {"amount": "20", "reason": "invoice 114"}
    )
    assert topped.status_code == 200, topped.text
    assert topped.json()["balance"] == "70"

    too_much = gateway.admin(
        "POST", f"/api/v1/admin/users/{name}/topup", {"amount": "-70.5", "reason": "refund"}
    )
    assert too_much.status_code == 400
    assert too_much.json()["error"]["param"] == "amount"
    no_reason = gateway.admin("POST", f"/api/v1/admin/users/{name}/topup", {"amount": "1"})
    assert no_reason.status_code == 400
    adjusted = gateway.admin(
        "POST", f"/api/v1/admin/users/{name}/topup", {"amount": "-0.25", "reason": "goodwill"}
    )
    assert adjusted.json()["balance"] == "69.75"

    shown = gateway.admin("GET", f"/api/v1/admin/users/{name}")
    assert shown.json()["balance_nano"] == 69_750_000_000
    assert name in [u["name"] for u in gateway.admin("GET", "/api/v1/admin/users").json()["data"]]
    ledger = gateway.admin("GET", f"/api/v1/admin/users/{name}/ledger").json()["data"]
    assert [(e["kind"], e["amount"], e["reason"]) for e in ledger] == [
        ("topup", "50", "opening balance"),
        ("topup", "20", "invoice 114"),
        ("adjustment", "-0.25", "goodwill"),
    ]
    assert gateway.admin("GET", "/api/v1/admin/users/nobody-here").status_code == 404


def test_admin_api_keys_show_their_secret_once_and_revocation_is_immediate(
    gateway: Gateway,
) -> None:
    user = gateway.new_user("5")
    issued = gateway.admin(
        "POST",
        "/api/v1/admin/keys",
        {
            "name": "laptop",
            "user": user.name,
            "rpm": 60,
            "tpm": 100000,
            "limit": "10",
            "models": [MODEL],
            "expires_at": "2099-01-01T00:00:00+08:00",
        },
    )
    assert issued.status_code == 201, issued.text
    key = issued.json()
    secret = key["secret"]
    assert secret.startswith("sk-mp-")
    assert (key["rpm"], key["tpm"], key["limit"], key["models"]) == (60, 100000, "10", [MODEL])
    assert key["user"] == user.name

    listing = gateway.admin("GET", f"/api/v1/admin/keys?user={user.name}")
    assert listing.status_code == 200
    assert sorted(k["name"] for k in listing.json()["data"]) == ["laptop", f"{user.name}-key"]
    assert all("secret" not in k for k in listing.json()["data"])
    everything = gateway.admin("GET", "/api/v1/admin/keys").text
    assert secret not in everything and user.secret not in everything

    assert gateway.call(secret, "GET", "/api/v1/me").json()["name"] == user.name
    revoked = gateway.admin("DELETE", f"/api/v1/admin/keys/{key['id']}")
    assert revoked.json() == {"id": key["id"], "revoked": True}
    refused = gateway.call(secret, "GET", "/api/v1/me")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    laptop = User(user.name, user.id, key["id"], secret)
    with gateway.client(laptop) as client, pytest.raises(openai.AuthenticationError):
        ask(client, gateway.script(Script(text=["no"])), 8)
    # The user's other key is untouched.
    assert gateway.call(user.secret, "GET", "/api/v1/me").status_code == 200


def test_a_user_key_is_refused_the_admin_api(gateway: Gateway) -> None:
    user = gateway.new_user("1")
    for method, path, body in (
        ("GET", "/api/v1/admin/users", None),
        ("POST", "/api/v1/admin/users", {"name": "sneaky", "balance": "1000"}),
        ("POST", f"/api/v1/admin/users/{user.name}/topup", {"amount": "9", "reason": "me"}),
        ("GET", "/api/v1/admin/keys", None),
        ("GET", "/api/v1/admin/usage", None),
    ):
        answer = gateway.call(user.secret, method, path, body)
        assert answer.status_code == 403, (method, path)
        assert answer.json()["error"]["code"] == "permission_denied"
    assert gateway.balance(user) == NANO


def test_cli_manages_users_keys_and_usage(gateway: Gateway) -> None:
    cli = gateway.server.cli
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = cli("users", "create", name, "--balance", "50")
    assert created.returncode == 0, created.stderr
    account = msgspec.json.decode(created.stdout)
    assert (account["balance"], account["balance_nano"]) == ("50", 50 * NANO)

    topped = cli("users", "topup", name, "20", "--reason", "invoice 2026-114")
    assert topped.returncode == 0, topped.stderr
    assert msgspec.json.decode(topped.stdout)["balance"] == "70"
    below_zero = cli("users", "topup", name, "-71", "--reason", "oops")
    assert below_zero.returncode == 1
    assert "below zero" in below_zero.stderr

    issued = cli(
        "keys",
        "create",
        "--name",
        f"{name}-laptop",
        "--user",
        name,
        "--rpm",
        "60",
        "--tpm",
        "100000",
        "--limit",
        "10",
        "--models",
        f"{MODEL},{OTHER_MODEL}",
        "--expires",
        "2099-01-01T00:00:00+08:00",
        "--json",
    )
    assert issued.returncode == 0, issued.stderr
    secret = msgspec.json.decode(issued.stdout)["secret"]

    shown = msgspec.json.decode(cli("users", "show", name).stdout)
    assert shown["balance"] == "70"
    [key] = shown["keys"]
    assert (key["rpm"], key["tpm"], key["limit"], key["models"]) == (
        60,
        100000,
        "10",
        [MODEL, OTHER_MODEL],
    )
    assert key["expires_at"].startswith("2098-12-31T16:00:00")
    assert secret not in cli("users", "show", name).stdout
    assert secret not in cli("keys", "list", "--json").stdout

    # The running server accepts the key at once, and the ledger has the reason.
    user = User(name, account["id"], key["id"], secret)
    assert gateway.balance(user) == 70 * NANO
    reasons = [e["reason"] for e in gateway.ledger(user)]
    assert reasons == ["opening balance", "invoice 2026-114"]

    marker = gateway.script(Script(text=["hi"], usage=(10, 4)))
    with gateway.client(user) as client:
        ask(client, marker, 16)
    usage = msgspec.json.decode(cli("usage", "--by", "model", "--user", name).stdout)
    assert usage["data"] == [
        {
            "group": MODEL,
            "requests": 1,
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "reasoning_tokens": 0,
            "cost": "0.000012",
            "cost_nano": cost_of(10, 4),
        }
    ]


# --------------------------------------------------------------------------- billing


def test_a_whole_answer_is_billed_exactly(gateway: Gateway) -> None:
    # An upstream may count the prompt a little differently from modelport's tokenizer; what
    # it reports is billed while the whole fits the hold (prompt + max_tokens).
    user = gateway.new_user("1")
    marker = gateway.script(Script(text=["Hello", " there"], usage=(123, 45)))
    with gateway.client(user) as client:
        response = ask(client, marker, 200)
    cost = cost_of(123, 45)
    assert cost == 140_250
    assert response.usage.prompt_tokens == 123
    assert response.usage.completion_tokens == 45
    assert response.usage.model_extra["cost"] == cost / NANO
    assert gateway.balance(user) == NANO - cost

    row = gateway.generation(user, response.id)
    assert row.status_code == 200, row.text
    data = row.json()["data"]
    assert data["id"] == response.id.removeprefix("chatcmpl-")
    assert (data["tokens_prompt"], data["tokens_completion"]) == (123, 45)
    assert (data["total_cost"], data["cost_nano"]) == ("0.00014025", cost)
    assert (data["status"], data["streamed"], data["cancelled"]) == ("ok", False, False)
    assert data["finish_reason"] == "stop"
    assert data["model"] == MODEL
    assert data["key_id"] == user.key_id
    gateway.assert_books_balance(user, NANO)


def test_a_streamed_answer_is_billed_exactly_before_it_ends(gateway: Gateway) -> None:
    user = gateway.new_user("1")
    marker = gateway.marker()
    prompt = gateway.prompt_tokens(marker)
    gateway.upstream.on(
        marker, Script(text=["a", "b", "c"], usage=(prompt, 30), finish_reason="length")
    )
    with gateway.client(user) as client:
        stream = ask(client, marker, 30, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    usage = next(chunk.usage for chunk in chunks if chunk.usage is not None)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert "length" in finishes
    cost = cost_of(prompt, 30)
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, 30)
    assert usage.model_extra["cost"] == cost / NANO
    assert gateway.balance(user) == NANO - cost

    data = gateway.generation(user, chunks[0].id).json()["data"]
    assert (data["cost_nano"], data["status"], data["streamed"]) == (cost, "ok", True)
    assert data["finish_reason"] == "length"
    gateway.assert_books_balance(user, NANO)


def test_a_generation_is_visible_to_its_owner_only(gateway: Gateway) -> None:
    owner, stranger = gateway.new_user("1"), gateway.new_user("1")
    with gateway.client(owner) as client:
        response = ask(client, gateway.script(Script(text=["mine"], usage=(5, 1))), 8)
    assert gateway.generation(owner, response.id).status_code == 200
    hidden = gateway.generation(stranger, response.id)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "not_found"
    assert gateway.generation(owner, "chatcmpl-no-such-request").status_code == 404


def test_usage_totals_and_the_ledger_add_up(gateway: Gateway) -> None:
    user = gateway.new_user("2")
    answers = [(100, 10), (7, 300), (50, 1)]
    with gateway.client(user) as client:
        for prompt, completion in answers:
            ask(client, gateway.script(Script(text=["x"], usage=(prompt, completion))), 400)
        other = ask(client, gateway.script(Script(text=["y"], usage=(3, 2))), 10, model=OTHER_MODEL)
    assert other.usage.model_extra["cost"] > 0
    other_cost = round(other.usage.model_extra["cost"] * NANO)
    cost_8b = sum(cost_of(p, c) for p, c in answers)

    by_model = gateway.call(user.secret, "GET", "/api/v1/usage?by=model").json()
    assert by_model["by"] == "model"
    assert [(t["group"], t["requests"]) for t in by_model["data"]] == [
        (MODEL, 3),
        (OTHER_MODEL, 1),
    ]
    totals_8b = by_model["data"][0]
    assert (totals_8b["prompt_tokens"], totals_8b["completion_tokens"]) == (157, 311)
    assert totals_8b["cost_nano"] == cost_8b
    assert by_model["data"][1]["cost_nano"] == other_cost

    for by, group in (("key", str(user.key_id)), ("day", None)):
        [total] = gateway.call(user.secret, "GET", f"/api/v1/usage?by={by}").json()["data"]
        assert total["requests"] == 4
        assert total["cost_nano"] == cost_8b + other_cost
        assert total["cost"] == str(Decimal(cost_8b + other_cost) / NANO)
        if group is not None:
            assert total["group"] == group
    admin_view = gateway.admin("GET", f"/api/v1/admin/usage?by=key&user={user.name}").json()
    assert [t["cost_nano"] for t in admin_view["data"]] == [cost_8b + other_cost]

    charges = [e for e in gateway.ledger(user) if e["kind"] == "charge"]
    assert len(charges) == 4
    assert sum(e["amount_nano"] for e in charges) == -(cost_8b + other_cost)
    gateway.assert_books_balance(user, 2 * NANO)


# --------------------------------------------------------------------------- 402


def test_a_balance_below_the_worst_case_is_refused_and_nothing_is_charged(
    gateway: Gateway,
) -> None:
    user = gateway.new_user("0.0001")  # 100,000 nano-yuan: 57 output tokens at most
    marker = gateway.script(Script(text=["ok"], usage=(12, 10)))
    refused = gateway.call(user.secret, "POST", "/v1/chat/completions", chat_body(marker, 1000))
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "insufficient_balance"
    assert error["type"] == "insufficient_balance"
    assert "0.0001 CNY" in error["message"] and "max_tokens" in error["message"]
    assert gateway.balance(user) == 100_000
    assert gateway.usage_rows(user) == []
    assert gateway.sent_upstream(marker) == []

    with gateway.client(user) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            ask(client, marker, 1000)
        assert raised.value.status_code == 402
        response = ask(client, marker, 10)  # lower max_tokens: within the balance
    assert response.usage.model_extra["cost"] == cost_of(12, 10) / NANO
    assert gateway.balance(user) == 100_000 - cost_of(12, 10)
    assert len(gateway.usage_rows(user)) == 1
    gateway.assert_books_balance(user, 100_000)


def test_the_anthropic_door_refuses_with_a_billing_error(gateway: Gateway) -> None:
    user = gateway.new_user("0.0001")
    marker = gateway.script(Script(text=["ok"], usage=(20, 10)))
    body = {
        "model": MODEL,
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": f"{marker}: say something"}],
    }
    headers = {"x-api-key": user.secret, "anthropic-version": "2023-06-01"}
    refused = gateway.http.post("/v1/messages", json=body, headers=headers)
    assert refused.status_code == 402
    answer = refused.json()
    assert answer["type"] == "error"
    assert answer["error"]["type"] == "billing_error"
    assert "Insufficient balance" in answer["error"]["message"]
    assert gateway.balance(user) == 100_000
    assert gateway.usage_rows(user) == []

    accepted = gateway.http.post("/v1/messages", json={**body, "max_tokens": 10}, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["usage"]["output_tokens"] == 10
    assert gateway.balance(user) == 100_000 - cost_of(20, 10)
    gateway.assert_books_balance(user, 100_000)


def test_an_admin_account_is_postpaid(gateway: Gateway) -> None:
    """Never refused for its balance; billed the same, so it may go below zero."""
    name = f"ops-{uuid.uuid4().hex[:8]}"
    created = gateway.admin("POST", "/api/v1/admin/users", {"name": name, "role": "admin"})
    assert created.json()["role"] == "admin"
    issued = gateway.admin("POST", "/api/v1/admin/keys", {"name": f"{name}-key", "user": name})
    admin = User(name, created.json()["id"], issued.json()["id"], issued.json()["secret"])
    with gateway.client(admin) as client:
        ask(client, gateway.script(Script(text=["ok"], usage=(20, 10))), 100_000)
    assert gateway.balance(admin) == -cost_of(20, 10)
    gateway.assert_books_balance(admin, 0)


# --------------------------------------------------------------------------- the policy


def test_a_client_that_goes_away_mid_stream_is_settled_as_cancelled(gateway: Gateway) -> None:
    user = gateway.new_user("1")
    pieces = [f" word{i}" for i in range(60)]
    marker = gateway.script(Script(text=pieces, usage=(30, 60), delay=0.05))
    with gateway.client(user) as client:
        stream = ask(client, marker, 100, stream=True, stream_options={"include_usage": True})
        with stream:
            received = list(itertools.islice(stream, 4))
    assert all(chunk.usage is None for chunk in received)

    [row] = gateway.wait_settled(user, 1)
    assert (row["status"], row["cancelled"], row["streamed"]) == ("cancelled", 1, 1)
    assert row["finish_reason"] is None
    assert row["request_id"] == received[0].id.removeprefix("chatcmpl-")
    assert row["cost_nano"] == cost_of(row["prompt_tokens"], row["completion_tokens"])
    # The hold is released: the balance is the opening balance less what was charged.
    gateway.assert_books_balance(user, NANO)
    generation = gateway.generation(user, received[0].id).json()["data"]
    assert generation["status"] == "cancelled"
    assert gateway.upstream_saw_disconnect(marker)  # the upstream stops generating too


def test_a_client_that_goes_away_mid_stream_pays_for_the_prompt_and_the_tokens_so_far(
    gateway: Gateway,
) -> None:
    """docs/billing.md: a disconnect mid-answer is charged "prompt + the tokens generated
    until the backend stopped". The upstream reports usage only at the end of its stream, so
    the gateway must count what it knows: the prompt it counted for the hold, and the text
    it relayed."""
    user = gateway.new_user("1")
    pieces = [f" word{i}" for i in range(60)]
    marker = gateway.script(Script(text=pieces, usage=(30, 60), delay=0.05))
    with gateway.client(user) as client:
        stream = ask(client, marker, 100, stream=True, stream_options={"include_usage": True})
        with stream:
            received = list(itertools.islice(stream, 4))
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text  # tokens reached the client before it went away

    [row] = gateway.wait_settled(user, 1)
    assert row["status"] == "cancelled"
    assert row["prompt_tokens"] > 0
    assert row["completion_tokens"] > 0
    assert row["cost_nano"] == cost_of(row["prompt_tokens"], row["completion_tokens"]) > 0
    gateway.assert_books_balance(user, NANO)


def test_an_upstream_failure_mid_answer_charges_the_prompt_and_the_tokens_so_far(
    gateway: Gateway,
) -> None:
    """docs/billing.md: "failed after some completion tokens: prompt + those tokens"."""
    user = gateway.new_user("1")
    marker = gateway.script(Script(text=[f" word{i}" for i in range(10)], error_after=6))
    body = {**chat_body(marker, 100), "stream": True}
    headers = {"Authorization": f"Bearer {user.secret}"}
    with gateway.http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as sse:
        assert sse.status_code == 200
        text = sse.read().decode()
    assert "word3" in text and '"error"' in text  # tokens, then the failure, reached the client

    [row] = gateway.wait_settled(user, 1)
    assert row["status"] == "error"
    assert row["prompt_tokens"] > 0
    assert row["completion_tokens"] > 0
    assert row["cost_nano"] == cost_of(row["prompt_tokens"], row["completion_tokens"]) > 0
    gateway.assert_books_balance(user, NANO)


def test_an_upstream_failure_before_any_token_charges_nothing(gateway: Gateway) -> None:
    user = gateway.new_user("1")
    marker = gateway.script(Script(status=500))
    with gateway.client(user) as client, pytest.raises(openai.APIStatusError) as raised:
        ask(client, marker, 100)
    assert raised.value.status_code >= 500
    [row] = gateway.wait_settled(user, 1)
    assert (row["status"], row["cost_nano"], row["completion_tokens"]) == ("error", 0, 0)
    assert row["error_code"] is not None
    assert [e["kind"] for e in gateway.ledger(user)] == ["topup"]
    gateway.assert_books_balance(user, NANO)
    assert gateway.balance(user) == NANO


# --------------------------------------------------------------------------- key limits


def test_an_expired_key_is_refused(gateway: Gateway) -> None:
    user = gateway.new_user("1", expires_at="2020-01-01T00:00:00+00:00")
    refused = gateway.call(user.secret, "GET", "/api/v1/me")
    assert refused.status_code == 401
    assert "expired" in refused.json()["error"]["message"]
    with gateway.client(user) as client, pytest.raises(openai.AuthenticationError):
        ask(client, gateway.script(Script(text=["no"])), 8)


def test_a_key_may_use_only_its_models(gateway: Gateway) -> None:
    user = gateway.new_user("1", models=[MODEL])
    with gateway.client(user) as client:
        with pytest.raises(openai.PermissionDeniedError) as raised:
            ask(client, gateway.script(Script(text=["no"])), 8, model=OTHER_MODEL)
        assert raised.value.code == "permission_denied"
        ask(client, gateway.script(Script(text=["ok"], usage=(3, 1))), 8)
    assert gateway.balance(user) == NANO - cost_of(3, 1)
    assert len(gateway.usage_rows(user)) == 1


def test_a_key_stops_at_its_spending_limit(gateway: Gateway) -> None:
    # Each request holds its prompt plus 100 output tokens (at least 175,000 nano-yuan) and
    # costs 181,000: the first fits within 0.0003 CNY, the second no longer does. (Scripted
    # prompts stay below the real count: a prompt above it with every allowed output token
    # would cost more than the hold, and a prepaid key is never charged more than that.)
    user = gateway.new_user("1", limit="0.0003")
    marker = gateway.script(Script(text=["ok"], usage=(12, 100)))
    with gateway.client(user) as client:
        ask(client, marker, 100)
    refused = gateway.call(user.secret, "POST", "/v1/chat/completions", chat_body(marker, 100))
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "key_limit_exceeded"
    [key] = gateway.admin("GET", f"/api/v1/admin/keys?user={user.name}").json()["data"]
    assert (key["limit"], key["spent"]) == ("0.0003", "0.000181")
    assert gateway.balance(user) == NANO - cost_of(12, 100)
    assert len(gateway.usage_rows(user)) == 1


def test_rpm_refuses_the_request_over_the_limit(gateway: Gateway) -> None:
    user = gateway.new_user("1", rpm=2)
    marker = gateway.script(Script(text=["ok"], usage=(3, 1)))
    body = chat_body(marker, 8)
    for _ in range(2):
        assert gateway.call(user.secret, "POST", "/v1/chat/completions", body).status_code == 200
    refused = gateway.call(user.secret, "POST", "/v1/chat/completions", body)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert len(gateway.usage_rows(user)) == 2
    gateway.assert_books_balance(user, NANO)


def test_tpm_refuses_once_the_tokens_used_reach_the_limit(gateway: Gateway) -> None:
    user = gateway.new_user("1", tpm=100)
    marker = gateway.script(Script(text=["ok"], usage=(60, 50)))  # 110 tokens: over at once
    body = chat_body(marker, 64)
    assert gateway.call(user.secret, "POST", "/v1/chat/completions", body).status_code == 200
    refused = gateway.call(user.secret, "POST", "/v1/chat/completions", body)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert len(gateway.usage_rows(user)) == 1


# --------------------------------------------------------------------------- the race


def test_concurrent_requests_never_overdraw_a_balance(gateway: Gateway) -> None:
    """100 requests at once against a balance that covers exactly 10 of them."""
    max_tokens = 200
    marker = f"race{uuid.uuid4().hex[:8]}"
    body = chat_body(marker, max_tokens)

    # The hold of this exact request, as the gateway computes it (the prompt counted with
    # Qwen3's tokenizer), read from the refusal of a user with nothing to spend.
    probe = gateway.new_user("0")
    refused = gateway.call(probe.secret, "POST", "/v1/chat/completions", body)
    assert refused.status_code == 402
    found = re.search(r"may cost up to ([0-9.]+) CNY", refused.json()["error"]["message"])
    assert found is not None
    hold = int(Decimal(found.group(1)) * NANO)
    prompt, remainder = divmod(hold - max_tokens * OUTPUT_NANO, INPUT_NANO)
    assert remainder == 0 and prompt > 0

    # Each request then uses exactly its worst case, so each costs exactly its hold.
    gateway.upstream.on(marker, Script(text=["ok"], usage=(prompt, max_tokens)))
    user = gateway.new_user(str(Decimal(10 * hold) / NANO))
    assert gateway.balance(user) == 10 * hold

    async def race() -> tuple[list[httpx.Response], list[int]]:
        headers = {"Authorization": f"Bearer {user.secret}"}
        limits = httpx.Limits(max_connections=120)
        async with httpx.AsyncClient(
            base_url=gateway.server.base_url, headers=headers, limits=limits, timeout=60
        ) as client:
            calls = [client.post("/v1/chat/completions", json=body) for _ in range(100)]
            peeks = [client.get("/api/v1/me") for _ in range(10)]
            answers = await asyncio.gather(*calls, *peeks)
        balances = [answer.json()["balance_nano"] for answer in answers[100:]]
        return list(answers[:100]), balances

    answers, balances_seen = asyncio.run(race())
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) == 10 and statuses.count(402) == 90, statuses
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 402} == {
        "insufficient_balance"
    }
    assert min(balances_seen) >= 0
    assert gateway.balance(user) == 0

    rows = gateway.usage_rows(user)
    assert len(rows) == 10
    assert {row["cost_nano"] for row in rows} == {hold}
    assert {row["status"] for row in rows} == {"ok"}
    gateway.assert_books_balance(user, 10 * hold)


def test_the_anthropic_sdk_sees_billing_and_permission_errors(gateway: Gateway) -> None:
    # Claude-style clients get the Anthropic error types for the billing-era refusals: the
    # SDK's own exception classes, with the typed body.
    poor = gateway.new_user("0.0001")
    restricted = gateway.new_user("1", models=[MODEL])
    base = str(gateway.http.base_url).rstrip("/") + "/api/anthropic"
    message = [{"role": "user", "content": f"{gateway.script(Script(text=['no']))}: hi"}]
    with anthropic.Anthropic(base_url=base, api_key=poor.secret, max_retries=0) as client:
        with pytest.raises(anthropic.APIStatusError) as raised:
            client.messages.create(model=MODEL, max_tokens=1000, messages=message)
        assert raised.value.status_code == 402
        assert raised.value.body["error"]["type"] == "billing_error"
    with anthropic.Anthropic(base_url=base, api_key=restricted.secret, max_retries=0) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            client.messages.create(model=OTHER_MODEL, max_tokens=8, messages=message)
        assert denied.value.body["error"]["type"] == "permission_error"


def test_a_finished_stream_without_upstream_usage_is_billed_for_what_was_relayed(
    gateway: Gateway,
) -> None:
    # An upstream that sends no usage chunk at all (it ignores stream_options): the answer
    # finished, so the gateway bills its own counts, never nothing.
    user = gateway.new_user("1")
    pieces = [f" word{i}" for i in range(12)]
    marker = gateway.script(Script(text=pieces, send_usage=False))
    with gateway.client(user) as client:
        stream = ask(client, marker, 100, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    [row] = gateway.wait_settled(user, 1)
    assert row["status"] == "ok"
    assert row["prompt_tokens"] > 0
    assert row["completion_tokens"] > 0
    assert row["cost_nano"] == cost_of(row["prompt_tokens"], row["completion_tokens"])
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == row["completion_tokens"]
    gateway.assert_books_balance(user, NANO)
