"""The accounts service: names are normalised the same way when stored and when looked up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.core.errors import InvalidRequest, NotFound
from modelport.services import accounts
from modelport.store import migrate
from modelport.store.sql import SqlStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    url = f"sqlite:///{tmp_path / 'modelport.db'}"
    migrate(url)
    with SqlStore(url) as sql:
        yield sql


def test_user_names_are_trimmed_when_created_and_when_looked_up(store: SqlStore) -> None:
    created = accounts.create_user(store, "  bob ")
    assert created.name == "bob"
    assert accounts.get_user(store, "bob").id == created.id
    assert accounts.get_user(store, " bob\t").id == created.id
    topped = accounts.top_up(store, "bob  ", "5", reason="welcome")
    assert topped.balance_nano == 5 * 10**9
    with pytest.raises(InvalidRequest, match="already exists"):
        accounts.create_user(store, "bob\n")


def test_a_key_for_a_user_named_with_white_space_finds_the_user(store: SqlStore) -> None:
    bob = accounts.create_user(store, "bob")
    record, _secret = accounts.create_account_key(store, "laptop", user=" bob ")
    grant = next(g for g in store.list_grants() if g.key.id == record.id)
    assert grant.account.id == bob.id


def test_a_blank_user_means_the_default_account(store: SqlStore) -> None:
    record, _secret = accounts.create_account_key(store, "ci", user="  ")
    grant = next(g for g in store.list_grants() if g.key.id == record.id)
    assert grant.account.name == "default"


def test_an_unknown_user_is_still_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound, match="'carol'"):
        accounts.get_user(store, " carol ")
    with pytest.raises(NotFound, match="'carol'"):
        accounts.create_account_key(store, "k", user="carol ")
