"""a tenant's jobs of one status, in listing order

`GET /v1/jobs?status=…` pages by (created_at, id) within one tenant and status: the index on
(tenant_id, status) found the rows but left them to be sorted, so every page read all of the
tenant's jobs of that status. This one gives them in order, starting at the cursor, and
still serves lookups by (tenant_id, status) alone.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 22:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_tenant_status_created_at_id", "jobs", ["tenant_id", "status", "created_at", "id"]
    )
    op.drop_index("ix_jobs_tenant_status", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_tenant_status", "jobs", ["tenant_id", "status"])
    op.drop_index("ix_jobs_tenant_status_created_at_id", table_name="jobs")
