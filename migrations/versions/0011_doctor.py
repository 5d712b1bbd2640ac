"""activation doctor: the steps of each activation (callback, pop-up, login, token calls) and refused calls

Revision ID: 0011_doctor
Revises: 0010_probe
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_doctor"
down_revision = "0010_probe"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "activation_steps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("store_link_id", sa.Integer(), sa.ForeignKey("store_links.id", ondelete="CASCADE"), nullable=True),
        sa.Column("activation_id", sa.Integer(), sa.ForeignKey("activations.id", ondelete="CASCADE"), nullable=True),
        sa.Column("consumer_key", sa.String(length=32), nullable=True),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("answer", sa.String(length=500), nullable=True),
        sa.Column("detail", sa.String(length=300), nullable=True),
    )
    op.create_index("ix_activation_steps_link_at", "activation_steps", ["store_link_id", "at"])
    op.create_index("ix_activation_steps_consumer_key", "activation_steps", ["consumer_key"])
    op.create_index("ix_activation_steps_activation_id", "activation_steps", ["activation_id"])


def downgrade():
    op.drop_table("activation_steps")
