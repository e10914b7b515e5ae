"""`SqlStore`: the `KeyStore` on SQLAlchemy Core (SQLite by default, PostgreSQL by URL).

Parameterised statements only; rows become frozen records before they leave this module.
The schema must already be migrated (`modelport.store.migrate`).
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import exc

from modelport.store.base import ApiKeyRecord, Role, StoreConflict, StoreError
from modelport.store.engine import make_engine, redacted
from modelport.store.schema import api_keys, app_meta


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


class SqlStore:
    """A `KeyStore` over one SQLAlchemy engine. Close it (or use `with`) to release the pool."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine = make_engine(url)

    def close(self) -> None:
        self._engine.dispose()

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

    # API keys

    def create_key(
        self, *, name: str, prefix: str, secret_hash: str, role: Role, created_at: datetime
    ) -> ApiKeyRecord:
        values = {
            "name": name,
            "prefix": prefix,
            "secret_hash": secret_hash,
            "role": role,
            "created_at": created_at,
        }
        try:
            with self._engine.begin() as connection:
                # RETURNING is supported by PostgreSQL and by SQLite since 3.35.
                row = connection.execute(
                    api_keys.insert().values(**values).returning(*api_keys.c)
                ).one()
        except exc.IntegrityError:
            raise StoreConflict("an API key with this secret already exists") from None
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return _record(row)

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(query).all()
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return [_record(row) for row in rows]

    def find_key_by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        query = sa.select(api_keys).where(api_keys.c.secret_hash == secret_hash)
        try:
            with self._engine.connect() as connection:
                row = connection.execute(query).one_or_none()
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return None if row is None else _record(row)

    def revoke_key(self, key_id: int, revoked_at: datetime) -> int:
        statement = (
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=revoked_at)
        )
        try:
            with self._engine.begin() as connection:
                return connection.execute(statement).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None

    # Installation metadata

    def get_meta(self, key: str) -> str | None:
        query = sa.select(app_meta.c.value).where(app_meta.c.key == key)
        try:
            with self._engine.connect() as connection:
                value = connection.execute(query).scalar_one_or_none()
        except exc.SQLAlchemyError as error:
            raise self._failed(error) from None
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str, *, replace: bool = True) -> bool:
        try:
            with self._engine.begin() as connection:
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
