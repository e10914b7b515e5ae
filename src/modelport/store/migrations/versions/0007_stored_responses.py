"""Stored responses of the Responses API (`store: true`, OpenAI's default): each answer, the
conversation it continued (in the chat form the pipeline takes) and its input items, per
account, until `expires_at` (the retention setting), so that `previous_response_id`,
`GET /v1/responses/{id}` and its input items work.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "stored_responses",
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_stored_responses_account_id", "stored_responses", ["account_id"])
    op.create_index("ix_stored_responses_expires_at", "stored_responses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_stored_responses_expires_at", table_name="stored_responses")
    op.drop_index("ix_stored_responses_account_id", table_name="stored_responses")
    op.drop_table("stored_responses")
