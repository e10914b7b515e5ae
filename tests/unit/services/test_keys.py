"""The keys service: issuing, revoking, the first-start admin key, and cached authentication."""

from __future__ import annotations

import asyncio
import re
import secrets as random_source
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelport.core.errors import AuthenticationFailed, InvalidRequest, NotFound
from modelport.services.accounts import create_account_key
from modelport.services.keys import (
    LAST_ADMIN_KEY,
    KeyService,
    Principal,
    create_key,
    ensure_admin_key,
    generate_secret,
    hash_secret,
    revoke_key,
    well_formed,
)
from modelport.store import migrate
from modelport.store.base import ApiKeyRecord, KeyGrant, KeyLimits, Role
from modelport.store.sql import SqlStore


class CountingStore:
    """A KeyStore that forwards to another and counts hash lookups (the hot-path query)."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.lookups = 0

    def create_key(
        self, *, name: str, prefix: str, secret_hash: str, role: Role, created_at: datetime
    ) -> ApiKeyRecord:
        return self.inner.create_key(
            name=name, prefix=prefix, secret_hash=secret_hash, role=role, created_at=created_at
        )

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        return self.inner.list_keys(include_revoked=include_revoked)

    def find_key_by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        self.lookups += 1
        return self.inner.find_key_by_hash(secret_hash)

    def revoke_key(self, key_id: int, revoked_at: datetime) -> int:
        return self.inner.revoke_key(key_id, revoked_at)

    def get_meta(self, key: str) -> str | None:
        return self.inner.get_meta(key)

    def set_meta(self, key: str, value: str, *, replace: bool = True) -> bool:
        return self.inner.set_meta(key, value, replace=replace)

    def find_grant(self, secret_hash: str) -> KeyGrant | None:
        self.lookups += 1  # what authentication reads: the key with its account and limits
        return self.inner.find_grant(secret_hash)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    url = f"sqlite:///{tmp_path / 'modelport.db'}"
    migrate(url)
    with SqlStore(url) as sql:
        yield CountingStore(sql)


BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def crc32_base62(text: str) -> str:
    """The checksum as a secret scanner would compute it (written out here, independently)."""
    value, digits = zlib.crc32(text.encode()), ""
    while value:
        value, digit = divmod(value, 62)
        digits = BASE62[digit] + digits
    return digits.rjust(6, "0")


def test_secrets_are_long_random_prefixed_and_checksummed() -> None:
    secrets = {generate_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert re.fullmatch(r"sk-mp-[0-9A-Za-z]{43}[0-9A-Za-z]{6}", secret)
        assert secret[-6:] == crc32_base62(secret[:-6])
        assert well_formed(secret)
    # All 62 characters turn up in the random part (no alphabet is left out by mistake).
    assert set("".join(secret[6:-6] for secret in secrets)) == set(BASE62)


def test_a_wrong_checksum_is_not_well_formed() -> None:
    secret = generate_secret()
    for position in (6, 30, len(secret) - 1):  # the random part and the checksum
        replacement = "a" if secret[position] != "a" else "b"
        assert not well_formed(secret[:position] + replacement + secret[position + 1 :])
    assert not well_formed(secret[:-1] + "é")  # not ASCII: refused, not a TypeError
    assert not well_formed(secret + "0")
    assert not well_formed(secret.replace("sk-mp-", "sk-xx-"))


class CountingCache(dict[str, Any]):
    """The service's cache, counting reads."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


def test_created_keys_store_a_hash_and_a_display_prefix_only(store: CountingStore) -> None:
    record, secret = create_key(store, "  ci bot  ")
    assert record.name == "ci bot"
    assert record.role == "user"
    assert record.prefix == secret[:12]
    assert record.secret_hash == hash_secret(secret)
    assert secret not in repr(record)


@pytest.mark.parametrize("name", ["", "   ", "42", "sk-mp-abc", "a\nb", "x" * 101])
def test_unusable_names_are_refused(store: CountingStore, name: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        create_key(store, name)
    assert raised.value.param == "name"
    assert store.list_keys(include_revoked=True) == []


@pytest.mark.asyncio
async def test_authenticate_returns_the_principal(store: CountingStore) -> None:
    record, secret = create_key(store, "alice", role="admin")
    service = KeyService(store, ttl=60)
    principal = await service.authenticate(secret)
    assert principal == Principal(
        key_id=record.id,
        name="alice",
        role="admin",
        account_id=principal.account_id,
        account_name="admin",  # admin keys made without a user belong to the admin account
    )
    assert principal.account_id > 0


@pytest.mark.asyncio
@pytest.mark.parametrize("secret", [None, ""])
async def test_missing_key_says_how_to_send_one(store: CountingStore, secret: str | None) -> None:
    with pytest.raises(AuthenticationFailed, match="Missing API key") as raised:
        await KeyService(store, ttl=60).authenticate(secret)
    assert "Authorization: Bearer" in raised.value.message
    assert raised.value.status == 401


@pytest.mark.asyncio
async def test_unknown_key_fails_without_echoing_it(store: CountingStore) -> None:
    create_key(store, "alice")
    guess = generate_secret()
    with pytest.raises(AuthenticationFailed, match="Invalid API key") as raised:
        await KeyService(store, ttl=60).authenticate(guess)
    assert guess not in str(raised.value)
    assert guess[6:] not in str(raised.value)


@pytest.mark.asyncio
async def test_garbage_is_rejected_without_a_lookup(store: CountingStore) -> None:
    service = KeyService(store, ttl=60)
    for garbage in ("Bearer x", "sk-other", "sk-mp-" + "a" * 300, "sk-mp-" + "a" * 48):
        with pytest.raises(AuthenticationFailed, match="Invalid API key"):
            await service.authenticate(garbage)
    assert store.lookups == 0


@pytest.mark.asyncio
async def test_a_mistyped_key_fails_before_the_cache_and_the_store(store: CountingStore) -> None:
    _record, secret = create_key(store, "alice")
    service = KeyService(store, ttl=60)
    cache = CountingCache()
    service._cache = cache
    position = 20
    typo = secret[:position] + ("x" if secret[position] != "x" else "y") + secret[position + 1 :]
    with pytest.raises(AuthenticationFailed, match="Invalid API key") as raised:
        await service.authenticate(typo)
    assert raised.value.status == 401
    assert (store.lookups, cache.reads) == (0, 0)
    await service.authenticate(secret)  # the real one still works, through both
    assert (store.lookups, cache.reads) == (1, 1)


@pytest.mark.asyncio
async def test_keys_issued_before_the_checksum_keep_working(store: CountingStore) -> None:
    old = "sk-mp-" + random_source.token_urlsafe(32)  # how keys were made before
    assert len(old) == 49
    record = store.create_key(
        name="old",
        prefix=old[:12],
        secret_hash=hash_secret(old),
        role="user",
        created_at=datetime.now(UTC),
    )
    service = KeyService(store, ttl=60)
    assert (await service.authenticate(old)).key_id == record.id
    # An old-shaped guess is looked up (only the store can tell), and fails.
    with pytest.raises(AuthenticationFailed, match="Invalid API key"):
        await service.authenticate("sk-mp-" + random_source.token_urlsafe(32))
    assert store.lookups == 2
    assert revoke_key(store, old).id == record.id  # and can be revoked by its secret


@pytest.mark.asyncio
async def test_cached_result_spares_the_store(store: CountingStore) -> None:
    _record, secret = create_key(store, "alice")
    service = KeyService(store, ttl=60)
    first = await service.authenticate(secret)
    second = await service.authenticate(secret)
    assert first == second
    assert store.lookups == 1


@pytest.mark.asyncio
async def test_unknown_keys_are_cached_too(store: CountingStore) -> None:
    service = KeyService(store, ttl=60)
    guess = generate_secret()
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            await service.authenticate(guess)
    assert store.lookups == 1


@pytest.mark.asyncio
async def test_concurrent_misses_share_one_lookup(store: CountingStore) -> None:
    _record, secret = create_key(store, "alice")
    service = KeyService(store, ttl=60)
    results = await asyncio.gather(*(service.authenticate(secret) for _ in range(20)))
    assert len(set(results)) == 1
    assert store.lookups == 1


@pytest.mark.asyncio
async def test_revoked_key_fails_at_once_with_no_cache(store: CountingStore) -> None:
    record, secret = create_key(store, "alice")
    service = KeyService(store, ttl=0)
    await service.authenticate(secret)
    revoke_key(store, str(record.id))
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await service.authenticate(secret)


@pytest.mark.asyncio
async def test_revocation_takes_effect_when_the_ttl_expires(store: CountingStore) -> None:
    _record, secret = create_key(store, "alice")
    clock = FakeClock()
    service = KeyService(store, ttl=5, clock=clock)
    await service.authenticate(secret)
    revoke_key(store, "alice")
    clock.now += 4.9
    await service.authenticate(secret)  # still trusted: the documented staleness window
    clock.now += 0.2
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await service.authenticate(secret)


@pytest.mark.asyncio
async def test_forget_all_makes_a_local_revocation_immediate(store: CountingStore) -> None:
    _record, secret = create_key(store, "alice")
    service = KeyService(store, ttl=60)
    await service.authenticate(secret)
    revoke_key(store, "alice")
    service.forget_all()
    with pytest.raises(AuthenticationFailed):
        await service.authenticate(secret)


@pytest.mark.asyncio
async def test_the_cache_is_bounded(store: CountingStore) -> None:
    _record, secret = create_key(store, "alice")
    service = KeyService(store, ttl=60, max_entries=8)
    await service.authenticate(secret)
    for _ in range(50):
        with pytest.raises(AuthenticationFailed):
            await service.authenticate(generate_secret())
    assert len(service._cache) <= 8
    principal = await service.authenticate(secret)
    assert (principal.key_id, principal.name, principal.role) == (1, "alice", "user")
    assert principal.account_name == "default"  # keys made without a user spend from it


def test_revoke_by_id_prefix_secret_and_name(store: CountingStore) -> None:
    by_id, _ = create_key(store, "one")
    by_prefix, _ = create_key(store, "two")
    by_secret, secret = create_key(store, "three")
    by_name, _ = create_key(store, "four")
    assert revoke_key(store, str(by_id.id)).id == by_id.id
    assert revoke_key(store, by_prefix.prefix + "...").id == by_prefix.id
    assert revoke_key(store, secret).id == by_secret.id
    assert revoke_key(store, "four").id == by_name.id
    assert store.list_keys() == []


def test_revoke_refuses_ambiguous_and_unknown_selectors(store: CountingStore) -> None:
    first, _ = create_key(store, "shared")
    second, _ = create_key(store, "shared")
    with pytest.raises(InvalidRequest, match=f"ids {first.id}, {second.id}.*by its id"):
        revoke_key(store, "shared")
    assert len(store.list_keys()) == 2
    with pytest.raises(NotFound):
        revoke_key(store, "nobody")
    unknown_secret = generate_secret()
    with pytest.raises(NotFound) as raised:
        revoke_key(store, unknown_secret)
    assert unknown_secret not in str(raised.value)
    revoke_key(store, str(first.id))
    assert revoke_key(store, "shared").id == second.id  # only one active key left
    with pytest.raises(InvalidRequest, match="already revoked"):
        revoke_key(store, str(first.id))


def test_admin_key_is_issued_once(store: CountingStore) -> None:
    secret = ensure_admin_key(store)
    assert secret is not None
    record = store.find_key_by_hash(hash_secret(secret))
    assert record is not None
    assert (record.name, record.role) == ("admin", "admin")
    assert ensure_admin_key(store) is None
    create_key(store, "second admin", role="admin")
    revoke_key(store, "admin")
    assert ensure_admin_key(store) is None  # even with the first admin key revoked
    assert len(store.list_keys(include_revoked=True)) == 2


def test_no_admin_key_when_keys_already_exist(store: CountingStore) -> None:
    create_key(store, "made-before-first-start")
    assert ensure_admin_key(store) is None
    assert [key.name for key in store.list_keys()] == ["made-before-first-start"]


def test_the_last_admin_key_cannot_be_revoked(store: CountingStore) -> None:
    first, _ = create_key(store, "admin", role="admin")
    user, _ = create_key(store, "user")
    with pytest.raises(InvalidRequest, match="last active admin key") as raised:
        revoke_key(store, "admin")
    assert raised.value.code == LAST_ADMIN_KEY
    assert raised.value.status == 400
    assert [key.id for key in store.list_keys()] == [first.id, user.id]  # nothing revoked
    assert revoke_key(store, "user").id == user.id  # user keys: no such rule

    second, _ = create_key(store, "deputy", role="admin")
    assert revoke_key(store, "admin").id == first.id  # another admin key remains
    with pytest.raises(InvalidRequest, match=f"API key id {second.id} is the last"):
        revoke_key(store, str(second.id))


def test_an_expired_admin_key_does_not_count_as_another(store: CountingStore) -> None:
    create_key(store, "admin", role="admin")
    expired, _ = create_account_key(store, "expired", admin=True)
    store.set_key_limits(expired.id, KeyLimits(expires_at=datetime.now(UTC) - timedelta(days=1)))
    with pytest.raises(InvalidRequest, match="last active admin key"):
        revoke_key(store, "admin")
    assert revoke_key(store, "expired").id == expired.id  # not live: revoking it is harmless


def test_revoke_finds_a_name_given_with_white_space(store: CountingStore) -> None:
    record, _ = create_key(store, "  ci bot ")
    assert record.name == "ci bot"
    assert revoke_key(store, "\tci bot  ").id == record.id
