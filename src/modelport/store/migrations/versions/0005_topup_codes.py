"""Top-up codes: an admin makes a batch of codes, each worth an amount of CNY once; a user
redeems one into their balance (a "topup" ledger entry).

Only the SHA-256 of a code is stored (a leaked database hands out no credit); `redeemed_at`
and `redeemed_by` are set by the one conditional UPDATE that spends it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "topup_codes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("batch", sa.Text, nullable=False),
        sa.Column("amount_nano", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "redeemed_by",
            sa.Integer,
            sa.ForeignKey("accounts.id", name="fk_topup_codes_redeemed_by"),
            nullable=True,
        ),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.CheckConstraint("amount_nano > 0", name="ck_topup_codes_amount"),
    )
    op.create_index("ix_topup_codes_code_hash", "topup_codes", ["code_hash"], unique=True)
    op.create_index("ix_topup_codes_batch", "topup_codes", ["batch"])
    op.create_index("ix_topup_codes_redeemed_by", "topup_codes", ["redeemed_by"])


def downgrade() -> None:
    op.drop_table("topup_codes")  # dropping a table drops its indexes
