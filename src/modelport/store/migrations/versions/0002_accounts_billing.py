"""Accounts, prepaid balances, key limits, holds, the ledger and usage rows.

Every existing key moves into an account: admin keys into "admin" (role admin), user keys into
"default" (role user); each account is created only when it gets keys, with its first key's
creation time and a zero balance.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Which account pre-existing keys of each role move into.
_BACKFILL_ACCOUNTS = (("admin", "admin"), ("user", "default"))


def _timestamp(name: str, *, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _backfill_key_accounts() -> None:
    keys = sa.table("api_keys", sa.column("role"), sa.column("created_at"), sa.column("account_id"))
    accounts = sa.table(
        "accounts", sa.column("id"), sa.column("name"), sa.column("role"), sa.column("created_at")
    )
    for role, account in _BACKFILL_ACCOUNTS:
        # One row (or none, by HAVING, when no key has this role): plain SQL on both databases.
        first_key = (
            sa.select(
                sa.literal(account, sa.Text, literal_execute=True),
                sa.literal(role, sa.Text, literal_execute=True),
                sa.func.min(keys.c.created_at),
            )
            .where(keys.c.role == role)
            .having(sa.func.count() > 0)
        )
        op.execute(accounts.insert().from_select(["name", "role", "created_at"], first_key))
        owner = sa.select(accounts.c.id).where(accounts.c.name == account).scalar_subquery()
        op.execute(keys.update().where(keys.c.role == role).values(account_id=owner))


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("balance_nano", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        _timestamp("created_at", nullable=False),
        sa.CheckConstraint("role IN ('admin', 'user')", name="ck_accounts_role"),
    )
    op.create_index("ix_accounts_name", "accounts", ["name"], unique=True)

    # Added nullable, filled, then made NOT NULL: SQLite rebuilds the table for the last step.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("account_id", sa.Integer, nullable=True))
        batch.add_column(_timestamp("expires_at", nullable=True))
        batch.add_column(sa.Column("allowed_models", sa.Text, nullable=True))
        batch.add_column(sa.Column("spend_limit_nano", sa.BigInteger, nullable=True))
        batch.add_column(
            sa.Column("spent_nano", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("rpm", sa.Integer, nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer, nullable=True))
    _backfill_key_accounts()
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("account_id", existing_type=sa.Integer, nullable=False)
        batch.create_foreign_key("fk_api_keys_account_id", "accounts", ["account_id"], ["id"])
        batch.create_index("ix_api_keys_account_id", ["account_id"])

    op.create_table(
        "holds",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column(
            "account_id",
            sa.Integer,
            sa.ForeignKey("accounts.id", name="fk_holds_account_id"),
            nullable=False,
        ),
        sa.Column(
            "key_id",
            sa.Integer,
            sa.ForeignKey("api_keys.id", name="fk_holds_key_id"),
            nullable=False,
        ),
        sa.Column("amount_nano", sa.BigInteger, nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("expires_at", nullable=False),
    )
    op.create_index("ix_holds_expires_at", "holds", ["expires_at"])

    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "account_id",
            sa.Integer,
            sa.ForeignKey("accounts.id", name="fk_ledger_account_id"),
            nullable=False,
        ),
        sa.Column("amount_nano", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        _timestamp("created_at", nullable=False),
        sa.CheckConstraint("kind IN ('topup', 'charge', 'adjustment')", name="ck_ledger_kind"),
    )
    op.create_index("ix_ledger_account_id", "ledger", ["account_id"])
    op.create_index("ix_ledger_request_id", "ledger", ["request_id"], unique=True)

    op.create_table(
        "usage",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column(
            "account_id",
            sa.Integer,
            sa.ForeignKey("accounts.id", name="fk_usage_account_id"),
            nullable=False,
        ),
        sa.Column(
            "key_id",
            sa.Integer,
            sa.ForeignKey("api_keys.id", name="fk_usage_key_id"),
            nullable=False,
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
        _timestamp("created_at", nullable=False),
        sa.CheckConstraint("status IN ('ok', 'error', 'cancelled')", name="ck_usage_status"),
    )
    op.create_index("ix_usage_created_at", "usage", ["created_at"])
    op.create_index("ix_usage_account_id_created_at", "usage", ["account_id", "created_at"])
    op.create_index("ix_usage_key_id", "usage", ["key_id"])
    op.create_index("ix_usage_model", "usage", ["model"])


def downgrade() -> None:
    op.drop_table("usage")  # dropping a table drops its indexes
    op.drop_table("ledger")
    op.drop_table("holds")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_account_id")
        batch.drop_constraint("fk_api_keys_account_id", type_="foreignkey")
        for column in (
            "tpm",
            "rpm",
            "spent_nano",
            "spend_limit_nano",
            "allowed_models",
            "expires_at",
            "account_id",
        ):
            batch.drop_column(column)
    op.drop_table("accounts")
