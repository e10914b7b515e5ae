"""The tables, as SQLAlchemy Core metadata: the model the Alembic migrations must reproduce.

Types are portable (SQLite and PostgreSQL). A test compares this metadata with the database the
migrations build, so a change here needs a new migration in `migrations/versions`.
Money columns are BIGINT nano-yuan (`core.money`); constraints and indexes are named so that
migrations can refer to them on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database.

    PostgreSQL keeps the zone (`timestamptz`); SQLite stores text without one, so values are
    converted to UTC on the way in and marked UTC on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    # The free balance (not leased). No CHECK (balance_nano >= 0): a postpaid (admin)
    # account's may go below zero; a prepaid one's never does, by how leases are granted.
    sa.Column("balance_nano", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # The console's password (argon2id, with its parameters and salt); None: no browser log-in.
    sa.Column("password_hash", sa.Text, nullable=True),
    # Set by an admin: the account's keys stop working and it cannot log in.
    sa.Column("disabled_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("role IN ('admin', 'user')", name="ck_accounts_role"),
    sa.Index("ix_accounts_name", "name", unique=True),
)

# The console's sessions, server-side: keyed by the SHA-256 of the cookie's token.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", name="fk_console_sessions_account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.Index("ix_console_sessions_account_id", "account_id"),
    sa.Index("ix_console_sessions_expires_at", "expires_at"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.Column("last_used_at", UtcDateTime, nullable=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", name="fk_api_keys_account_id"),
        nullable=False,
    ),
    # Limits; NULL means none.
    sa.Column("expires_at", UtcDateTime, nullable=True),
    sa.Column("allowed_models", sa.Text, nullable=True),  # a JSON list of catalog ids
    sa.Column("spend_limit_nano", sa.BigInteger, nullable=True),
    # Settled spending plus what is leased for the key (so a lease respects the limit).
    sa.Column("spent_nano", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.CheckConstraint("role IN ('admin', 'user')", name="ck_api_keys_role"),
    sa.Index("ix_api_keys_secret_hash", "secret_hash", unique=True),
    sa.Index("ix_api_keys_account_id", "account_id"),
)

# Credit one serving process (`owner`) has taken out of an account's free balance for one key,
# and not yet charged. `sqlite_autoincrement`: an id is never reused (SQLite would otherwise
# hand a deleted maximum id out again), so a stale id can never reach another lease.
credit_leases = sa.Table(
    "credit_leases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", name="fk_credit_leases_account_id"),
        nullable=False,
    ),
    sa.Column(
        "key_id",
        sa.Integer,
        sa.ForeignKey("api_keys.id", name="fk_credit_leases_key_id"),
        nullable=False,
    ),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("amount_nano", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Index("ix_credit_leases_expires_at", "expires_at"),
    sa.Index("ix_credit_leases_owner", "owner"),
    sa.Index("ix_credit_leases_account_id", "account_id"),
    sa.Index("ix_credit_leases_key_id", "key_id"),
    sqlite_autoincrement=True,
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", name="fk_ledger_account_id"),
        nullable=False,
    ),
    sa.Column("amount_nano", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),  # charges only; NULLs never collide
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("kind IN ('topup', 'charge', 'adjustment')", name="ck_ledger_kind"),
    sa.Index("ix_ledger_account_id", "account_id"),
    sa.Index("ix_ledger_request_id", "request_id", unique=True),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", name="fk_usage_account_id"),
        nullable=False,
    ),
    sa.Column(
        "key_id", sa.Integer, sa.ForeignKey("api_keys.id", name="fk_usage_key_id"), nullable=False
    ),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("backend", sa.Text, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("reasoning_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("cost_nano", sa.BigInteger, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("finish_reason", sa.Text, nullable=True),
    sa.Column("native_finish_reason", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_code", sa.Text, nullable=True),
    sa.Column("streamed", sa.Boolean, nullable=False),
    sa.Column("cancelled", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("estimated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("anomaly", sa.Text, nullable=True),  # why what was billed is not what was reported
    sa.Column("trace_id", sa.String(128), nullable=True),  # the HTTP request's X-Request-Id
    sa.CheckConstraint("status IN ('ok', 'error', 'cancelled')", name="ck_usage_status"),
    sa.Index("ix_usage_created_at", "created_at"),
    sa.Index("ix_usage_account_id_created_at", "account_id", "created_at"),
    sa.Index("ix_usage_key_id", "key_id"),
    sa.Index("ix_usage_model", "model"),
    sa.Index("ix_usage_trace_id", "trace_id"),
)

app_meta = sa.Table(
    "app_meta",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Top-up codes (services/codes.py): each worth `amount_nano` once. Only the SHA-256 of the code
# is stored (a leaked database hands out no credit); a code is spent by one conditional UPDATE
# that sets `redeemed_at` and `redeemed_by`, in the transaction that credits the account.
topup_codes = sa.Table(
    "topup_codes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("batch", sa.Text, nullable=False),  # a label the admin chose, or the creation time
    sa.Column("amount_nano", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=True),
    sa.Column("redeemed_at", UtcDateTime, nullable=True),
    sa.Column(
        "redeemed_by",
        sa.Integer,
        sa.ForeignKey("accounts.id", name="fk_topup_codes_redeemed_by"),
        nullable=True,
    ),
    sa.Column("created_by", sa.Text, nullable=False),  # "cli", or the admin key that made it
    sa.CheckConstraint("amount_nano > 0", name="ck_topup_codes_amount"),
    sa.Index("ix_topup_codes_code_hash", "code_hash", unique=True),
    sa.Index("ix_topup_codes_batch", "batch"),
    sa.Index("ix_topup_codes_redeemed_by", "redeemed_by"),
)

# Stored responses of the Responses API (`store: true`): the answer, the conversation it
# continued (chat-form messages, JSON) and its input items (JSON), until `expires_at`.
stored_responses = sa.Table(
    "stored_responses",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", name="fk_stored_responses_account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("conversation", sa.Text, nullable=False),
    sa.Column("input_items", sa.Text, nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Index("ix_stored_responses_account_id", "account_id"),
    sa.Index("ix_stored_responses_expires_at", "expires_at"),
)
