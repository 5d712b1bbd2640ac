"""Hostile input and abuse: outbound address checks, login limits, cookies, headers, sizes, logs."""

from __future__ import annotations

import logging

import pytest

from integration import create_app
from integration.logs import RequestContextFilter, redact
from integration.magento import errors
from integration.magento.client import Credentials, StoreClient
from integration.magento.store_url import StorePolicy
from integration.magento.transport import safe_session
from integration.magento.token_exchange import Consumer, TokenExchange

from .conftest import PASSWORD
from .servers import FakeDNS, Served, csrf_from
from .test_callback import post


# --- outbound -------------------------------------------------------------------------

def test_dns_rebinding_is_caught_when_connecting(sandbox):
    """Public when checked, loopback when connected: refused before any packet goes to it."""
    dns = FakeDNS(answers={"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    try:
        policy = StorePolicy(nameservers=(dns.address,))
        port = sandbox.server.server_port
        url = policy.check(f"http://rebind.example:{port}/")  # resolves to the public address: accepted
        with pytest.raises(errors.UnsafeStoreURL, match="rebind.example is not a public address") as caught:
            TokenExchange(safe_session(policy), timeout=2).run(url, Consumer("a" * 32, "b" * 32), "c" * 32)
    finally:
        dns.stop()
    assert "127.0.0.1" not in str(caught.value)
    assert sandbox.state.counters.request_token_calls == 0


#: IPv6 forms that lead to a loopback, private or link-local IPv4 host, or that are never a
#: store's public address: NAT64 (well-known and local-use), 6to4, IPv4-compatible,
#: site-local, Teredo.
REFUSED_IPV6 = ["64:ff9b::7f00:1", "64:ff9b::a00:5", "64:ff9b::a9fe:a9fe", "64:ff9b:1::5db8:d822",
                "2002:7f00:1::1", "2002:c0a8:101::1", "::7f00:1", "::5db8:d822", "fec0::1",
                "2001:0:5db8:d822::1"]


@pytest.mark.parametrize("address", REFUSED_IPV6)
def test_ipv6_forms_carrying_a_non_public_ipv4_are_refused_at_the_callback_and_on_the_socket(client, address):
    response = post(client, store_base_url=f"http://[{address}]/")
    assert response.status_code == 400 and "is not a public address" in response.get_data(as_text=True)
    with pytest.raises(errors.UnsafeStoreURL, match="^store host shop.example is not a public address$"):
        StorePolicy().check_peer("shop.example", address)


@pytest.mark.parametrize("address", ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "2606:4700::1111"])
def test_ipv6_forms_carrying_a_public_ipv4_are_accepted(client, address):
    assert post(client, store_base_url=f"http://[{address}]/").status_code == 200
    StorePolicy().check_peer("shop.example", address)


def test_strict_mode_only_connects_to_listed_hosts():
    strict = StorePolicy(("shop.example.com", ".corp.example"), strict=True)
    assert strict.check("https://shop.example.com/") == "https://shop.example.com/"
    assert strict.check("https://a.b.corp.example/x/") == "https://a.b.corp.example/x/"
    with pytest.raises(errors.UnsafeStoreURL, match="strict mode"):
        strict.check("https://other.example/")
    with pytest.raises(errors.UnsafeStoreURL, match="strict mode"):
        strict.check_peer("other.example", "93.184.216.34")


def test_strict_mode_refuses_callbacks_for_other_hosts(app_config):
    app = create_app({**app_config, "ALLOWED_STORE_HOSTS": ("localhost",), "STRICT_STORE_HOSTS": True})
    client = app.test_client()
    assert post(client, store_base_url="http://127.0.0.1/").status_code == 400
    assert post(client, store_base_url="http://localhost/").status_code == 200


def test_rest_redirects_are_not_followed():
    def redirect(environ, start_response):
        start_response("301 Moved Permanently", [("Location", "http://10.0.0.1/rest/")])
        return [b""]

    served = Served(redirect)
    try:
        client = StoreClient(served.url + "/", Credentials("a" * 32, "b" * 32, "c" * 32, "d" * 32),
                             policy=StorePolicy(("127.0.0.1",)))
        with pytest.raises(errors.BadStoreResponse, match="redirect \\(301\\) to http://10.0.0.1/rest/"):
            client.get("store/storeConfigs")
    finally:
        served.stop()


# --- login abuse ----------------------------------------------------------------------

def _login(client, email, password, addr="10.1.1.1"):
    page = client.get("/auth/login", environ_base={"REMOTE_ADDR": addr}).get_data(as_text=True)
    return client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": password},
                       environ_base={"REMOTE_ADDR": addr})


def test_login_is_limited_per_address(app_config, user):
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "3 per minute"})
    client = app.test_client()
    codes = [_login(client, "owner@example.com", "wrong").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert _login(app.test_client(), "owner@example.com", PASSWORD, addr="10.2.2.2").status_code == 302


def test_an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_one_by_its_address(app_config, user):
    """A host given a /64 can send each request from another of its addresses."""
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "2 per minute"})
    client = app.test_client()
    codes = [_login(client, "owner@example.com", "wrong", addr=f"2001:db8:1:2::{i:x}").status_code
             for i in (1, 0xbeef, 0xffff)]
    assert codes == [401, 401, 429]
    assert _login(client, "owner@example.com", "wrong", addr="2001:db8:1:3::1").status_code == 401  # another /64
    assert _login(client, "owner@example.com", "wrong", addr="10.7.7.7").status_code == 401
    assert _login(client, "owner@example.com", "wrong", addr="::ffff:10.7.7.7").status_code == 401
    assert _login(client, "owner@example.com", "wrong", addr="10.7.7.7").status_code == 429


def test_the_identity_popup_is_limited_per_address(app_config, user):
    app = create_app({**app_config, "IDENTITY_RATE_LIMIT": "2 per minute"})
    client = app.test_client()
    codes = [client.get("/magento/identity", query_string={"oauth_consumer_key": f"{i:032d}"},
                        environ_base={"REMOTE_ADDR": "10.3.3.3"}).status_code for i in range(3)]
    assert codes == [404, 404, 429]
    assert client.get("/magento/identity", query_string={"oauth_consumer_key": "1" * 32},
                      environ_base={"REMOTE_ADDR": "10.4.4.4"}).status_code == 404


def test_login_is_limited_per_account_across_addresses(app_config, user):
    app = create_app({**app_config, "ACCOUNT_RATE_LIMIT": "3 per minute"})
    codes = [_login(app.test_client(), "Owner@Example.com", "wrong", addr=f"10.0.0.{i}").status_code
             for i in range(4)]
    assert codes == [401, 401, 401, 429]
    assert _login(app.test_client(), "someone@example.com", "wrong", addr="10.0.0.9").status_code == 401


def test_unknown_and_known_accounts_get_the_same_answer(client, user):
    known = _login(client, "owner@example.com", "wrong").get_data(as_text=True)
    unknown = _login(client, "nobody@example.com", "wrong").get_data(as_text=True)
    assert "Wrong email or password." in known and "Wrong email or password." in unknown
    assert known.replace("owner@", "X@") .count("Wrong") == unknown.count("Wrong")


def test_the_identity_form_is_limited_too(app_config, sandbox, user):
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "2 per minute"})
    client = app.test_client()
    token = csrf_from(client.get("/auth/login").get_data(as_text=True))
    codes = [client.post("/magento/identity", data={"csrf_token": token, "oauth_consumer_key": "k" * 32,
                                                    "email": "owner@example.com", "password": "x"}).status_code
             for _ in range(3)]
    assert codes == [404, 404, 429]


# --- sessions, headers, sizes ---------------------------------------------------------

def test_cookies_are_httponly_lax_and_secure_under_https(app_config, user):
    app = create_app({**app_config, "PUBLIC_URL": "https://companion.example", "SESSION_COOKIE_SECURE": True})
    client = app.test_client()
    response = _login(client, "owner@example.com", PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_session_is_renewed_at_login(app, client, user):
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    _login(client, "owner@example.com", PASSWORD)
    with client.session_transaction() as session:
        assert "planted" not in session and session.get("_user_id") == str(user)


def test_hsts_only_when_the_public_address_is_https(app_config):
    plain = create_app({**app_config, "PUBLIC_URL": "http://127.0.0.1:5000"}).test_client().get("/auth/login")
    assert "Strict-Transport-Security" not in plain.headers
    tls = create_app({**app_config, "PUBLIC_URL": "https://companion.example.com"}).test_client().get("/auth/login")
    assert tls.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_security_headers_and_request_id(client):
    response = client.get("/auth/login", headers={"X-Request-Id": "abc123"})
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Request-Id"] == "abc123"
    assert len(client.get("/auth/login").headers["X-Request-Id"]) == 16
    # Whoever sends the request chooses it, and every log line of the request carries it: one with
    # spaces, brackets or escape sequences (a forged log line, a cleared terminal) is replaced.
    for forged in ("x] integration.accounts: login admin@example.com [x", "a\x1b[2Jb", "\u202eabc"):
        answer = client.get("/auth/login", headers={"X-Request-Id": forged})
        assert answer.headers["X-Request-Id"] != forged and len(answer.headers["X-Request-Id"]) == 16


@pytest.mark.parametrize("path", ["/auth/login", "/magento/identity", "/stores/new", "/magento/callback"])
def test_every_post_has_a_body_size_limit(client, path):
    response = client.post(path, data={"x": "y" * (2 * 1024 * 1024)})
    assert response.status_code == 413


@pytest.mark.parametrize("proxies, second", [(1, 401), (0, 429)])
def test_proxy_headers_are_used_only_when_trusted(app_config, user, proxies, second):
    app = create_app({**app_config, "TRUSTED_PROXIES": proxies, "LOGIN_RATE_LIMIT": "1 per minute"})
    codes = []
    for forwarded in ("203.0.113.7", "203.0.113.8"):
        client = app.test_client()
        page = client.get("/auth/login").get_data(as_text=True)
        codes.append(client.post("/auth/login", headers={"X-Forwarded-For": forwarded}, data={
            "csrf_token": csrf_from(page), "email": "owner@example.com", "password": "wrong"}).status_code)
    assert codes == [401, second]  # trusted: two clients, two budgets; untrusted: one address


# --- logs -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, secret", [
    ("oauth_consumer_secret=abcdef123", "abcdef123"),
    ('Authorization: OAuth oauth_token="tok-4711", oauth_signature="sig"', "tok-4711"),
    ("password: hunter2hunter2", "hunter2hunter2"),
    ("{'access_token_secret': 'xyz-0815'}", "xyz-0815"),
    ("oauth_verifier=vvv-42&next=1", "vvv-42"),
])
def test_credentials_are_masked_in_log_text(text, secret):
    masked = redact(text)
    assert "[redacted]" in masked and secret not in masked


def test_log_records_get_masked_tracebacks_and_a_request_id(app):
    try:
        raise ValueError("store said oauth_token_secret=s3cr3t")
    except ValueError:
        record = logging.LogRecord("integration.x", logging.ERROR, __file__, 1, "failed with password=%s",
                                   ("pw-123456",), exc_info=__import__("sys").exc_info())
    with app.test_request_context(headers={"X-Request-Id": "rid-1"}):
        app.preprocess_request()
        RequestContextFilter().filter(record)
    assert record.request_id == "rid-1"
    assert "pw-123456" not in record.getMessage() and "s3cr3t" not in record.exc_text
    assert "ValueError" in record.exc_text


def test_logins_keep_working_and_limited_when_redis_is_down(app_config, user):
    app = create_app({**app_config, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:9/0", "LOGIN_RATE_LIMIT": "2 per minute"})
    client = app.test_client()
    codes = [_login(client, "owner@example.com", "wrong").status_code for _ in range(3)]
    assert codes == [401, 401, 429]  # counted in memory meanwhile


def test_a_store_whose_dns_hangs_is_refused_within_magentos_budget(app_config):
    import time

    dns = FakeDNS(silent={"slow-dns.example"})
    try:
        client = create_app({**app_config, "DNS_SERVERS": (dns.address,)}).test_client()
        started = time.monotonic()
        response = post(client, store_base_url="https://slow-dns.example/")
    finally:
        dns.stop()
    assert response.status_code == 400 and "did not resolve within 2 s" in response.get_data(as_text=True)
    assert time.monotonic() - started < 2.8
