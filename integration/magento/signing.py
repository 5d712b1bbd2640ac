"""OAuth 1.0a HMAC-SHA256 signatures as each generation of Magento computes them.

Magento does not sign by RFC 5849. It rebuilds the parameter set from the raw request
(Authorization header, form body, query string) with PHP primitives, and the rules
changed between releases. A client is only accepted when it builds the *same* base
string the store will build, so each generation is modelled here as a profile:

* ``2.4.8+``       Magento's own signer (2.4.8 and later).
* ``2.4.4-2.4.7``  laminas-oauth with laminas-uri normalisation.
* ``patch-37278``  a short-lived 2.4-develop state, shipped as a patch for 2.4.4-2.4.7.

See ``shared/signature-profiles.md`` for the derivation; every rule below is pinned by
``shared/magento-signature-vectors.json`` in the tests.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_to_bytes, urlsplit

PROFILE_248 = "2.4.8+"
PROFILE_244 = "2.4.4-2.4.7"
PROFILE_PATCH = "patch-37278"
#: Tried in this order when a store's generation is not known yet.
PROFILES: tuple[str, ...] = (PROFILE_248, PROFILE_244, PROFILE_PATCH)

SIGNATURE_METHOD = "HMAC-SHA256"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

# Magento keeps a parameter as "protocol" when this matches anywhere in its name.
_PROTOCOL_NAME = re.compile(r"oauth_[a-z_-]+")
# Credentials that Oauth::processNonRequiredParams leaves alone in 2.4.8+.
_CREDENTIALS = frozenset(
    {"oauth_consumer_key", "oauth_consumer_secret", "oauth_token", "oauth_token_secret", "oauth_signature"}
)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_NOTHING_TO_ENCODE = re.compile(r"[A-Za-z0-9._~-]*")
#: Each byte as rawurlencode writes it.
_ENCODED_BYTE = tuple(chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}" for b in range(256))
_SUBDELIMS = frozenset(":@&=+$,/;%")
# laminas-uri decodes %XX escapes of these characters in a path (2.4.4-2.4.7: %2F -> /).
_DECODABLE = {PROFILE_244: _UNRESERVED | _SUBDELIMS, PROFILE_PATCH: _UNRESERVED}
_PATH_LITERAL = _UNRESERVED | _SUBDELIMS | frozenset("()")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# PHP's is_numeric and array-key rules know ASCII digits only, and a key is an integer only while it
# fits a 64-bit zend_long ("5\n" or 2**63 stay strings).
_PHP_NUMERIC = re.compile(r"[ \t\n\r\v\f]*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\n\r\v\f]*")
_PHP_INT_KEY = re.compile(r"0|-?[1-9][0-9]*")
_PHP_INT_MIN, _PHP_INT_MAX = -(2**63), 2**63 - 1


def _is_php_int_key(key: str) -> bool:
    return bool(_PHP_INT_KEY.fullmatch(key)) and _PHP_INT_MIN <= int(key) <= _PHP_INT_MAX


class UnsignableRequest(ValueError):
    """The request cannot be signed so that this Magento generation accepts it."""


def enc(value: str | bytes) -> str:
    """PHP ``rawurlencode``: everything but ``A-Z a-z 0-9 - . _ ~``, upper-case hex."""
    if isinstance(value, str):
        if _NOTHING_TO_ENCODE.fullmatch(value):  # most names and values: a signed call encodes dozens
            return value
        value = value.encode("utf-8")  # strict, as quote() does: a lone surrogate raises
    return "".join(map(_ENCODED_BYTE.__getitem__, value))


def _pdec(value: str) -> str:
    """PHP ``rawurldecode``: ``%XX`` to the byte, anything else (a lone ``%``) unchanged."""
    return unquote_to_bytes(value).decode("utf-8", "surrogateescape") if "%" in value else value


def _fdec(value: str) -> str:
    """PHP ``urldecode``: like ``rawurldecode``, but ``+`` is a space."""
    return _pdec(value.replace("+", " "))


def _enc_surrogate(value: str) -> str:
    if _NOTHING_TO_ENCODE.fullmatch(value):
        return value
    return enc(value.encode("utf-8", "surrogateescape"))


def parse_str(query: str) -> dict[str, str | None]:
    """Top level of PHP ``parse_str``: ``None`` marks a name PHP turns into an array."""
    result: dict[str, str | None] = {}
    for piece in query.split("&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition("=")
        name = _fdec(raw_name).lstrip(" ").split("\0", 1)[0]
        if not name:
            continue
        bracket = name.find("[")
        head = name if bracket < 0 else name[:bracket]
        head = head.replace(" ", "_").replace(".", "_")
        if bracket >= 0 and "]" in name[bracket:]:
            if head:
                result[head] = None
            continue
        if bracket >= 0:  # a '[' without a later ']' becomes '_' and the rest is kept
            head = head + "_" + name[bracket + 1 :]
        result[head] = _fdec(raw_value)
    return result


def _helper_params(
    profile: str,
    oauth_params: Iterable[tuple[str, str]],
    query: str,
    body: str | None,
    content_type: str | None,
) -> dict[str, str]:
    """Magento's ``Helper\\Request::prepareRequest``: header, then form body, then query."""
    params: dict[str, str] = {}
    for name, value in oauth_params:
        if _PROTOCOL_NAME.search(name):
            params[name] = value
    if body and content_type and content_type.lower().startswith(FORM_CONTENT_TYPE):
        for name, value in parse_str(body).items():
            if _PROTOCOL_NAME.search(name):
                continue
            if value is None:
                if profile != PROFILE_244:
                    raise UnsignableRequest(f"form field {name!r} is an array; Magento {profile} answers 500")
                value = "Array"
            params[name] = value
    if query:
        decode = _fdec if profile == PROFILE_244 else _pdec
        for piece in query.split("&"):
            parts = piece.split("=")
            if len(parts) != 2 or _PROTOCOL_NAME.search(parts[0]):
                continue
            params[decode(parts[0])] = decode(parts[1])
    params.pop("oauth_signature", None)
    if profile != PROFILE_244:
        params = {k: _enc_surrogate(v) for k, v in params.items()}
    return params


# --- PHP strnatcmp --------------------------------------------------------------------

def _isdigit(c: int) -> bool:
    return 48 <= c <= 57


def _isspace(c: int) -> bool:
    return c in (9, 10, 11, 12, 13, 32)


def strnatcmp(a: str, b: str) -> int:
    """PHP ``strnatcmp`` (natural order, case-sensitive) on the UTF-8 bytes."""
    x, y = a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape")
    if not x or not y:
        return (len(x) > len(y)) - (len(x) < len(y))
    xe, ye = len(x), len(y)
    at = lambda s, i, end: s[i] if i < end else 0  # noqa: E731 - C strings end in NUL
    i = j = 0
    leading = True
    while True:
        ca, cb = at(x, i, xe), at(y, j, ye)
        while leading and ca == 48 and i + 1 < xe and _isdigit(x[i + 1]):
            i += 1
            ca = x[i]
        while leading and cb == 48 and j + 1 < ye and _isdigit(y[j + 1]):
            j += 1
            cb = y[j]
        leading = False
        while _isspace(ca):
            i += 1
            ca = at(x, i, xe)
        while _isspace(cb):
            j += 1
            cb = at(y, j, ye)
        if _isdigit(ca) and _isdigit(cb):
            fractional = ca == 48 or cb == 48
            result, i, j = (_compare_left if fractional else _compare_right)(x, i, y, j)
            if result:
                return result
            if i >= xe and j >= ye:
                return 0
            if i >= xe:
                return -1
            if j >= ye:
                return 1
            ca, cb = x[i], y[j]
        if ca != cb:
            return -1 if ca < cb else 1
        i += 1
        j += 1
        if i >= xe and j >= ye:
            return 0
        if i >= xe:
            return -1
        if j >= ye:
            return 1


def _compare_right(x: bytes, i: int, y: bytes, j: int) -> tuple[int, int, int]:
    bias = 0
    while True:
        da = i < len(x) and _isdigit(x[i])
        db = j < len(y) and _isdigit(y[j])
        if not da and not db:
            return bias, i, j
        if not da:
            return -1, i, j
        if not db:
            return 1, i, j
        if not bias and x[i] != y[j]:
            bias = -1 if x[i] < y[j] else 1
        i += 1
        j += 1


def _compare_left(x: bytes, i: int, y: bytes, j: int) -> tuple[int, int, int]:
    while True:
        da = i < len(x) and _isdigit(x[i])
        db = j < len(y) and _isdigit(y[j])
        if not da and not db:
            return 0, i, j
        if not da:
            return -1, i, j
        if not db:
            return 1, i, j
        if x[i] != y[j]:
            return (-1 if x[i] < y[j] else 1), i, j
        i += 1
        j += 1


def _php_key_compare(a: str, b: str) -> int:
    """PHP 8 ``ksort`` comparison of two string keys."""
    if _PHP_NUMERIC.fullmatch(a) and _PHP_NUMERIC.fullmatch(b):
        fa, fb = float(a), float(b)
        return (fa > fb) - (fa < fb)
    xa, xb = a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape")
    return (xa > xb) - (xa < xb)


# --- base URL -------------------------------------------------------------------------

def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4."""
    out: list[str] = []
    while path:
        if path.startswith("../"):
            path = path[3:]
        elif path.startswith("./"):
            path = path[2:]
        elif path.startswith("/./"):
            path = path[2:]
        elif path == "/.":
            path = "/"
        elif path.startswith("/../"):
            path = path[3:]
            if out:
                out.pop()
        elif path == "/..":
            path = "/"
            if out:
                out.pop()
        elif path in (".", ".."):
            path = ""
        else:
            start = 1 if path.startswith("/") else 0
            cut = path.find("/", start)
            cut = len(path) if cut < 0 else cut
            out.append(path[:cut])
            path = path[cut:]
    return "".join(out)


def _laminas_path(path: str, decodable: frozenset[str]) -> str:
    path = _remove_dot_segments(path)

    def decode(m: re.Match[bytes]) -> bytes:
        char = chr(int(m.group(1), 16))
        return char.encode() if char in decodable else b"%" + m.group(1).upper()

    raw = _ESCAPE.sub(decode, path.encode("utf-8", "surrogateescape"))
    out = []
    for k, byte in enumerate(raw):
        char = chr(byte)
        if char == "%":
            keep = _ESCAPE.match(raw, k) is not None
        else:
            keep = byte < 128 and char in _PATH_LITERAL
        out.append(char if keep else "%%%02X" % byte)
    return "".join(out) or "/"


def _base_url(profile: str, url: str) -> str:
    parts = urlsplit(url)
    if profile == PROFILE_248:
        # Used verbatim: scheme://Host-header/path, escapes and case untouched.
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
    scheme = parts.scheme.lower()
    host, _, port = parts.netloc.rpartition(":") if _has_port(parts.netloc) else (parts.netloc, "", "")
    host = host.lower()
    if port and not ((scheme == "http" and port == "80") or (scheme == "https" and port == "443")):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{_laminas_path(parts.path, _DECODABLE[profile])}"


def _has_port(netloc: str) -> bool:
    return ":" in netloc.rsplit("]", 1)[-1]


# --- parameter string -----------------------------------------------------------------

def _laminas_param_string(params: Mapping[str, str]) -> str:
    pairs = [(_enc_surrogate(k), _enc_surrogate(v)) for k, v in params.items()]
    return "&".join(f"{pairs[n][0]}={pairs[n][1]}" for n in _natural_order(tuple(k for k, _ in pairs)))


# The orders below depend on the names alone, and a client signs the same names again and again
# (a sync's pages, ``oauth_*`` and ``searchCriteria[...]``, differ in values only): each name
# list is sorted once. A comparator in Python costs more than all else in a base string (on
# every call, for every profile a store whose generation is not known yet may run).
@functools.lru_cache(maxsize=256)
def _natural_order(names: tuple[str, ...]) -> tuple[int, ...]:
    """The positions of ``names`` in laminas' order: ``strnatcmp``, ties kept in place."""
    return tuple(sorted(range(len(names)), key=functools.cmp_to_key(lambda a, b: strnatcmp(names[a], names[b]))))


@functools.lru_cache(maxsize=256)
def _ksort_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` sorted as PHP 8's ``ksort`` sorts string keys."""
    return tuple(sorted(names, key=functools.cmp_to_key(_php_key_compare)))


def _magento_param_string(params: dict[str, str], query: str) -> str:
    merged: dict[str, str | None] = {
        k: (v if k in _CREDENTIALS else _fdec(v)) for k, v in params.items()
    }
    merged.update(parse_str(query))
    for key in list(merged):
        bracket = key.find("[")
        if bracket >= 0 and "]" in key[bracket:] and merged.get(key[:bracket], "") is None:
            del merged[key[:bracket]]
    for key in merged:
        if _is_php_int_key(key):
            raise UnsignableRequest(f"parameter name {key!r} is an integer; Magento 2.4.8+ answers 500")
    return "&".join(f"{_enc_surrogate(k)}={_enc_surrogate(merged[k])}" for k in _ksort_order(tuple(merged))
                    if merged[k] is not None)


def base_string(
    profile: str,
    method: str,
    url: str,
    oauth_params: Iterable[tuple[str, str]],
    body: str | None = None,
    content_type: str | None = None,
) -> str:
    """The signature base string the store computes for this request, as sent."""
    if profile not in PROFILES:
        raise ValueError(f"unknown signature profile {profile!r}; expected one of {', '.join(PROFILES)}")
    query = urlsplit(url).query
    params = _helper_params(profile, oauth_params, query, body, content_type)
    if profile == PROFILE_248:
        param_string = _magento_param_string(params, query)
    else:
        param_string = _laminas_param_string(params)
    return "&".join((method.upper(), enc(_base_url(profile, url)), enc(param_string)))


def signing_key(consumer_secret: str, token_secret: str | None) -> bytes:
    return f"{enc(consumer_secret)}&{enc(token_secret or '')}".encode()


def signature(base: str, consumer_secret: str, token_secret: str | None) -> str:
    digest = hmac.new(signing_key(consumer_secret, token_secret), base.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def sign(
    profile: str,
    method: str,
    url: str,
    oauth_params: Iterable[tuple[str, str]],
    consumer_secret: str,
    token_secret: str | None = None,
    body: str | None = None,
    content_type: str | None = None,
) -> str:
    """``oauth_signature`` for this request under ``profile``."""
    return signature(base_string(profile, method, url, oauth_params, body, content_type), consumer_secret, token_secret)
