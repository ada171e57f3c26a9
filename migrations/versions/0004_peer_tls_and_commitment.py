"""peers: TLS for associations the node opens to them, where storage commitment reports go

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("peer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tls", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(
            sa.Column(
                "commitment_report", sa.String(length=16), nullable=False, server_default="same_association"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("peer", schema=None) as batch_op:
        batch_op.drop_column("commitment_report")
        batch_op.drop_column("tls")
