"""Talking to a linked store from the web app, the CLI or the service API: who sees which
store, the link's health (last contact, last error, signature profile, revocation) and one
audit entry per contact, whoever asks, so the web, the CLI, the API and jobs behave the same."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Select, select, update
from sqlalchemy.orm import joinedload, undefer

from . import doctor, events
from .activation import unclaimed
from .extensions import db
from .magento import errors
from .magento.client import Credentials, StoreClient
from .magento.credentials import RULE, MalformedCredential, is_credential
from .magento.store_url import host_of
from .models import StoreLink, User, audit, utcnow
from .outbound import store_client, store_policy
from .text import neutralised

#: The ``remote_addr`` of audit entries made at the command line, which has no address.
COMMAND_LINE = "command line"
LABEL_LENGTH = 100

#: A successful call refreshes ``last_contact_at`` at most this often: under steady API
#: traffic, one row update a minute per store rather than one per call.
CONTACT_REFRESH = dt.timedelta(seconds=60)


class NotLinked(errors.MagentoError):
    hint = "Activate the integration in Magento (or add it with `flask stores add`) first."


class AlreadyLinked(errors.MagentoError):
    hint = "Open it from the store list. To link it again, click Reauthorize on the integration in Magento."


class InvalidLabel(ValueError):
    """A store label with control or formatting characters, or too long."""


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
    """One page in id order after the link ``after``, and the id to continue after (or None).
    Links only callbacks ever touched are nobody's stores (anyone can post a callback): left out."""
    query = visible_to(viewer).options(joinedload(StoreLink.owner)).where(~unclaimed())
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
        "id": link.id, "label": link.label, "consumer_key": link.masked_consumer_key, "base_url": link.base_url,
        "status": link.status,
        "owner": link.owner.email if link.owner else None, "signature_profile": link.signature_profile,
        "magento_version": link.magento_version, "linked_at": iso(link.linked_at),
        "last_contact_at": iso(link.last_contact_at), "revoked_at": iso(link.revoked_at),
        "last_error": link.last_error,
    }




def client_for(link: StoreLink, **kwargs) -> StoreClient:
    if not link.has_token:
        raise NotLinked(f"store {link.id} ({link.base_url}) has no access token")
    creds = Credentials(link.consumer_key, link.consumer_secret, link.access_token, link.access_token_secret)
    return store_client(link.base_url, creds, profile=link.signature_profile, **kwargs)


def breaks_the_link(exc: errors.MagentoError) -> bool:
    """Whether a failure says the link itself is broken: the store cannot be reached, or it no
    longer accepts our token or signature. A 404, a refused body, a 500 from one endpoint or a
    resource the integration was not given are about the request, not the link."""
    if isinstance(exc, errors.NotAuthorized):
        return False
    return isinstance(exc, (errors.StoreUnreachable, errors.UnsafeStoreURL, errors.Unauthorized))


@contextmanager
def contact(link: StoreLink, action: str | None, purpose: str = "", *, user: User | None = None,
            remote_addr: str | None = None, health_check: bool = False, **client_kwargs) -> Iterator[StoreClient]:
    """A client for ``link``. Afterwards, one audit entry (``action``, ``purpose`` and how it
    ended) and what the calls taught us about the link; commits.

    Only failures that break the link change its health, unless ``health_check``: a test call
    exists to find out, so any failure of it does."""
    client = client_for(link, **client_kwargs)
    seen = (link.status, link.last_error, link.last_contact_at)
    db.session.commit()  # no database connection is held while the store answers

    def record(outcome: str) -> None:
        if action is None:  # the caller audits
            db.session.commit()
            return
        audit(action, user=user, store_link=link, remote_addr=remote_addr,
              detail=f"{purpose}: {outcome}" if purpose else outcome)
        db.session.commit()

    try:
        yield client
    except errors.MagentoError as exc:
        if health_check or isinstance(exc, (errors.NotAuthorized, errors.SignatureRejected)):
            doctor.refused_call(link, exc, client.profile, remote_addr)
        if health_check or breaks_the_link(exc):
            _note_failure(link, exc, user=user, remote_addr=remote_addr)
        record(f"failed: {exc.message}")
        raise
    except BaseException as exc:  # a refused argument, a full disk, Ctrl-C: still on the record
        db.session.rollback()
        record(f"stopped ({type(exc).__name__})")
        raise
    else:
        _note_success(link, client, seen)
        if health_check:  # the doctor sees a link that works again after a refusal
            doctor.record_step(doctor.API_CALL, doctor.OK, link=link, remote_addr=remote_addr,
                               detail=f"{action or 'test call'}: the store answered")
        record("ok")


def _note_failure(link: StoreLink, exc: errors.MagentoError, *, user: User | None, remote_addr: str | None) -> None:
    # Magento never tells us an integration was deleted: a token that worked and is now
    # unknown to the store is the only sign.
    # Each change is claimed with a conditional UPDATE: two calls failing at once (a proxied call
    # and a sync, in two processes) must announce it once.
    if isinstance(exc, errors.TokenRevoked) and link.status == StoreLink.LINKED:
        now = utcnow()
        if _claim(link, StoreLink.status == StoreLink.LINKED, status=StoreLink.REVOKED, revoked_at=now):
            link.status, link.revoked_at = StoreLink.REVOKED, now
            audit("store.revoked", user=user, store_link=link, remote_addr=remote_addr, detail=exc.message)
            events.record(db.session, events.STORE_REVOKED, link, reason=exc.message)
    elif link.last_error is None:
        # Once when a working store starts failing, not on every failed call.
        if _claim(link, StoreLink.last_error.is_(None), last_error=neutralised(exc.message, multiline=True)[:2000]):
            events.record(db.session, events.STORE_CHECK_FAILED, link, reason=exc.message)
    link.last_error = exc.message


def _claim(link: StoreLink, condition, **values) -> bool:
    claimed = db.session.execute(update(StoreLink).where(StoreLink.id == link.id, condition).values(**values)
                                 .execution_options(synchronize_session=False))
    return claimed.rowcount == 1


def _note_success(link: StoreLink, client: StoreClient, seen: tuple) -> None:
    status, last_error, last_contact = seen
    if _needs_refresh(status, last_error, last_contact):
        link.last_contact_at = utcnow()
        link.last_error = None
        if status in (StoreLink.REVOKED, StoreLink.FAILED):
            link.status = StoreLink.LINKED
            link.revoked_at = None
    # Only what a request proved; a recorded profile the store now refuses is forgotten.
    proved = client.profile if client.profile_known else None
    if link.signature_profile != proved:
        link.signature_profile = proved


def _needs_refresh(status: str, last_error: str | None, last_contact: dt.datetime | None) -> bool:
    """Whether a successful call should be written down: under steady traffic, one row update a
    minute per store rather than one per call; at once when it heals the link."""
    return (last_contact is None or utcnow() - last_contact >= CONTACT_REFRESH or last_error is not None
            or status in (StoreLink.REVOKED, StoreLink.FAILED))


# --- the service API's calls: the link as kept in the API's per-process cache -------------

@dataclass(frozen=True)
class CallableLink:
    """What a call needs of a store link, read once (tokens decrypted) and kept for a few seconds
    by the API (``api/cache.py``), so that a proxied call reads and writes nothing unless it
    teaches us something about the link."""

    id: int
    owner_id: int | None
    status: str
    base_url: str
    credentials: Credentials | None  # None: no token (not linked)
    signature_profile: str | None
    last_error: str | None
    last_contact_at: dt.datetime | None

    @classmethod
    def of(cls, link: StoreLink) -> CallableLink:
        credentials = (Credentials(link.consumer_key, link.consumer_secret, link.access_token,
                                   link.access_token_secret) if link.has_token else None)
        return cls(link.id, link.owner_id, link.status, link.base_url, credentials, link.signature_profile,
                   link.last_error, link.last_contact_at)


def callable_link(link_id: int) -> CallableLink | None:
    """The link as a call needs it, read now (tokens included)."""
    link = db.session.scalar(select(StoreLink).where(StoreLink.id == link_id).options(
        undefer(StoreLink.consumer_secret), undefer(StoreLink.access_token), undefer(StoreLink.access_token_secret)))
    found = CallableLink.of(link) if link is not None else None
    db.session.commit()  # no database connection is held while the store answers
    return found


class LinkChanged(Exception):
    """The store refused tokens that are no longer the link's (reauthorized or unlinked meanwhile,
    by another process): nothing to note about the link; call again with what it is now."""


@contextmanager
def contact_quietly(link: CallableLink, *, user: Callable[[], User | None] = lambda: None,
                    remote_addr: str | None = None, retry_on_change: bool = False) -> Iterator[StoreClient]:
    """``contact(link, None, ...)`` for the service API's calls: the same outcomes for the link
    (health on failures that break it, ``store.revoked`` and its event on a revoked token, last
    contact, the signature profile), but nothing read or written unless the call changes one.
    ``user`` gives the account to name in a ``store.revoked`` entry (read only then).
    ``LinkChanged`` (if ``retry_on_change``) when the store refused tokens the link no longer has."""
    if link.credentials is None:
        raise NotLinked(f"store {link.id} ({link.base_url}) has no access token")
    client = store_client(link.base_url, link.credentials, profile=link.signature_profile)
    try:
        yield client
    except errors.MagentoError as exc:
        if isinstance(exc, (errors.NotAuthorized, errors.SignatureRejected)):  # for the doctor's timeline
            refused = _fresh(link.id)
            if refused is not None:
                doctor.refused_call(refused, exc, client.profile, remote_addr)
                db.session.commit()
        if breaks_the_link(exc):
            current = _fresh(link.id)
            if current is None or current.access_token != link.credentials.access_token:
                db.session.rollback()
                if retry_on_change and isinstance(exc, errors.Unauthorized):  # refused: it did nothing
                    raise LinkChanged(link.id) from exc
                raise
            _note_failure(current, exc, user=user(), remote_addr=remote_addr)
            db.session.commit()
        raise
    else:
        proved = client.profile if client.profile_known else None
        if _needs_refresh(link.status, link.last_error, link.last_contact_at) or proved != link.signature_profile:
            current = _fresh(link.id)
            if current is not None:
                _note_success(current, client, (current.status, current.last_error, current.last_contact_at))
            db.session.commit()


def _fresh(link_id: int) -> StoreLink | None:
    return db.session.scalar(select(StoreLink).where(StoreLink.id == link_id)
                             .options(undefer(StoreLink.access_token)).execution_options(populate_existing=True))


def store_configs(client: StoreClient) -> list[dict]:
    """``store/storeConfigs``, the call that proves a link works; anything but a list of store
    views means something other than Magento answered."""
    configs = client.get("store/storeConfigs")
    if not isinstance(configs, list) or not configs or not all(isinstance(c, dict) for c in configs):
        raise errors.BadStoreResponse("store/storeConfigs did not answer with a list of store configs")
    return configs


def check(link: StoreLink, *, user: User | None = None, remote_addr: str | None = None, **kwargs) -> dict:
    """A test call: Magento's version and the store configs."""
    with contact(link, "store.tested", user=user, remote_addr=remote_addr, health_check=True, **kwargs) as client:
        configs = store_configs(client)
        try:
            version = client.magento_version()
        except errors.MagentoError:
            version = None  # some stores hide it; the configs call proved the link
        link.magento_version = version
    return {"magento_version": version, "store_configs": configs}


def unlink(link: StoreLink, *, user: User | None = None, remote_addr: str | None = None) -> None:
    """Forget the tokens, keep the link's history. The store's event subscriptions are turned
    off first, while the token still works (best effort, audited)."""
    from .intake.subscriptions import unsubscribe

    unsubscribe(link, user=user, remote_addr=remote_addr)
    link.forget_token()
    link.status = StoreLink.UNLINKED
    link.revoked_at = utcnow()
    link.last_error = None
    audit("store.unlinked", user=user, store_link=link, remote_addr=remote_addr)
    events.record(db.session, events.STORE_UNLINKED, link)
    db.session.commit()


def add_manual(base_url: str, credentials: Credentials, *, owner: User | None = None,
               remote_addr: str | None = None) -> StoreLink:
    """Link an integration activated without a callback (the four credentials Magento's admin
    shows), after a test call proves they work. Raises ``MagentoError``."""
    for name, value in (("consumer key", credentials.consumer_key), ("consumer secret", credentials.consumer_secret),
                        ("access token", credentials.access_token),
                        ("access token secret", credentials.access_token_secret)):
        if not is_credential(value):
            raise MalformedCredential(f"the {name} must be {RULE}")
    base_url = store_policy().check(base_url)
    if StoreLink.by_consumer_key(credentials.consumer_key):
        raise AlreadyLinked("a store with this consumer key is already linked")
    client = store_client(base_url, credentials)
    store_configs(client)
    now = utcnow()
    link = StoreLink(consumer_key=credentials.consumer_key, consumer_secret=credentials.consumer_secret,
                     base_url=base_url, store_host=host_of(base_url), status=StoreLink.LINKED, owner=owner,
                     access_token=credentials.access_token, access_token_secret=credentials.access_token_secret,
                     linked_at=now, last_contact_at=now,
                     signature_profile=client.profile if client.profile_known else None)
    db.session.add(link)
    audit("store.added", user=owner, store_link=link, remote_addr=remote_addr, detail="manual link")
    db.session.commit()
    from .probe import enqueue_probe  # probe imports this module

    enqueue_probe(link.id)
    return link


def set_label(link: StoreLink, label: str, *, user: User | None = None, remote_addr: str | None = None) -> None:
    """Name the store for the people who use this app. Magento never tells us the name the
    integration has in its admin, so this is ours to set (usually to that name)."""
    label = " ".join(label.split())
    if len(label) > LABEL_LENGTH:
        raise InvalidLabel(f"a label is at most {LABEL_LENGTH} characters")
    if not label.isprintable():
        raise InvalidLabel("a label cannot contain control or formatting characters")
    link.label = label or None
    audit("store.labelled", user=user, store_link=link, remote_addr=remote_addr, detail=label or "(removed)")
    db.session.commit()
