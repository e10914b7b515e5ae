"""The store interface services depend on, and the plain records it exchanges.

No database code lives here (services import this module and must not load SQLAlchemy).
Records are frozen msgspec Structs: no ORM objects ever leave the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

import msgspec

Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")


class StoreError(Exception):
    """The database could not be opened, migrated or queried; the message says which."""


class StoreConflict(StoreError):
    """A write broke a uniqueness rule (for example a second key with the same secret hash)."""


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored API key. `secret_hash` is the SHA-256 hex digest; the secret is never stored."""

    id: int
    name: str
    prefix: str  # the first characters of the secret, enough to recognise it in a listing
    secret_hash: str
    role: Role
    created_at: datetime  # timezone-aware UTC
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class KeyStore(Protocol):
    """API keys and a small key/value table of facts about this installation.

    Methods are synchronous (they do blocking I/O); async callers run them with
    `asyncio.to_thread`. Callers decide timestamps; the store writes what it is given.
    """

    def create_key(
        self, *, name: str, prefix: str, secret_hash: str, role: Role, created_at: datetime
    ) -> ApiKeyRecord:
        """Insert a key; raises `StoreConflict` if `secret_hash` already exists."""
        ...

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        """Keys in id order; revoked ones only when asked for."""
        ...

    def find_key_by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not, or None."""
        ...

    def revoke_key(self, key_id: int, revoked_at: datetime) -> int:
        """Mark one active key revoked; returns how many rows changed (0 or 1)."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str, *, replace: bool = True) -> bool:
        """Write `key`; with `replace=False` only if absent. Returns whether it was written."""
        ...
