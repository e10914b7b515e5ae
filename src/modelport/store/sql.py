"""`SqlStore`: the `KeyStore` and `BillingStore` on SQLAlchemy Core (SQLite or PostgreSQL).

Parameterised statements only; rows become frozen records before they leave this module.
The schema must already be migrated (`modelport.store.migrate`).

Money moves inside one transaction, by a conditional or relative update or under row locks
(the request path: `store/batch.py`), so concurrent requests in many processes cannot overdraw
a balance or a key's spending limit. Row locks are taken in one order, accounts, then keys,
then credit leases, so PostgreSQL transactions never wait on each other in a cycle. SQLite has
one writer at a time: a write starts with `BEGIN IMMEDIATE` (it takes the write lock at once
or waits `busy_timeout` for it; a deferred transaction could fail to upgrade its lock
instead), and the threads of one process queue on a lock first, so they wait in order rather
than in SQLite's sleep-and-retry loop.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy import exc

from modelport.core.money import format_cny
from modelport.store.base import (
    AccountRecord,
    ApiKeyRecord,
    Charge,
    KeyGrant,
    KeyLimits,
    LeaseRecord,
    LeaseResult,
    LedgerEntry,
    ModelActivity,
    NewTopupCode,
    Role,
    SessionRecord,
    StoreConflict,
    StoredResponse,
    StoreError,
    TopupCodeRecord,
    UsageRecord,
    UsageTotal,
)
from modelport.store.batch import (
    DEFAULT_LINGER_S,
    FLUSH,
    USAGE_FIELDS,
    BatchWriter,
    LeaseOp,
    RenewOp,
    ReturnOp,
    write_deltas,
)
from modelport.store.engine import make_engine, redacted
from modelport.store.schema import (
    accounts,
    api_keys,
    app_meta,
    console_sessions,
    credit_leases,
    ledger,
    stored_responses,
    topup_codes,
)
from modelport.store.schema import usage as usage_rows

# The account `create_key` (the interface without accounts) puts a key of each role into.
DEFAULT_ACCOUNTS: dict[Role, str] = {"admin": "admin", "user": "default"}

# ------------------------------------------------------------------------------ rows to records


def _record(row: sa.Row[Any]) -> ApiKeyRecord:
    values = row._mapping
    return ApiKeyRecord(
        id=values["id"],
        name=values["name"],
        prefix=values["prefix"],
        secret_hash=values["secret_hash"],
        role=cast(Role, values["role"]),
        created_at=values["created_at"],
        revoked_at=values["revoked_at"],
        last_used_at=values["last_used_at"],
    )


def _leased(lease_column: sa.Column[int], id_column: sa.Column[int]) -> sa.ScalarSelect[int]:
    """The sum of the leases whose `lease_column` is the row's `id_column`; 0 for none."""
    return (
        sa.select(sa.func.coalesce(sa.func.sum(credit_leases.c.amount_nano), 0))
        .where(lease_column == id_column)
        .scalar_subquery()
    )


_ACCOUNT_LEASED = _leased(credit_leases.c.account_id, accounts.c.id)
_KEY_LEASED = _leased(credit_leases.c.key_id, api_keys.c.id)


# An account row with what is leased of it: one statement, so one consistent snapshot.
_ACCOUNT_QUERY = sa.select(accounts, _ACCOUNT_LEASED.label("leased_nano"))


def _account(values: sa.RowMapping, prefix: str = "") -> AccountRecord:
    """`balance_nano` is the whole balance: the free part in the row plus what is leased."""
    leased = int(values[f"{prefix}leased_nano"])
    return AccountRecord(
        id=values[f"{prefix}id"],
        name=values[f"{prefix}name"],
        role=cast(Role, values[f"{prefix}role"]),
        balance_nano=int(values[f"{prefix}balance_nano"]) + leased,
        leased_nano=leased,
        created_at=values[f"{prefix}created_at"],
        disabled_at=values[f"{prefix}disabled_at"],
    )


def _limits(values: sa.RowMapping) -> KeyLimits:
    allowed = values["allowed_models"]
    return KeyLimits(
        expires_at=values["expires_at"],
        allowed_models=None if allowed is None else tuple(json.loads(allowed)),
        spend_limit_nano=values["spend_limit_nano"],
        rpm=values["rpm"],
        tpm=values["tpm"],
    )


def _limit_values(limits: KeyLimits) -> dict[str, Any]:
    allowed = limits.allowed_models
    return {
        "expires_at": limits.expires_at,
        "allowed_models": None if allowed is None else json.dumps(list(allowed)),
        "spend_limit_nano": limits.spend_limit_nano,
        "rpm": limits.rpm,
        "tpm": limits.tpm,
    }


# A key row joined with its account; the account's columns carry this prefix.
_ACCOUNT_PREFIX = "owner_"
_GRANT_QUERY = sa.select(
    api_keys,
    _KEY_LEASED.label("key_leased_nano"),
    *(column.label(_ACCOUNT_PREFIX + column.name) for column in accounts.c),
    _ACCOUNT_LEASED.label(_ACCOUNT_PREFIX + "leased_nano"),
).join_from(api_keys, accounts, api_keys.c.account_id == accounts.c.id)


def _grant(row: sa.Row[Any]) -> KeyGrant:
    """`spent_nano` is settled spending: the key's row counts its leases too."""
    values = row._mapping
    return KeyGrant(
        key=_record(row),
        account=_account(values, _ACCOUNT_PREFIX),
        limits=_limits(values),
        spent_nano=int(values["spent_nano"]) - int(values["key_leased_nano"]),
    )


def _lease(row: sa.Row[Any]) -> LeaseRecord:
    values = row._mapping
    return LeaseRecord(
        id=values["id"],
        account_id=values["account_id"],
        key_id=values["key_id"],
        owner=values["owner"],
        amount_nano=int(values["amount_nano"]),
        created_at=values["created_at"],
        expires_at=values["expires_at"],
    )


def _ledger_entry(row: sa.Row[Any]) -> LedgerEntry:
    values = row._mapping
    return LedgerEntry(
        id=values["id"],
        account_id=values["account_id"],
        amount_nano=int(values["amount_nano"]),
        kind=values["kind"],
        request_id=values["request_id"],
        reason=values["reason"],
        created_at=values["created_at"],
    )


def _usage(row: sa.Row[Any]) -> UsageRecord:
    values = row._mapping
    return UsageRecord(**{field: values[field] for field in USAGE_FIELDS})


def _day_key(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


class SqlStore:
    """A `KeyStore` and `BillingStore` over one SQLAlchemy engine. Thread-safe; close it (or
    use `with`) to release the connection pool."""

    def __init__(self, url: str, *, linger: float = DEFAULT_LINGER_S) -> None:
        """`linger`: how long the writer gathers more write-behind charges before it commits
        the ones it has (see `store/batch.py`)."""
        self._url = url
        self._engine = make_engine(url)
        self._dialect = self._engine.dialect.name
        self._sqlite = self._dialect == "sqlite"
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if self._sqlite else nullcontext()
        )
        self._writer = BatchWriter(
            self._write, lock_rows=not self._sqlite, linger=linger, translate=self._error
        )

    def close(self) -> None:
        """Apply every operation submitted so far (nothing written behind is lost), then
        release the connection pool."""
        self._writer.close()
        self._engine.dispose()

    def _error(self, error: Exception) -> Exception:
        """What a failed write becomes for callers: the store's own error types."""
        if isinstance(error, exc.SQLAlchemyError):
            return self._failed(error)
        return error

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _failed(self, error: exc.SQLAlchemyError) -> StoreError:
        return StoreError(f"database error on {redacted(self._url)}: {error}")

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises.
        On SQLite it holds the database's write lock throughout (see the module docstring)."""
        with self._write_lock, self._engine.begin() as connection:
            if self._sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield connection

    def _read(self, query: sa.Executable) -> sa.Result[*tuple[Any, ...]]:
        """Run one query; its rows are buffered, so the connection goes back at once."""
        try:
            with self._engine.connect() as connection:
                buffered = connection.execute(query).freeze()
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return buffered()  # a fresh Result over the buffered rows

    # API keys

    def create_key(
        self, *, name: str, prefix: str, secret_hash: str, role: Role, created_at: datetime
    ) -> ApiKeyRecord:
        """Insert a key into the role's default account (`DEFAULT_ACCOUNTS`), created if
        missing; raises `StoreConflict` if `secret_hash` already exists."""
        account_id = self._ensure_account(DEFAULT_ACCOUNTS[role], role, created_at)
        return self.create_account_key(
            account_id=account_id,
            name=name,
            prefix=prefix,
            secret_hash=secret_hash,
            role=role,
            limits=KeyLimits(),
            created_at=created_at,
        )

    def _ensure_account(self, name: str, role: Role, created_at: datetime) -> int:
        """The id of the account `name`, created first if there is none. Another process may
        create it at the same moment: the loser's insert fails and it reads the winner's."""
        query = sa.select(accounts.c.id).where(accounts.c.name == name)
        found = self._read(query).scalar_one_or_none()
        if found is not None:
            return int(found)
        with suppress(StoreConflict):
            self.create_account(name=name, role=role, created_at=created_at)
        return int(self._read(query).scalar_one())

    def create_account_key(
        self,
        *,
        account_id: int,
        name: str,
        prefix: str,
        secret_hash: str,
        role: Role,
        limits: KeyLimits,
        created_at: datetime,
    ) -> ApiKeyRecord:
        values = {
            "account_id": account_id,
            "name": name,
            "prefix": prefix,
            "secret_hash": secret_hash,
            "role": role,
            "created_at": created_at,
            **_limit_values(limits),
        }
        try:
            with self._write() as connection:
                # RETURNING is supported by PostgreSQL and by SQLite since 3.35.
                row = connection.execute(
                    api_keys.insert().values(**values).returning(*api_keys.c)
                ).one()
        except exc.IntegrityError as error:
            if self.find_key_by_hash(secret_hash) is not None:
                raise StoreConflict("an API key with this secret already exists") from None
            if self.get_account_by_id(account_id) is None:
                raise StoreError(f"no account with id {account_id}") from None
            raise self._failed(error) from None
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return _record(row)

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        return [_record(row) for row in self._read(query)]

    def find_key_by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        query = sa.select(api_keys).where(api_keys.c.secret_hash == secret_hash)
        row = self._read(query).one_or_none()
        return None if row is None else _record(row)

    def find_grant(self, secret_hash: str) -> KeyGrant | None:
        row = self._read(_GRANT_QUERY.where(api_keys.c.secret_hash == secret_hash)).one_or_none()
        return None if row is None else _grant(row)

    def list_grants(self, *, account_id: int | None = None) -> list[KeyGrant]:
        """Every key (revoked ones too: `grant.key.revoked` says) in id order."""
        query = _GRANT_QUERY.order_by(api_keys.c.id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        return [_grant(row) for row in self._read(query)]

    def set_key_limits(self, key_id: int, limits: KeyLimits) -> int:
        statement = api_keys.update().where(api_keys.c.id == key_id).values(**_limit_values(limits))
        try:
            with self._write() as connection:
                return connection.execute(statement).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def revoke_key(self, key_id: int, revoked_at: datetime) -> int:
        statement = (
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=revoked_at)
        )
        try:
            with self._write() as connection:
                return connection.execute(statement).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    # Accounts

    def create_account(self, *, name: str, role: Role, created_at: datetime) -> AccountRecord:
        statement = (
            accounts.insert()
            .values(name=name, role=role, balance_nano=0, created_at=created_at)
            .returning(*accounts.c, sa.literal(0, sa.BigInteger).label("leased_nano"))
        )
        try:
            with self._write() as connection:
                row = connection.execute(statement).one()
        except exc.IntegrityError as error:
            if self.get_account(name) is not None:
                raise StoreConflict(f"an account named {name!r} already exists") from None
            raise self._failed(error) from None
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return _account(row._mapping)

    def get_account(self, name: str) -> AccountRecord | None:
        row = self._read(_ACCOUNT_QUERY.where(accounts.c.name == name)).one_or_none()
        return None if row is None else _account(row._mapping)

    def get_account_by_id(self, account_id: int) -> AccountRecord | None:
        row = self._read(_ACCOUNT_QUERY.where(accounts.c.id == account_id)).one_or_none()
        return None if row is None else _account(row._mapping)

    # The console: passwords and sessions

    def password_of(self, name: str) -> tuple[AccountRecord, str | None] | None:
        row = self._read(
            _ACCOUNT_QUERY.add_columns(accounts.c.password_hash).where(accounts.c.name == name)
        ).one_or_none()
        if row is None:
            return None
        return _account(row._mapping), row._mapping["password_hash"]

    def set_password(self, account_id: int, password_hash: str) -> int:
        statement = (
            accounts.update().where(accounts.c.id == account_id).values(password_hash=password_hash)
        )
        try:
            with self._write() as connection:
                return connection.execute(statement).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def create_session(self, session: SessionRecord) -> None:
        try:
            with self._write() as connection:
                connection.execute(
                    console_sessions.insert().values(**msgspec.structs.asdict(session))
                )
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def find_session(self, id_hash: str, now: datetime) -> SessionRecord | None:
        query = sa.select(console_sessions).where(
            console_sessions.c.id_hash == id_hash,
            console_sessions.c.revoked_at.is_(None),
            console_sessions.c.expires_at > now,
        )
        row = self._read(query).one_or_none()
        return None if row is None else SessionRecord(**row._mapping)

    def revoke_session(self, id_hash: str, at: datetime) -> int:
        return self._revoke_sessions(console_sessions.c.id_hash == id_hash, at)

    def revoke_sessions(self, account_id: int, at: datetime) -> int:
        return self._revoke_sessions(console_sessions.c.account_id == account_id, at)

    def _revoke_sessions(self, which: sa.ColumnElement[bool], at: datetime) -> int:
        statement = (
            console_sessions.update()
            .where(which, console_sessions.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        try:
            with self._write() as connection:
                return connection.execute(statement).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def purge_sessions(self, before: datetime) -> int:
        statement = console_sessions.delete().where(
            sa.or_(console_sessions.c.expires_at < before, console_sessions.c.revoked_at < before)
        )
        try:
            with self._write() as connection:
                return connection.execute(statement).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def list_accounts(self) -> list[AccountRecord]:
        """Accounts in id order."""
        rows = self._read(_ACCOUNT_QUERY.order_by(accounts.c.id))
        return [_account(row._mapping) for row in rows]

    def top_up(
        self, account_id: int, amount_nano: int, *, reason: str, created_at: datetime
    ) -> AccountRecord:
        """A positive amount is a "topup" ledger entry, zero or negative an "adjustment"; a
        negative one takes only the free balance (what is leased belongs to requests in
        flight)."""
        statement = (
            accounts.update()
            .where(accounts.c.id == account_id)
            .values(balance_nano=accounts.c.balance_nano + amount_nano)
        )
        if amount_nano < 0:
            statement = statement.where(accounts.c.balance_nano + amount_nano >= 0)
        entry = ledger.insert().values(
            account_id=account_id,
            amount_nano=amount_nano,
            kind="topup" if amount_nano > 0 else "adjustment",
            request_id=None,
            reason=reason,
            created_at=created_at,
        )
        read = _ACCOUNT_QUERY.where(accounts.c.id == account_id)
        try:
            with self._write() as connection:
                changed = connection.execute(statement).rowcount == 1
                if changed:
                    connection.execute(entry)
                row = connection.execute(read).one_or_none()
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        if row is None:
            raise StoreError(f"no account with id {account_id}")
        found = _account(row._mapping)
        if changed:
            return found
        free = found.balance_nano - found.leased_nano
        message = (
            f"taking {format_cny(-amount_nano)} CNY from account {found.name!r} would leave its"
            f" free balance ({format_cny(free)} CNY) below zero"
        )
        if found.leased_nano:
            message += (
                f"; {format_cny(found.leased_nano)} CNY of its balance"
                f" ({format_cny(found.balance_nano)} CNY) is leased to requests in flight"
            )
        raise StoreConflict(message)

    # Credit leases and the write-behind (applied by the writer: store/batch.py)

    def lease_credit(
        self,
        *,
        account_id: int,
        key_id: int,
        owner: str,
        lease_id: int | None,
        want_nano: int,
        need_nano: int,
        now: datetime,
        expires_at: datetime,
    ) -> Future[LeaseResult]:
        """A lease named by `lease_id` is extended only if it is still the caller's (same
        account, key and owner); otherwise a new one is made. A refusal changes nothing, not
        even the lease's expiry. `StoreError` (in the future) for an unknown account, or a key
        that is not the account's."""
        if need_nano < 0 or want_nano < need_nano:
            raise ValueError(
                f"a lease needs 0 <= need <= want (need {need_nano}, want {want_nano})"
            )
        op = LeaseOp(account_id, key_id, owner, lease_id, want_nano, need_nano, now, expires_at)
        future: Future[LeaseResult] = self._writer.submit(op)
        return future

    def record(self, charge: Charge) -> Future[bool]:
        """A lease is used only if it is the usage row's account's and key's. A postpaid
        charge its lease does not cover comes wholly out of the balance, the lease untouched."""
        usage = charge.usage
        if (
            min(
                usage.cost_nano,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.reasoning_tokens,
                usage.cached_tokens,
            )
            < 0
        ):
            raise ValueError(f"negative cost or token count in the usage of {usage.request_id}")
        if usage.created_at.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        future: Future[bool] = self._writer.submit(charge)
        return future

    def return_credit(self, lease_id: int, amount_nano: int | None) -> Future[int]:
        if amount_nano is not None and amount_nano < 0:
            raise ValueError(f"cannot return a negative amount ({amount_nano})")
        future: Future[int] = self._writer.submit(ReturnOp(lease_id, amount_nano))
        return future

    def renew_leases(self, owner: str, expires_at: datetime) -> Future[int]:
        future: Future[int] = self._writer.submit(RenewOp(owner, expires_at))
        return future

    def write_backlog(self) -> tuple[int, float]:
        """Writes waiting in the write-behind queue, and the seconds the oldest has waited."""
        return self._writer.backlog()

    def ping(self) -> None:
        """One round trip to the database (StoreError when it cannot be reached)."""
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except exc.SQLAlchemyError as error:
            raise StoreError(f"the database cannot be reached: {type(error).__name__}") from error

    def flush(self) -> Future[None]:
        future: Future[None] = self._writer.submit(FLUSH)
        return future

    def release_expired_leases(self, now: datetime) -> int:
        """Leases expire when `expires_at <= now`. In one transaction: find them, lock their
        accounts and keys (the lock order of every write), delete those still expired
        (skipping any a concurrent writer renewed, returned or swept first), give the money
        back."""
        find = sa.select(credit_leases.c.id, credit_leases.c.account_id, credit_leases.c.key_id)
        find = find.where(credit_leases.c.expires_at <= now)
        balances: defaultdict[int, int] = defaultdict(int)
        spending: defaultdict[int, int] = defaultdict(int)
        try:
            with self._write() as connection:
                expired = connection.execute(find).all()
                if not expired:
                    return 0
                if not self._sqlite:
                    for table, ids in (
                        (accounts, {lease.account_id for lease in expired}),
                        (api_keys, {lease.key_id for lease in expired}),
                    ):
                        lock = sa.select(table.c.id).where(table.c.id.in_(sorted(ids)))
                        connection.execute(lock.order_by(table.c.id).with_for_update()).all()
                release = (
                    credit_leases.delete()
                    .where(
                        credit_leases.c.id.in_([lease.id for lease in expired]),
                        credit_leases.c.expires_at <= now,
                    )
                    .returning(
                        credit_leases.c.account_id,
                        credit_leases.c.key_id,
                        credit_leases.c.amount_nano,
                    )
                )
                released = connection.execute(release).all()
                for lease in released:
                    balances[lease.account_id] += int(lease.amount_nano)
                    spending[lease.key_id] -= int(lease.amount_nano)
                write_deltas(connection, balances, spending)
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return len(released)

    def leases(
        self, *, account_id: int | None = None, owner: str | None = None
    ) -> list[LeaseRecord]:
        query = sa.select(credit_leases).order_by(credit_leases.c.id)
        if account_id is not None:
            query = query.where(credit_leases.c.account_id == account_id)
        if owner is not None:
            query = query.where(credit_leases.c.owner == owner)
        return [_lease(row) for row in self._read(query)]

    # Usage and the ledger

    def get_usage(self, request_id: str) -> UsageRecord | None:
        row = self._read(
            sa.select(usage_rows).where(usage_rows.c.request_id == request_id)
        ).one_or_none()
        return None if row is None else _usage(row)

    def usage_by_trace(self, trace_id: str, account_id: int | None = None) -> UsageRecord | None:
        """The latest usage row of the HTTP request with this X-Request-Id (a client may
        send one id with several requests), among `account_id`'s when given."""
        query = sa.select(usage_rows).where(usage_rows.c.trace_id == trace_id)
        if account_id is not None:
            query = query.where(usage_rows.c.account_id == account_id)
        query = query.order_by(usage_rows.c.created_at.desc()).limit(1)
        row = self._read(query).one_or_none()
        return None if row is None else _usage(row)

    def usage_totals(
        self,
        *,
        by: Literal["day", "model", "key"],
        account_id: int | None = None,
        key_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageTotal]:
        """Rows with `since <= created_at < until`; keys in numeric id order."""
        conditions: list[sa.ColumnElement[bool]] = []
        if account_id is not None:
            conditions.append(usage_rows.c.account_id == account_id)
        if key_id is not None:
            conditions.append(usage_rows.c.key_id == key_id)
        if since is not None:
            conditions.append(usage_rows.c.created_at >= since)
        if until is not None:
            conditions.append(usage_rows.c.created_at < until)
        group: sa.ColumnElement[Any]
        if by == "day":
            day = self._utc_day(usage_rows.c.created_at)
            if day is None:
                return self._usage_totals_by_day_in_python(conditions)
            group = day
        else:
            group = usage_rows.c.model if by == "model" else usage_rows.c.key_id
        query = (
            sa.select(
                group,
                sa.func.count(),
                sa.func.sum(usage_rows.c.prompt_tokens),
                sa.func.sum(usage_rows.c.completion_tokens),
                sa.func.sum(usage_rows.c.reasoning_tokens),
                sa.func.sum(usage_rows.c.cost_nano),
            )
            .where(*conditions)
            .group_by(group)
            .order_by(group)
        )
        return [
            UsageTotal(
                group=str(value),
                requests=int(requests),
                prompt_tokens=int(prompt),
                completion_tokens=int(completion),
                reasoning_tokens=int(reasoning),
                cost_nano=int(cost),
            )
            for value, requests, prompt, completion, reasoning, cost in self._read(query)
        ]

    def model_activity(self, since: datetime, *, sample: int = 5000) -> list[ModelActivity]:
        totals = (
            sa.select(
                usage_rows.c.model,
                sa.func.count(),
                sa.func.sum(sa.case((usage_rows.c.status == "ok", 1), else_=0)),
                sa.func.sum(usage_rows.c.prompt_tokens),
                sa.func.sum(usage_rows.c.completion_tokens),
            )
            .where(usage_rows.c.created_at >= since)
            .group_by(usage_rows.c.model)
        )
        recent = (
            sa.select(
                usage_rows.c.model,
                usage_rows.c.latency_ms,
                usage_rows.c.ttft_ms,
                usage_rows.c.completion_tokens,
            )
            .where(usage_rows.c.created_at >= since, usage_rows.c.status == "ok")
            .order_by(usage_rows.c.created_at.desc())
            .limit(max(1, sample))
        )
        samples: dict[str, tuple[list[float], list[float], list[float]]] = {}
        for model, latency, ttft, completion in self._read(recent):
            latencies, ttfts, speeds = samples.setdefault(model, ([], [], []))
            latencies.append(float(latency))
            if ttft is not None:
                ttfts.append(float(ttft))
                if completion > 1 and latency > ttft:
                    speeds.append((completion - 1) / ((latency - ttft) / 1000))
        out = []
        for model, requests, succeeded, prompt, completion in self._read(totals):
            latencies, ttfts, speeds = samples.get(model, ([], [], []))
            out.append(
                ModelActivity(
                    model=model,
                    requests=int(requests),
                    succeeded=int(succeeded or 0),
                    prompt_tokens=int(prompt or 0),
                    completion_tokens=int(completion or 0),
                    median_latency_ms=_median(latencies),
                    median_ttft_ms=_median(ttfts),
                    median_tokens_per_s=_median(speeds),
                    sampled=len(latencies),
                )
            )
        return sorted(out, key=lambda activity: activity.model)

    def _utc_day(self, column: sa.ColumnElement[datetime]) -> sa.ColumnElement[str] | None:
        """SQL for the UTC date of a timestamp as "YYYY-MM-DD", where the dialect has one.

        Constants are inlined so the same expression text can appear in GROUP BY."""
        if self._sqlite:
            # UtcDateTime stores UTC as "YYYY-MM-DD HH:MM:SS.ffffff" text on SQLite.
            return sa.func.substr(
                column, sa.literal_column("1"), sa.literal_column("10"), type_=sa.String
            )
        if self._dialect == "postgresql":
            utc = sa.func.timezone(sa.literal_column("'UTC'"), column)
            return sa.func.to_char(utc, sa.literal_column("'YYYY-MM-DD'"), type_=sa.String)
        return None

    def _usage_totals_by_day_in_python(
        self, conditions: list[sa.ColumnElement[bool]]
    ) -> list[UsageTotal]:
        """Day totals for databases without a known date expression: grouped here."""
        query = sa.select(
            usage_rows.c.created_at,
            usage_rows.c.prompt_tokens,
            usage_rows.c.completion_tokens,
            usage_rows.c.reasoning_tokens,
            usage_rows.c.cost_nano,
        ).where(*conditions)
        sums: dict[str, list[int]] = {}
        for created_at, *counts in self._read(query):
            totals = sums.setdefault(_day_key(created_at), [0, 0, 0, 0, 0])
            totals[0] += 1
            for index, count in enumerate(counts, start=1):
                totals[index] += int(count)
        return [
            UsageTotal(
                group=day,
                requests=totals[0],
                prompt_tokens=totals[1],
                completion_tokens=totals[2],
                reasoning_tokens=totals[3],
                cost_nano=totals[4],
            )
            for day, totals in sorted(sums.items())
        ]

    def ledger(self, account_id: int) -> list[LedgerEntry]:
        query = sa.select(ledger).where(ledger.c.account_id == account_id).order_by(ledger.c.id)
        return [_ledger_entry(row) for row in self._read(query)]

    def ledger_page(
        self, account_id: int, *, limit: int = 50, before_id: int | None = None
    ) -> list[LedgerEntry]:
        """The account's entries, newest first, at most `limit`, older than `before_id`."""
        query = sa.select(ledger).where(ledger.c.account_id == account_id)
        if before_id is not None:
            query = query.where(ledger.c.id < before_id)
        query = query.order_by(ledger.c.id.desc()).limit(max(1, min(limit, 500)))
        return [_ledger_entry(row) for row in self._read(query)]

    def usage_page(
        self,
        account_id: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        key_id: int | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[UsageRecord]:
        """The account's usage rows, newest first, at most `limit`, filtered by model and key;
        `before` (created_at, request_id) of the last row seen continues the listing."""
        query = sa.select(usage_rows).where(usage_rows.c.account_id == account_id)
        if since is not None:
            query = query.where(usage_rows.c.created_at >= since)
        if until is not None:
            query = query.where(usage_rows.c.created_at < until)
        if model is not None:
            query = query.where(usage_rows.c.model == model)
        if key_id is not None:
            query = query.where(usage_rows.c.key_id == key_id)
        if before is not None:
            at, request_id = before
            query = query.where(
                sa.or_(
                    usage_rows.c.created_at < at,
                    sa.and_(usage_rows.c.created_at == at, usage_rows.c.request_id < request_id),
                )
            )
        query = query.order_by(usage_rows.c.created_at.desc(), usage_rows.c.request_id.desc())
        return [_usage(row) for row in self._read(query.limit(max(1, min(limit, 500))))]

    # Stored responses (the Responses API)

    def save_response(self, record: StoredResponse) -> None:
        values = msgspec.structs.asdict(record)
        try:
            with self._write() as connection:
                connection.execute(stored_responses.insert().values(**values))
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def get_response(
        self, response_id: str, account_id: int, now: datetime
    ) -> StoredResponse | None:
        query = sa.select(stored_responses).where(
            stored_responses.c.id == response_id,
            stored_responses.c.account_id == account_id,
            stored_responses.c.expires_at > now,
        )
        row = self._read(query).one_or_none()
        return None if row is None else StoredResponse(**row._mapping)

    def delete_response(self, response_id: str, account_id: int) -> bool:
        statement = stored_responses.delete().where(
            stored_responses.c.id == response_id, stored_responses.c.account_id == account_id
        )
        try:
            with self._write() as connection:
                return connection.execute(statement).rowcount > 0
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def purge_responses(self, before: datetime) -> int:
        statement = stored_responses.delete().where(stored_responses.c.expires_at < before)
        try:
            with self._write() as connection:
                return connection.execute(statement).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def set_disabled(self, account_id: int, disabled_at: datetime | None) -> int:
        statement = (
            accounts.update().where(accounts.c.id == account_id).values(disabled_at=disabled_at)
        )
        try:
            with self._write() as connection:
                return connection.execute(statement).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    def ledger_total(self, account_id: int | None = None) -> int:
        query = sa.select(sa.func.coalesce(sa.func.sum(ledger.c.amount_nano), 0))
        if account_id is not None:
            query = query.where(ledger.c.account_id == account_id)
        return int(self._read(query).scalar_one())

    def usage_cost_total(self, account_id: int | None = None) -> int:
        query = sa.select(sa.func.coalesce(sa.func.sum(usage_rows.c.cost_nano), 0))
        if account_id is not None:
            query = query.where(usage_rows.c.account_id == account_id)
        return int(self._read(query).scalar_one())

    # Installation metadata

    def get_meta(self, key: str) -> str | None:
        query = sa.select(app_meta.c.value).where(app_meta.c.key == key)
        value = self._read(query).scalar_one_or_none()
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str, *, replace: bool = True) -> bool:
        try:
            with self._write() as connection:
                if replace:
                    # Update-then-insert is the portable upsert (no dialect ON CONFLICT).
                    updated = connection.execute(
                        app_meta.update().where(app_meta.c.key == key).values(value=value)
                    )
                    if updated.rowcount:
                        return True
                connection.execute(app_meta.insert().values(key=key, value=value))
        except exc.IntegrityError:
            if replace:
                raise StoreConflict(f"concurrent write to metadata key {key!r}") from None
            return False  # already present: with replace=False the first writer wins
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return True

    # Top-up codes

    def create_codes(self, codes: list[NewTopupCode]) -> list[TopupCodeRecord]:
        """One transaction: every code or none."""
        if not codes:
            return []
        rows = [msgspec.structs.asdict(code) for code in codes]
        hashes = [code.code_hash for code in codes]
        try:
            with self._write() as connection:
                connection.execute(topup_codes.insert(), rows)
                found = connection.execute(
                    _CODE_QUERY.where(topup_codes.c.code_hash.in_(hashes))
                ).all()
        except exc.IntegrityError:
            raise StoreConflict("a top-up code with this hash already exists") from None
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        by_hash = {row._mapping["code_hash"]: _topup_code(row) for row in found}
        return [by_hash[code_hash] for code_hash in hashes]

    def list_codes(self, *, batch: str | None = None) -> list[TopupCodeRecord]:
        query = _CODE_QUERY.order_by(topup_codes.c.id)
        if batch is not None:
            query = query.where(topup_codes.c.batch == batch)
        return [_topup_code(row) for row in self._read(query)]

    def create_invited_account(
        self, *, name: str, password_hash: str, code_hash: str, reason: str, now: datetime
    ) -> AccountRecord | None:
        """A user account made with an invitation (a top-up code), in one transaction: the
        account with its password, the code taken for it and its amount credited. None, and
        nothing written, when the code is not valid; StoreConflict when the name is taken."""
        take = (
            topup_codes.update()
            .where(
                topup_codes.c.code_hash == code_hash,
                topup_codes.c.redeemed_at.is_(None),
                sa.or_(topup_codes.c.expires_at.is_(None), topup_codes.c.expires_at > now),
            )
            .returning(topup_codes.c.id, topup_codes.c.amount_nano)
        )
        try:
            with self._write() as connection:
                account_id = connection.execute(
                    accounts.insert()
                    .values(
                        name=name,
                        role="user",
                        balance_nano=0,
                        created_at=now,
                        password_hash=password_hash,
                    )
                    .returning(accounts.c.id)
                ).scalar_one()
                taken = connection.execute(
                    take.values(redeemed_at=now, redeemed_by=account_id)
                ).one_or_none()
                if taken is None:
                    raise _CreditRefused  # rolls the account back too
                credit, entry = _credit_statements(
                    account_id, int(taken.amount_nano), reason=reason, created_at=now
                )
                connection.execute(credit)
                connection.execute(entry)
                row = connection.execute(_ACCOUNT_QUERY.where(accounts.c.id == account_id)).one()
        except _CreditRefused:
            return None
        except exc.IntegrityError as error:
            if self.get_account(name) is not None:
                raise StoreConflict(f"an account named {name!r} already exists") from None
            raise self._failed(error) from None
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return _account(row._mapping)

    def redeem_code(
        self,
        code_hash: str,
        *,
        account_id: int,
        reason: str,
        now: datetime,
        max_balance_nano: int | None = None,
    ) -> tuple[TopupCodeRecord, AccountRecord] | None:
        """The code's row is taken first by a conditional UPDATE: on SQLite inside the write
        lock (`BEGIN IMMEDIATE`), on PostgreSQL under the row lock that UPDATE takes, a second
        redemption waiting on it and then finding the row no longer matches. Then the account
        is credited with `top_up`'s statements; a refusal there rolls the code back too. Only
        redemptions lock a code's row, always before the account's: no lock cycle with the
        other writers (accounts, keys, leases)."""
        take = (
            topup_codes.update()
            .where(
                topup_codes.c.code_hash == code_hash,
                topup_codes.c.redeemed_at.is_(None),
                sa.or_(topup_codes.c.expires_at.is_(None), topup_codes.c.expires_at > now),
            )
            .values(redeemed_at=now, redeemed_by=account_id)
            .returning(topup_codes.c.id, topup_codes.c.amount_nano)
        )
        try:
            with self._write() as connection:
                taken = connection.execute(take).one_or_none()
                if taken is None:
                    return None
                credit, entry = _credit_statements(
                    account_id, int(taken.amount_nano), reason=reason, created_at=now
                )
                if max_balance_nano is not None:
                    credit = credit.where(
                        accounts.c.balance_nano + int(taken.amount_nano) <= max_balance_nano
                    )
                if connection.execute(credit).rowcount != 1:
                    raise _CreditRefused  # rolls the whole transaction back, the code included
                connection.execute(entry)
                account = connection.execute(
                    _ACCOUNT_QUERY.where(accounts.c.id == account_id)
                ).one()
                code = connection.execute(_CODE_QUERY.where(topup_codes.c.id == taken.id)).one()
        except (_CreditRefused, exc.IntegrityError) as error:
            found = self.get_account_by_id(account_id)
            if found is None:  # the credit matched no row, or the code's foreign key failed
                raise StoreError(f"no account with id {account_id}") from None
            if isinstance(error, exc.IntegrityError):
                raise self._failed(error) from None
            if max_balance_nano is None:  # not reached: the credit matches the account's row
                raise StoreError(f"account {found.name!r} was not credited") from None
            raise StoreConflict(
                f"the balance of account {found.name!r} ({format_cny(found.balance_nano)} CNY)"
                f" may not exceed {format_cny(max_balance_nano)} CNY"
            ) from None
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return _topup_code(code), _account(account._mapping)


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


# ------------------------------------------------------------------------------ top-up codes

# A code with the name of the account that redeemed it (None while unredeemed).
_REDEEMER = accounts.alias("redeemer")
_CODE_QUERY = sa.select(topup_codes, _REDEEMER.c.name.label("redeemed_by_name")).join_from(
    topup_codes, _REDEEMER, topup_codes.c.redeemed_by == _REDEEMER.c.id, isouter=True
)


class _CreditRefused(Exception):
    """Raised inside a transaction to roll it back: the account was not credited."""


def _topup_code(row: sa.Row[Any]) -> TopupCodeRecord:
    values = row._mapping
    return TopupCodeRecord(
        id=values["id"],
        code_hash=values["code_hash"],
        batch=values["batch"],
        amount_nano=int(values["amount_nano"]),
        created_at=values["created_at"],
        created_by=values["created_by"],
        expires_at=values["expires_at"],
        redeemed_at=values["redeemed_at"],
        redeemed_by=values["redeemed_by"],
        redeemed_by_name=values["redeemed_by_name"],
    )


def _credit_statements(
    account_id: int, amount_nano: int, *, reason: str, created_at: datetime
) -> tuple[sa.Update, sa.Insert]:
    """`top_up`'s two statements for a positive amount: the balance, and its "topup" entry."""
    if amount_nano <= 0:
        raise ValueError(f"a credit must be positive, not {amount_nano}")
    credit = (
        accounts.update()
        .where(accounts.c.id == account_id)
        .values(balance_nano=accounts.c.balance_nano + amount_nano)
    )
    entry = ledger.insert().values(
        account_id=account_id,
        amount_nano=amount_nano,
        kind="topup",
        request_id=None,
        reason=reason,
        created_at=created_at,
    )
    return credit, entry
