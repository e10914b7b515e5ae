"""Accounts in the browser: sign-up, log-in, sessions and their CSRF tokens, over a real SQLite
store (the console's pages build on this)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from modelport.core.errors import (
    AuthenticationFailed,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
)
from modelport.services.console import ConsoleAccounts, check_username
from modelport.store import migrate
from modelport.store.sql import SqlStore

# Cheap parameters for the tests; the real ones are argon2-cffi's defaults.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    url = f"sqlite:///{tmp_path / 'modelport.db'}"
    migrate(url)
    with SqlStore(url, linger=0.001) as opened:
        yield opened


def console(store: SqlStore, **options: object) -> ConsoleAccounts:
    return ConsoleAccounts(store, hasher=FAST, **options)  # type: ignore[arg-type]


def test_sign_up_makes_a_user_with_an_argon2id_password_a_session_and_the_credit(
    store: SqlStore,
) -> None:
    accounts = ConsoleAccounts(store, signup_credit="5")  # the real hasher
    session = asyncio.run(accounts.signup("  Alice ", PASSWORD))
    assert session.account.name == "alice" and session.account.role == "user"
    assert session.account.balance_nano == 5 * 10**9
    assert session.token and session.csrf and session.token != session.csrf
    found = store.password_of("alice")
    assert found is not None and found[1] is not None
    assert found[1].startswith("$argon2id$") and PASSWORD not in found[1]
    # The session is stored by the token's digest, not the token.
    again = asyncio.run(accounts.session(session.token))
    assert again is not None and again.account.id == session.account.id
    assert again.csrf == session.csrf and again.token == ""
    assert [entry.reason for entry in store.ledger(session.account.id)] == ["sign-up credit"]


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [
        ("ab", PASSWORD, "username"),
        ("a" * 33, PASSWORD, "username"),
        ("al ice", PASSWORD, "username"),
        ("-alice", PASSWORD, "username"),
        ("alice", "short", "password"),
        ("alice", "x" * 1025, "password"),
        ("alicealice", "AliceAlice", "password"),
    ],
)
def test_sign_up_refuses_bad_names_and_passwords_naming_the_field(
    store: SqlStore, username: str, password: str, field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(console(store).signup(username, password))
    assert refused.value.param == field
    assert store.get_account(check_username("alice")) is None


def test_a_taken_name_and_a_closed_policy_are_refused(store: SqlStore) -> None:
    asyncio.run(console(store).signup("alice", PASSWORD))
    with pytest.raises(InvalidRequest, match="taken"):
        asyncio.run(console(store).signup("ALICE", PASSWORD))
    with pytest.raises(PermissionDenied, match="closed"):
        asyncio.run(console(store, policy="closed").signup("bob", PASSWORD))
    assert store.get_account("bob") is None


def test_log_in_rotates_the_session_and_log_out_ends_it(store: SqlStore) -> None:
    accounts = console(store)
    first = asyncio.run(accounts.signup("alice", PASSWORD))
    second = asyncio.run(accounts.login("Alice", PASSWORD, replacing=first.token))
    assert second.token != first.token and second.csrf != first.csrf
    assert asyncio.run(accounts.session(first.token)) is None  # the old one was revoked
    assert asyncio.run(accounts.session(second.token)) is not None
    asyncio.run(accounts.logout(second.token))
    assert asyncio.run(accounts.session(second.token)) is None
    assert asyncio.run(accounts.session("made-up")) is None
    assert asyncio.run(accounts.session("x" * 10_000)) is None


def test_wrong_passwords_and_unknown_names_get_the_same_answer_then_are_throttled(
    store: SqlStore,
) -> None:
    accounts = console(store, account_failures=3, address_failures=5)
    asyncio.run(accounts.signup("alice", PASSWORD))
    for _ in range(3):
        with pytest.raises(AuthenticationFailed) as wrong:
            asyncio.run(accounts.login("alice", "not the password", address="198.51.100.7"))
        assert wrong.value.message == "Wrong username or password."
    # The account is throttled, even with the right password and from another address.
    with pytest.raises(RateLimited) as throttled:
        asyncio.run(accounts.login("alice", PASSWORD, address="203.0.113.9"))
    assert throttled.value.retry_after is not None and throttled.value.retry_after > 0
    # Unknown names fail the same way and count against the address.
    for name in ("bob", "carol"):
        with pytest.raises(AuthenticationFailed) as unknown:
            asyncio.run(accounts.login(name, PASSWORD, address="198.51.100.7"))
        assert unknown.value.message == "Wrong username or password."
    with pytest.raises(RateLimited):
        asyncio.run(accounts.login("dave", PASSWORD, address="198.51.100.7"))


def test_an_account_made_by_the_cli_has_no_password_and_cannot_log_in(store: SqlStore) -> None:
    store.create_account(name="ops", role="admin", created_at=datetime.now(UTC))
    with pytest.raises(AuthenticationFailed):
        asyncio.run(console(store).login("ops", ""))
    with pytest.raises(AuthenticationFailed):
        asyncio.run(console(store).login("ops", PASSWORD))


def test_a_password_change_ends_every_session_of_the_account(store: SqlStore) -> None:
    accounts = console(store)
    first = asyncio.run(accounts.signup("alice", PASSWORD))
    other = asyncio.run(accounts.login("alice", PASSWORD))
    with pytest.raises(AuthenticationFailed):
        asyncio.run(accounts.change_password(first.account, "wrong old one", "a new password!"))
    fresh = asyncio.run(accounts.change_password(first.account, PASSWORD, "a new password!"))
    assert asyncio.run(accounts.session(first.token)) is None
    assert asyncio.run(accounts.session(other.token)) is None
    assert asyncio.run(accounts.session(fresh.token)) is not None
    asyncio.run(accounts.login("alice", "a new password!"))
    with pytest.raises(AuthenticationFailed):
        asyncio.run(accounts.login("alice", PASSWORD))


def test_expired_sessions_are_not_live_and_are_purged(store: SqlStore) -> None:
    accounts = console(store)
    session = asyncio.run(accounts.signup("alice", PASSWORD))
    later = session.expires_at + timedelta(seconds=1)
    from modelport.services.console import _digest

    assert store.find_session(_digest(session.token), later) is None
    assert store.purge_sessions(later) == 1
    assert asyncio.run(accounts.session(session.token)) is None


def test_csrf_tokens_are_compared_in_constant_time_and_never_empty(store: SqlStore) -> None:
    session = asyncio.run(console(store).signup("alice", PASSWORD))
    assert ConsoleAccounts.csrf_ok(session, session.csrf)
    assert not ConsoleAccounts.csrf_ok(session, None)
    assert not ConsoleAccounts.csrf_ok(session, "")
    assert not ConsoleAccounts.csrf_ok(session, session.csrf[:-1] + "x")


def test_a_hash_with_older_parameters_is_redone_at_the_next_good_log_in(store: SqlStore) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1)
    asyncio.run(ConsoleAccounts(store, hasher=old).signup("alice", PASSWORD))
    asyncio.run(console(store).login("alice", PASSWORD))
    found = store.password_of("alice")
    assert found is not None and found[1] is not None and "m=1024" in found[1]


def test_an_invitation_is_a_top_up_code_redeemed_with_the_account_or_nothing_is_made(
    store: SqlStore,
) -> None:
    from modelport.services.codes import create_codes

    [(_, code)] = create_codes(store, 1, "2", created_by="test")
    accounts = console(store, policy="invite", signup_credit="1")
    for wrong in ("", "MPC-AAAA-AAAA-AAAA-AAAA", "not a code"):
        with pytest.raises(InvalidRequest) as refused:
            asyncio.run(accounts.signup("nina", PASSWORD, code=wrong))
        assert refused.value.param == "code"
    assert store.get_account("nina") is None  # nothing was made
    session = asyncio.run(accounts.signup("nina", PASSWORD, code=code.lower()))
    assert session.account.balance_nano == 3 * 10**9  # the code's 2, and the sign-up credit
    reasons = [entry.reason for entry in store.ledger(session.account.id)]
    assert reasons == [f"invitation {code[:8]}", "sign-up credit"]
    with pytest.raises(InvalidRequest) as reused:
        asyncio.run(accounts.signup("omar", PASSWORD, code=code))
    assert reused.value.param == "code"
    assert store.get_account("omar") is None
    asyncio.run(accounts.login("nina", PASSWORD))  # the password came with the account
