"""The activation doctor: every step of an activation as it happened, and what went wrong.

Steps are written where they happen (the callback, the pop-up, the token exchange, a call the
store refuses for want of a permission), each in the transaction of the work it records. A
step holds the step's name, how it ended, Magento's answer (status and message, sanitised and
bounded), the time taken and the address it came from; never a token, a secret, a verifier or
anything a person typed.

:func:`diagnose` reads a store's steps back as a timeline with one cause and its fix.

What Magento does, from its source (``magento/magento2``):

* ``Integration/Model/OauthService.php`` ``postToConsumer`` sets the consumer's ``updated_at``
  to the current GMT time, then POSTs the callback: the window starts there.
* ``Integration/Model/Oauth/Consumer.php`` ``isValidForTokenExchange``:
  ``expiry > gmtTimestamp(now) - gmtTimestamp(updated_at)``, whole seconds; ``expiry`` is
  ``oauth/consumer/expiration_period`` (``Integration/Helper/Oauth/Data.php``: default 300, a
  value <= 0 means 300).
* ``Integration/Model/Oauth/Token/Provider.php`` ``validateConsumer`` raises "Consumer key has
  expired"; ``lib/internal/Magento/Framework/Oauth/Oauth.php`` calls it from
  ``getRequestToken`` only (after the nonce, before the signature): the access-token step is
  never refused for time.
* ``Integration/Controller/Adminhtml/Integration/TokensExchange.php``: Reauthorize deletes the
  integration's token, sets it Inactive and calls ``postToConsumer`` again: same consumer key
  and secret, a new verifier, a new window. Activate (on an Inactive integration) calls it too,
  reusing the verifier: also a new window. The consumer is never regenerated.
* ``Webapi/Controller/Rest/RequestValidator.php`` ``checkPermissions``: a REST call the
  integration has no ACL resource for is refused with "The consumer isn't authorized to
  access %resources." and ``parameters.resources`` naming them.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import ForeignKey, Index, Integer, String, delete, func, or_, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db
from .magento import errors
from .magento.store_url import StorePolicy
from .magento.transport import Deadline, safe_session, send
from .models import Activation, StoreLink, User, audit, utcnow
from .text import neutralised

CALLBACK, POPUP, LOGIN, REQUEST_TOKEN, ACCESS_TOKEN, API_CALL = (
    "callback", "popup", "login", "request_token", "access_token", "api_call")
STEP_TITLES = {CALLBACK: "Callback received", POPUP: "Pop-up opened", LOGIN: "Login",
               REQUEST_TOKEN: "Request token", ACCESS_TOKEN: "Access token", API_CALL: "Call to the store"}
OK, FAILED, SKIPPED = "ok", "failed", "skipped"

#: Magento's answers are short; a page of HTML from a proxy is not worth keeping whole.
MAX_ANSWER = 500
MAX_DETAIL = 300
#: Pop-ups opened for a key we never got a callback for: kept this long, at most this many.
ORPHAN_KEEP = dt.timedelta(hours=24)
MAX_ORPHANS = 1000
#: The test POST gets what Magento gives the callback: 5 s in all (``oauth/consumer/post_timeout``).
PROBE_DEADLINE = 5.0
#: The form field of the test POST; the callback answers it without storing anything.
PROBE_FIELD = "companion_probe"
MAX_PROBE_ANSWER = 4096


class ActivationStep(db.Model):
    """One step of an activation (or a call the store refused) and how it ended."""

    __tablename__ = "activation_steps"
    __table_args__ = (Index("ix_activation_steps_link_at", "store_link_id", "at"),
                      Index("ix_activation_steps_consumer_key", "consumer_key"))

    id: Mapped[int] = mapped_column(primary_key=True)
    store_link_id: Mapped[int | None] = mapped_column(ForeignKey("store_links.id", ondelete="CASCADE"))
    activation_id: Mapped[int | None] = mapped_column(ForeignKey("activations.id", ondelete="CASCADE"), index=True)
    #: Only for a pop-up whose callback never arrived (no link to hang it on yet). Not a secret:
    #: Magento puts it in the pop-up's address.
    consumer_key: Mapped[str | None] = mapped_column(String(32))
    step: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    #: Magento's HTTP status and message, as it answered.
    status: Mapped[int | None] = mapped_column(Integer)
    answer: Mapped[str | None] = mapped_column(String(MAX_ANSWER))
    #: Ours: the profile tried, the time left of the window, who logged in.
    detail: Mapped[str | None] = mapped_column(String(MAX_DETAIL))

    store_link: Mapped[StoreLink | None] = relationship()
    activation: Mapped[Activation | None] = relationship()

    @property
    def title(self) -> str:
        return STEP_TITLES.get(self.step, self.step)


def _bounded(text: str | None, limit: int, secrets: tuple[str, ...] = ()) -> str | None:
    if not text:
        return None
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = neutralised(" ".join(text.split()))  # text.py's rule; one line
    return text if len(text) <= limit else text[:limit - 1] + "…"


def record_step(step: str, outcome: str, *, link: StoreLink | None = None, activation: Activation | None = None,
                consumer_key: str | None = None, started: float | None = None, status: int | None = None,
                answer: str | None = None, detail: str | None = None, cause: str | None = None,
                remote_addr: str | None = None, secrets: tuple[str, ...] = ()) -> ActivationStep:
    """Add one step to the session; the caller commits it with the work it records. ``started`` is a
    ``time.perf_counter()`` reading; ``secrets`` are blanked out of the texts should a store echo one."""
    row = ActivationStep(
        store_link=link, activation=activation, consumer_key=consumer_key if link is None else None, step=step,
        outcome=outcome, cause=cause, remote_addr=(remote_addr or None) and remote_addr[:64],
        duration_ms=None if started is None else max(int((time.perf_counter() - started) * 1000), 0),
        status=status, answer=_bounded(answer, MAX_ANSWER, secrets), detail=_bounded(detail, MAX_DETAIL, secrets))
    db.session.add(row)
    return row


# --- Magento's window -------------------------------------------------------------------

def window() -> int:
    """Seconds Magento gives the token exchange (``oauth/consumer/expiration_period``)."""
    return int(current_app.config["ACTIVATION_WINDOW"])


def seconds_left(activation: Activation, now: dt.datetime | None = None) -> int:
    """Our estimate of the window left, counted from the callback's arrival (Magento counts from
    just before it posts, so its window closes a little earlier than ours: see ``MARGIN``)."""
    ends = activation.received_at + dt.timedelta(seconds=window())
    return int((ends - (now or utcnow())).total_seconds()) - MARGIN


#: The callback reaches us a moment after Magento starts its clock (up to its 5 s timeout);
#: counting those seconds as gone keeps "time left" from promising what Magento will refuse.
MARGIN = 2


def window_passed(activation: Activation) -> bool:
    return seconds_left(activation) <= 0


# --- causes -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Cause:
    code: str
    title: str  # for the operator
    plain: str  # for the store admin, in the pop-up
    fix: str  # the exact thing to do


CHECKLIST = (
    "The integration's Callback URL in Magento is exactly {callback_url} and the store's server can reach it "
    "(firewall, DNS).",
    "Our TLS certificate is valid and issued by an authority the store's server trusts (Magento refuses "
    "self-signed certificates).",
    "The Callback URL answers without a redirect (Magento does not follow one, and the data is lost).",
    "We answer within 5 seconds (Magento gives up after that).",
    "The integration's Identity link URL is set; without it Magento sends no callback at all.",
)

#: Magento's grid reads "Activate" for an Inactive integration and "Reauthorize" otherwise
#: (``Block/Adminhtml/Widget/Grid/Column/Renderer/Link/Activate.php``), and a Reauthorize sets the
#: integration Inactive until an exchange succeeds: after a failed one the button reads Activate.
#: Either posts the callback again and restarts the window.
RESTART = ("click Activate on this integration (Reauthorize, if its row shows that instead): either starts a new "
           "window")

CAUSES = {c.code: c for c in (
    Cause("expired", "Magento's activation window had passed",
          "Magento lets us finish linking only within a few minutes of clicking Activate or Reauthorize, and "
          "that time has passed.",
          f"In Magento's admin, open System › Extensions › Integrations and {RESTART}. Then log in here straight "
          "away."),
    Cause("no_callback", "Magento's callback never reached us",
          "Magento opened this window, but the store never sent us the integration's details.",
          "Work through the checklist below, then click Activate (or Reauthorize) on the integration again."),
    Cause("signature", "The store refused our signature",
          "The store could not verify our request.",
          "If the store is behind a proxy, load balancer or CDN, it must pass the Host header through unchanged "
          "and send X-Forwarded-Proto: https for HTTPS, and the store's base URL must be the address we reach it "
          f"at. Then, in Magento's admin, {RESTART}."),
    Cause("acl", "The integration lacks an API permission",
          "The store refused a request because the integration was not given access to it.",
          "In Magento's admin, open System › Extensions › Integrations, edit this integration, and on its API tab "
          "tick the resource named above (or set Resource Access to All). Save with your admin password; the next "
          "call uses the new permission."),
    Cause("unreachable", "We could not reach the store",
          "We could not connect to your store.",
          "Check that the store is online at its base URL, that its address resolves from our server, and that its "
          f"TLS certificate is valid for that name. Then, in Magento's admin, {RESTART}."),
    Cause("deleted", "The integration no longer exists in Magento",
          "The store does not know this integration any more (it was deleted).",
          "Create the integration again in Magento with our Callback and Identity link URLs and click Activate."),
    Cause("used", "This activation was already used or replaced",
          "This activation was already used or replaced by a newer one.",
          f"In Magento's admin, {RESTART}."),
    Cause("clock", "The clocks disagree",
          "Our clock and the store's disagree by more than 10 minutes.",
          f"Check NTP on both servers; then, in Magento's admin, {RESTART}."),
    Cause("not_magento", "Something other than Magento answered",
          "Your store's address answered with something that is not Magento.",
          "Check that the store's base URL points at Magento 2, not at a maintenance page, proxy or redirect; "
          f"then, in Magento's admin, {RESTART}."),
    Cause("refused", "The store refused the token exchange",
          "Your store refused to link.",
          f"In Magento's admin, {RESTART}, and log in again; if it fails the same way, Magento's exception log "
          "has the details."),
)}


def cause_of(exc: errors.MagentoError) -> str:
    """Which cause a failure talking to the store points at."""
    for kind, code in ((errors.ConsumerExpired, "expired"), (errors.InvalidSignature, "signature"),
                       (errors.SignatureRejected, "signature"), (errors.NotAuthorized, "acl"),
                       (errors.UnknownConsumer, "deleted"), (errors.TokenAlreadyUsed, "used"),
                       (errors.VerifierRejected, "used"), (errors.ClockSkew, "clock"),
                       (errors.StoreUnreachable, "unreachable"), (errors.UnsafeStoreURL, "unreachable"),
                       (errors.BadStoreResponse, "not_magento")):
        if isinstance(exc, kind):
            return code
    return "refused"


def answer_of(exc: errors.MagentoError) -> str:
    """What the store said (Magento's own text where it gave one), or what we saw."""
    return exc.problem if isinstance(exc, errors.OAuthProblem) else exc.message


# --- what the pop-up and the exchange record ----------------------------------------------

def popup_opened(link: StoreLink | None, activation: Activation | None, consumer_key: str,
                 remote_addr: str | None) -> str:
    """The pop-up was opened; commits and returns what the admin must be told: ``OK`` (go on),
    ``"expired"`` or ``"no_callback"``. Magento opens the pop-up right after posting the callback,
    so a pop-up once the window has passed means this click's callback did not reach us, unless it
    is the same pop-up reloaded (one we saw within the window, for an exchange still to run)."""
    if activation is None:
        _orphan_popup(consumer_key, remote_addr)
        return "no_callback"
    seen = _has(activation, POPUP, OK)
    left = seconds_left(activation)
    finished = activation.state in (Activation.LINKED, Activation.SUPERSEDED)
    if left > 0:
        verdict = OK
        if not seen:
            record_step(POPUP, OK, link=link, activation=activation, remote_addr=remote_addr,
                        detail=f"{left} s left of Magento's {window()} s window")
    elif seen and not finished:
        verdict = "expired"
        if not _has(activation, POPUP, SKIPPED):
            record_step(POPUP, SKIPPED, link=link, activation=activation, remote_addr=remote_addr, cause="expired",
                        detail=f"reopened {-left} s after Magento's window closed")
    else:
        verdict = "no_callback"
        if not _has(activation, POPUP, FAILED):
            record_step(POPUP, FAILED, link=link, activation=activation, remote_addr=remote_addr,
                        cause="no_callback",
                        detail=f"the last callback arrived {_ago(activation.received_at)}; Magento posts one right "
                               "before it opens the pop-up, so this one did not reach us")
    db.session.commit()
    return verdict


def _has(activation: Activation, step: str, outcome: str) -> bool:
    """Whether this step was recorded since the activation's latest callback (Activate clicked
    again reuses the verifier, so the same activation, and restarts the window)."""
    return db.session.scalar(select(ActivationStep.id).where(
        ActivationStep.activation_id == activation.id, ActivationStep.step == step,
        ActivationStep.outcome == outcome, ActivationStep.at >= activation.received_at).limit(1)) is not None


def _orphan_popup(consumer_key: str, remote_addr: str | None) -> None:
    """A pop-up for a key we have no callback for. Anyone can open that address, so: once per key
    per window, at most ``MAX_ORPHANS`` of them (the oldest deleted as new ones come), each kept a day."""
    now = utcnow()
    orphan = ActivationStep.store_link_id.is_(None)
    old = orphan & (ActivationStep.at < now - ORPHAN_KEEP)
    # Look before deleting: on SQLite a DELETE takes the write lock even when it matches nothing.
    if db.session.scalar(select(ActivationStep.id).where(old).limit(1)) is not None:
        db.session.execute(delete(ActivationStep).where(old).execution_options(synchronize_session=False))
    recent = db.session.scalar(select(ActivationStep.id).where(
        orphan, ActivationStep.consumer_key == consumer_key,
        ActivationStep.at >= now - dt.timedelta(seconds=window())).limit(1))
    if recent is None:
        # At the cap the oldest make room: a flood of made-up keys must not keep a real one out.
        count = db.session.scalar(select(func.count()).select_from(ActivationStep).where(orphan))
        if count >= MAX_ORPHANS:
            oldest = select(ActivationStep.id).where(orphan).order_by(ActivationStep.id).limit(count - MAX_ORPHANS + 1)
            db.session.execute(delete(ActivationStep).where(ActivationStep.id.in_(oldest))
                               .execution_options(synchronize_session=False))
        record_step(POPUP, FAILED, consumer_key=consumer_key, remote_addr=remote_addr, cause="no_callback",
                    detail="no callback has ever arrived for this consumer key")
    db.session.commit()


def login(link: StoreLink, activation: Activation, *, user: User | None, remote_addr: str | None,
          refused: str | None = None, detail: str = "", commit: bool = True) -> None:
    """The admin's login in the pop-up. Only the account's own address, never what was typed.
    ``commit=False`` when the exchange follows: its claim commits the step with it."""
    if refused is not None:
        record_step(LOGIN, FAILED, link=link, activation=activation, remote_addr=remote_addr, answer=refused)
    else:
        record_step(LOGIN, OK, link=link, activation=activation, remote_addr=remote_addr,
                    detail=f"as {user.email}" + (f" ({detail})" if detail else "") if user else detail)
    if commit:
        db.session.commit()


def refused_call(link: StoreLink, exc: errors.MagentoError, profile: str | None, remote_addr: str | None) -> None:
    """A call to a linked store refused (for a permission, a signature, or a failed test call); the
    caller commits. The same refusal again within the hour adds nothing: a service retrying a
    refused call does not fill the table."""
    answer = answer_of(exc)
    last = db.session.scalar(select(ActivationStep).where(
        ActivationStep.store_link_id == link.id, ActivationStep.step == API_CALL)
        .order_by(ActivationStep.at.desc(), ActivationStep.id.desc()).limit(1))
    if (last is not None and last.outcome == FAILED and last.answer == _bounded(answer, MAX_ANSWER)
            and last.at >= utcnow() - dt.timedelta(hours=1)):
        return
    detail = f"signed with profile {profile}" if profile else None
    resources = exc.parameters.get("resources") if isinstance(getattr(exc, "parameters", None), dict) else None
    if resources:
        detail = f"resource to tick: {resources}"
    record_step(API_CALL, FAILED, link=link, status=exc.status, answer=answer, detail=detail, cause=cause_of(exc),
                remote_addr=remote_addr)


# --- reading it back --------------------------------------------------------------------

@dataclass
class Diagnosis:
    cause: Cause | None
    #: The step that shows the cause, if any.
    evidence: ActivationStep | None
    #: Oldest first, grouped by activation (``None``: not part of one).
    groups: list[tuple[Activation | None, list[ActivationStep]]] = field(default_factory=list)
    seconds_left: int | None = None


def steps_of(link: StoreLink, limit: int = 200) -> list[ActivationStep]:
    """The link's latest steps, oldest first, with the pop-ups opened for its key before any
    callback arrived."""
    rows = db.session.scalars(
        select(ActivationStep).where(or_(ActivationStep.store_link_id == link.id,
                                         (ActivationStep.store_link_id.is_(None))
                                         & (ActivationStep.consumer_key == link.consumer_key)))
        .order_by(ActivationStep.at.desc(), ActivationStep.id.desc()).limit(limit)).all()
    return rows[::-1]


def diagnose(link: StoreLink) -> Diagnosis:
    """The timeline of ``link``'s activations and the one thing to fix, read from the newest step
    that went wrong, unless a later step shows the link working again."""
    steps = steps_of(link)
    groups: list[tuple[Activation | None, list[ActivationStep]]] = []
    for step in steps:
        if groups and groups[-1][0] is step.activation:
            groups[-1][1].append(step)
        else:
            groups.append((step.activation, [step]))
    evidence = None
    for step in reversed(steps):
        if step.outcome == OK and step.step in (CALLBACK, ACCESS_TOKEN, API_CALL):
            break  # a new callback, or the link working, after anything older went wrong
        if step.outcome != OK and step.cause:
            evidence = step
            break
    current = link.activations[0] if link.activations else None
    left = None
    if current is not None and current.state in (Activation.RECEIVED, Activation.FAILED):
        left = seconds_left(current)
    return Diagnosis(CAUSES.get(evidence.cause) if evidence else None, evidence, groups, left)


def orphan_popups(limit: int = 50) -> list[ActivationStep]:
    """Pop-ups opened for keys no callback has brought us yet (newest first); once one arrives they
    show in that store's timeline instead."""
    return list(db.session.scalars(
        select(ActivationStep).where(ActivationStep.store_link_id.is_(None),
                                     ActivationStep.consumer_key.not_in(select(StoreLink.consumer_key)))
        .order_by(ActivationStep.at.desc(), ActivationStep.id.desc()).limit(limit)))


def checklist() -> list[str]:
    from .web import public_url_for

    return [item.format(callback_url=public_url_for("callback.receive")) for item in CHECKLIST]


# --- the test POST ------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeResult:
    url: str
    ok: bool
    status: int | None
    ms: int
    answer: str

    def summary(self) -> str:
        head = f"HTTP {self.status}" if self.status else "no answer"
        return f"Test POST to {self.url}: {head} in {self.ms} ms. {self.answer}"


def send_test_post(*, user: User, remote_addr: str | None) -> ProbeResult:
    """POST a harmless form to our own public callback URL, as Magento would (5 s in all, no
    redirects followed), and audit it. The session connects to our own host only; the callback
    recognises ``PROBE_FIELD`` and stores nothing."""
    from .web import public_url_for

    url = public_url_for("callback.receive")
    host = urlsplit(url).hostname or ""
    session = safe_session(StorePolicy((host,), strict=True), pool_size=1, hosts=1)
    session.headers["User-Agent"] = "Laminas\\Http\\Client"  # what Magento 2.4 sends
    started = time.perf_counter()
    status, ok = None, False
    try:
        response = send(session, "POST", url, timeout=(PROBE_DEADLINE, PROBE_DEADLINE),
                        deadline=Deadline(PROBE_DEADLINE), max_bytes=MAX_PROBE_ANSWER, data={PROBE_FIELD: "1"})
        status = response.status_code
        text = response.content.decode("utf-8", "replace").strip()
        ok = status == 200
        answer = f"Our callback answered: {text[:200]!r}." if text else "Our callback answered with an empty body."
        if not ok:
            answer += " Magento ignores the status, but anything other than our 200 means something else answered."
    except errors.StoreTimeout:
        answer = f"No answer within {PROBE_DEADLINE:g} s: Magento would give up and store nothing."
    except errors.BadStoreResponse as exc:
        status = exc.status
        answer = ("The callback URL answered with a redirect; Magento does not follow it, so the data would be "
                  f"lost. Use the address it redirects to. ({exc.message})")
    except errors.StoreUnreachable as exc:
        if "TLS" in exc.message:
            answer = (f"The TLS handshake failed: our certificate for {host} is not valid or not trusted "
                      "(Magento refuses it too).")
        else:
            answer = f"Could not connect to {host}: check the public address, DNS and firewall."
    except errors.MagentoError as exc:
        answer = exc.message
    finally:
        session.close()
    result = ProbeResult(url, ok, status, int((time.perf_counter() - started) * 1000), answer)
    audit("doctor.test_post", user=user, remote_addr=remote_addr,
          detail=f"{url}: {'HTTP %s' % status if status else 'no answer'} in {result.ms} ms")
    db.session.commit()
    return result


def _ago(when: dt.datetime) -> str:
    seconds = int((utcnow() - when).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"
