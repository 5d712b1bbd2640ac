"""change feeds: feed state per store and entity, record fingerprints, background jobs

Revision ID: 0009_feeds
Revises: 0008_2fa
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_feeds"
down_revision = "0008_2fa"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "feed_states",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("store_link_id", sa.Integer(), sa.ForeignKey("store_links.id", ondelete="CASCADE"), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.DateTime(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(), nullable=True),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.Column("last_reconcile_at", sa.DateTime(), nullable=True),
        sa.Column("records_seen", sa.Integer(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("backoff_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("note", sa.String(length=255), nullable=True),
        sa.UniqueConstraint("store_link_id", "entity", name="uq_feed_states_store_entity"),
    )
    op.create_index("ix_feed_states_next_run", "feed_states", ["next_run_at"])
    op.create_table(
        "feed_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("store_link_id", sa.Integer(), sa.ForeignKey("store_links.id", ondelete="CASCADE"), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("record_id", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("store_link_id", "entity", "record_id", name="uq_feed_records_key"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("store_link_id", sa.Integer(), sa.ForeignKey("store_links.id", ondelete="CASCADE"), nullable=True),
        sa.Column("entity", sa.String(length=16), nullable=True),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])
    op.create_index("ix_jobs_store_link_id", "jobs", ["store_link_id"])


def downgrade():
    op.drop_table("jobs")
    op.drop_table("feed_records")
    op.drop_table("feed_states")
