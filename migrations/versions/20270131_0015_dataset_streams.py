"""dataset streams: the shards of a dataset too large to read whole

A large text upload, or a dataset registered by reference to an S3 prefix, is checked and
trained from as a stream; `datasets.stream` records its shards as they were checked (each
one's key, size, ETag, rows and training rows) and which held-out parts are drawn.

Revision ID: 0015
Revises: 0014
Create Date: 2027-01-31 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("stream", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("datasets", "stream")
