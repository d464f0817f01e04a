"""initial schema: scan runs, findings, finding lifecycle

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scanner.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scan_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("status_detail", sa.String(), nullable=False),
        sa.Column("tool_version", sa.String(), nullable=False),
        sa.Column("catalog_digest", sa.String(), nullable=False),
        sa.Column("inventory_digest", sa.String(), nullable=False),
        sa.Column("config_digest", sa.String(), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("n_findings", sa.Integer(), nullable=False),
        sa.Column("n_pass", sa.Integer(), nullable=False),
        sa.Column("n_fail", sa.Integer(), nullable=False),
        sa.Column("n_error", sa.Integer(), nullable=False),
        sa.Column("n_not_applicable", sa.Integer(), nullable=False),
        sa.Column("n_waived", sa.Integer(), nullable=False),
    )
    op.create_index("ix_scan_run_started_at", "scan_run", ["started_at"])
    op.create_index("ix_scan_run_status", "scan_run", ["status"])
    op.create_table(
        "finding",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("scan_run.id"), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("control_id", sa.String(), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("region_id", sa.String(), nullable=False),
        sa.Column("system_id", sa.String(), nullable=False),
        sa.Column("endpoint_key", sa.String(), nullable=False),
        sa.Column("criticality", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("change", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_finding_run_id", "finding", ["run_id"])
    op.create_index("ix_finding_fingerprint", "finding", ["fingerprint"])
    op.create_index("ix_finding_control_id", "finding", ["control_id"])
    op.create_index("ix_finding_system_id", "finding", ["system_id"])
    op.create_index("ix_finding_run_region", "finding", ["run_id", "region_id"])
    op.create_table(
        "finding_state",
        sa.Column("fingerprint", sa.String(), primary_key=True),
        sa.Column("control_id", sa.String(), nullable=False),
        sa.Column("region_id", sa.String(), nullable=False),
        sa.Column("system_id", sa.String(), nullable=False),
        sa.Column("endpoint_key", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=True),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("last_verified_at", UTCDateTime(), nullable=False),
        sa.Column("last_run_id", sa.Integer(), sa.ForeignKey("scan_run.id"), nullable=False),
        sa.Column("times_reopened", sa.Integer(), nullable=False),
    )
    op.create_index("ix_finding_state_region_id", "finding_state", ["region_id"])
    op.create_table(
        "control_def",
        sa.Column("catalog_digest", sa.String(), primary_key=True),
        sa.Column("control_id", sa.String(), primary_key=True),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("rationale", sa.String(), nullable=False),
        sa.Column("remediation", sa.String(), nullable=False),
        sa.Column("references", sa.JSON(), nullable=False),
    )
    op.create_table(
        "system_def",
        sa.Column("inventory_digest", sa.String(), primary_key=True),
        sa.Column("system_id", sa.String(), primary_key=True),
        sa.Column("region_id", sa.String(), nullable=False),
        sa.Column("region_name", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("criticality", sa.String(), nullable=False),
        sa.Column("fragile", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("system_def")
    op.drop_table("control_def")
    op.drop_table("finding_state")
    op.drop_table("finding")
    op.drop_table("scan_run")
