"""latest evidence: the volatile readings (clock skew, uptime, timestamps) of the latest verification

A verdict's digest no longer holds volatile readings, so an unchanged verdict writes no finding row; the readings
of the run that last verified it are kept on its finding_state row instead (updated in place), so none is lost.
Existing digests were built the old way (status, message, evidence); a verdict judged exactly the same on the first
run after this upgrade is converted to its new digest without a row (scanner.store.repo.legacy_digest), one whose
reading moved writes one more row, then none while its verdict holds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("finding_state") as batch:
        batch.add_column(sa.Column("latest_evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("finding_state") as batch:
        batch.drop_column("latest_evidence")
