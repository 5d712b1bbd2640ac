"""Talking to a linked store from the web app, the CLI or the service API: who sees which
store, the client factory, the link's bookkeeping (last contact, signature profile,
revocation) and the audit trail."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from flask import current_app
from sqlalchemy import Select, select
from sqlalchemy.orm import joinedload

from .activation import store_policy
from .extensions import db
from .magento import errors
from .magento.client import Credentials, StoreClient
from .magento.store_url import StorePolicy, host_of, safe_session
from .models import StoreLink, User, audit, utcnow

#: A successful call refreshes ``last_contact_at`` at most this often: under steady API
#: traffic, one row update a minute per store rather than one per call.
CONTACT_REFRESH = dt.timedelta(seconds=60)


class NotLinked(errors.MagentoError):
    hint = "Activate the integration in Magento (or add it with `flask stores add`) first."


# --- who sees what ----------------------------------------------------------------------

def visible_to(viewer: User | None) -> Select:
    """Store links ``viewer`` may see: members their own, admins all. ``None`` is the
    deployment itself (the CLI, a service API key without an owner): all."""
    query = select(StoreLink)
    if viewer is not None and not viewer.is_admin:
        query = query.where(StoreLink.owner_id == viewer.id)
    return query


def page_after(viewer: User | None, *, after: int | None = None, status: str | None = None,
               limit: int = 50) -> tuple[list[StoreLink], int | None]:
    """One page in id order after the link ``after``, and the id to continue after (or None)."""
    query = visible_to(viewer).options(joinedload(StoreLink.owner))
    if status:
        query = query.where(StoreLink.status == status)
    if after is not None:
        query = query.where(StoreLink.id > after)
    links = list(db.session.scalars(query.order_by(StoreLink.id).limit(limit + 1)))
    return links[:limit], (links[limit - 1].id if len(links) > limit else None)


def describe(link: StoreLink) -> dict:
    """What a store link looks like from outside (CLI, API): never a credential."""
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() + "Z" if value else None

    return {
        "id": link.id, "base_url": link.base_url, "status": link.status,
        "owner": link.owner.email if link.owner else None, "signature_profile": link.signature_profile,
        "magento_version": link.magento_version, "linked_at": iso(link.linked_at),
        "last_contact_at": iso(link.last_contact_at), "revoked_at": iso(link.revoked_at),
        "last_error": link.last_error,
    }


# --- reaching a store -------------------------------------------------------------------

_sessions: dict[tuple[StorePolicy, int], requests.Session] = {}
_sessions_lock = threading.Lock()


def store_session() -> requests.Session:
    """The process's connection pool to stores: a call reuses a kept-alive connection (and
    its TLS session) instead of opening one per call."""
    size = max(int(current_app.config.get("STORE_CONCURRENCY") or 8), 10)
    key = (store_policy(), size)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = safe_session(key[0], pool_size=size, hosts=256)
        return session


def client_for(link: StoreLink, **kwargs) -> StoreClient:
    if not link.has_token:
        raise NotLinked(f"store {link.id} ({link.base_url}) has no access token")
    creds = Credentials(link.consumer_key, link.consumer_secret, link.access_token, link.access_token_secret)
    kwargs.setdefault("timeout", (5.0, current_app.config["STORE_TIMEOUT"]))
    if "session" not in kwargs and "pool_size" not in kwargs:
        kwargs["session"] = store_session()
    return StoreClient(link.base_url, creds, profile=link.signature_profile, policy=store_policy(), **kwargs)


@contextmanager
def contact(link: StoreLink, *, user: User | None = None, remote_addr: str | None = None,
            **client_kwargs) -> Iterator[StoreClient]:
    """A client for ``link``; afterwards records what the calls taught us, and commits.

    The session's transaction is committed first, so no database connection is held while
    the store answers.
    """
    client = client_for(link, **client_kwargs)
    seen = (link.status, link.last_error, link.last_contact_at, link.signature_profile)
    db.session.commit()
    try:
        yield client
    except errors.TokenRevoked as exc:
        # Magento never tells us an integration was deleted: a token that worked and is now
        # unknown to the store is the only sign.
        if link.status == StoreLink.LINKED:
            link.status = StoreLink.REVOKED
            link.revoked_at = utcnow()
            audit("store.revoked", user=user, store_link=link, remote_addr=remote_addr, detail=exc.message)
        link.last_error = exc.message
        db.session.commit()
        raise
    except errors.MagentoError as exc:
        link.last_error = exc.message
        db.session.commit()
        raise
    else:
        status, last_error, last_contact, profile = seen
        now = utcnow()
        learned = client.profile_known and client.profile != profile
        if (last_contact is None or now - last_contact >= CONTACT_REFRESH or last_error is not None or learned
                or status in (StoreLink.REVOKED, StoreLink.FAILED)):
            link.last_contact_at = now
            link.last_error = None
            if status in (StoreLink.REVOKED, StoreLink.FAILED):
                link.status = StoreLink.LINKED
                link.revoked_at = None
            if learned:
                link.signature_profile = client.profile
        db.session.commit()


def check(link: StoreLink, *, user: User | None = None, remote_addr: str | None = None, **kwargs) -> dict:
    """A test call (Magento's version and the store configs), audited as ``store.tested``."""
    try:
        with contact(link, user=user, remote_addr=remote_addr, **kwargs) as client:
            configs = client.get("store/storeConfigs")
            try:
                version = client.magento_version()
            except errors.MagentoError:
                version = None  # some stores hide it; the configs call proved the link
            link.magento_version = version
    except errors.MagentoError as exc:
        audit("store.tested", user=user, store_link=link, remote_addr=remote_addr, detail=f"failed: {exc.message}")
        db.session.commit()
        raise
    audit("store.tested", user=user, store_link=link, remote_addr=remote_addr, detail="ok")
    db.session.commit()
    return {"magento_version": version, "store_configs": configs}


def unlink(link: StoreLink, *, user: User | None = None, remote_addr: str | None = None) -> None:
    """Forget the tokens, keep the link's history."""
    link.forget_token()
    link.status = StoreLink.REVOKED
    link.revoked_at = utcnow()
    link.last_error = "unlinked"
    audit("store.unlinked", user=user, store_link=link, remote_addr=remote_addr)
    db.session.commit()


def add_manual(base_url: str, credentials: Credentials, *, owner: User | None = None,
               remote_addr: str | None = None) -> StoreLink:
    """Link an integration activated without a callback (the four credentials Magento's admin
    shows), after a test call proves they work. Raises ``MagentoError`` or ``ValueError``."""
    base_url = store_policy().check(base_url)
    if StoreLink.by_consumer_key(credentials.consumer_key):
        raise ValueError("a store with this consumer key is already linked")
    client = StoreClient(base_url, credentials, policy=store_policy(),
                         timeout=(5.0, current_app.config["STORE_TIMEOUT"]))
    client.get("store/storeConfigs")
    now = utcnow()
    link = StoreLink(consumer_key=credentials.consumer_key, consumer_secret=credentials.consumer_secret,
                     base_url=base_url, store_host=host_of(base_url), status=StoreLink.LINKED, owner=owner,
                     access_token=credentials.access_token, access_token_secret=credentials.access_token_secret,
                     linked_at=now, last_contact_at=now,
                     signature_profile=client.profile if client.profile_known else None)
    db.session.add(link)
    audit("store.added", user=owner, store_link=link, remote_addr=remote_addr, detail="manual link")
    db.session.commit()
    return link
