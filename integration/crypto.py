"""Secrets at rest: Fernet with several keys, the first one used for new values (rotation)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app
from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator


class Vault:
    def __init__(self, keys: tuple[str, ...] | list[str]):
        self._fernet = MultiFernet([Fernet(k) for k in keys])
        self._newest = Fernet(keys[0])

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise InvalidToken("a stored secret cannot be decrypted with any configured key "
                               "(INTEGRATION_ENCRYPTION_KEYS lost an old key?)") from None

    def rotate(self, token: str) -> str | None:
        """The token re-encrypted under the newest key, or ``None`` if it already is."""
        try:
            self._newest.decrypt(token.encode("ascii"))
            return None
        except InvalidToken:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")


def vault() -> Vault:
    return current_app.extensions["vault"]


class EncryptedText(TypeDecorator):
    """A column whose value is stored as Fernet ciphertext and read back as plain text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else vault().encrypt(value)

    def process_result_value(self, value, dialect):
        return None if value is None else vault().decrypt(value)


def encrypted_columns() -> dict:
    """``{table: [column names]}`` for every ``EncryptedText`` column of the models."""
    from .extensions import db

    found: dict = {}
    for table in db.metadata.sorted_tables:
        names = [c.name for c in table.columns if isinstance(c.type, EncryptedText)]
        if names:
            found[table] = names
    return found


def rotate_all(*, batch_size: int = 500, on_batch=None) -> dict[str, int]:
    """Re-encrypt stored secrets under the newest key, in committed batches by primary key.

    Idempotent: values already under the newest key are left alone, so an interrupted run
    just continues where it stopped when started again.
    """
    from sqlalchemy import select, type_coerce, update

    from .extensions import db

    v = vault()
    counts: dict[str, int] = {}
    for table, names in encrypted_columns().items():
        pk = table.c.id
        # type_coerce to Text: read and write the ciphertext itself, not through EncryptedText.
        raw = [type_coerce(table.c[n], Text).label(n) for n in names]
        last, done = None, 0
        while True:
            query = select(pk, *raw).order_by(pk).limit(batch_size)
            if last is not None:
                query = query.where(pk > last)
            rows = db.session.execute(query).all()
            if not rows:
                break
            for row in rows:
                changes = {}
                for n in names:
                    token = getattr(row, n)
                    fresh = v.rotate(token) if token is not None else None
                    if fresh is not None:
                        changes[table.c[n]] = type_coerce(fresh, Text)
                if changes:
                    db.session.execute(update(table).where(pk == row.id).values(changes))
                    done += 1
            db.session.commit()
            last = rows[-1].id
            if on_batch:
                on_batch(table.name, done)
        counts[table.name] = done
    return counts
