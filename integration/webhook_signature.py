"""Signing and verifying our webhook deliveries (Stripe's scheme).

Every delivery carries ``Companion-Signature: t=<unix time>,v1=<hex HMAC-SHA256>``, the HMAC
keyed with the endpoint's secret over ``"<t>.<raw body>"``. While a secret is being rotated the
header has one ``v1`` per valid secret, so a receiver holding either one accepts it.

This module uses only the standard library: a receiver may copy it as it is.

    from webhook_signature import SignatureError, verify_signature

    try:
        verify_signature(SECRET, request.headers["Companion-Signature"], request.get_data())
    except SignatureError:
        abort(400)
    event = json.loads(request.get_data())   # then dedupe by event["id"]
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

HEADER = "Companion-Signature"
SCHEME = "v1"
#: A header longer than this is not one we sent; it is refused before any parsing.
MAX_HEADER_LENGTH = 4096


class SignatureError(Exception):
    """The delivery cannot be trusted; the message says why."""


class MalformedHeader(SignatureError):
    """The header is missing, too long, or has no timestamp or no ``v1``."""


class TimestampOutsideTolerance(SignatureError):
    """Signed too long ago (or too far ahead): possibly a replay of an old delivery."""


class NoMatchingSignature(SignatureError):
    """No ``v1`` in the header matches the body signed with this secret."""


def compute(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secrets: Iterable[str], body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body``: one ``v1`` per secret (newest first)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return ",".join([f"t={t}"] + [f"{SCHEME}={compute(s, t, body)}" for s in secrets])


def verify_signature(secret: str, header: str | None, body: bytes, tolerance: int = 300,
                     now: float | None = None) -> int:
    """Check ``header`` against the raw ``body``; returns the signed timestamp.

    Raises ``MalformedHeader``, ``TimestampOutsideTolerance`` (``tolerance`` seconds either
    way; 0 disables the check) or ``NoMatchingSignature``, all ``SignatureError``.
    """
    if not header:
        raise MalformedHeader(f"no {HEADER} header")
    if len(header) > MAX_HEADER_LENGTH:
        raise MalformedHeader(f"{HEADER} header is longer than {MAX_HEADER_LENGTH} characters")
    if isinstance(body, str):
        body = body.encode()
    timestamp, signatures = None, []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise MalformedHeader(f"{HEADER} timestamp is not a number") from None
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise MalformedHeader(f"{HEADER} header has no timestamp (t=)")
    if not signatures:
        raise MalformedHeader(f"{HEADER} header has no {SCHEME} signature")
    current = time.time() if now is None else now
    if tolerance and abs(current - timestamp) > tolerance:
        raise TimestampOutsideTolerance(
            f"signed {int(current - timestamp)} s ago, outside the {tolerance} s tolerance")
    expected = compute(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise NoMatchingSignature(f"no {SCHEME} signature in the header matches this body and secret")
    return timestamp
