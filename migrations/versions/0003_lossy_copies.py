"""lossy copies: the copy's original, the original's copy and when its data is dropped

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("derived_from_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("replaced_by_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("original_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_instance_replaced_by_uid"), ["replaced_by_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_replaced_by_uid"))
        batch_op.drop_column("original_expires_at")
        batch_op.drop_column("replaced_by_uid")
        batch_op.drop_column("derived_from_uid")
