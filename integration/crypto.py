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
