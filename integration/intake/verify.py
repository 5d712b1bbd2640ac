"""How each event module signs what it sends, checked on the raw body. Pure functions: no
Flask, no database, so each scheme is tested against bodies signed the way the module signs.

* ``aligent`` — aligent/magento-async-events, ``Service/AsyncEvent/HttpNotifier.php``:
  ``x-magento-signature: hash_hmac('sha256', $json->serialize($body), $verificationToken)``,
  lower-case hex; ``$body`` is ``['data' => $output]`` (``Service/AsyncEvent/EventDispatcher.php``)
  and Guzzle's ``'json' => $body`` sends the same ``json_encode`` bytes that were signed.
* ``adobe`` — Adobe Commerce webhooks, developer.adobe.com/commerce/extensibility/webhooks/
  signature-verification: ``x-adobe-commerce-webhook-signature`` is base64 of an RSA
  signature (SHA-256, PKCS#1 v1.5: Node's ``crypto.createVerify('SHA256')`` in Adobe's example)
  over the *base64 encoding of the request body*, verified with the public key from
  Stores > Configuration > Adobe Services > Webhooks. (The page's prose calls it "HMAC"; the
  example it gives, which is what Commerce does, is an RSA signature: the example wins.)
* ``secret`` — a module that signs nothing (Mageplaza's webhooks): a shared secret the admin
  puts in a custom header. The weakest option: anyone who sees one request can replay or forge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALIGENT, ADOBE, SECRET = "aligent", "adobe", "secret"
SOURCES = (ALIGENT, ADOBE, SECRET)
ALIGENT_HEADER = "x-magento-signature"
ADOBE_HEADER = "x-adobe-commerce-webhook-signature"
DEFAULT_SECRET_HEADER = "X-Webhook-Secret"
#: A signature header longer than this is not one (an RSA-8192 signature is 1,368 base64 characters).
MAX_SIGNATURE_CHARS = 2048
MAX_KEY_CHARS = 16 * 1024
MIN_RSA_BITS = 2048


class Refused(Exception):
    """The request is not from the store: the message says why (shown to operators, never a secret)."""


class BadKey(ValueError):
    """A pasted public key that is not an RSA public key in PEM."""


def _header(headers, name: str) -> str:
    value = headers.get(name)
    if not value:
        raise Refused(f"no {name} header")
    if len(value) > MAX_SIGNATURE_CHARS or not value.isascii():
        raise Refused(f"the {name} header is not a signature")
    return value.strip()


def aligent_signature(body: bytes, token: str) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def verify_aligent(body: bytes, headers, token: str) -> None:
    given = _header(headers, ALIGENT_HEADER).lower()
    if not hmac.compare_digest(given.encode(), aligent_signature(body, token).encode()):
        raise Refused(f"the {ALIGENT_HEADER} signature does not match the body")


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """The key as pasted from Commerce's configuration (``-----BEGIN PUBLIC KEY-----``)."""
    text = (pem or "").strip()
    if not text or len(text) > MAX_KEY_CHARS:
        raise BadKey("paste the public key (PEM, -----BEGIN PUBLIC KEY-----) from the store's webhook settings")
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise BadKey("this is not a PEM public key; copy the whole key, BEGIN and END lines included") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadKey("Adobe Commerce signs with RSA; this is another kind of key")
    if key.key_size < MIN_RSA_BITS:
        raise BadKey(f"an RSA key of {key.key_size} bits is too weak (at least {MIN_RSA_BITS})")
    return key


def key_fingerprint(pem: str) -> str:
    """SHA-256 of the key's DER form, as shown instead of the key."""
    der = load_public_key(pem).public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def verify_adobe(body: bytes, headers, public_key_pem: str) -> None:
    given = _header(headers, ADOBE_HEADER)
    try:
        signature = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"the {ADOBE_HEADER} header is not base64") from None
    try:
        key = load_public_key(public_key_pem)
    except BadKey:
        raise Refused("the store's public key kept here cannot be used; paste it again") from None
    try:
        key.verify(signature, base64.b64encode(body), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise Refused(f"the {ADOBE_HEADER} signature does not match the body") from None


def verify_secret(headers, header_name: str, secret: str) -> None:
    given = _header(headers, header_name)
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise Refused(f"the {header_name} header does not hold the shared secret")


def secret_fingerprint(secret: str) -> str:
    return hashlib.sha256(b"intake-secret:" + secret.encode()).hexdigest()
