"""Store URLs arrive in an unauthenticated POST, so we never connect to one blindly.

Two layers: ``normalise_base_url`` + ``StorePolicy.check`` refuse obviously bad URLs up
front (with a clear reason), and ``safe_session`` re-checks the address *actually
connected to*, so a name that resolves to a public address when checked and to a private
one when connected (DNS rebinding) still fails.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import UnsafeStoreURL

MAX_URL_LENGTH = 2048
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")


def normalise_base_url(url: str) -> str:
    """``store_base_url`` in canonical form: lower-case scheme and host, no default port,
    a trailing slash, path (``index.php/``, store code) kept. Raises ``UnsafeStoreURL``."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeStoreURL("store_base_url is empty")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeStoreURL(f"store_base_url is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UnsafeStoreURL("store_base_url contains spaces or control characters")
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
    if ":" in host:
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
    return urlunsplit((scheme, host, path, "", ""))


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class StorePolicy:
    """Which store hosts we connect to.

    ``allowed_hosts``: names (``shop.example.com``) or suffixes (``.example.com``) that
    may resolve to private addresses. ``strict``: connect to nothing else at all.
    """

    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    strict: bool = False

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

    def check(self, url: str, *, resolve: bool = True) -> str:
        """The normalised URL, if we may connect to it; ``UnsafeStoreURL`` otherwise."""
        url = normalise_base_url(url)
        host = host_of(url)
        if self.is_listed(host):
            return url
        if self.strict:
            raise UnsafeStoreURL(f"store host {host} is not in the allow-list (strict mode)")
        if resolve:
            for address in resolve_host(host):
                if not is_public_address(address):
                    raise UnsafeStoreURL(
                        f"store host {host} resolves to a non-public address ({address})"
                    )
        return url

    def check_peer(self, host: str, address: str) -> None:
        if self.is_listed(host):
            return
        if self.strict:
            raise UnsafeStoreURL(f"store host {host} is not in the allow-list (strict mode)")
        if not is_public_address(address):
            raise UnsafeStoreURL(f"refused to connect to {host}: it resolved to a non-public address ({address})")


#: getaddrinfo has no timeout of its own; Magento waits only 5 s for the whole callback.
RESOLVE_TIMEOUT = 2.0
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


def resolve_host(host: str, timeout: float = RESOLVE_TIMEOUT) -> list[str]:
    host = host.strip("[]")
    future = _resolver.submit(socket.getaddrinfo, host, None, proto=socket.IPPROTO_TCP)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout:
        raise UnsafeStoreURL(f"store host {host} did not resolve within {timeout:g} s") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeStoreURL(f"store host {host} does not resolve ({exc})") from None
    return sorted({info[4][0] for info in infos})


# --- connection-time check ------------------------------------------------------------

def _checked(connection_cls):
    class Checked(connection_cls):
        policy: StorePolicy

        def _new_conn(self):
            sock = super()._new_conn()
            try:
                self.policy.check_peer(self.host, sock.getpeername()[0])
            except UnsafeStoreURL:
                sock.close()
                raise
            return sock

    return Checked


class _SafeAdapter(HTTPAdapter):
    def __init__(self, policy: StorePolicy, **kwargs):
        self._policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        http_conn = type("SafeHTTPConnection", (_checked(HTTPConnection),), {"policy": self._policy})
        https_conn = type("SafeHTTPSConnection", (_checked(HTTPSConnection),), {"policy": self._policy})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("SafeHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("SafeHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)


def safe_session(policy: StorePolicy, *, pool_size: int = 10, hosts: int = 10) -> requests.Session:
    """A ``requests`` session that only ever connects to addresses ``policy`` allows, keeping
    up to ``pool_size`` connections to each of ``hosts`` stores.

    Environment proxies are ignored: a proxy would hide the address actually reached. Cookies
    are never kept: a signed call needs none, and a session may serve many callers.
    """
    session = requests.Session()
    session.trust_env = False
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = _SafeAdapter(policy, pool_connections=hosts, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "magento-integration-companion/0.1"
    return session
