"""Several replicas sharing one PostgreSQL database and one Redis, end to end (docs/billing.md).

Three real `modelport serve` processes share a fresh PostgreSQL database (accounts, keys,
holds, the ledger, usage rows) and a Redis database of their own (rate-limit counters,
key-cache invalidation), in front of one scripted upstream. The first replica migrates the
database and prints the admin key; the others start after it. A fourth replica, started with
a short hold TTL (a hold's expiry is fixed by the replica that places it), is killed with
SIGKILL mid-stream and started again.

Each test makes its own users, so balances never mix. Scripted answers carry exact usage, so
every cost is known to the nano-yuan; the books are read straight from PostgreSQL. The key
cache TTL is a minute, so only the invalidation over Redis can explain a revocation seen at
once on another replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
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


@dataclass(frozen=True)
class User:
    name: str
    id: int
    key_id: int
    secret: str


@dataclass(frozen=True)
class Answer:
    """What a client read from one streamed completion."""

    status: int
    request_id: str | None = None  # from the chunks' `chatcmpl-<request id>`
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


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

    # ----------------------------------------------------------------- admin API

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

    # ----------------------------------------------------------------- the database

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            return connection.execute(sql, args).fetchall()

    def balance(self, user: User) -> int:
        [(balance,)] = self.query("SELECT balance_nano FROM accounts WHERE id = %s", user.id)
        return int(balance)

    def holds(self, user: User | None = None) -> list[tuple[str, int, datetime]]:
        """(request id, amount, expiry) of the holds in flight: one user's, or everyone's."""
        sql = "SELECT request_id, amount_nano, expires_at FROM holds"
        if user is None:
            return [(r[0], int(r[1]), r[2]) for r in self.query(sql)]
        rows = self.query(sql + " WHERE account_id = %s", user.id)
        return [(r[0], int(r[1]), r[2]) for r in rows]

    def usage_rows(self, user: User) -> dict[str, dict[str, Any]]:
        """The user's usage rows by request id."""
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

    def wait_for_no_holds(self, user: User | None = None, within: float = 20.0) -> None:
        """Until no hold is left (a request whose client went away settles after that)."""
        deadline = time.monotonic() + within
        while self.holds(user) and time.monotonic() < deadline:
            time.sleep(0.05)

    def assert_books_balance(self, user: User, paid_in: int) -> None:
        """docs/billing.md's invariants for a user with nothing in flight: no hold left, the
        ledger's charges equal the usage rows' costs, and the balance is what was paid in less
        those costs."""
        assert self.holds(user) == []
        costs = sum(row["cost_nano"] for row in self.usage_rows(user).values())
        ledger = self.ledger_sums(user)
        assert ledger.get("charge", 0) == -costs
        assert self.balance(user) == sum(ledger.values()) == paid_in - costs


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
) -> Answer:
    """One streamed completion read as a client reads it. With `leave_after_first_text` the
    client closes the connection as soon as the first text arrives."""
    headers = {"Authorization": f"Bearer {user.secret}"}
    url = server.base_url + "/v1/chat/completions"
    request_id = finish = usage = None
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return Answer(response.status_code, error=response.json()["error"])
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
    return Answer(200, request_id, finish, usage)


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
    cluster.wait_for_no_holds()
    assert cluster.holds() == []

    rows: dict[str, dict[str, Any]] = {}
    for user in users:
        rows |= cluster.usage_rows(user)
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
        assert answer.usage is not None
        assert Decimal(str(answer.usage["cost"])) * NANO == row["cost_nano"]

    # Across all accounts: the ledger's charges are the usage rows' costs.
    [(charges, costs)] = cluster.query(
        "SELECT (SELECT coalesce(sum(amount_nano), 0) FROM ledger WHERE kind = 'charge'),"
        " (SELECT coalesce(sum(cost_nano), 0) FROM usage)"
    )
    assert charges == -costs


def test_a_balance_for_ten_requests_admits_ten_across_replicas(cluster: Cluster) -> None:
    """60 requests at once, spread over the three replicas, against a balance that covers
    exactly 10 of them: 10 run, 50 are refused, and the balance never goes below zero."""
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
    assert cluster.balance(user) == 10 * hold

    async def race() -> tuple[list[httpx.Response], list[int]]:
        seen: list[int] = []
        done = asyncio.Event()

        async def watch_balance() -> None:
            while not done.is_set():
                seen.append(await asyncio.to_thread(cluster.balance, user))

        headers = {"Authorization": f"Bearer {user.secret}"}
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
            watcher = asyncio.create_task(watch_balance())
            calls = [
                client.post(cluster.replicas[n % 3].base_url + "/v1/chat/completions", json=body)
                for n in range(60)
            ]
            answers = await asyncio.gather(*calls)
            done.set()
            await watcher
        return answers, seen

    answers, seen = asyncio.run(race())
    statuses = [answer.status_code for answer in answers]
    assert (statuses.count(200), statuses.count(402)) == (10, 50), statuses
    refusals = {a.json()["error"]["code"] for a in answers if a.status_code == 402}
    assert refusals == {"insufficient_balance"}
    assert min(seen) >= 0
    assert cluster.balance(user) == 0

    rows = cluster.usage_rows(user)
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
    assert len(cluster.usage_rows(user)) == 5
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
    assert len(cluster.usage_rows(user)) == 3


def test_a_replica_killed_mid_stream_leaves_a_hold_the_next_start_gives_back(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGKILL while a stream is in flight: what finished before is billed; the killed
    request's hold stays until it expires, and a replica's start-up sweep then returns it;
    the killed request is never charged."""
    # A hold's expiry is set when it is placed, by the replica that places it: the short TTL
    # goes to the replica that dies (the others' holds must outlive their requests).
    env = cluster.env | {"MODELPORT_HOLD_TTL": "4"}
    user = cluster.new_user("1")
    quick = cluster.script(Script(text=[" a", " b"], usage=(9, 2)))
    slow = cluster.script(Script(text=[f" w{i}" for i in range(400)], usage=(9, 400), delay=0.05))

    async def until_killed(replica: RunningServer) -> tuple[list[Answer], Answer]:
        async with httpx.AsyncClient(timeout=30) as client:
            finished = [await stream_chat(client, replica, user, chat_body(quick)) for _ in "abc"]
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
                kill_hard(replica)
                with suppress(httpx.TransportError):  # the connection dies with the replica
                    rest += [line async for line in lines]
            assert not any('"finish_reason":"' in line for line in rest)
            assert request_id is not None
            return finished, Answer(200, request_id.removeprefix("chatcmpl-"))

    doomed = RunningServer(tmp_path_factory.mktemp("replica-doomed"), cluster.config, env)
    with doomed:
        finished, killed = asyncio.run(until_killed(doomed))
    assert {answer.finish_reason for answer in finished} == {"stop"}

    # What finished before the kill is billed; the killed request only holds its worst case.
    rows = cluster.usage_rows(user)
    assert set(rows) == {answer.request_id for answer in finished}
    assert len(rows) == 3
    costs = 3 * cluster.cost_of(9, 2)
    assert {row["cost_nano"] for row in rows.values()} == {cluster.cost_of(9, 2)}
    [(held_id, held, expires_at)] = cluster.holds(user)
    assert held_id == killed.request_id
    assert cluster.balance(user) == NANO - costs - held

    # Once the hold has expired, the replica started again (a new process with the same
    # settings) gives it back in its start-up sweep.
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.2)
    with RunningServer(tmp_path_factory.mktemp("replica-restarted"), cluster.config, env):
        cluster.wait_for_no_holds(user, within=10)
        assert cluster.holds(user) == []
    assert cluster.balance(user) == NANO - costs
    assert killed.request_id not in cluster.usage_rows(user)
    cluster.assert_books_balance(user, NANO)
