"""sweeps: hyperparameter searches whose trials are jobs, and Optuna's tables for their studies

Optuna keeps a study in its own tables (`studies`, `trials`, `trial_params`, ...). They are
created here, from the models of the pinned Optuna, so that the service's one migration history
covers them; `app.services.sweeps` opens Optuna's storage on this database without letting it
create or stamp anything (Optuna's own Alembic would write to this `alembic_version`). An Optuna
upgrade that changes its schema comes with a migration here.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from optuna.storages._rdb import models as optuna_models
from optuna.version import __version__ as optuna_version

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("driven_until", sa.DateTime(timezone=True)),
        sa.Column("dirty", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_sweeps_tenant_created_at_id", "sweeps", ["tenant_id", "created_at", "id"])
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("sweep_id", sa.String(40)))
        jobs.add_column(sa.Column("trial_number", sa.Integer))
        jobs.create_foreign_key("fk_jobs_sweep_id", "sweeps", ["sweep_id"], ["id"])
        jobs.create_unique_constraint("uq_jobs_sweep_trial", ["sweep_id", "trial_number"])
    bind = op.get_bind()
    optuna_models.BaseModel.metadata.create_all(bind)
    op.bulk_insert(
        optuna_models.VersionInfoModel.__table__,
        [{"schema_version": optuna_models.SCHEMA_VERSION, "library_version": optuna_version}],
    )


def downgrade() -> None:
    optuna_models.BaseModel.metadata.drop_all(op.get_bind())
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_constraint("uq_jobs_sweep_trial", type_="unique")
        jobs.drop_constraint("fk_jobs_sweep_id", type_="foreignkey")
        jobs.drop_column("trial_number")
        jobs.drop_column("sweep_id")
    op.drop_index("ix_sweeps_tenant_created_at_id", table_name="sweeps")
    op.drop_table("sweeps")
