"""The shipped webhook signature helper (``integration/webhook_signature.py``), as a receiver uses it:
the header's exact format (so a receiver in another language can check it), what is accepted and what is
refused and why. Pure functions, no app."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from integration.webhook_signature import (HEADER, MAX_HEADER_LENGTH, MalformedHeader, NoMatchingSignature,
                                           SignatureError, TimestampOutsideTolerance, sign, verify_signature)

BODY = b'{"id":"evt_1","type":"store.linked"}'
T = 1_700_000_000


def hmac_hex(secret: str, timestamp: int, body: bytes) -> str:
    """The documented scheme, written out independently: HMAC-SHA256(secret, "<t>.<body>") in hex."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def test_the_header_is_t_then_one_v1_per_secret_in_the_documented_format():
    assert HEADER == "Companion-Signature"
    assert sign(["whsec_new"], BODY, T) == f"t={T},v1={hmac_hex('whsec_new', T, BODY)}"
    assert sign(["whsec_new", "whsec_old"], BODY, T) == (
        f"t={T},v1={hmac_hex('whsec_new', T, BODY)},v1={hmac_hex('whsec_old', T, BODY)}")
    assert sign(["s"], BODY, T + 0.9) == f"t={T},v1={hmac_hex('s', T, BODY)}"  # whole seconds


def test_a_header_written_by_hand_to_the_spec_verifies():
    header = f"t={T},v1={hmac_hex('whsec_a', T, BODY)}"
    assert verify_signature("whsec_a", header, BODY, now=T) == T
    # Spaces after the commas, unknown schemes and items without "=" are ignored (a later scheme may add some).
    tolerant = f"t={T}, v0=abc, v1={hmac_hex('whsec_a', T, BODY)}, future"
    assert verify_signature("whsec_a", tolerant, BODY, now=T) == T
    assert verify_signature("whsec_a", f"t={T},v1={hmac_hex('whsec_a', T, BODY)},t", BODY, now=T) == T


def test_a_header_signed_now_verifies_with_the_real_clock_and_a_str_body():
    header = sign(["whsec_a"], BODY)
    assert abs(verify_signature("whsec_a", header, BODY) - time.time()) < 5
    assert verify_signature("whsec_a", header, BODY.decode()) == int(header[2:12])
    with pytest.raises(TimestampOutsideTolerance):
        verify_signature("whsec_a", sign(["whsec_a"], BODY, int(time.time()) - 400), BODY)


def test_during_a_rotation_either_secret_verifies_and_a_third_does_not():
    header = sign(["whsec_new", "whsec_old"], BODY, T)
    assert verify_signature("whsec_new", header, BODY, now=T) == T
    assert verify_signature("whsec_old", header, BODY, now=T) == T
    with pytest.raises(NoMatchingSignature, match="no v1 signature in the header matches this body and secret"):
        verify_signature("whsec_other", header, BODY, now=T)


def test_the_tolerance_is_inclusive_either_way_and_zero_disables_it():
    header = sign(["s"], BODY, T)
    assert verify_signature("s", header, BODY, now=T + 300) == T  # the default: 300 s
    assert verify_signature("s", header, BODY, now=T - 300) == T  # clocks a little ahead
    for now in (T + 301, T - 301):
        with pytest.raises(TimestampOutsideTolerance):
            verify_signature("s", header, BODY, now=now)
    assert verify_signature("s", header, BODY, tolerance=10, now=T + 10) == T
    with pytest.raises(TimestampOutsideTolerance, match="signed 11 s ago, outside the 10 s tolerance"):
        verify_signature("s", header, BODY, tolerance=10, now=T + 11)
    assert verify_signature("s", header, BODY, tolerance=0, now=T + 10**9) == T


def test_a_tampered_body_timestamp_or_signature_is_refused():
    header = sign(["s"], BODY, T)
    with pytest.raises(NoMatchingSignature):
        verify_signature("s", header, BODY + b" ", now=T)
    with pytest.raises(NoMatchingSignature):
        verify_signature("s", header.replace(f"t={T}", f"t={T + 1}"), BODY, now=T)
    with pytest.raises(NoMatchingSignature):
        verify_signature("s", header[:-1] + ("0" if header[-1] != "0" else "1"), BODY, now=T)
    with pytest.raises(NoMatchingSignature):  # another scheme's value is not a v1
        verify_signature("s", f"t={T},v0={hmac_hex('s', T, BODY)},v1=00", BODY, now=T)


@pytest.mark.parametrize("header, why", [
    (None, "no Companion-Signature header"),
    ("", "no Companion-Signature header"),
    (f"v1={'0' * 64}", "has no timestamp"),
    (f"t=soon,v1={'0' * 64}", "timestamp is not a number"),
    (f"t={T}", "has no v1 signature"),
    (f"t={T},v0=abc", "has no v1 signature"),
])
def test_malformed_headers_say_what_is_wrong(header, why):
    with pytest.raises(MalformedHeader, match=why) as refused:
        verify_signature("s", header, BODY, now=T)
    assert isinstance(refused.value, SignatureError)


def test_a_header_up_to_the_length_limit_is_read_and_one_longer_is_refused_unread():
    good = sign(["s"], BODY, T)
    longest = good + ",x=" + "a" * (MAX_HEADER_LENGTH - len(good) - 3)
    assert len(longest) == MAX_HEADER_LENGTH == 4096
    assert verify_signature("s", longest, BODY, now=T) == T
    with pytest.raises(MalformedHeader, match="longer than 4096"):
        verify_signature("s", longest + "a", BODY, now=T)
