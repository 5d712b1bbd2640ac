"""Magento events intake: sources per store (verification), raw messages and the quarantine

Revision ID: 0012_intake
Revises: 0011_doctor
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_intake"
down_revision = "0011_doctor"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "intake_sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("store_link_id", sa.Integer(), sa.ForeignKey("store_links.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("path_token_hash", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("header_name", sa.String(length=64), nullable=True),
        sa.Column("subscriptions", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_event_at", sa.DateTime(), nullable=True),
        sa.Column("verified", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("emitted", sa.Integer(), nullable=False),
        sa.UniqueConstraint("store_link_id", "source", name="uq_intake_sources_store_source"),
    )
    op.create_index("ix_intake_sources_store_link_id", "intake_sources", ["store_link_id"])
    op.create_table(
        "intake_messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("store_link_id", sa.Integer(), sa.ForeignKey("store_links.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("intake_sources.id", ondelete="CASCADE"), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("event_name", sa.String(length=128), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("body_size", sa.Integer(), nullable=False),
        sa.Column("accepted_hash", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("entity", sa.String(length=16), nullable=True),
        sa.Column("record_id", sa.String(length=128), nullable=True),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("source_id", "accepted_hash", name="uq_intake_messages_accepted"),
    )
    op.create_index("ix_intake_messages_store_state", "intake_messages", ["store_link_id", "state", "id"])
    op.create_index("ix_intake_messages_received_at", "intake_messages", ["received_at"])


def downgrade():
    op.drop_table("intake_messages")
    op.drop_table("intake_sources")
