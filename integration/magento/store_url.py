"""Store URLs arrive in an unauthenticated POST, so we never connect to one blindly.

``normalise_base_url`` + ``StorePolicy.check`` refuse bad URLs up front, with a clear reason.
When connecting, ``transport.safe_session`` looks a host that is not allow-listed up again (our own
lookup, bounded in time) and connects only to public addresses, then checks the address
actually connected to; so a name that is public when checked and private when connected
(DNS rebinding) still fails, before a packet goes to it. Messages never say which address
a host resolves to (that would map our network for whoever asks); the log does.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import time
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import dns.exception
import dns.nameserver
import dns.resolver

from .errors import StoreTimeout, StoreUnreachable, UnsafeStoreURL

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")


def normalise_base_url(url: str) -> str:
    """``store_base_url`` in canonical form: lower-case scheme and host, no default port,
    a trailing slash, path (``index.php/``, store code) kept. Raises ``UnsafeStoreURL``."""
    if not isinstance(url, str):
        raise UnsafeStoreURL("store_base_url is empty")
    return _normalised(url)


@functools.lru_cache(maxsize=4096)  # every client checks its store's address: a proxied call, a page of a sync
def _normalised(url: str) -> str:
    if not url.strip():
        raise UnsafeStoreURL("store_base_url is empty")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeStoreURL(f"store_base_url is longer than {MAX_URL_LENGTH} characters")
    # Controls, bidi overrides and other invisible formatting could make the address read as
    # another one wherever it is shown; no real store address has them.
    if any(c <= " " or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in url):
        raise UnsafeStoreURL("store_base_url contains spaces, control or formatting characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeStoreURL(f"store_base_url is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeStoreURL("store_base_url must be an absolute http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeStoreURL("store_base_url has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeStoreURL("store_base_url must not contain a user name or password")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise UnsafeStoreURL("store_base_url must not have a query string or fragment")
    try:
        host = parts.hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeStoreURL("store_base_url has an invalid host name") from None
    if parts.netloc.startswith("["):  # an IPv6 address; urlsplit also lets IPvFuture ("[v1.x]") through
        try:
            host = f"[{ipaddress.IPv6Address(host.split('%', 1)[0])}]"
        except ValueError:
            raise UnsafeStoreURL("store_base_url has an invalid IPv6 address") from None
    elif not _HOST.match(host):
        raise UnsafeStoreURL("store_base_url has an invalid host name")
    if port is not None and not ((scheme, port) in (("http", 80), ("https", 443))):
        host = f"{host}:{port}"
    path = parts.path or "/"
    if not path.endswith("/"):
        path += "/"
    url = urlunsplit((scheme, host, path, "", ""))
    if len(url) > MAX_URL_LENGTH:  # the trailing slash can take it over
        raise UnsafeStoreURL(f"store_base_url is longer than {MAX_URL_LENGTH} characters")
    return url


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


#: IPv6 ranges that lead to IPv4 networks we cannot see from the IPv6 address (local-use NAT64,
#: RFC 8215), or that are deprecated and never a store's public address (IPv4-compatible,
#: site-local), or tunnel through a relay to an IPv4 host (Teredo).
_REFUSED_IPV6 = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "::/96", "fec0::/10", "2001::/32"))
#: The well-known NAT64 prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(address: str) -> bool:
    """Whether ``address`` (and any IPv4 address it carries) is globally reachable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour:
            ip = ip.sixtofour
        elif any(ip in net for net in _REFUSED_IPV6):
            return False
    return ip.is_global and not ip.is_multicast


#: Magento waits 5 s for the whole callback; looking the store's host up may take 2 of them.
RESOLVE_TIMEOUT = 2.0


@dataclass(frozen=True)
class StorePolicy:
    """Which store hosts we connect to, and how their names are looked up.

    ``allowed_hosts``: names (``shop.example.com``) or suffixes (``.example.com``) that
    may resolve to private addresses. ``strict``: connect to nothing else at all.
    ``nameservers``: DNS servers (``ip`` or ``ip:port``) for hosts not listed; empty means
    the system's (``/etc/resolv.conf``).
    """

    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    strict: bool = False
    nameservers: tuple[str, ...] = field(default_factory=tuple)

    def is_listed(self, host: str) -> bool:
        host = host.lower().strip("[]")
        for entry in self.allowed_hosts:
            entry = entry.lower().strip()
            if not entry:
                continue
            if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
                return True
            if host == entry.strip("[]"):
                return True
        return False

    def check(self, url: str) -> str:
        """The normalised URL, if we may connect to it; ``UnsafeStoreURL`` otherwise."""
        url = normalise_base_url(url)
        host = host_of(url)
        if self.is_listed(host):
            return url
        if self.strict:
            raise UnsafeStoreURL(f"store host {host} is not in the allow-list (strict mode)")
        try:
            self.public_addresses(host, RESOLVE_TIMEOUT)
        except StoreTimeout:
            raise UnsafeStoreURL(f"store host {host} did not resolve within {RESOLVE_TIMEOUT:g} s") from None
        except StoreUnreachable:
            raise UnsafeStoreURL(f"store host {host} does not resolve") from None
        return url

    def public_addresses(self, host: str, timeout: float) -> list[str]:
        """The addresses of a host that is not allow-listed, if every one of them is public."""
        addresses = resolve_host(host, timeout, self.nameservers)
        for address in addresses:
            if not is_public_address(address):
                # The address stays in our log: telling it to whoever asked would map our network.
                log.warning("store host %s resolves to %s, which is not a public address", host, address)
                raise UnsafeStoreURL(f"store host {host} is not a public address")
        return addresses

    def check_peer(self, host: str, address: str) -> None:
        if self.is_listed(host):
            return
        if self.strict:
            raise UnsafeStoreURL(f"store host {host} is not in the allow-list (strict mode)")
        if not is_public_address(address):
            log.warning("refused the connection to store host %s at %s: not a public address", host, address)
            raise UnsafeStoreURL(f"store host {host} is not a public address")


def resolve_host(host: str, timeout: float = RESOLVE_TIMEOUT, nameservers: tuple[str, ...] = ()) -> list[str]:
    """The host's IPv4 and IPv6 addresses, looked up in the calling thread within ``timeout``.

    No shared pool: names whose DNS never answers hold only the threads that asked for
    them, and only for ``timeout``. Raises ``StoreTimeout`` or ``StoreUnreachable``.
    """
    host = host.strip("[]")
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    ends = time.monotonic() + timeout
    addresses: list[str] = []
    try:
        resolver = _resolver(nameservers)
        for rdtype in ("A", "AAAA"):
            left = ends - time.monotonic()
            if left <= 0:
                raise dns.exception.Timeout
            answer = resolver.resolve(host, rdtype, lifetime=left, search=False, raise_on_no_answer=False)
            addresses += [rdata.address for rdata in answer]
    except dns.exception.Timeout:
        if not addresses:
            raise StoreTimeout(f"store host {host} did not resolve within {timeout:g} s") from None
        # An A answer but no AAAA in time: some servers drop AAAA queries.
    except (dns.exception.DNSException, ValueError) as exc:
        log.info("store host %s does not resolve: %s", host, exc)
        raise StoreUnreachable(f"store host {host} does not resolve") from None
    if not addresses:
        raise StoreUnreachable(f"store host {host} does not resolve")
    return addresses


@functools.lru_cache(maxsize=8)
def _resolver(nameservers: tuple[str, ...]) -> dns.resolver.Resolver:
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [nameserver(n) for n in nameservers]
    else:
        resolver = dns.resolver.Resolver()  # /etc/resolv.conf
    resolver.cache = dns.resolver.LRUCache(1000)
    return resolver


def nameserver(text: str) -> dns.nameserver.Nameserver:
    """A DNS server from ``1.2.3.4``, ``1.2.3.4:5353``, ``::1`` or ``[::1]:5353``; ``ValueError`` otherwise."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    return dns.nameserver.Do53Nameserver(str(ipaddress.ip_address(host)), port)
