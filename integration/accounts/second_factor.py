"""The second step of a login, between ``logins.verify_password`` and ``logins.complete_login``, for
``/auth/login`` and the identity pop-up alike: an authenticator app's code (TOTP), a recovery code, or a
passkey (WebAuthn). Also enrolment, removal, an admin's reset, and the policy of who must have one.

Between the two steps the signed cookie session holds only "this account's password was right" and where
to go afterwards; nothing is logged in until the second step passes. Wrong codes spend the same budget as
wrong passwords. The last accepted TOTP time-step is kept per account in the database, so a code cannot
be used twice (on any worker).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlsplit

import pyotp
import segno
import webauthn
from flask import current_app, request, session
from sqlalchemy import delete, func, or_, select, update
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import AuthenticatorSelectionCriteria, PublicKeyCredentialDescriptor, \
    ResidentKeyRequirement, UserVerificationRequirement

from ..extensions import db
from ..models import Passkey, RecoveryCode, User, WebAuthnChallenge, audit, utcnow
from . import logins, sessions

PENDING_KEY = "pending_login"
CHALLENGE_KEY = "webauthn_challenge"
PENDING_FOR = 300  # seconds between the password and the second step
CHALLENGE_FOR = dt.timedelta(minutes=5)
RECOVERY_CODES = 10
ISSUER = "Integration Companion"
POLICIES = ("admins", "all", "off")
MAX_CREDENTIAL_JSON = 64 * 1024
_clock = time.time  # the TOTP clock (tests set it, so a code's time-step does not depend on when they run)


class SecondFactorError(Exception):
    """A second-factor action refused; ``str()`` is what the person is told."""


class WrongSecondFactor(logins.LoginRefused):
    def __init__(self) -> None:
        super().__init__("That code or passkey did not work. Try again.")


class NoPendingLogin(logins.LoginRefused):
    def __init__(self) -> None:
        super().__init__("Log in with your password first (the second step waits five minutes).")


# --- policy ----------------------------------------------------------------------------

def has_second_factor(user: User) -> bool:
    if user.totp_enrolled_at is not None:
        return True
    return bool(db.session.scalar(select(func.count()).select_from(Passkey).where(Passkey.user_id == user.id)))


def required(user: User) -> bool:
    policy = current_app.config.get("REQUIRE_2FA", "admins")
    return policy == "all" or (policy == "admins" and user.is_admin)


# --- the login's second step -----------------------------------------------------------

def log_in(email: str, password: str, resume: dict[str, str]) -> bool:
    """The password step. ``True``: logged in. ``False``: the password was right and the account has a
    second factor; :func:`finish` completes the login and hands ``resume`` back."""
    user = logins.verify_password(email, password)
    if not has_second_factor(user):
        logins.complete_login(user)
        return True
    session.pop(CHALLENGE_KEY, None)
    session[PENDING_KEY] = {"user": user.id, "until": int(time.time()) + PENDING_FOR, "resume": resume}
    return False


def pending() -> tuple[User, dict[str, str]] | None:
    """The account whose password was just right, and where its login goes next."""
    state = session.get(PENDING_KEY)
    if not isinstance(state, dict) or state.get("until", 0) < time.time():
        return None
    user = db.session.get(User, state.get("user"))
    if user is None or not user.active:
        return None
    return user, dict(state.get("resume") or {})


def pending_has_passkey() -> bool:
    found = pending()
    return bool(found and passkeys(found[0]))


def finish(code: str | None, passkey: str | None) -> dict[str, str]:
    """The second step: a TOTP code, a recovery code or a passkey assertion. Logs in and returns the
    pending login's ``resume``; a failure is counted against the password budget and audited."""
    found = pending()
    if found is None:
        raise NoPendingLogin()
    user, resume = found
    budget = logins.budget_for(user)
    budget.check()
    ok = False
    if passkey:
        ok = _verify_assertion(passkey, user) is not None
    elif code:
        ok = _accept_totp(user, code) or _use_recovery_code(user, code)
    if not ok:
        budget.spend()
        audit("2fa.failed", user=user, remote_addr=request.remote_addr, detail="passkey" if passkey else "code")
        db.session.commit()
        raise WrongSecondFactor()
    logins.complete_login(user)
    return resume


def sign_in_with_passkey(credential: str) -> User:
    """A login without a password: a passkey (with user verification) is both factors."""
    user = _verify_assertion(credential, None)
    if user is None or not user.active:
        audit("2fa.failed", user=user, remote_addr=request.remote_addr, detail="passkey sign-in")
        db.session.commit()
        raise WrongSecondFactor()
    logins.complete_login(user)
    return user


# --- TOTP ------------------------------------------------------------------------------

def start_totp(user: User, *, fresh: bool = True) -> tuple[str, str]:
    """A not yet confirmed secret (a new one unless ``fresh`` is false: a mistyped code keeps the one
    the app has scanned): (QR code as an SVG data URI, the secret for typing in)."""
    if user.totp_enrolled_at is not None:
        raise SecondFactorError("An authenticator app is already set up; remove it first.")
    if fresh or not user.totp_secret:
        user.totp_secret = pyotp.random_base32()
        db.session.commit()
    uri = pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2), user.totp_secret


def confirm_totp(user: User, code: str) -> list[str]:
    """The typed code proves the app holds the secret. Returns the recovery codes (shown once)."""
    if user.totp_enrolled_at is not None:
        raise SecondFactorError("An authenticator app is already set up.")
    if not user.totp_secret:
        raise SecondFactorError("Start again: scan the QR code first.")
    if not _accept_totp(user, code, enrolling=True):
        raise SecondFactorError("That code is not the one the app shows now. Check the phone's clock and retry.")
    user.totp_enrolled_at = utcnow()
    codes = _new_recovery_codes(user)
    audit("2fa.totp_enrolled", user=user, remote_addr=request.remote_addr)
    db.session.commit()
    return codes


def remove_totp(user: User) -> None:
    user.totp_secret = None
    user.totp_enrolled_at = None
    user.totp_last_step = None
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit("2fa.totp_removed", user=user, remote_addr=request.remote_addr)
    db.session.commit()


def _accept_totp(user: User, code: str, *, enrolling: bool = False) -> bool:
    """Right code for the previous, current or next 30 s step, and a later step than the last one used.
    The conditional update makes two requests with one code race to a single winner."""
    code = "".join(code.split())
    # isascii: other scripts' digits pass isdigit(), and compare_digest raises on non-ASCII text (a 500).
    if not (code.isascii() and code.isdigit() and len(code) == 6) or not user.totp_secret:
        return False
    if not enrolling and user.totp_enrolled_at is None:
        return False
    totp = pyotp.TOTP(user.totp_secret)
    now = int(_clock()) // totp.interval
    for step in (now - 1, now, now + 1):
        if hmac.compare_digest(totp.at(step * totp.interval), code):
            won = db.session.execute(
                update(User).where(User.id == user.id,
                                   or_(User.totp_last_step.is_(None), User.totp_last_step < step))
                .values(totp_last_step=step).execution_options(synchronize_session=False)).rowcount
            if won:
                user.totp_last_step = step
            return bool(won)
    return False


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _new_recovery_codes(user: User) -> list[str]:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = secrets.token_hex(5)
        codes.append(f"{raw[:5]}-{raw[5:]}")
        db.session.add(RecoveryCode(user_id=user.id, code_hash=_digest(raw)))
    return codes


def _use_recovery_code(user: User, code: str) -> bool:
    normal = "".join(c for c in code.lower() if c.isalnum())
    if len(normal) != 10:
        return False
    used = db.session.execute(
        update(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.code_hash == _digest(normal),
                                   RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    if used:
        left = db.session.scalar(select(func.count()).select_from(RecoveryCode).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)))
        audit("2fa.recovery_code_used", user=user, remote_addr=request.remote_addr, detail=f"{left} left")
    return bool(used)


def recovery_codes_left(user: User) -> int:
    return db.session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))) or 0


# --- passkeys --------------------------------------------------------------------------

def relying_party() -> tuple[str, str]:
    """(RP id, origin): from ``INTEGRATION_PUBLIC_URL``, else (development) the address asked for."""
    base = current_app.config.get("PUBLIC_URL") or request.host_url.rstrip("/")
    parts = urlsplit(base)
    return parts.hostname or "localhost", f"{parts.scheme}://{parts.netloc}"


def registration_options(user: User) -> str:
    rp_id, _ = relying_party()
    options = webauthn.generate_registration_options(
        rp_id=rp_id, rp_name=ISSUER, user_name=user.email, user_id=str(user.id).encode(),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=webauthn.base64url_to_bytes(p.credential_id))
                             for p in passkeys(user)],
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.REQUIRED))
    _keep_challenge("register", user, options.challenge)
    return webauthn.options_to_json(options)


def authentication_options() -> str:
    """For the pending login's account (its passkeys), or for a passwordless sign-in (any passkey)."""
    rp_id, _ = relying_party()
    found = pending()
    user = found[0] if found else None
    allow = [PublicKeyCredentialDescriptor(id=webauthn.base64url_to_bytes(p.credential_id))
             for p in passkeys(user)] if user else []
    options = webauthn.generate_authentication_options(
        rp_id=rp_id, allow_credentials=allow, user_verification=UserVerificationRequirement.REQUIRED)
    _keep_challenge("authenticate", user, options.challenge)
    return webauthn.options_to_json(options)


def register_passkey(user: User, credential: str, name: str) -> Passkey:
    challenge = _take_challenge("register", user)
    rp_id, origin = relying_party()
    if challenge is None or len(credential) > MAX_CREDENTIAL_JSON:
        raise SecondFactorError("The passkey request expired; try again.")
    try:
        verified = webauthn.verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp_id, expected_origin=origin,
            require_user_verification=True)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        db.session.commit()
        raise SecondFactorError("The browser's answer could not be verified; try again.") from None
    passkey = Passkey(user_id=user.id, credential_id=bytes_to_base64url(verified.credential_id),
                      public_key=bytes_to_base64url(verified.credential_public_key),
                      sign_count=verified.sign_count, name=(name or "Passkey").strip()[:100] or "Passkey")
    db.session.add(passkey)
    audit("2fa.passkey_added", user=user, remote_addr=request.remote_addr, detail=passkey.name)
    db.session.commit()
    return passkey


def remove_passkey(user: User, passkey_id: int) -> bool:
    passkey = db.session.scalar(select(Passkey).where(Passkey.id == passkey_id, Passkey.user_id == user.id))
    if passkey is None:
        return False
    db.session.delete(passkey)
    audit("2fa.passkey_removed", user=user, remote_addr=request.remote_addr, detail=passkey.name)
    db.session.commit()
    return True


def accounts_with_passkeys() -> set[int]:
    return set(db.session.scalars(select(Passkey.user_id).distinct()))


def passkeys(user: User) -> list[Passkey]:
    return list(db.session.scalars(select(Passkey).where(Passkey.user_id == user.id).order_by(Passkey.id)))


def _verify_assertion(credential: str, user: User | None) -> User | None:
    """The account the assertion proves (``user``'s own passkey when given), or ``None``. The sign
    counter must grow (the library refuses a counter that does not: a cloned authenticator)."""
    challenge = _take_challenge("authenticate", user)
    if challenge is None or len(credential) > MAX_CREDENTIAL_JSON:
        return None
    try:
        raw_id = json.loads(credential).get("id")
    except (ValueError, AttributeError):
        return None
    query = select(Passkey).where(Passkey.credential_id == str(raw_id)[:1400])
    if user is not None:
        query = query.where(Passkey.user_id == user.id)
    passkey = db.session.scalar(query)
    if passkey is None:
        return None
    rp_id, origin = relying_party()
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp_id, expected_origin=origin,
            credential_public_key=webauthn.base64url_to_bytes(passkey.public_key),
            credential_current_sign_count=passkey.sign_count, require_user_verification=True)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        return None
    passkey.sign_count = verified.new_sign_count
    passkey.last_used_at = utcnow()
    return db.session.get(User, passkey.user_id)


def _keep_challenge(purpose: str, user: User | None, challenge: bytes) -> None:
    now = utcnow()
    db.session.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at < now))
    token = secrets.token_urlsafe(32)
    db.session.add(WebAuthnChallenge(id=_digest(token), purpose=purpose, user_id=user.id if user else None,
                                     challenge=bytes_to_base64url(challenge), expires_at=now + CHALLENGE_FOR))
    db.session.commit()
    session[CHALLENGE_KEY] = token


def _take_challenge(purpose: str, user: User | None) -> bytes | None:
    """This browser's challenge, once: the row is deleted whether or not the answer verifies."""
    token = session.pop(CHALLENGE_KEY, None)
    if not isinstance(token, str):
        return None
    row = db.session.get(WebAuthnChallenge, _digest(token))
    if row is None:
        return None
    db.session.delete(row)
    db.session.flush()
    # A challenge made for a pending login's account answers only for it; one made for nobody (or, after
    # "back" from the second step, for the pending account) serves a passwordless sign-in.
    if row.purpose != purpose or row.expires_at < utcnow() or (user is not None and row.user_id != user.id):
        return None
    return webauthn.base64url_to_bytes(row.challenge)


# --- an admin's reset ------------------------------------------------------------------

def reset(user: User, *, by: User | None = None, remote_addr: str | None = None) -> None:
    """Every second factor of ``user`` goes, and every session of it ends: the owner logs in with the
    password alone and (if the policy requires) enrols again. For an owner who lost the phone."""
    user.totp_secret = None
    user.totp_enrolled_at = None
    user.totp_last_step = None
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.session.execute(delete(Passkey).where(Passkey.user_id == user.id))
    sessions.end_all(user)
    audit("2fa.reset", user=by, remote_addr=remote_addr, detail=user.email)
    db.session.commit()
