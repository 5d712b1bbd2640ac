"""OAuth 1.0a token exchange with a Magento store (the steps after the callback POST).

1. ``POST {store}oauth/token/request`` signed with the consumer key and secret.
2. ``POST {store}oauth/token/access`` signed with the request token and the verifier.

Magento answers both with ``http_build_query`` output whatever the Content-Type, and
errors as ``oauth_problem=...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import requests

from . import signing
from .errors import BadStoreResponse, oauth_problem
from .oauth import magento_auth
from .transport import DEFAULT_DEADLINE, Deadline, send

_TOKEN = re.compile(r"^[A-Za-z0-9]{1,255}$")
DEFAULT_TIMEOUT = (5.0, 20.0)
#: Magento answers both steps with a few hundred bytes.
MAX_TOKEN_ANSWER = 64 * 1024


@dataclass(frozen=True)
class Consumer:
    """The integration's consumer credentials, as POSTed to the callback."""

    key: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class AccessToken:
    token: str = field(repr=False)
    secret: str = field(repr=False)


class TokenExchange:
    """Runs the two token steps against one store; ``run`` does both within ``deadline`` seconds."""

    def __init__(self, session: requests.Session, *, timeout=DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE,
                 profile: str = signing.PROFILE_248):
        self.session = session
        self.timeout = timeout
        self.deadline = deadline
        self.profile = profile

    def request_token(self, base_url: str, consumer: Consumer, *, deadline: Deadline | None = None) -> tuple[str, str]:
        auth = magento_auth(consumer.key, consumer.secret, profile=self.profile)
        return self._post(base_url + "oauth/token/request", auth, redact=(), deadline=deadline)

    def access_token(self, base_url: str, consumer: Consumer, request_token: tuple[str, str],
                     verifier: str, *, deadline: Deadline | None = None) -> AccessToken:
        token, secret = request_token
        auth = magento_auth(consumer.key, consumer.secret, token, secret, verifier=verifier, profile=self.profile)
        return AccessToken(*self._post(base_url + "oauth/token/access", auth, redact=(token, verifier),
                                       deadline=deadline))

    def run(self, base_url: str, consumer: Consumer, verifier: str) -> AccessToken:
        deadline = Deadline(self.deadline)
        request_token = self.request_token(base_url, consumer, deadline=deadline)
        return self.access_token(base_url, consumer, request_token, verifier, deadline=deadline)

    def _post(self, url: str, auth, *, redact: tuple[str, ...], deadline: Deadline | None) -> tuple[str, str]:
        response = send(self.session, "POST", url, timeout=self.timeout, deadline=deadline or Deadline(self.deadline),
                        max_bytes=MAX_TOKEN_ANSWER, auth=auth, headers={"Content-Length": "0"})
        fields = dict(parse_qsl(response.content.decode("utf-8", "replace"), keep_blank_values=True,
                                max_num_fields=20)) if _looks_like_form(response.content) else {}
        if response.status_code != 200 or "oauth_problem" in fields:
            if "oauth_problem" in fields:
                raise oauth_problem(_redact(fields["oauth_problem"][:500], redact), response.status_code)
            raise BadStoreResponse(
                f"the store answered {_endpoint(url)} with HTTP "
                f"{response.status_code} and no oauth_problem",
                status=response.status_code,
            )
        token, secret = fields.get("oauth_token", ""), fields.get("oauth_token_secret", "")
        if not (_TOKEN.match(token) and _TOKEN.match(secret)):
            raise BadStoreResponse(
                f"the store's answer to {_endpoint(url)} is not an OAuth token response",
                status=response.status_code,
            )
        return token, secret


def _endpoint(url: str) -> str:
    return "/".join(url.split("/")[-3:])


def _looks_like_form(content: bytes) -> bool:
    try:
        return len(content) <= 64 * 1024 and "=" in content.decode("utf-8")
    except UnicodeDecodeError:
        return False


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
