"""agent: claimed job slots (the cross-agent lock per scheduled run) and named locks for SQLite

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scanner.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_slot",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("slot_start", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("scan_run.id"), nullable=True),
        sa.Column("takeovers", sa.Integer(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.UniqueConstraint("job_id", "scope", "slot_start", name="uq_job_slot"),
    )
    op.create_index("ix_job_slot_job_id", "job_slot", ["job_id"])
    op.create_index("ix_job_slot_state", "job_slot", ["state"])
    op.create_table(
        "agent_lock",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_lock")
    op.drop_index("ix_job_slot_state", table_name="job_slot")
    op.drop_index("ix_job_slot_job_id", table_name="job_slot")
    op.drop_table("job_slot")
