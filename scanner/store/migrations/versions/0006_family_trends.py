"""trends by family: run_system_agg (per run and system) becomes run_family_agg (per run, region and family)

A run scheduled for some families changes only those families' state; a trend point sums each family's latest
aggregate. Existing aggregates cannot be split by family after the fact: each run keeps one row per region with
family '' holding exactly the sums it had, so no trend point is lost.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COUNTS = ("n_pass", "n_fail", "n_error", "n_waived", "n_not_applicable", "w_pass", "w_total")


def upgrade() -> None:
    op.create_table(
        "run_family_agg",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("scan_run.id"), primary_key=True),
        sa.Column("region_id", sa.String(), primary_key=True),
        sa.Column("family", sa.String(), primary_key=True),
        sa.Column("n_systems", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
    )
    op.execute(
        "INSERT INTO run_family_agg (run_id, region_id, family, n_systems, n_pass, n_fail, n_error, n_waived,"
        " n_not_applicable, w_pass, w_total) SELECT run_id, region_id, '', COUNT(*), SUM(n_pass), SUM(n_fail),"
        " SUM(n_error), SUM(n_waived), SUM(n_not_applicable), SUM(w_pass), SUM(w_total) FROM run_system_agg"
        " GROUP BY run_id, region_id"
    )
    op.drop_index("ix_run_system_agg_region_run", table_name="run_system_agg")
    op.drop_table("run_system_agg")


def downgrade() -> None:
    # Per-system rows cannot be rebuilt from per-family sums; each (run, region) comes back as one row under
    # system id '*', which is all the trend ever read of them.
    op.create_table(
        "run_system_agg",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("scan_run.id"), primary_key=True),
        sa.Column("system_id", sa.String(), primary_key=True),
        sa.Column("region_id", sa.String(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
    )
    op.create_index("ix_run_system_agg_region_run", "run_system_agg", ["region_id", "run_id"])
    op.execute(
        "INSERT INTO run_system_agg (run_id, system_id, region_id, n_pass, n_fail, n_error, n_waived,"
        " n_not_applicable, w_pass, w_total) SELECT run_id, '*', region_id, SUM(n_pass), SUM(n_fail), SUM(n_error),"
        " SUM(n_waived), SUM(n_not_applicable), SUM(w_pass), SUM(w_total) FROM run_family_agg"
        " GROUP BY run_id, region_id"
    )
    op.drop_table("run_family_agg")
