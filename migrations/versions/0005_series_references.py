"""instance: slice grid and position, the reference slice a series-mode blob was coded against

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slice_grid", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("slice_position", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("reference_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("reference_depth", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f("ix_instance_reference_uid"), ["reference_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_reference_uid"))
        batch_op.drop_column("reference_depth")
        batch_op.drop_column("reference_uid")
        batch_op.drop_column("slice_position")
        batch_op.drop_column("slice_grid")
