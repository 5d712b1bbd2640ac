"""How a request reaches a store: a session that connects only where the policy allows, and
``send``, which holds each request to a deadline and its answer to a size limit, and turns
transport failures into our errors."""

from __future__ import annotations

import contextvars
import heapq
import http.client
import http.cookiejar
import io
import itertools
import logging
import os
import re
import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from requests.hooks import dispatch_hook
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (ClosedPoolError, ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError,
                                ProtocolError, ReadTimeoutError, SSLError)
from urllib3.util import Timeout
from urllib3.util import url as urllib3_url
from urllib3.util.connection import create_connection

from .errors import AnswerTooLarge, BadStoreResponse, MagentoError, StoreTimeout, StoreUnreachable, UnsafeStoreURL
from .store_url import RESOLVE_TIMEOUT, StorePolicy

log = logging.getLogger(__name__)

#: Seconds one call to a store may take in all (connecting, answering, retries, waits).
DEFAULT_DEADLINE = 30.0
#: What an answer we parse into memory may weigh. JSON grows about 20-fold once parsed, so
#: this keeps one answer under ~100 MB; pages ask for less at a time rather than for more.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class Deadline:
    """The moment a call to a store must be over by, whatever it does meanwhile."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(self._ends - time.monotonic(), 0.0)

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._ends

    def bound(self, timeout: float | tuple[float, float]) -> tuple[float, float]:
        """``(connect, read)`` timeouts, neither longer than what is left."""
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        left = self.remaining()
        return min(connect, left), min(read, left)


def send(session: requests.Session, method: str, url: str, *, timeout, deadline: Deadline,
         max_bytes: int = MAX_ANSWER_BYTES, headers: dict | None = None, data=None, auth=None) -> requests.Response:
    """One request through ``session``'s checked connection pools that never follows a redirect,
    is over by ``deadline`` and reads at most ``max_bytes`` of the answer.

    The request is prepared as ``session.request`` would (the session's headers, requests' URL
    quoting, which is what gets signed, its body and ``Content-Length`` rules, ``auth``) and the
    answer is a ``requests.Response``, with the session's response hooks called; but it goes to
    urllib3 directly: requests' own layers (merging settings, cookies that a session of ours
    never keeps, proxies it never uses, hooks, redirect bookkeeping) cost a proxied call more
    CPU than urllib3 and ``http.client`` together."""
    if deadline.expired:
        raise _late(method, url, deadline)
    watch = DeadlineWatch(deadline)
    reading = False
    try:
        with watch:
            request = _prepare(session, method, url, headers, data, auth)
            adapter = session.get_adapter(request.url)
            # requests' own TLS rules (the session's verify and client certificate; no environment)
            pool = adapter.get_connection_with_tls_context(request, session.verify, cert=session.cert)
            adapter.cert_verify(pool, request.url, session.verify, session.cert)
            target = request.path_url  # as HTTPAdapter.request_url sends it without a proxy
            if target.startswith("//"):
                target = "/" + target.lstrip("/")
            connect, read = deadline.bound(timeout)
            if connect <= 0 or read <= 0:  # it ran out meanwhile (urllib3 would raise ValueError)
                raise _late(method, url, deadline)
            raw = pool.urlopen(request.method, target, body=request.body, headers=request.headers,
                               redirect=False, assert_same_host=False, preload_content=False, decode_content=False,
                               retries=adapter.max_retries, timeout=Timeout(connect=connect, read=read),
                               chunked=not (request.body is None or "Content-Length" in request.headers))
            response = _response(request, raw, adapter)
            if session.hooks["response"]:
                response = dispatch_hook("response", session.hooks, response) or response
            reading = True
            response._content = _read(response, method, url, max_bytes, watch)
    except MagentoError:
        raise
    except Exception as exc:
        if watch.cut:
            raise _late(method, url, deadline) from None
        _raise_transport_error(exc, method, url, timeout, reading=reading)
    if 300 <= response.status_code < 400:
        location = response.headers.get("Location", "")
        raise BadStoreResponse(
            f"the store answered {method} {_path(url)} with a redirect ({response.status_code}) to {location[:200]}",
            hint="Use the address the store redirects to as its base URL (https, www or not, index.php/).",
            status=response.status_code,
        )
    return response


def _late(method: str, url: str, deadline: Deadline) -> StoreTimeout:
    return StoreTimeout(f"the store did not answer {method} {_path(url)} within {deadline.seconds:g} s")


def _prepare(session: requests.Session, method: str, url: str, headers: dict | None, data, auth) -> PreparedRequest:
    """What ``session.prepare_request`` makes of it, for a session of ours (no cookies kept,
    no session-wide auth or params)."""
    request = PreparedRequest()
    request.method = method.upper()
    request.prepare_url(url, None)
    merged = CaseInsensitiveDict(session.headers)
    if headers:
        merged.update(headers)
        for name in [name for name, value in merged.items() if value is None]:
            del merged[name]
    request.headers = merged
    request.prepare_body(data, None)
    request.prepare_auth(auth, url)
    return request


def _response(request: PreparedRequest, raw, adapter) -> requests.Response:
    """``HTTPAdapter.build_response`` but for the cookies, which a session of ours never keeps."""
    response = requests.Response()
    response.status_code = raw.status
    response.headers = CaseInsensitiveDict(raw.headers)
    response.encoding = get_encoding_from_headers(response.headers)
    response.raw = raw
    response.reason = raw.reason
    response.url = request.url
    response.request = request
    response.connection = adapter
    return response


def _read(response: requests.Response, method: str, url: str, max_bytes: int, watch: DeadlineWatch) -> bytes:
    def too_large() -> AnswerTooLarge:
        response.close()
        return AnswerTooLarge(f"the store's answer to {method} {_path(url)} is larger than {_size(max_bytes)}",
                              status=response.status_code)

    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large()
    content = bytearray()
    for chunk in response.raw.stream(64 * 1024, decode_content=True):
        content += chunk
        if len(content) > max_bytes:
            raise too_large()
        if watch.cut:
            break
    response._content_consumed = True
    if watch.cut:  # a socket shut down mid-answer can look like its end
        response.close()
        raise TimeoutError
    return bytes(content)


def _raise_transport_error(exc: Exception, method: str, url: str, timeout, *, reading: bool = False) -> None:
    """Our error for what urllib3 (or requests, preparing the URL) raised; the same outcome
    requests gave each of them. Timeouts waiting for the connection or the answer's head are
    ``StoreTimeout``; one while reading the body is a broken connection, as in requests."""
    # The socket's own words stay in our log: "connection refused" here and "timed out" there
    # would let whoever asked map hosts and ports they cannot reach themselves.
    failed = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    if (isinstance(failed, ConnectTimeoutError) and not isinstance(failed, NewConnectionError)) or (
            isinstance(failed, ReadTimeoutError) and not reading) or isinstance(exc, requests.Timeout):
        raise StoreTimeout(f"the store did not answer {method} {_path(url)} within {timeout_text(timeout)}") from None
    if isinstance(failed, (SSLError, requests.exceptions.SSLError)):
        log.warning("TLS with %s failed: %s", _path(url), _reason(exc))
        raise StoreUnreachable("the TLS handshake with the store failed") from None
    if isinstance(exc, (MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError, ClosedPoolError,
                        OSError, requests.ConnectionError)):
        log.warning("connection to %s failed: %s", _path(url), _reason(exc))
        raise StoreUnreachable("could not connect to the store") from None
    if isinstance(exc, (HTTPError, requests.RequestException)):  # malformed URL, bad headers, content decoding...
        log.warning("request to %s failed: %s", _path(url), _reason(exc))
        raise StoreUnreachable("could not talk to the store") from None
    raise exc


class DeadlineWatch:
    """Shuts the sockets of one request down when its deadline passes; ``cut`` says it did.

    Used as ``with DeadlineWatch(deadline): session.request(...)`` around a ``safe_session``
    (whose connections register their sockets with the watch of the running request).

    A socket timeout bounds each read, not the answer: a store that drips two bytes every
    few seconds never trips it. The connection registers its socket here (through
    ``_watching``; urllib3 offers no other way to hand it per-request state) as a
    duplicate we own, so a late shutdown never touches a descriptor reused meanwhile.
    """

    def __init__(self, deadline: Deadline):
        self.cut = False
        self.done = False
        self._deadline = deadline
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> DeadlineWatch:
        self._token = _watching.set(self)
        _watchdog.watch(time.monotonic() + self._deadline.remaining(), self)
        return self

    def __exit__(self, *exc) -> None:
        self.done = True  # the watchdog drops it when its time comes, without shutting anything
        _watching.reset(self._token)
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def add(self, sock: socket.socket) -> None:
        try:
            duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:  # already closed
            return
        with self._lock:
            self._sockets.append(duplicate)
            if self.cut:
                _shut(duplicate)

    def _shut_down(self) -> None:
        with self._lock:
            if self.done:
                return
            self.cut = True
            for sock in self._sockets:
                _shut(sock)


class _Watchdog:
    """One thread per process that shuts down the requests whose deadline passed. A timer
    thread per request cost more CPU than the request itself (starting a thread waits for
    it to run, which under load means waiting for the GIL)."""

    def __init__(self):
        self._wakeup = threading.Condition()
        self._due: list[tuple[float, int, DeadlineWatch]] = []  # a heap by deadline
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._sleeps_until = float("inf")  # when the thread wakes next unless notified

    def watch(self, ends: float, watch: DeadlineWatch) -> None:
        with self._wakeup:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                # Also after a fork: the parent's thread does not exist in the child.
                self._due, self._pid = [], os.getpid()
                self._thread = threading.Thread(target=self._run, name="store-deadlines", daemon=True)
                self._thread.start()
            while self._due and self._due[0][2].done:  # finished requests, oldest first: the heap stays small
                heapq.heappop(self._due)
            heapq.heappush(self._due, (ends, next(self._order), watch))
            if ends < self._sleeps_until:  # only then: waking the thread on every call costs a switch
                self._sleeps_until = ends
                self._wakeup.notify()

    def _run(self) -> None:
        while True:
            expired = []
            with self._wakeup:
                now = time.monotonic()
                while self._due and (self._due[0][2].done or self._due[0][0] <= now):
                    _, _, watch = heapq.heappop(self._due)
                    if not watch.done:
                        expired.append(watch)
                if not expired:
                    self._sleeps_until = self._due[0][0] if self._due else float("inf")
                    self._wakeup.wait(self._sleeps_until - now if self._due else None)
            for watch in expired:
                watch._shut_down()


_watchdog = _Watchdog()


_watching: contextvars.ContextVar[DeadlineWatch | None] = contextvars.ContextVar("store_request_watch", default=None)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def timeout_text(timeout) -> str:
    if isinstance(timeout, tuple):
        return f"{timeout[-1]:g} s"
    return f"{timeout:g} s"


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def _path(url: str) -> str:
    return url.split("?", 1)[0]


def _reason(exc: Exception) -> str:
    # urllib3 nests the root cause a few levels deep; the innermost text is the useful one.
    cause = exc
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    text = str(cause) or type(cause).__name__
    return text[:300]


# --- reading an answer's head --------------------------------------------------------

#: A header line's name as the email package reads one (printable ASCII but ``:``).
_HEADER_NAME = re.compile(r"[!-9;-~]+")


def _parse_head(fp) -> http.client.HTTPMessage:
    """``http.client.parse_headers``, the same message, without the email package's parser for
    the usual head (one ``Name: value`` a line): it was the largest part of reading an answer.
    A head with anything else (continued lines, stray CRs, odd names) still goes there."""
    lines = http.client._read_headers(fp)
    message = http.client.HTTPMessage()
    for raw in lines[:-1]:  # the last is the empty line (or nothing, at the end of the stream)
        line = raw.decode("iso-8859-1")
        line = line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else None
        name, colon, value = line.partition(":") if line is not None else ("", "", "")
        if not colon or "\r" in value or not _HEADER_NAME.fullmatch(name):
            return http.client.parse_headers(io.BytesIO(b"".join(lines)))
        message._headers.append((name, value.lstrip(" \t")))  # as the compat32 policy keeps them
    message.set_payload("")
    return message


class _Answer(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` with its head read by ``_parse_head``: ``begin`` as in
    Python 3.11's ``http.client``, which calls the module's ``parse_headers`` directly."""

    def begin(self):
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)  # the head of a 100 Continue
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _parse_head(self.fp)
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding and encoding.lower() == "chunked")
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


# --- urllib3's percent-encoding of a URL's parts -----------------------------------------

#: urllib3's own, kept for what the quick path below does not take, and for the tests.
urllib3_encode_invalid_chars = getattr(urllib3_url, "_encode_invalid_chars", None)


def _already_encoded(chars) -> re.Pattern:
    """A part that is only ``chars`` and ``%XX`` escapes with upper-case digits: urllib3 gives it back as it is."""
    return re.compile("(?:[%s]|%%[0-9A-F]{2})*" % re.escape("".join(sorted(chars))))


#: urllib3's sets of the characters each part may hold, each with its pattern (held by the set
#: itself, not its id, which a collected set could pass on).
_ALREADY_ENCODED = [(chars, _already_encoded(chars)) for chars in {
    id(chars): chars for chars in (getattr(urllib3_url, name, None) for name in
                                   ("_PATH_CHARS", "_QUERY_CHARS", "_FRAGMENT_CHARS", "_USERINFO_CHARS"))
    if isinstance(chars, (set, frozenset)) and all(isinstance(c, str) and len(c) == 1 for c in chars)}.values()]


def _encode_invalid_chars(component, allowed_chars):
    """urllib3's ``_encode_invalid_chars`` with a quick path for a part that is already encoded
    (every ``%`` the start of an upper-case ``%XX``, every other character allowed), which it
    gives back unchanged: urllib3 takes its own quick path only for a part without any ``%``,
    and a searchCriteria query (``searchCriteria%5BpageSize%5D=5``) went byte by byte through
    Python, four times a call (the URL prepared, the target sent), 6% of a proxied call's CPU.
    Held to urllib3's own result for any text by a property test."""
    if type(component) is str and component.isascii():
        for chars, pattern in _ALREADY_ENCODED:
            if chars is allowed_chars:
                if pattern.fullmatch(component):
                    return component
                break
    return urllib3_encode_invalid_chars(component, allowed_chars)


if urllib3_encode_invalid_chars is not None and _ALREADY_ENCODED:  # another urllib3: its own, untouched
    # parse_url and _encode_target (requests preparing the URL, urllib3 sending it) look it up here.
    urllib3_url._encode_invalid_chars = _encode_invalid_chars


# --- the session: connects only where the policy allows --------------------------------

def _checked(connection_cls):
    class Checked(connection_cls):
        policy: StorePolicy
        response_class = _Answer

        def _new_conn(self):
            if self.policy.is_listed(self.host):
                sock = super()._new_conn()  # the operator's own host: the system resolver
            else:
                sock = self._connect_public()
            try:
                self.policy.check_peer(self.host, sock.getpeername()[0])
            except UnsafeStoreURL:
                sock.close()
                raise
            _watch_socket(sock)  # new connections: plain http opens them inside request()
            return sock

        def request(self, *args, **kwargs):
            if self.sock is not None:  # kept alive, or https (connected before the request)
                _watch_socket(self.sock)
            return super().request(*args, **kwargs)

        def _connect_public(self) -> socket.socket:
            """Look the host up ourselves (bounded) and connect only to addresses we checked:
            a non-public one is refused before any packet goes to it, so the answer does not
            tell an open port from a closed one."""
            if self.policy.strict:
                raise UnsafeStoreURL(f"store host {self.host} is not in the allow-list (strict mode)")
            timeout = self.timeout if isinstance(self.timeout, (int, float)) else RESOLVE_TIMEOUT
            started = time.monotonic()
            addresses = self.policy.public_addresses(self.host, timeout)
            error: OSError | None = None
            for address in addresses:
                left = timeout - (time.monotonic() - started)
                if left <= 0:
                    break
                try:
                    return create_connection((address, self.port), left, source_address=self.source_address,
                                             socket_options=self.socket_options)
                except OSError as exc:
                    error = exc
            if error is None or isinstance(error, TimeoutError):
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={timeout})")
            raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error

    return Checked


def _watch_socket(sock: socket.socket) -> None:
    watch = _watching.get()
    if watch is not None:
        watch.add(sock)


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
    # None rather than requests' empty dicts: merging an empty dict into every request costs
    # two runtime Protocol checks each (~10 us apiece on Python 3.11), for nothing.
    session.params = session.proxies = None
    return session
