"""The token exchange library against the sandbox store (real HTTP) and against broken stores."""

from __future__ import annotations

import time

import pytest
import requests

from integration.magento import errors
from integration.magento.store_url import StorePolicy
from integration.magento.transport import safe_session
from integration.magento.token_exchange import Consumer, TokenExchange
from integration.sandbox.oauth_provider import new_verifier

from .servers import Served

LOCAL = StorePolicy(("127.0.0.1",))


def activated(sandbox):
    """What Magento does on Activate: an integration with a fresh verifier and window."""
    integration = sandbox.state.add_integration("Test", "http://127.0.0.1:1/cb", "http://127.0.0.1:1/id")
    verifier = new_verifier(integration).verifier
    return integration, Consumer(integration.consumer_key, integration.consumer_secret), verifier


def exchange(**kwargs):
    return TokenExchange(safe_session(LOCAL), timeout=(2, 2), **kwargs)


def test_exchange_returns_the_access_token_and_activates_the_integration(sandbox):
    integration, consumer, verifier = activated(sandbox)
    token = exchange().run(sandbox.url + "/", consumer, verifier)
    assert integration.status == "Active"
    assert (token.token, token.secret) == (integration.token.token, integration.token.secret)
    assert token.secret not in repr(token)


def test_expired_consumer_says_to_reauthorize_within_300_seconds(sandbox):
    integration, consumer, verifier = activated(sandbox)
    integration.consumer_updated_at = time.time() - 301
    with pytest.raises(errors.ConsumerExpired) as caught:
        exchange().run(sandbox.url + "/", consumer, verifier)
    assert caught.value.status == 401
    assert "Consumer key has expired" in str(caught.value)
    assert "300 seconds" in caught.value.hint and "Reauthorize" in caught.value.hint


def test_wrong_verifier_is_a_verifier_error(sandbox):
    _, consumer, _ = activated(sandbox)
    with pytest.raises(errors.VerifierRejected, match="do not match"):
        exchange().run(sandbox.url + "/", consumer, "x" * 32)


def test_unknown_consumer(sandbox):
    with pytest.raises(errors.UnknownConsumer):
        exchange().run(sandbox.url + "/", Consumer("q" * 32, "w" * 32), "v" * 32)


def test_request_token_works_once_per_activation(sandbox):
    _, consumer, verifier = activated(sandbox)
    client = exchange()
    client.request_token(sandbox.url + "/", consumer)
    with pytest.raises(errors.TokenAlreadyUsed, match="not a verifier token"):
        client.request_token(sandbox.url + "/", consumer)


def test_a_store_on_another_signature_generation_still_accepts_token_calls(sandbox):
    sandbox.state.profile = "2.4.4-2.4.7"
    integration, consumer, verifier = activated(sandbox)
    exchange().run(sandbox.url + "/", consumer, verifier)
    assert integration.status == "Active"


def test_store_down_is_unreachable():
    with pytest.raises(errors.StoreUnreachable, match="could not connect"):
        exchange().run("http://127.0.0.1:9/", Consumer("a" * 32, "b" * 32), "c" * 32)


def _store(handler):
    def wsgi(environ, start_response):
        status, headers, body = handler(environ)
        start_response(status, headers)
        return [body]
    return Served(wsgi)


def test_slow_store_times_out():
    served = _store(lambda env: (time.sleep(3), ("200 OK", [], b"oauth_token=x"))[1])
    try:
        with pytest.raises(errors.StoreTimeout, match="within 2 s"):
            exchange().run(served.url + "/", Consumer("a" * 32, "b" * 32), "c" * 32)
    finally:
        served.stop()


@pytest.mark.parametrize("status, body, error, text", [
    ("200 OK", b"<html>Welcome to our shop</html>", errors.BadStoreResponse, "not an OAuth token response"),
    ("200 OK", b"\xff\xfe\x00garbage", errors.BadStoreResponse, "not an OAuth token response"),
    ("200 OK", b"oauth_token=abc", errors.BadStoreResponse, "not an OAuth token response"),
    ("500 Internal Server Error", b"<h1>Error</h1>", errors.BadStoreResponse, "HTTP 500"),
    ("302 Found", b"", errors.BadStoreResponse, "redirect"),
    ("400 Bad Request", b"oauth_problem=Signature+method+HMAC-SHA1+is+not+supported", errors.InvalidSignature,
     "HMAC-SHA1"),
])
def test_garbage_answers_are_clear_errors(status, body, error, text):
    headers = [("Location", "https://elsewhere.example/")] if status.startswith("302") else []
    served = _store(lambda env: (status, headers, body))
    try:
        with pytest.raises(error, match=text):
            exchange().run(served.url + "/", Consumer("a" * 32, "b" * 32), "c" * 32)
    finally:
        served.stop()


def test_a_redirect_to_an_address_that_is_not_utf8_is_a_clear_error():
    # The store's fault, a BadStoreResponse for the pop-up and the doctor, never an unhandled
    # exception (a 500: requests, which read a redirect's Location as UTF-8, once raised one).
    served = _store(lambda env: ("302 Found", [("Location", "/caf\u00e9")], b""))  # the byte E9: Latin-1
    try:
        with pytest.raises(errors.BadStoreResponse, match=r"with a redirect \(302\) to /caf"):
            exchange().run(served.url + "/", Consumer("a" * 32, "b" * 32), "c" * 32)
    finally:
        served.stop()


def test_store_echoing_our_credentials_does_not_leak_them_into_messages():
    def echo(environ):
        return "401 Unauthorized", [], b"oauth_problem=" + requests.utils.quote(environ["HTTP_AUTHORIZATION"]).encode()
    served = _store(echo)
    try:
        with pytest.raises(errors.OAuthProblem) as caught:
            TokenExchange(safe_session(LOCAL)).access_token(served.url + "/", Consumer("a" * 32, "b" * 32),
                                                             ("r" * 32, "q" * 32), "v" * 32)
        assert "r" * 32 not in str(caught.value) and "v" * 32 not in str(caught.value)
    finally:
        served.stop()


def test_private_address_is_refused_at_connection_time(sandbox):
    """Not allow-listed: the check on the connected address refuses loopback."""
    _, consumer, verifier = activated(sandbox)
    client = TokenExchange(safe_session(StorePolicy()), timeout=(2, 2))
    with pytest.raises(errors.UnsafeStoreURL, match="not a public address"):
        client.run(sandbox.url + "/", consumer, verifier)
    assert sandbox.state.counters.request_token_calls == 0
