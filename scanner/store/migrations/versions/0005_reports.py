"""reports: lifecycle rows (finding written on change), per-run per-system aggregates, notices sent

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("finding_state") as batch:
        batch.add_column(sa.Column("finding_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("verdict_digest", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("severity", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("family", sa.String(), nullable=False, server_default=""))
    # Existing states point at the finding row of the run that last judged them.
    op.execute(
        "UPDATE finding_state SET finding_id = (SELECT f.id FROM finding f WHERE f.fingerprint = finding_state.fingerprint"
        " AND f.run_id = finding_state.last_run_id),"
        " severity = COALESCE((SELECT f.severity FROM finding f WHERE f.fingerprint = finding_state.fingerprint"
        " AND f.run_id = finding_state.last_run_id), ''),"
        " family = COALESCE((SELECT f.family FROM finding f WHERE f.fingerprint = finding_state.fingerprint"
        " AND f.run_id = finding_state.last_run_id), '')"
    )
    op.create_table(
        "run_system_agg",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("scan_run.id"), primary_key=True),
        sa.Column("system_id", sa.String(), primary_key=True),
        sa.Column("region_id", sa.String(), nullable=False),
        sa.Column("n_pass", sa.Integer(), nullable=False),
        sa.Column("n_fail", sa.Integer(), nullable=False),
        sa.Column("n_error", sa.Integer(), nullable=False),
        sa.Column("n_waived", sa.Integer(), nullable=False),
        sa.Column("n_not_applicable", sa.Integer(), nullable=False),
        sa.Column("w_pass", sa.Integer(), nullable=False),
        sa.Column("w_total", sa.Integer(), nullable=False),
    )
    op.create_index("ix_run_system_agg_region_run", "run_system_agg", ["region_id", "run_id"])
    op.create_table(
        "notice_sent",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("channels", sa.String(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notice_sent")
    op.drop_index("ix_run_system_agg_region_run", table_name="run_system_agg")
    op.drop_table("run_system_agg")
    with op.batch_alter_table("finding_state") as batch:
        batch.drop_column("family")
        batch.drop_column("severity")
        batch.drop_column("verdict_digest")
        batch.drop_column("finding_id")
