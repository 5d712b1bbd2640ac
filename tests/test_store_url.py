"""The store address guard through its library API (``integration.magento.store_url``) and the session
that enforces it when connecting (``transport.safe_session``): which store URLs are accepted and how they
are written, which addresses count as public, allow-lists, our own bounded DNS lookups, and a session
that neither an environment proxy nor an https:// URL can walk around."""

from __future__ import annotations

import logging
import socket
import threading

import pytest
import requests

from integration.magento.errors import StoreTimeout, StoreUnreachable, UnsafeStoreURL
from integration.magento.store_url import (
    MAX_URL_LENGTH, StorePolicy, host_of, is_public_address, nameserver, normalise_base_url, resolve_host,
)
from integration.magento.transport import Deadline, safe_session, send

from .servers import FakeDNS, Served

# --- normalise_base_url -----------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ("http://shop.example", "http://shop.example/"),
    ("  HTTPS://Shop.Example/Index.php  ", "https://shop.example/Index.php/"),
    ("http://shop.example/index.php", "http://shop.example/index.php/"),
    ("http://shop.example/de/", "http://shop.example/de/"),
    ("http://shop.example:80/", "http://shop.example/"),
    ("https://shop.example:443/", "https://shop.example/"),
    ("http://shop.example:443/", "http://shop.example:443/"),
    ("https://shop.example:80/", "https://shop.example:80/"),
    ("http://shop.example:8080", "http://shop.example:8080/"),
    ("http://shop.example./", "http://shop.example./"),
    ("http://my_shop.example/", "http://my_shop.example/"),
    ("http://ex\u00e4mple.com/", "http://xn--exmple-cua.com/"),
    ("http://[::1]/", "http://[::1]/"),
    ("http://[FE80::1%25eth0]:8080/", "http://[fe80::1]:8080/"),
    ("http://[::ffff:1.2.3.4]/", "http://[::ffff:102:304]/"),
    ("http://" + "a" * 63 + ".example/", "http://" + "a" * 63 + ".example/"),
])
def test_store_urls_are_written_one_way(given, expected):
    assert normalise_base_url(given) == expected


@pytest.mark.parametrize("given, reason", [
    ("", "is empty"), ("   ", "is empty"), (None, "is empty"), (42, "is empty"),
    ("ftp://shop.example/", "absolute http:// or https://"),
    ("javascript://shop.example/", "absolute http:// or https://"),
    ("shop.example/", "absolute http:// or https://"),
    ("http:///index.php", "has no host"),
    ("http://user@shop.example/", "user name or password"),
    ("http://user:secret@shop.example/", "user name or password"),
    ("http://:secret@shop.example/", "user name or password"),
    ("http://shop.example/?a=1", "query string or fragment"),
    ("http://shop.example/#top", "query string or fragment"),
    ("http://shop.example/?", "query string or fragment"),
    ("http://shop.example/#", "query string or fragment"),
    ("http://[::1/", "not a valid URL"),
    ("http://[zz::1]/", "not a valid URL"),
    ("http://shop.example:99999/", "not a valid URL"),
    ("http://shop.example:port/", "not a valid URL"),
    ("http://[v1.a:b]/", "invalid IPv6 address"),
    ("http://[v1.shop]/", "invalid IPv6 address"),  # an IPvFuture literal, not the host name v1.shop
    ("http://-shop.example/", "invalid host name"),
    ("http://shop-.example/", "invalid host name"),
    ("http://shop..example/", "invalid host name"),
    ("http://shop$.example/", "invalid host name"),
    ("http://sh%op.example/", "invalid host name"),
    ("http://" + "a" * 64 + ".example/", "invalid host name"),
    ("http://" + ".".join(["a" * 63] * 4)[:254] + "/", "invalid host name"),
])
def test_bad_store_urls_are_refused_with_the_reason(given, reason):
    with pytest.raises(UnsafeStoreURL, match=reason.replace("?", "\\?").replace("/", "/")):
        normalise_base_url(given)


@pytest.mark.parametrize("char", [" ", "\t", "\n", "\x00", "\x7f", "\x85", "\u00a0", "\u3000", "\u200b",
                                  "\u202e", "\u2066", "\u2028", "\u2029"])
def test_invisible_and_control_characters_anywhere_are_refused(char):
    """Spaces, controls (C0, DEL, C1), bidi overrides and other formatting, line and paragraph separators:
    an address holding one can read as another one wherever it is shown."""
    for url in (f"http://shop.example/a{char}b/", f"http://shop{char}.example/"):
        with pytest.raises(UnsafeStoreURL, match="spaces, control or formatting characters"):
            normalise_base_url(url)


def _url_of_length(n: int, *, slash: bool = True) -> str:
    head = "https://shop.example/"
    body = "p" * (n - len(head) - (1 if slash else 0))
    return head + body + ("/" if slash else "")


def test_the_length_limit_is_exactly_max_url_length():
    assert MAX_URL_LENGTH == 2048  # the documented limit (README, Configuration)
    assert normalise_base_url(_url_of_length(2048)) == _url_of_length(2048)
    with pytest.raises(UnsafeStoreURL, match="longer than 2048 characters"):
        normalise_base_url(_url_of_length(2049))
    # the trailing slash we add counts too
    assert normalise_base_url(_url_of_length(2047, slash=False)) == _url_of_length(2048)
    with pytest.raises(UnsafeStoreURL, match="longer than 2048 characters"):
        normalise_base_url(_url_of_length(2048, slash=False))
    # what counts is the length given, even when the written form would be shorter
    too_long = "https://shop.example:443/" + "p" * (2049 - len("https://shop.example:443/") - 1) + "/"
    assert len(too_long) == 2049 and len(normalise_base_url(too_long[:-5] + "/")) < 2048
    with pytest.raises(UnsafeStoreURL, match="longer than 2048 characters"):
        normalise_base_url(too_long)


def test_host_of():
    assert host_of("http://Shop.Example:8080/x/") == "shop.example"
    assert host_of("/relative") == ""


# --- public addresses -------------------------------------------------------------------

@pytest.mark.parametrize("address, public", [
    ("93.184.216.34", True), ("2606:4700::1111", True),
    ("127.0.0.1", False), ("10.0.0.1", False), ("169.254.169.254", False), ("0.0.0.0", False),
    ("::1", False), ("fe80::1%eth0", False), ("fd00::1", False),
    ("224.0.0.1", False), ("ff0e::1", False),                          # multicast, even global scope
    ("::ffff:10.0.0.1", False), ("::ffff:93.184.216.34", True),        # IPv4-mapped
    ("64:ff9b::a00:1", False), ("64:ff9b::5db8:d822", True),           # NAT64 well-known prefix
    ("2002:a00:1::1", False), ("2002:5db8:d822::1", True),             # 6to4
    ("64:ff9b:1::5db8:d822", False),                                   # local-use NAT64
    ("::5db8:d822", False), ("fec0::1", False), ("2001:0:5db8:d822::1", False),  # compat, site-local, Teredo
])
def test_which_addresses_are_public(address, public):
    assert is_public_address(address) is public


# --- allow-lists and policy -------------------------------------------------------------

def test_allow_list_entries_are_names_or_dot_suffixes():
    policy = StorePolicy(("Shop.Example.com", " .Corp.Example ", "", "[::1]", "  "))
    assert policy.is_listed("shop.example.com") and policy.is_listed("SHOP.EXAMPLE.COM")
    assert policy.is_listed("a.b.corp.example") and policy.is_listed("corp.example")
    assert policy.is_listed("::1") and policy.is_listed("[::1]")
    for host in ("example.com", "other.shop.example.com", "badcorp.example", "corp.example.net", "", "::2"):
        assert policy.is_listed(host) is False, host


@pytest.fixture
def dns():
    server = FakeDNS(records={"public.example": ["93.184.216.34", "2606:4700::1111"],
                              "v4only.example": ["93.184.216.34"],
                              "private.example": ["93.184.216.34", "10.0.0.7"]},
                     silent={"hangs.example"})
    yield server
    server.stop()


def test_a_listed_host_is_accepted_without_a_lookup(dns):
    policy = StorePolicy(("private.example",), nameservers=(dns.address,))
    assert policy.check("http://Private.Example/") == "http://private.example/"
    assert dns.queries == []
    policy.check_peer("private.example", "10.0.0.7")


def test_strict_mode_refuses_everything_unlisted_without_a_lookup(dns):
    policy = StorePolicy(("shop.example",), strict=True, nameservers=(dns.address,))
    assert policy.check("http://shop.example/") == "http://shop.example/"
    with pytest.raises(UnsafeStoreURL, match="^store host public.example is not in the allow-list"):
        policy.check("http://public.example/")
    with pytest.raises(UnsafeStoreURL, match="strict mode"):
        policy.check_peer("public.example", "93.184.216.34")
    assert dns.queries == []


def test_unlisted_hosts_are_looked_up_with_our_resolver(dns, caplog):
    policy = StorePolicy(nameservers=(dns.address,))
    assert policy.check("https://public.example/") == "https://public.example/"
    assert sorted(policy.public_addresses("public.example", 2)) == ["2606:4700::1111", "93.184.216.34"]
    assert resolve_host("v4only.example", 2, (dns.address,)) == ["93.184.216.34"]
    caplog.set_level(logging.INFO, logger="integration.magento.store_url")
    with pytest.raises(UnsafeStoreURL, match="^store host private.example is not a public address$") as refused:
        policy.check("https://private.example/")
    assert "10.0.0.7" not in str(refused.value)
    # ...but the operator's log says which address it was, under the module's logger.
    assert [(r.name, r.levelname) for r in caplog.records if "10.0.0.7" in r.getMessage()] == \
        [("integration.magento.store_url", "WARNING")]
    with pytest.raises(UnsafeStoreURL, match="^store host nowhere.example does not resolve$"):
        policy.check("https://nowhere.example/")
    assert any(r.name == "integration.magento.store_url" and "nowhere.example" in r.getMessage()
               for r in caplog.records)


def test_a_host_whose_dns_never_answers_is_refused_within_the_time_given(dns):
    import time

    started = time.monotonic()
    with pytest.raises(StoreTimeout, match="did not resolve within 0.5 s"):
        resolve_host("hangs.example", 0.5, (dns.address,))
    assert time.monotonic() - started < 3  # dnspython alone would wait 5 s; slack for a loaded machine
    with pytest.raises(StoreTimeout):
        resolve_host("hangs.example", 0, (dns.address,))
    with pytest.raises(UnsafeStoreURL, match="^store host hangs.example did not resolve within 2 s$"):
        StorePolicy(nameservers=(dns.address,)).check("http://hangs.example/")


def test_a_quick_answer_within_a_short_time_is_taken(dns):
    assert resolve_host("v4only.example", 0.5, (dns.address,)) == ["93.184.216.34"]


def test_a_name_with_no_address_records_does_not_resolve(dns):
    server = FakeDNS(records={"mail-only.example": []})
    try:
        with pytest.raises(StoreUnreachable, match="^store host mail-only.example does not resolve$"):
            resolve_host("mail-only.example", 2, (server.address,))
        with pytest.raises(UnsafeStoreURL, match="mail-only.example does not resolve"):
            StorePolicy(nameservers=(server.address,)).check("https://mail-only.example/")
    finally:
        server.stop()


def test_a_store_host_name_is_never_completed_with_a_search_domain():
    """A resolver may carry search domains (/etc/resolv.conf's ``search corp.example``): "intranet" must not
    become intranet.corp.example, an internal host the caller never named."""
    import dns.name

    from integration.magento import store_url

    server = FakeDNS(records={"intranet.corp.example": ["93.184.216.40"]})
    store_url._resolver.cache_clear()
    try:
        store_url._resolver((server.address,)).search = [dns.name.from_text("corp.example.")]
        with pytest.raises(StoreUnreachable, match="^store host intranet does not resolve$"):
            resolve_host("intranet", 2, (server.address,))
    finally:
        store_url._resolver.cache_clear()
        server.stop()


def test_address_literals_need_no_lookup():
    assert resolve_host("93.184.216.34", 2, ("127.0.0.1:9",)) == ["93.184.216.34"]
    assert resolve_host("[::1]", 2, ("127.0.0.1:9",)) == ["::1"]


def test_check_peer_refuses_only_non_public_addresses_of_unlisted_hosts(caplog):
    policy = StorePolicy(("shop.example",))
    policy.check_peer("shop.example", "127.0.0.1")
    policy.check_peer("other.example", "93.184.216.34")
    caplog.set_level(logging.WARNING, logger="integration.magento.store_url")
    with pytest.raises(UnsafeStoreURL, match="^store host other.example is not a public address$"):
        policy.check_peer("other.example", "127.0.0.1")
    assert any(r.name == "integration.magento.store_url" and "127.0.0.1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text, address, port", [
    ("1.2.3.4", "1.2.3.4", 53), (" 1.2.3.4:5353 ", "1.2.3.4", 5353), ("::1", "::1", 53),
    ("[::1]", "::1", 53), ("[::1]:5353", "::1", 5353), ("[2001:db8::1]:53", "2001:db8::1", 53),
])
def test_nameservers_are_addresses_with_an_optional_port(text, address, port):
    server = nameserver(text)
    assert (server.address, server.port) == (address, port)


@pytest.mark.parametrize("text", ["dns.example", "1.2.3.4:x", "[::1]:x", ""])
def test_a_nameserver_that_is_not_an_address_is_refused(text):
    with pytest.raises(ValueError):
        nameserver(text)


def test_the_system_resolver_is_used_when_no_nameservers_are_given(monkeypatch, tmp_path):
    """Without ``nameservers`` the lookups follow /etc/resolv.conf (the system's, not one of ours)."""
    import dns.resolver

    from integration.magento import store_url

    made = []
    real = dns.resolver.Resolver

    def recording(*args, **kwargs):
        made.append(kwargs.get("configure", args[1] if len(args) > 1 else True))
        return real(*args, **kwargs)

    monkeypatch.setattr(dns.resolver, "Resolver", recording)
    store_url._resolver.cache_clear()
    try:
        store_url._resolver(())
        store_url._resolver(("127.0.0.1:9",))
    finally:
        store_url._resolver.cache_clear()
    assert made == [True, False]


# --- the session: what it connects to ----------------------------------------------------

class Listener:
    """A TCP port that counts the connections it accepts (and answers none of them)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def stop(self):
        self.sock.close()


def test_an_https_store_that_rebinds_to_a_private_address_is_refused_before_connecting():
    """The DNS-rebinding guard holds for https:// as for http://: public when checked, loopback when
    connected, and not a single connection is made to it."""
    listener = Listener()
    dns = FakeDNS(answers={"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    try:
        policy = StorePolicy(nameservers=(dns.address,))
        url = policy.check(f"https://rebind.example:{listener.port}/")
        with pytest.raises(UnsafeStoreURL, match="rebind.example is not a public address"):
            send(safe_session(policy), "GET", url, timeout=2, deadline=Deadline(5))
    finally:
        dns.stop()
        listener.stop()
    assert listener.accepted == 0


def test_an_https_url_of_an_unlisted_private_address_is_refused_before_connecting():
    listener = Listener()
    try:
        with pytest.raises(UnsafeStoreURL, match="127.0.0.1 is not a public address"):
            send(safe_session(StorePolicy()), "GET", f"https://127.0.0.1:{listener.port}/", timeout=2,
                 deadline=Deadline(5))
    finally:
        listener.stop()
    assert listener.accepted == 0


def test_an_environment_proxy_cannot_hide_the_address_reached(monkeypatch):
    """With HTTP(S)_PROXY set, a session that trusted the environment would hand the request to the proxy,
    and the guard would only see the proxy's address. Ours still connects (or refuses) by itself."""
    seen = []

    def proxy(environ, start_response):
        seen.append(environ.get("PATH_INFO"))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    served = Served(proxy)
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, served.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        session = safe_session(StorePolicy())  # nothing listed: a loopback store is refused
        for scheme in ("http", "https"):
            with pytest.raises(UnsafeStoreURL, match="is not a public address"):
                send(session, "GET", f"{scheme}://10.0.0.9:8080/rest/V1/store", timeout=2, deadline=Deadline(5))
    finally:
        served.stop()
    assert seen == []


def test_a_store_cannot_set_cookies_on_the_shared_session():
    """One session serves many callers: a cookie one store sets must never come back in a later call."""
    received = []

    def store(environ, start_response):
        received.append(environ.get("HTTP_COOKIE"))
        start_response("200 OK", [("Set-Cookie", "tracker=1; Path=/"), ("Content-Type", "application/json")])
        return [b"{}"]

    served = Served(store)
    try:
        session = safe_session(StorePolicy(("127.0.0.1",)))
        for _ in range(2):
            response = send(session, "GET", served.url + "/", timeout=2, deadline=Deadline(5))
            assert response.status_code == 200
    finally:
        served.stop()
    assert received == [None, None]
    assert dict(session.cookies) == {}


def test_the_session_says_who_is_calling():
    agents = []

    def store(environ, start_response):
        agents.append(environ.get("HTTP_USER_AGENT"))
        start_response("200 OK", [])
        return [b""]

    served = Served(store)
    try:
        send(safe_session(StorePolicy(("127.0.0.1",))), "GET", served.url + "/", timeout=2, deadline=Deadline(5))
    finally:
        served.stop()
    assert agents == ["magento-integration-companion/0.1"]


def test_requests_alone_would_have_used_the_proxy(monkeypatch):
    """The proxy test above can fail: a plain ``requests`` session does go through the environment proxy."""
    seen = []

    def proxy(environ, start_response):
        seen.append(environ.get("PATH_INFO"))
        start_response("200 OK", [])
        return [b""]

    served = Served(proxy)
    try:
        monkeypatch.setenv("HTTP_PROXY", served.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert requests.Session().get("http://10.0.0.9:8080/rest/V1/store", timeout=5).status_code == 200
    finally:
        served.stop()
    assert seen == ["/rest/V1/store"] or seen == ["http://10.0.0.9:8080/rest/V1/store"]


def test_a_policy_is_a_value():
    """Policies key the process's session pools (``outbound.store_session``): equal settings, one pool;
    and a policy cannot be changed under a session already built from it."""
    import dataclasses

    pools = {StorePolicy(("shop.example",)): "pool"}
    assert pools[StorePolicy(("shop.example",))] == "pool"
    with pytest.raises(dataclasses.FrozenInstanceError):
        StorePolicy().strict = True
