"""Flask extensions, created unbound and attached in ``create_app`` (``init_app`` pattern)."""

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

from flask import request
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


@contextmanager
def kept_across_commits() -> Iterator[None]:
    """What the session loaded stays loaded when the block commits, instead of every object being
    read again at its next use (a ``SELECT`` each): for work that commits as it goes and reads
    explicitly whatever another process may change meanwhile."""
    session = db.session()
    expiring, session.expire_on_commit = session.expire_on_commit, False
    try:
        yield
    finally:
        session.expire_on_commit = expiring
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


def address_key() -> str:
    """Whom a per-address limit counts: the client's IPv4 address, or its IPv6 /64. A host given an
    IPv6 /64 (the usual smallest allocation) can use any of its 2^64 addresses, one per request."""
    addr = request.remote_addr or "?"
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d, as a dual-stack socket reports an IPv4 client
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network((ip, 64), strict=False))


limiter = Limiter(key_func=address_key, default_limits=[])
