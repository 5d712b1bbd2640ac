"""Signing requests for ``requests``: requests-oauthlib's ``OAuth1`` with Magento's base string.

oauthlib renders the ``Authorization: OAuth ...`` header, the timestamp and the parameter
list; only the signature itself (and a nonce Magento can store) differs from RFC 5849.
"""

from __future__ import annotations

import logging
import secrets
import time

import requests
from oauthlib.oauth1 import Client
from requests_oauthlib import OAuth1

from . import signing

# Both libraries log the Authorization header and the parameter list (access token
# included) at DEBUG; credentials must never reach a log.
for _name in ("oauthlib", "requests_oauthlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_NONCE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_nonce() -> str:
    """32 characters of ``[a-z0-9]``: what Magento's own generator makes and its column holds.

    From one read of the system's random source (oauthlib's ``generate_token`` reads it once per
    character, on every signed call); bytes of 252 and up are skipped, so that each character
    stays equally likely (252 = 7 x 36)."""
    chars: list[str] = []
    while len(chars) < 32:
        chars += [_NONCE_CHARS[b % 36] for b in secrets.token_bytes(40) if b < 252]
    return "".join(chars[:32])


class MagentoOAuthClient(Client):
    """oauthlib client that computes ``oauth_signature`` the way a given Magento generation does."""

    def __init__(self, *args, profile: str = signing.PROFILE_248, **kwargs):
        super().__init__(*args, **kwargs)
        if profile not in signing.PROFILES:
            raise ValueError(f"unknown signature profile {profile!r}")
        self.profile = profile

    def get_oauth_params(self, request):
        params = super().get_oauth_params(request)
        if self.nonce is None:  # a fresh nonce for every request, retries included
            params = [(k, new_nonce() if k == "oauth_nonce" else v) for k, v in params]
        return params

    def sign(self, uri, *args, **kwargs):
        # requests turns the %2E that segment() writes back into '.', and a '.' or '..' segment
        # is then resolved by whatever the request passes through. Put the escape back before
        # the URL is signed: what is signed is what is sent.
        return super().sign(_escape_dot_segments(uri), *args, **kwargs)

    def get_oauth_signature(self, request):
        content_type = request.headers.get("Content-Type")
        body = request.body if isinstance(request.body, str) else None
        return signing.sign(
            self.profile,
            request.http_method,
            request.uri,
            request.oauth_params,
            self.client_secret,
            self.resource_owner_secret,
            body=body,
            content_type=content_type,
        )


class MagentoOAuth1(OAuth1):
    """requests-oauthlib's ``OAuth1`` with the signed call's common case done directly.

    A request without a form body (every REST call but a form POST, both token steps) is signed
    here with what oauthlib would render: the same parameters in the same order, the same
    ``Authorization`` header, the URL with its dot segments escaped. oauthlib's general
    machinery (its request object, body sniffing, three header copies) cost more CPU than
    the signature itself on every proxied call. Anything else goes through oauthlib."""

    def __call__(self, r):
        content_type = r.headers.get("Content-Type")
        if not (isinstance(content_type, str) or content_type is None) or (
                signing.FORM_CONTENT_TYPE in (content_type or "")) or (not content_type and r.body) or (
                self.force_include_body):
            return super().__call__(r)
        client = self.client
        r.url = _escape_dot_segments(str(r.url))
        params = [("oauth_nonce", client.nonce or new_nonce()),
                  ("oauth_timestamp", client.timestamp or str(int(time.time()))),
                  ("oauth_version", "1.0"), ("oauth_signature_method", client.signature_method),
                  ("oauth_consumer_key", client.client_key)]
        if client.resource_owner_key:
            params.append(("oauth_token", client.resource_owner_key))
        if client.callback_uri:
            params.append(("oauth_callback", client.callback_uri))
        if client.verifier:
            params.append(("oauth_verifier", client.verifier))
        params.append(("oauth_signature", signing.sign(client.profile, str(r.method), r.url, params,
                                                       client.client_secret, client.resource_owner_secret,
                                                       content_type=content_type)))
        r.headers["Authorization"] = "OAuth " + ", ".join(f'{signing.enc(k)}="{signing.enc(v)}"'
                                                          for k, v in params)
        return r


def signed_url(url: str) -> str:
    """``url`` as it is sent and signed: requests re-quotes it (``%41`` becomes ``A``, ``%2E`` a
    dot) before the signing hook puts dot segments back as escapes."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return _escape_dot_segments(prepared.url)


def _escape_dot_segments(uri: str) -> str:
    """``.``/``..`` path segments as ``%2E``/``%2E%2E``. In a URL requests has prepared, such a
    segment can only come from an escape: literal ones were already resolved away."""
    start = uri.find("/", uri.find("://") + 3)
    if start < 0:
        return uri
    end = min((i for i in (uri.find("?", start), uri.find("#", start)) if i >= 0), default=len(uri))
    path = "/".join({".": "%2E", "..": "%2E%2E"}.get(part, part) for part in uri[start:end].split("/"))
    return uri[:start] + path + uri[end:]


def magento_auth(
    consumer_key: str,
    consumer_secret: str,
    token: str | None = None,
    token_secret: str | None = None,
    *,
    verifier: str | None = None,
    profile: str = signing.PROFILE_248,
) -> OAuth1:
    """A ``requests`` auth object that signs every request for a Magento store."""
    return MagentoOAuth1(
        consumer_key,
        client_secret=consumer_secret,
        resource_owner_key=token,
        resource_owner_secret=token_secret,
        verifier=verifier,
        signature_method=signing.SIGNATURE_METHOD,
        client_class=MagentoOAuthClient,
        decoding=None,
        profile=profile,
    )
