"""PostgreSQL: the keys of events and feed records to their store link kept by triggers that run
once a statement, not by foreign keys, which check every inserted row with a query of its own
(a first pass of a change feed inserts two rows a record)

Revision ID: 0016_link_triggers
Revises: 0015_feedrel

What the foreign keys did, the triggers do (``integration.models.TRIGGER_KEPT_KEYS``):

* an INSERT (or a ``COPY``) of rows pointing at a store link that does not exist fails with
  ``foreign_key_violation``, as does an UPDATE pointing a row at one; the store links pointed at
  are locked ``FOR KEY SHARE`` until the transaction ends, so that a store link deleted meanwhile
  waits for the rows to be committed, then takes them with it (a sync's page and a deletion of
  its store, at the same moment, never leave a row behind);
* deleting store links (or emptying the table) deletes their feed records and leaves their events
  with no store (``ON DELETE CASCADE`` and ``ON DELETE SET NULL`` as before).

SQLite keeps its foreign keys: its writers are one at a time, and it has no statement triggers.
"""
from alembic import op

revision = "0016_link_triggers"
down_revision = "0015_feedrel"
branch_labels = None
depends_on = None

#: The tables whose key to ``store_links`` the triggers keep, and what a deleted link does to their rows.
TABLES = {"events": "SET NULL", "feed_records": "CASCADE"}

UPGRADE = """
CREATE FUNCTION store_link_rows_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted integer;
    found integer;
BEGIN
    SELECT count(DISTINCT store_link_id) INTO wanted FROM new_rows WHERE store_link_id IS NOT NULL;
    IF wanted > 0 THEN
        -- As a foreign key's check: the links are locked against a DELETE until this transaction ends.
        SELECT count(*) INTO found FROM (
            SELECT 1 FROM store_links WHERE id IN (SELECT store_link_id FROM new_rows) FOR KEY SHARE) AS locked;
        IF found < wanted THEN
            RAISE EXCEPTION 'insert or update on table "%" violates its key to store_links', TG_TABLE_NAME
                USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION store_link_row_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM store_links WHERE id = NEW.store_link_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insert or update on table "%" violates its key to store_links', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION store_links_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM feed_records;
        UPDATE events SET store_link_id = NULL WHERE store_link_id IS NOT NULL;
    ELSE
        DELETE FROM feed_records WHERE store_link_id IN (SELECT id FROM gone);
        UPDATE events SET store_link_id = NULL WHERE store_link_id IN (SELECT id FROM gone);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION store_links_keep_ids() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a store link''s id never changes (events and feed records point at it)'
        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
END $$;

CREATE TRIGGER store_links_gone AFTER DELETE ON store_links REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION store_links_gone();
CREATE TRIGGER store_links_emptied AFTER TRUNCATE ON store_links
    FOR EACH STATEMENT EXECUTE FUNCTION store_links_gone();
CREATE TRIGGER store_links_keep_ids BEFORE UPDATE OF id ON store_links
    FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id) EXECUTE FUNCTION store_links_keep_ids();
"""

PER_TABLE = """
CREATE TRIGGER {table}_store_link_inserted AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION store_link_rows_check();
CREATE TRIGGER {table}_store_link_moved AFTER UPDATE OF store_link_id ON {table}
    FOR EACH ROW WHEN (NEW.store_link_id IS NOT NULL AND NEW.store_link_id IS DISTINCT FROM OLD.store_link_id)
    EXECUTE FUNCTION store_link_row_check();
"""


def _foreign_key(table: str) -> str | None:
    """The name of ``table``'s foreign key to ``store_links`` (PostgreSQL named it)."""
    return op.get_bind().exec_driver_sql(
        "SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid = %s::regclass"
        " AND confrelid = 'store_links'::regclass", (table,)).scalar()


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(UPGRADE)
    for table in TABLES:
        name = _foreign_key(table)
        if name:
            op.drop_constraint(name, table, type_="foreignkey")
        op.execute(PER_TABLE.format(table=table))


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, on_delete in TABLES.items():
        op.execute(f"DROP TRIGGER {table}_store_link_inserted ON {table}")
        op.execute(f"DROP TRIGGER {table}_store_link_moved ON {table}")
        op.create_foreign_key(f"{table}_store_link_id_fkey", table, "store_links", ["store_link_id"], ["id"],
                              ondelete=on_delete)
    for trigger in ("store_links_gone", "store_links_emptied", "store_links_keep_ids"):
        op.execute(f"DROP TRIGGER {trigger} ON store_links")
    for function in ("store_link_rows_check", "store_link_row_check", "store_links_gone", "store_links_keep_ids"):
        op.execute(f"DROP FUNCTION {function}()")
