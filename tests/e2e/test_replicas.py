"""Several replicas sharing one PostgreSQL database and one Redis, end to end (docs/billing.md).

Three real `modelport serve` processes share a fresh PostgreSQL database (accounts, keys,
credit leases, the ledger, usage rows) and a Redis database of their own (rate-limit counters,
key-cache invalidation, requests to give back leased credit), in front of one scripted
upstream. The first replica migrates the database and prints the admin key; the others start
after it. Further replicas, started with a short lease TTL, are killed with SIGKILL while
requests are in flight and started again.

The books as the database keeps them: `accounts.balance_nano` is an account's free balance;
credit a process has leased for a key sits in `credit_leases.amount_nano` (and counts in the
key's `spent_nano`). The balance a user sees (GET /api/v1/me) is the two together. A request's
usage row and ledger charge are written behind its response, so "nothing in flight" means
every usage row is written: the account API flushes a replica's write-behind before it
answers, and the tests ask it to.

Each test makes its own users, so balances never mix. Scripted answers carry exact usage, so
every cost is known to the nano-yuan; the books are read straight from PostgreSQL. The key
cache TTL is a minute, so only the invalidation over Redis can explain a revocation seen at
once on another replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from psycopg.rows import dict_row
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script
from tests.support.postgres import fresh_postgres_url, unavailable_reason

pytestmark = pytest.mark.e2e

MODEL = "qwen/qwen3-8b"
NANO = 10**9
REDIS_SERVER = "redis://127.0.0.1:6379"
REDIS_CLAIM = "modelport-tests:replicas"  # marks a Redis database as this module's
LEASE_TTL = 4  # seconds: MODELPORT_HOLD_TTL of the replicas that are killed

CONFIG = """\
[[models]]
id = "local/smollm2-135m-instruct"
backends = []

[[models]]
id = "{model}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{url}"
  dialect = "vllm"
  upstream_model = "Qwen/Qwen3-8B"
"""

# Each user's free balance, the sum of its leases and its smallest lease, in one snapshot.
BALANCES_SQL = """\
SELECT a.id, a.balance_nano, coalesce(sum(l.amount_nano), 0), coalesce(min(l.amount_nano), 0)
FROM accounts a LEFT JOIN credit_leases l ON l.account_id = a.id
WHERE a.id = ANY(%s) GROUP BY a.id"""


@dataclass(frozen=True)
class User:
    name: str
    id: int
    key_id: int
    secret: str


@dataclass(frozen=True)
class Answer:
    """What a client read from one completion."""

    status: int  # 0: the connection failed before a status arrived
    request_id: str | None = None  # from `chatcmpl-<request id>`
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    dropped: bool = False  # the connection died before the answer's end
    completed_at: float | None = None  # time.monotonic() when the whole answer had arrived

    @property
    def complete(self) -> bool:
        """A finish reason and a usage with its cost: the client knows what it paid."""
        return self.finish_reason is not None and (self.usage or {}).get("cost") is not None

    @property
    def cost_nano(self) -> int:
        assert self.usage is not None
        cost = Decimal(str(self.usage["cost"])) * NANO
        assert cost == int(cost), self.usage
        return int(cost)


@dataclass(frozen=True)
class Lease:
    id: int
    owner: str
    amount: int
    expires_at: datetime


@dataclass(frozen=True)
class Balances:
    """One snapshot of an account's money in the database."""

    free: int  # accounts.balance_nano
    leased: int  # the sum of its credit leases
    smallest_lease: int  # 0 when there is none

    @property
    def shown(self) -> int:
        """The balance as the user sees it (GET /api/v1/me)."""
        return self.free + self.leased


@dataclass
class Cluster:
    replicas: list[RunningServer]
    upstream: FakeOpenAIUpstream
    admin_key: str
    conninfo: str  # psycopg's form of the database URL
    config: Path
    env: dict[str, str]
    input_nano: int  # the model's prices per token, as /v1/models states them
    output_nano: int
    http: httpx.Client

    # ----------------------------------------------------------------- scripting and prices

    def script(self, script: Script) -> str:
        """A fresh marker the upstream answers with `script`; put it in the user message."""
        marker = f"[{uuid.uuid4().hex[:12]}]"
        self.upstream.on(marker, script)
        return marker

    def cost_of(self, prompt: int, completion: int) -> int:
        return prompt * self.input_nano + completion * self.output_nano

    # ----------------------------------------------------------------- admin and account API

    def admin(self, replica: int, method: str, path: str, body: Any = None) -> httpx.Response:
        url = self.replicas[replica].base_url + path
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        return self.http.request(method, url, json=body, headers=headers)

    def new_user(self, balance: str, **key: Any) -> User:
        """A fresh user with `balance` CNY and one key with the limits in `key`, made through
        the first replica's admin API."""
        name = f"user-{uuid.uuid4().hex[:10]}"
        body = {"name": name, "balance": balance}
        created = self.admin(0, "POST", "/api/v1/admin/users", body)
        assert created.status_code == 201, created.text
        key_body = {"name": f"{name}-key", "user": name, **key}
        issued = self.admin(0, "POST", "/api/v1/admin/keys", key_body)
        assert issued.status_code == 201, issued.text
        return User(name, created.json()["id"], issued.json()["id"], issued.json()["secret"])

    def me(self, server: RunningServer, secret: str) -> dict[str, Any]:
        """GET /api/v1/me on one replica; it writes that replica's pending settlements first."""
        answer = self.http.get(
            server.base_url + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"}
        )
        assert answer.status_code == 200, answer.text
        account: dict[str, Any] = answer.json()
        return account

    def flush(self) -> None:
        """Write every settlement the replicas have made (write-behind) to the database."""
        for server in self.replicas:
            self.me(server, self.admin_key)

    # ----------------------------------------------------------------- the database

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            return connection.execute(sql, args).fetchall()

    def balances(self, user: User) -> Balances:
        [(_, free, leased, smallest)] = self.query(BALANCES_SQL, [user.id])
        return Balances(int(free), int(leased), int(smallest))

    def balance(self, user: User) -> int:
        """The balance the user sees: the free balance plus what is leased of it."""
        return self.balances(user).shown

    def leases(self, user: User) -> list[Lease]:
        """The credit leases of the user's account, whichever process holds them."""
        rows = self.query(
            "SELECT id, owner, amount_nano, expires_at FROM credit_leases"
            " WHERE account_id = %s ORDER BY id",
            user.id,
        )
        return [Lease(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def key_spent(self, user: User) -> int:
        [(spent,)] = self.query("SELECT spent_nano FROM api_keys WHERE id = %s", user.key_id)
        return int(spent)

    def usage_rows(self, user: User) -> dict[str, dict[str, Any]]:
        """The user's usage rows by request id, as written so far (see `settled`)."""
        with (
            psycopg.connect(self.conninfo, autocommit=True) as connection,
            connection.cursor(row_factory=dict_row) as cursor,
        ):
            cursor.execute("SELECT * FROM usage WHERE account_id = %s", (user.id,))
            return {row["request_id"]: row for row in cursor.fetchall()}

    def ledger_sums(self, user: User) -> dict[str, int]:
        """The user's ledger amounts summed by kind (top-up, charge, adjustment)."""
        rows = self.query(
            "SELECT kind, sum(amount_nano) FROM ledger WHERE account_id = %s GROUP BY kind",
            user.id,
        )
        return {kind: int(total) for kind, total in rows}

    def ledger_charges(self, user: User) -> list[tuple[str, int]]:
        """(request id, amount) of the user's ledger charges."""
        rows = self.query(
            "SELECT request_id, amount_nano FROM ledger WHERE account_id = %s AND kind = 'charge'",
            user.id,
        )
        return [(request_id, int(amount)) for request_id, amount in rows]

    def settled(
        self, users: Sequence[User], requests: int, within: float = 20.0
    ) -> dict[str, dict[str, Any]]:
        """The users' usage rows once `requests` of them are written: nothing in flight. A
        request whose client went away settles once its replica notices; each replica's
        write-behind is flushed on every try."""
        deadline = time.monotonic() + within
        while True:
            self.flush()
            rows: dict[str, dict[str, Any]] = {}
            for user in users:
                rows |= self.usage_rows(user)
            if len(rows) >= requests or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def wait_for_no_leases(self, user: User, within: float) -> list[Lease]:
        deadline = time.monotonic() + within
        while (leases := self.leases(user)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return leases

    @contextmanager
    def watching_balances(self, users: Sequence[User]) -> Iterator[list[Balances]]:
        """Snapshots of the users' balances, taken from the database over and over until the
        block ends."""
        seen: list[Balances] = []
        stop = threading.Event()
        ids = [user.id for user in users]

        def watch() -> None:
            with psycopg.connect(self.conninfo, autocommit=True) as connection:
                while True:
                    rows = connection.execute(BALANCES_SQL, (ids,)).fetchall()
                    seen.extend(Balances(int(r[1]), int(r[2]), int(r[3])) for r in rows)
                    if stop.wait(0.005):  # a sample every few milliseconds, and one after
                        return

        watcher = threading.Thread(target=watch, name="balance-watch")
        watcher.start()
        try:
            yield seen
        finally:
            stop.set()
            watcher.join()

    def assert_books_balance(self, user: User, paid_in: int) -> None:
        """docs/billing.md's invariants for a user with nothing in flight (every usage row
        written): the ledger's charges equal the usage rows' costs; the balance (free plus
        leased, the same as GET /api/v1/me shows) is the ledger's sum, what was paid in less
        those costs; no lease is negative; the key's spending is its costs plus its leases."""
        costs = sum(row["cost_nano"] for row in self.usage_rows(user).values())
        ledger = self.ledger_sums(user)
        assert ledger.get("charge", 0) == -costs
        balances = self.balances(user)
        assert balances.free >= 0 and balances.smallest_lease >= 0
        assert balances.shown == sum(ledger.values()) == paid_in - costs
        assert self.me(self.replicas[0], user.secret)["balance_nano"] == balances.shown
        assert self.key_spent(user) == costs + balances.leased


def chat_body(marker: str, *, max_tokens: int = 64, stream: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{marker} say something"}],
        "max_tokens": max_tokens,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


async def stream_chat(
    client: httpx.AsyncClient,
    server: RunningServer,
    user: User,
    body: dict[str, Any],
    *,
    leave_after_first_text: bool = False,
    may_drop: bool = False,
) -> Answer:
    """One streamed completion read as a client reads it. With `leave_after_first_text` the
    client closes the connection as soon as the first text arrives. With `may_drop` a
    connection that dies (its replica killed) ends the answer with what had arrived."""
    headers = {"Authorization": f"Bearer {user.secret}"}
    url = server.base_url + "/v1/chat/completions"
    status, request_id, finish, usage = 0, None, None, None
    arrived: float | None = None  # when the finish and the usage with its cost were both in
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            status = response.status_code
            if status != 200:
                await response.aread()
                return Answer(status, error=response.json()["error"])
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line.removeprefix("data: "))
                request_id = chunk["id"].removeprefix("chatcmpl-")
                usage = chunk.get("usage") or usage
                for choice in chunk["choices"]:
                    finish = choice.get("finish_reason") or finish
                    if leave_after_first_text and choice["delta"].get("content"):
                        return Answer(200, request_id)  # leaving the block drops the connection
                if arrived is None and finish and (usage or {}).get("cost") is not None:
                    arrived = time.monotonic()
    except httpx.TransportError:
        if not may_drop:
            raise
        # A connection that died after the whole answer had arrived (before the response's
        # last bytes: the end of the chunked body) still gave the client its answer.
        return Answer(status, request_id, finish, usage, dropped=True, completed_at=arrived)
    return Answer(200, request_id, finish, usage, completed_at=time.monotonic())


async def whole_chat(
    client: httpx.AsyncClient, server: RunningServer, user: User, body: dict[str, Any]
) -> Answer:
    """One non-streamed completion; a connection that dies is a dropped answer."""
    headers = {"Authorization": f"Bearer {user.secret}"}
    try:
        response = await client.post(
            server.base_url + "/v1/chat/completions", json=body, headers=headers
        )
    except httpx.TransportError:
        return Answer(0, dropped=True)
    done = time.monotonic()
    if response.status_code != 200:
        return Answer(response.status_code, error=response.json()["error"])
    answer = response.json()
    return Answer(
        200,
        answer["id"].removeprefix("chatcmpl-"),
        answer["choices"][0]["finish_reason"],
        answer["usage"],
        completed_at=done,
    )


def cny(nano: int) -> str:
    return format(Decimal(nano) / NANO, "f")


def kill_hard(server: RunningServer) -> None:
    """SIGKILL the replica and every process under it (granian serves from a worker process),
    as when its machine dies: nothing gets to run a `finally`."""
    assert server.process is not None
    pids = [server.process.pid]
    for pid in pids:  # grows as children are found: every descendant
        pids += _children(pid)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait(10)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # the field after the state
                found.append(int(entry.name))
    return found


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


# --------------------------------------------------------------------------- the cluster


@contextmanager
def redis_database() -> Iterator[str]:
    """A Redis database of this module's own (an empty one, claimed atomically), flushed
    afterwards: rate-limit counters are named by key id, and key ids restart in every fresh
    PostgreSQL database."""
    try:
        redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError) as error:
        pytest.skip(f"no Redis server answers at {REDIS_SERVER}: {error}")
    for number in range(1, 16):
        with redis.Redis.from_url(f"{REDIS_SERVER}/{number}") as client:
            if client.dbsize() == 0 and client.set(REDIS_CLAIM, os.getpid(), nx=True, ex=600):
                break
    else:
        pytest.skip("every Redis database 1-15 is in use")
    try:
        yield f"{REDIS_SERVER}/{number}"
    finally:
        with redis.Redis.from_url(f"{REDIS_SERVER}/{number}") as client:
            client.flushdb()


@contextmanager
def scripted_upstream() -> Iterator[FakeOpenAIUpstream]:
    upstream = FakeOpenAIUpstream(models=("Qwen/Qwen3-8B",))
    upstream.start_in_thread()
    try:
        yield upstream
    finally:
        upstream.stop_thread()


def per_token_nano(pricing: dict[str, str], name: str) -> int:
    price = Decimal(pricing[name]) * NANO
    assert price == int(price), f"{name} price {pricing[name]} is not whole nano-yuan"
    return int(price)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_database())
        database_url = stack.enter_context(fresh_postgres_url())
        upstream = stack.enter_context(scripted_upstream())
        config = tmp_path_factory.mktemp("replicas") / "modelport.toml"
        config.write_text(CONFIG.format(model=MODEL, url=upstream.base_url))
        env = {
            "MODELPORT_DATABASE_URL": database_url,
            "MODELPORT_REDIS_URL": redis_url,
            "MODELPORT_KEY_CACHE_TTL": "60",
        }
        replicas = [
            RunningServer(tmp_path_factory.mktemp(f"replica-{name}"), config, env) for name in "abc"
        ]
        for replica in replicas:
            stack.callback(replica.stop)
        replicas[0].start()  # migrates the database and prints the admin key
        assert replicas[0].admin_key, replicas[0].output()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(RunningServer.start, replicas[1:]))
        assert [replica.admin_key for replica in replicas[1:]] == ["", ""]

        http = stack.enter_context(httpx.Client(timeout=30))
        models = http.get(replicas[0].base_url + "/v1/models").json()["data"]
        pricing = next(card["pricing"] for card in models if card["id"] == MODEL)
        yield Cluster(
            replicas=replicas,
            upstream=upstream,
            admin_key=replicas[0].admin_key,
            conninfo=database_url.replace("postgresql+psycopg://", "postgresql://"),
            config=config,
            env=env,
            input_nano=per_token_nano(pricing, "prompt"),
            output_nano=per_token_nano(pricing, "completion"),
            http=http,
        )


# --------------------------------------------------------------------------- the tests


def test_streaming_load_over_three_replicas_keeps_the_books_exact(cluster: Cluster) -> None:
    """60 streams from four users, round-robin over the replicas, every sixth client leaving
    mid-stream, and a top-up per user on another replica during the load."""
    users = [cluster.new_user("100") for _ in range(4)]
    top_up = 5 * NANO
    jobs = []
    for number in range(60):
        leaves = number % 6 == 5
        if leaves:  # long enough that the client is gone well before the end
            script = Script(text=[f" w{i}" for i in range(40)], usage=(40, 40), delay=0.05)
        else:
            script = Script(text=[f" w{i}" for i in range(6)], usage=(11 + number, 6), delay=0.01)
        jobs.append((number, users[number % 4], cluster.script(script), leaves))

    async def load() -> list[Answer]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            streams = [
                stream_chat(
                    client,
                    cluster.replicas[number % 3],
                    user,
                    chat_body(marker),
                    leave_after_first_text=leaves,
                )
                for number, user, marker, leaves in jobs
            ]
            topups = [
                client.post(
                    cluster.replicas[(index + 1) % 3].base_url
                    + f"/api/v1/admin/users/{u.name}/topup",
                    json={"amount": cny(top_up), "reason": "during the load"},
                    headers={"Authorization": f"Bearer {cluster.admin_key}"},
                )
                for index, u in enumerate(users)
            ]
            answers, topped = await asyncio.gather(
                asyncio.gather(*streams), asyncio.gather(*topups)
            )
        assert [response.status_code for response in topped] == [200] * 4
        return answers

    answers = asyncio.run(load())
    assert [answer.status for answer in answers] == [200] * 60
    # Nothing in flight: every request's usage row is written.
    rows = cluster.settled(users, 60)
    for user in users:
        cluster.assert_books_balance(user, 100 * NANO + top_up)
    # Every admitted request left exactly one usage row, under the id its client saw.
    assert len(rows) == 60
    assert set(rows) == {answer.request_id for answer in answers}

    for (number, user, _marker, leaves), answer in zip(jobs, answers, strict=True):
        assert answer.request_id is not None
        row = rows[answer.request_id]
        assert row["account_id"] == user.id
        if leaves:
            assert (row["status"], row["cancelled"]) == ("cancelled", True)
            continue
        # A finished stream: billed exactly what it used, and the client was told the cost.
        assert answer.finish_reason == "stop"
        assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (
            "ok",
            11 + number,
            6,
        )
        assert row["cost_nano"] == cluster.cost_of(11 + number, 6)
        assert answer.complete and answer.cost_nano == row["cost_nano"]

    # Across all accounts: the ledger's charges are the usage rows' costs.
    [(charges, costs)] = cluster.query(
        "SELECT (SELECT coalesce(sum(amount_nano), 0) FROM ledger WHERE kind = 'charge'),"
        " (SELECT coalesce(sum(cost_nano), 0) FROM usage)"
    )
    assert charges == -costs


def test_a_balance_for_ten_requests_admits_ten_across_replicas(cluster: Cluster) -> None:
    """60 requests at once, spread over the three replicas, against a balance that covers
    exactly 10 of them: 10 run, 50 are refused, and the balance never goes below zero. The
    first replica to lease the account's credit takes all of it; the others get their share
    by asking it (over Redis) to give back what its requests in flight do not need."""
    max_tokens = 200
    marker = f"[race-{uuid.uuid4().hex[:8]}]"
    body = chat_body(marker, max_tokens=max_tokens, stream=False)

    # The hold of this exact request (its prompt counted with Qwen3's tokenizer), read from
    # the refusal of a user with nothing to spend.
    probe = cluster.new_user("0")
    refused = cluster.http.post(
        cluster.replicas[1].base_url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {probe.secret}"},
    )
    assert refused.status_code == 402, refused.text
    found = re.search(r"may cost up to ([0-9.]+) CNY", refused.json()["error"]["message"])
    assert found is not None, refused.text
    hold = int(Decimal(found.group(1)) * NANO)
    prompt, remainder = divmod(hold - max_tokens * cluster.output_nano, cluster.input_nano)
    assert remainder == 0 and prompt > 0

    # Each request uses exactly its worst case, so each costs exactly its hold.
    cluster.upstream.on(marker, Script(text=["ok"], usage=(prompt, max_tokens), delay=0.02))
    user = cluster.new_user(cny(10 * hold))
    assert cluster.balances(user) == Balances(10 * hold, 0, 0)

    async def race() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {user.secret}"}
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
            calls = [
                client.post(cluster.replicas[n % 3].base_url + "/v1/chat/completions", json=body)
                for n in range(60)
            ]
            return await asyncio.gather(*calls)

    with cluster.watching_balances([user]) as seen:
        answers = asyncio.run(race())
    statuses = [answer.status_code for answer in answers]
    assert (statuses.count(200), statuses.count(402)) == (10, 50), statuses
    refusals = {a.json()["error"]["code"] for a in answers if a.status_code == 402}
    assert refusals == {"insufficient_balance"}
    # Neither the free balance, nor any lease, nor the two together ever went below zero.
    assert seen
    assert min(b.free for b in seen) >= 0
    assert min(b.smallest_lease for b in seen) >= 0
    assert min(b.shown for b in seen) >= 0

    rows = cluster.settled([user], 10)
    assert cluster.balance(user) == 0
    assert len(rows) == 10
    assert {row["cost_nano"] for row in rows.values()} == {hold}
    cluster.assert_books_balance(user, 10 * hold)


def test_rpm_is_counted_once_for_all_replicas(cluster: Cluster) -> None:
    """A key with rpm=5 sending 8 requests in turn to the three replicas: 5 are admitted, in
    total, not 5 per replica."""
    user = cluster.new_user("1", rpm=5)
    body = chat_body(cluster.script(Script(text=["ok"], usage=(3, 1))), stream=False)
    answers = [
        cluster.http.post(
            cluster.replicas[n % 3].base_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {user.secret}"},
        )
        for n in range(8)
    ]
    assert [answer.status_code for answer in answers] == [200] * 5 + [429] * 3
    for refused in answers[5:]:
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
    assert len(cluster.settled([user], 5)) == 5
    cluster.assert_books_balance(user, NANO)


def test_a_revocation_on_one_replica_is_refused_at_once_on_the_others(cluster: Cluster) -> None:
    user = cluster.new_user("1")
    body = chat_body(cluster.script(Script(text=["ok"], usage=(3, 1))), stream=False)
    headers = {"Authorization": f"Bearer {user.secret}"}

    def ask(replica: RunningServer) -> int:
        url = replica.base_url + "/v1/chat/completions"
        return cluster.http.post(url, json=body, headers=headers).status_code

    # Every replica has the key in its cache (trusted for a minute) ...
    assert [ask(replica) for replica in cluster.replicas] == [200, 200, 200]
    revoked = cluster.admin(0, "DELETE", f"/api/v1/admin/keys/{user.key_id}")
    assert revoked.status_code == 200, revoked.text
    # ... and forgets it when the first one announces the revocation.
    assert [ask(replica) for replica in reversed(cluster.replicas)] == [401, 401, 401]
    assert len(cluster.settled([user], 3)) == 3


def test_a_replica_killed_mid_stream_leaves_a_lease_the_next_start_gives_back(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGKILL while a stream is in flight: what finished before is billed; the credit the
    replica had leased stays leased until the lease expires (its heartbeat no longer renews
    it), and a replica's start-up sweep then returns it; the killed request is never
    charged."""
    # The short lease TTL goes to the replica that dies (the others' leases must outlive
    # their heartbeats' pauses); its heartbeat renews its leases every TTL/4 while it lives.
    env = cluster.env | {"MODELPORT_HOLD_TTL": str(LEASE_TTL)}
    user = cluster.new_user("1")
    quick = cluster.script(Script(text=[" a", " b"], usage=(9, 2)))
    slow = cluster.script(Script(text=[f" w{i}" for i in range(400)], usage=(9, 400), delay=0.05))
    costs = 3 * cluster.cost_of(9, 2)

    async def until_killed(replica: RunningServer) -> tuple[list[Answer], Answer, datetime]:
        async with httpx.AsyncClient(timeout=30) as client:
            finished = [await stream_chat(client, replica, user, chat_body(quick)) for _ in "abc"]
            # Finished means written: the account API writes the replica's pending
            # settlements before it answers (the last write-behind window is the next test's).
            account = await asyncio.to_thread(cluster.me, replica, user.secret)
            assert account["balance_nano"] == NANO - costs
            url = replica.base_url + "/v1/chat/completions"
            headers = {"Authorization": f"Bearer {user.secret}"}
            request_id = None
            rest: list[str] = []
            async with client.stream("POST", url, json=chat_body(slow), headers=headers) as reply:
                assert reply.status_code == 200
                lines = reply.aiter_lines()
                async for line in lines:
                    if '"content":" w' in line:  # text is flowing: the request is mid-stream
                        request_id = json.loads(line.removeprefix("data: "))["id"]
                        break
                killed_at = datetime.now(UTC)
                kill_hard(replica)
                with suppress(httpx.TransportError):  # the connection dies with the replica
                    rest += [line async for line in lines]
            assert not any('"finish_reason":"' in line for line in rest)
            assert request_id is not None
            return finished, Answer(200, request_id.removeprefix("chatcmpl-")), killed_at

    doomed = RunningServer(tmp_path_factory.mktemp("replica-doomed"), cluster.config, env)
    with doomed:
        finished, killed, killed_at = asyncio.run(until_killed(doomed))
    assert {answer.finish_reason for answer in finished} == {"stop"}

    # What finished before the kill is billed; the killed request is not.
    rows = cluster.usage_rows(user)
    assert set(rows) == {answer.request_id for answer in finished}
    assert len(rows) == 3
    assert {row["cost_nano"] for row in rows.values()} == {cluster.cost_of(9, 2)}
    assert killed.request_id not in rows
    # The dead replica's lease is still there, with the killed request's hold in it (in
    # memory only), and so is the rest of what it leased: the balance is unchanged ...
    [lease] = cluster.leases(user)
    assert lease.amount > 0
    assert cluster.balances(user) == Balances(
        NANO - costs - lease.amount, lease.amount, lease.amount
    )
    # ... until the lease expires: at most a TTL after the kill (renewed until then).
    assert timedelta(0) < lease.expires_at - killed_at <= timedelta(seconds=LEASE_TTL + 0.5)
    # Nothing gives it back before it expires (every replica sweeps, but expired leases only).
    sleep_until(lease.expires_at - timedelta(seconds=0.5))
    assert cluster.leases(user) == [lease]

    # Once it has expired, the replica started again (a new process with the same settings)
    # gives it back in its start-up sweep.
    sleep_until(lease.expires_at + timedelta(seconds=0.2))
    with RunningServer(tmp_path_factory.mktemp("replica-restarted"), cluster.config, env):
        assert cluster.wait_for_no_leases(user, within=10) == []
    assert cluster.balances(user) == Balances(NANO - costs, 0, 0)
    assert killed.request_id not in cluster.usage_rows(user)
    cluster.assert_books_balance(user, NANO)


def test_kill_9_under_mixed_load_never_bills_twice_nor_below_zero(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A replica of its own, driven by concurrent non-streamed and streamed requests from
    three users (some clients leaving mid-stream; one user's balance runs out), is killed with
    SIGKILL while requests are in flight, and started again. Once its leases have expired and
    been swept, every account's books are exact: each charge is one usage row's cost, nothing
    is billed twice, no balance is below zero, and every answer that came back whole before
    the kill is billed what its client was told, unless it came within the last write-behind
    window before the kill; such a request is simply not billed."""
    linger = 0.25  # a long write-behind window, so that answered-but-unbilled is likely
    env = cluster.env | {
        "MODELPORT_HOLD_TTL": str(LEASE_TTL),
        "MODELPORT_WRITE_BEHIND_MS": str(int(linger * 1000)),
    }
    load_seconds, workers = 3.0, 24
    small = 150_000  # about one request's hold: refusals at once, and soon nothing left
    users = [cluster.new_user("1"), cluster.new_user("1"), cluster.new_user(cny(small))]
    opening = {users[0].id: NANO, users[1].id: NANO, users[2].id: small}
    whole = cluster.script(Script(text=[" a", " b", " c"], usage=(9, 3), delay=0.01))
    streamed = cluster.script(Script(text=[f" w{i}" for i in range(8)], usage=(9, 8), delay=0.03))
    left = cluster.script(Script(text=[f" w{i}" for i in range(30)], usage=(9, 30), delay=0.03))
    kinds = ("whole", "streamed", "left")

    doomed = RunningServer(tmp_path_factory.mktemp("replica-mixed"), cluster.config, env)
    outcomes: list[tuple[str, User, Answer]] = []

    async def load() -> tuple[float, int]:
        killed = asyncio.Event()
        in_flight = 0

        async def one(client: httpx.AsyncClient, kind: str, user: User) -> Answer:
            if kind == "whole":
                return await whole_chat(client, doomed, user, chat_body(whole, stream=False))
            return await stream_chat(
                client,
                doomed,
                user,
                chat_body(streamed if kind == "streamed" else left),
                leave_after_first_text=kind == "left",
                may_drop=True,
            )

        async def worker(client: httpx.AsyncClient, number: int) -> None:
            nonlocal in_flight
            rng = random.Random(number)
            while not killed.is_set():
                # The small balance's refusals each write the lease over and over, and every
                # such write ends the writer's lingering: its user stops halfway, so that the
                # write-behind lingers full windows in the run-up to the kill.
                late = time.monotonic() > started + load_seconds / 2
                kind, user = rng.choice(kinds), rng.choice(users[:2] if late else users)
                in_flight += 1
                try:
                    answer = await one(client, kind, user)
                finally:
                    in_flight -= 1
                outcomes.append((kind, user, answer))

        limits = httpx.Limits(max_connections=workers)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            started = time.monotonic()
            running = [asyncio.create_task(worker(client, n)) for n in range(workers)]
            await asyncio.sleep(load_seconds)
            caught_in_flight = in_flight
            kill_started = time.monotonic()
            await asyncio.to_thread(kill_hard, doomed)
            killed.set()
            await asyncio.gather(*running)
        return kill_started, caught_in_flight

    with doomed, cluster.watching_balances(users) as seen:
        kill_started, caught_in_flight = asyncio.run(load())
    assert caught_in_flight > 0
    # The replica served until it was killed (a wedged event loop would stop the answers).
    last_answer = max(a.completed_at or 0.0 for _, _, a in outcomes)
    assert last_answer > kill_started - 1.0, "no answer in the last second before the kill"
    # Some streams were cut by the kill mid-answer, after their request was admitted.
    assert any(a.dropped and a.request_id and a.finish_reason is None for _, _, a in outcomes)
    statuses = Counter((u.id == users[2].id, a.status) for _, u, a in outcomes if not a.dropped)
    assert set(statuses) <= {(False, 200), (True, 200), (True, 402)}, statuses
    assert statuses[True, 402] > 0  # the small balance ran out under the load

    leases_after_kill = [lease for user in users for lease in cluster.leases(user)]
    assert leases_after_kill
    assert len({lease.owner for lease in leases_after_kill}) == 1  # the dead replica's
    sleep_until(max(lease.expires_at for lease in leases_after_kill) + timedelta(seconds=0.2))
    with RunningServer(tmp_path_factory.mktemp("replica-mixed-restarted"), cluster.config, env):
        for user in users:
            assert cluster.wait_for_no_leases(user, within=10) == []
        shown = {user.id: cluster.me(cluster.replicas[0], user.secret) for user in users}

    # The balances never went below zero, at any moment of the load or the kill.
    assert seen
    assert min(b.free for b in seen) >= 0
    assert min(b.smallest_lease for b in seen) >= 0
    assert min(b.shown for b in seen) >= 0

    # A settlement reaches the database at most a write-behind linger after the client has
    # its answer (more while the writer commits the batch before): the window below is
    # generous. An answer completed inside it may have died with the replica, unbilled.
    window = 2 * linger + 0.75
    for user in users:
        rows = cluster.usage_rows(user)
        charges = cluster.ledger_charges(user)
        costs = sum(row["cost_nano"] for row in rows.values())
        # Each request billed once: one usage row, at most one ledger charge, the same amount.
        assert all(n == 1 for n in Counter(request_id for request_id, _ in charges).values())
        charged = {request_id: -amount for request_id, amount in charges}
        assert charged == {
            request_id: row["cost_nano"] for request_id, row in rows.items() if row["cost_nano"]
        }
        assert sum(charged.values()) == costs
        # No lease left: the balance is the ledger's sum, never below zero; the key's
        # spending is its costs.
        ledger = cluster.ledger_sums(user)
        balances = cluster.balances(user)
        assert balances == Balances(opening[user.id] - costs, 0, 0)
        assert balances.free == sum(ledger.values()) >= 0
        assert shown[user.id]["balance_nano"] == balances.shown
        assert cluster.key_spent(user) == costs

        # Every whole answer the client saw is billed what the client was told ...
        for _kind, owner, answer in outcomes:
            if owner is not user or not answer.complete:
                continue
            assert answer.completed_at is not None and answer.request_id is not None
            row = rows.get(answer.request_id)
            if row is not None:
                assert row["cost_nano"] == answer.cost_nano
                continue
            # ... unless its settlement was still waiting in the write-behind when the
            # replica died: then it is not billed at all (no usage row, no charge).
            assert answer.completed_at > kill_started - window, answer
            assert answer.request_id not in charged

    # Across all accounts: the ledger's charges are the usage rows' costs.
    [(charges_total, costs_total)] = cluster.query(
        "SELECT (SELECT coalesce(sum(amount_nano), 0) FROM ledger WHERE kind = 'charge'),"
        " (SELECT coalesce(sum(cost_nano), 0) FROM usage)"
    )
    assert charges_total == -costs_total
