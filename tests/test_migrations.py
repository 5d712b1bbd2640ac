"""The schema the app uses is the schema the migrations build (on SQLite and PostgreSQL)."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from integration.extensions import db
from integration.models import include_object


def test_migrations_match_the_models(app):
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object(conn.dialect.name)})
        assert compare_metadata(context, db.metadata) == []
