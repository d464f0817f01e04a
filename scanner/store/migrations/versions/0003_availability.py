"""availability: sampled endpoints with their span cursor, samples, coverage spans, hourly rollups, sampler rounds

A separate branch from 0001 (0002 is the agent's); `migrate` upgrades all heads.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

N_LATENCY_BUCKETS = 21  # scanner.availability.LATENCY_BOUNDS_MS + one open-ended bucket (frozen with this revision)


def upgrade() -> None:
    op.create_table(
        "avl_endpoint",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(), nullable=False, unique=True),
        sa.Column("system_id", sa.String(), nullable=False),
        sa.Column("region_id", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_up", sa.Boolean(), nullable=True),
        sa.Column("span_start_ms", sa.BigInteger(), nullable=True),
        sa.Column("span_end_ms", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_avl_endpoint_system_id", "avl_endpoint", ["system_id"])
    op.create_table(
        "avl_sample",
        sa.Column("endpoint_id", sa.Integer(), primary_key=True),
        sa.Column("t_ms", sa.BigInteger(), primary_key=True),
        sa.Column("up", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("detail", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "avl_span",
        sa.Column("endpoint_id", sa.Integer(), primary_key=True),
        sa.Column("start_ms", sa.BigInteger(), primary_key=True),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.Column("up", sa.Boolean(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_avl_span_end", "avl_span", ["end_ms"])
    op.create_table(
        "avl_hour",
        sa.Column("endpoint_id", sa.Integer(), primary_key=True),
        sa.Column("hour", sa.Integer(), primary_key=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_up", sa.Integer(), nullable=False),
        *(sa.Column(f"b{i}", sa.Integer(), nullable=False) for i in range(N_LATENCY_BUCKETS)),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_avl_hour_hour", "avl_hour", ["hour"])
    op.create_table(
        "avl_round",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("t_ms", sa.BigInteger(), nullable=False),
        sa.Column("finished_ms", sa.BigInteger(), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("n_up", sa.Integer(), nullable=False),
        sa.Column("n_down", sa.Integer(), nullable=False),
        sa.Column("n_unknown", sa.Integer(), nullable=False),
    )
    op.create_index("ix_avl_round_t_ms", "avl_round", ["t_ms"])


def downgrade() -> None:
    op.drop_table("avl_round")
    op.drop_table("avl_hour")
    op.drop_table("avl_span")
    op.drop_table("avl_sample")
    op.drop_table("avl_endpoint")
