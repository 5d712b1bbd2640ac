"""A software passkey (WebAuthn authenticator) for tests without a browser: an ES256 key pair that answers
the options our pages hand out, with "none" attestation, exactly as a platform authenticator would (the
browser tests use Chromium's virtual authenticator instead)."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SoftPasskey:
    def __init__(self, origin: str = "http://localhost", sign_count: int = 0):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(16)
        self.origin = origin
        self.sign_count = sign_count
        self.user_handle: str | None = None

    @property
    def id(self) -> str:
        return b64url(self.credential_id)

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin or self.origin,
                           "crossOrigin": False}).encode()

    def register(self, options: str | dict, *, origin: str | None = None, verified: bool = True,
                 rp_id: str | None = None) -> str:
        """The browser's answer to registration ``options`` (a JSON string or dict)."""
        options = json.loads(options) if isinstance(options, str) else options
        numbers = self.key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})
        flags = 0x01 | (0x04 if verified else 0) | 0x40  # user present, verified, attested credential data
        auth_data = (hashlib.sha256((rp_id or options["rp"]["id"]).encode()).digest() + bytes([flags])
                     + self.sign_count.to_bytes(4, "big") + bytes(16) + len(self.credential_id).to_bytes(2, "big")
                     + self.credential_id + cose)
        self.user_handle = options["user"]["id"]
        return json.dumps({"id": self.id, "rawId": self.id, "type": "public-key", "clientExtensionResults": {},
                           "response": {
                               "clientDataJSON": b64url(self._client_data("webauthn.create", options["challenge"],
                                                                          origin)),
                               "attestationObject": b64url(cbor2.dumps({"fmt": "none", "attStmt": {},
                                                                        "authData": auth_data}))}})

    def answer(self, options: str | dict, *, origin: str | None = None, verified: bool = True,
               count_by: int = 1, rp_id: str | None = None) -> str:
        """The browser's answer to authentication ``options``; the sign counter moves on by ``count_by``."""
        options = json.loads(options) if isinstance(options, str) else options
        self.sign_count += count_by
        flags = 0x01 | (0x04 if verified else 0)
        auth_data = (hashlib.sha256((rp_id or options["rpId"]).encode()).digest() + bytes([flags])
                     + self.sign_count.to_bytes(4, "big"))
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return json.dumps({"id": self.id, "rawId": self.id, "type": "public-key", "clientExtensionResults": {},
                           "response": {"authenticatorData": b64url(auth_data), "clientDataJSON": b64url(client_data),
                                        "signature": b64url(signature), "userHandle": self.user_handle}})
