"""Talking to a linked store from the web app or the CLI: builds the client, keeps the link's
bookkeeping (last contact, signature profile, revocation) and the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import events
from .extensions import db
from .magento import errors
from .magento.client import Credentials, StoreClient
from .magento.store_url import host_of
from .models import StoreLink, User, audit, utcnow
from .outbound import store_client, store_policy


class NotLinked(errors.MagentoError):
    hint = "Activate the integration in Magento (or add it with `flask stores add`) first."


def client_for(link: StoreLink, **kwargs) -> StoreClient:
    if not link.has_token:
        raise NotLinked(f"store {link.id} ({link.base_url}) has no access token")
    creds = Credentials(link.consumer_key, link.consumer_secret, link.access_token, link.access_token_secret)
    return store_client(link.base_url, creds, profile=link.signature_profile, **kwargs)


@contextmanager
def contact(link: StoreLink, *, user: User | None = None, remote_addr: str | None = None,
            **client_kwargs) -> Iterator[StoreClient]:
    """A client for ``link``; afterwards records what the calls taught us, and commits."""
    client = client_for(link, **client_kwargs)
    try:
        yield client
    except errors.TokenRevoked as exc:
        # Magento never tells us an integration was deleted: a token that worked and is now
        # unknown to the store is the only sign.
        if link.status == StoreLink.LINKED:
            link.status = StoreLink.REVOKED
            link.revoked_at = utcnow()
            audit("store.revoked", user=user, store_link=link, remote_addr=remote_addr, detail=exc.message)
            events.record(db.session, events.STORE_REVOKED, link, reason=exc.message)
        link.last_error = exc.message
        db.session.commit()
        raise
    except errors.MagentoError as exc:
        # Once when a working store starts failing, not on every failed call.
        if link.last_error is None and not isinstance(exc, (errors.NotFound, errors.BadRequest)):
            events.record(db.session, events.STORE_CHECK_FAILED, link, reason=exc.message)
        link.last_error = exc.message
        db.session.commit()
        raise
    else:
        link.last_contact_at = utcnow()
        link.last_error = None
        if link.status in (StoreLink.REVOKED, StoreLink.FAILED):
            link.status = StoreLink.LINKED
            link.revoked_at = None
        # Only what a request proved; a recorded profile the store now refuses is forgotten.
        link.signature_profile = client.profile if client.profile_known else None
        db.session.commit()


def check(link: StoreLink, **kwargs) -> dict:
    """A test call: Magento's version and the store configs."""
    with contact(link, **kwargs) as client:
        configs = client.get("store/storeConfigs")
        try:
            version = client.magento_version()
        except errors.MagentoError:
            version = None  # some stores hide it; the configs call proved the link
        link.magento_version = version
    return {"magento_version": version, "store_configs": configs}


def unlink(link: StoreLink, *, user: User | None = None, remote_addr: str | None = None) -> None:
    """Forget the tokens, keep the link's history."""
    link.forget_token()
    link.status = StoreLink.REVOKED
    link.revoked_at = utcnow()
    link.last_error = "unlinked"
    audit("store.unlinked", user=user, store_link=link, remote_addr=remote_addr)
    events.record(db.session, events.STORE_UNLINKED, link)
    db.session.commit()


def add_manual(base_url: str, credentials: Credentials, *, owner: User | None = None,
               remote_addr: str | None = None) -> StoreLink:
    """Link an integration activated without a callback (the four credentials Magento's admin
    shows), after a test call proves they work. Raises ``MagentoError`` or ``ValueError``."""
    base_url = store_policy().check(base_url)
    if StoreLink.by_consumer_key(credentials.consumer_key):
        raise ValueError("a store with this consumer key is already linked")
    client = store_client(base_url, credentials)
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
