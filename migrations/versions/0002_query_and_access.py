"""query/retrieve and access control: DT matching column, row versions, peer host check

Also rewrites study dates and times in the sortable spelling range matching relies on.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from scp_node.index.dicom_values import normalized_date, normalized_time

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("acquisition_datetime", sa.String(length=26), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("peer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("check_host", sa.Boolean(), nullable=False, server_default=sa.false()))
    study = sa.table("study", sa.column("id"), sa.column("study_date"), sa.column("study_time"))
    connection = op.get_bind()
    for row in connection.execute(sa.select(study)).all():
        connection.execute(
            study.update()
            .where(study.c.id == row.id)
            .values(study_date=normalized_date(row.study_date), study_time=normalized_time(row.study_time))
        )


def downgrade() -> None:
    with op.batch_alter_table("peer", schema=None) as batch_op:
        batch_op.drop_column("check_host")
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("version")
        batch_op.drop_column("acquisition_datetime")
