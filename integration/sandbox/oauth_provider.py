"""Magento's ``/oauth/token/*`` endpoints and REST authentication, with its rules and messages."""

from __future__ import annotations

import hmac
import time
from urllib.parse import urlencode

from . import verify
from .state import Integration, SandboxState, Token, random_string

TIME_DEVIATION = 600


class OAuthFailure(Exception):
    """``status`` 400 is Magento's OauthInputException, 401 its Oauth\\Exception."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.message = message
        self.status = status


def problem_body(message: str) -> str:
    return urlencode({"oauth_problem": message})


def _required(params: dict[str, str], names: list[str]) -> None:
    if "oauth_version" in params and params["oauth_version"] != "1.0":
        raise OAuthFailure(f'The "{params["oauth_version"]}" Oauth version isn\'t supported.', 400)
    missing = [f'"{n}" is required. Enter and try again.' for n in names if not params.get(n)]
    if missing:
        raise OAuthFailure(", ".join(missing), 400)
    if "oauth_token" in params and len(params["oauth_token"]) != 32:
        raise OAuthFailure("The token length is invalid. Check the length and try again.", 400)
    if params["oauth_signature_method"] != "HMAC-SHA256":
        raise OAuthFailure(f"Signature method {params['oauth_signature_method']} is not supported", 400)


def _consumer(state: SandboxState, params: dict[str, str]) -> Integration:
    key = verify.rawurldecode(params["oauth_consumer_key"])
    if len(key) != 32:
        raise OAuthFailure("Consumer key is not the correct length")
    integration = state.by_consumer_key(key)
    if integration is None:
        raise OAuthFailure("A consumer having the specified key does not exist")
    return integration


def _nonce(state: SandboxState, integration: Integration, params: dict[str, str]) -> None:
    try:
        timestamp = int(params["oauth_timestamp"])
    except ValueError:
        timestamp = 0
    if timestamp <= 0 or timestamp > time.time() + TIME_DEVIATION:
        raise OAuthFailure("Incorrect timestamp value in the oauth_timestamp parameter", 400)
    if not state.use_nonce(integration, verify.rawurldecode(params["oauth_nonce"])):
        raise OAuthFailure(f"The nonce is already being used by the consumer with ID {integration.id}")


def _signature(state: SandboxState, environ, params, integration: Integration, token_secret: str) -> None:
    url = verify.request_url(environ)
    expected = verify.expected_signature(state.profile, environ["REQUEST_METHOD"], url, params,
                                         integration.consumer_secret, token_secret)
    given = verify.rawurldecode(params.get("oauth_signature", ""))
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise OAuthFailure("The signature is invalid. Verify and try again.")


def consumer_expired(integration: Integration, period: int) -> bool:
    """``Consumer::isValidForTokenExchange``: valid while ``period > gmtTimestamp() -
    gmtTimestamp(updated_at)``, in whole seconds, ``updated_at`` being set when the callback is
    posted; ``oauth/consumer/expiration_period`` <= 0 means 300 (``Helper/Oauth/Data.php``)."""
    period = period if period > 0 else 300
    return not period > int(time.time()) - int(integration.consumer_updated_at)


def request_token(state: SandboxState, environ, body: str) -> dict[str, str]:
    params = verify.collect(state.profile, environ, body)
    with state.lock:
        state.counters.request_token_calls += 1
        _required(params, ["oauth_consumer_key", "oauth_signature", "oauth_signature_method", "oauth_nonce",
                           "oauth_timestamp"])
        integration = _consumer(state, params)
        _nonce(state, integration, params)
        if consumer_expired(integration, state.consumer_expiry):
            raise OAuthFailure("Consumer key has expired")
        _signature(state, environ, params, integration, "")
        token = integration.token
        if token is None:
            raise OAuthFailure(f"A token with consumer ID {integration.id} does not exist")
        if token.kind != "verifier":
            raise OAuthFailure("Cannot create request token because consumer token is not a verifier token")
        token.kind, token.token, token.secret = "request", random_string(), random_string()
        return {"oauth_token": token.token, "oauth_token_secret": token.secret}


def access_token(state: SandboxState, environ, body: str) -> dict[str, str]:
    params = verify.collect(state.profile, environ, body)
    with state.lock:
        state.counters.access_token_calls += 1
        _required(params, ["oauth_consumer_key", "oauth_signature", "oauth_signature_method", "oauth_nonce",
                           "oauth_timestamp", "oauth_token", "oauth_verifier"])
        integration = _consumer(state, params)
        _nonce(state, integration, params)
        token = integration.token
        if token is None or token.token != params["oauth_token"]:
            raise OAuthFailure("Specified token does not exist")
        if token.kind != "request":
            raise OAuthFailure("Token is already being used")
        verifier = params["oauth_verifier"]
        if len(verifier) != 32:
            raise OAuthFailure("Verifier is not the correct length")
        if not hmac.compare_digest(token.verifier.encode(), verifier.encode()):
            raise OAuthFailure("Token verifier and verifier token do not match")
        _signature(state, environ, params, integration, token.secret)
        token.kind, token.token, token.secret = "access", random_string(), random_string()
        integration.status = "Active"
        return {"oauth_token": token.token, "oauth_token_secret": token.secret}


def rest_user(state: SandboxState, environ, body: str) -> Integration | None:
    """``OauthUserContext`` (and the bearer variant): the integration a REST call acts as, if any."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if authorization.lower().startswith("bearer "):
        if not state.bearer:
            return None
        integration = state.by_access_token(authorization[7:].strip())
        return integration if integration and integration.status == "Active" else None
    params = verify.collect(state.profile, environ, body)
    if not params:
        return None
    with state.lock:
        _required(params, ["oauth_consumer_key", "oauth_signature", "oauth_signature_method", "oauth_nonce",
                           "oauth_timestamp", "oauth_token"])
        integration = _consumer(state, params)
        _nonce(state, integration, params)
        token = integration.token
        if token is None or token.token != params["oauth_token"]:
            raise OAuthFailure("Token is not associated with the specified consumer")
        if token.kind != "access":
            raise OAuthFailure("Token is not an access token")
        if token.revoked:
            raise OAuthFailure("Access token has been revoked")
        _signature(state, environ, params, integration, token.secret)
        return integration if integration.status == "Active" else None


def new_verifier(integration: Integration) -> Token:
    """``Token::createVerifierToken``: reuse a verifier row, else make one."""
    if integration.token is None or integration.token.kind != "verifier":
        integration.token = Token("verifier", random_string(), random_string(), random_string())
    return integration.token
