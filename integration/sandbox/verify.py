"""The sandbox's own check of OAuth signatures, written from Magento's server side.

It starts from the raw WSGI request (Host header, raw request URI, Authorization header,
body) the way ``Helper\\Request::prepareRequest`` does, and deliberately shares no code
with the client's signer in ``integration.magento``: a bug there must not be mirrored here.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from urllib.parse import quote, unquote, unquote_plus

OAUTH_NAME = re.compile(r"oauth_[a-z_-]+")
NOT_DECODED = ("oauth_consumer_key", "oauth_consumer_secret", "oauth_token", "oauth_token_secret", "oauth_signature")


_PLAIN = re.compile(r"[A-Za-z0-9._~-]*")


def rawurlencode(s: str) -> str:
    if _PLAIN.fullmatch(s):  # nothing to encode (most names and values; quote() goes byte by byte)
        return s
    return quote(s.encode("utf-8", "surrogateescape"), safe="-._~")


def rawurldecode(s: str) -> str:
    return unquote(s, encoding="utf-8", errors="surrogateescape")


def urldecode(s: str) -> str:
    return unquote_plus(s, encoding="utf-8", errors="surrogateescape")


class ServerError(Exception):
    """What makes PHP fail with a TypeError (Magento answers 500)."""


def request_url(environ) -> str:
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not raw:
        raw = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        if environ.get("QUERY_STRING"):
            raw += "?" + environ["QUERY_STRING"]
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}{raw}"


def header_params(authorization: str) -> dict[str, str]:
    at = authorization.lower().find("oauth ")
    if at < 0:
        return {}
    params: dict[str, str] = {}
    for piece in authorization[at + 6:].split(","):
        name, sep, value = piece.strip().partition("=")
        if sep and OAUTH_NAME.search(name):
            params[rawurldecode(name)] = rawurldecode(value.strip('"'))
    return params


def php_parse_str(query: str) -> dict[str, object]:
    """Top-level names only; ``list`` stands for any PHP array."""
    out: dict[str, object] = {}
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        name = urldecode(name).lstrip(" ").split("\0")[0]
        if not name:
            continue
        m = re.match(r"([^\[]*)\[(.*)", name)
        if m and "]" in m.group(2):
            base = re.sub(r"[ .]", "_", m.group(1))
            if base:
                out[base] = []
            continue
        if m:
            name = re.sub(r"[ .]", "_", m.group(1)) + "_" + m.group(2)
        else:
            name = re.sub(r"[ .]", "_", name)
        out[name] = urldecode(value)
    return out


def collect(profile: str, environ, body: str) -> dict[str, str]:
    """``prepareRequest``: header, then form body, then query string."""
    params = header_params(environ.get("HTTP_AUTHORIZATION", ""))
    if not params:
        return {}
    if environ.get("CONTENT_TYPE", "").lower().startswith("application/x-www-form-urlencoded"):
        for name, value in php_parse_str(body).items():
            if OAUTH_NAME.search(name):
                continue
            if isinstance(value, list):
                if profile != "2.4.4-2.4.7":
                    raise ServerError("Array to string conversion")
                value = "Array"
            params[name] = value
    query = request_url(environ).partition("?")[2].partition("#")[0]
    decode = urldecode if profile == "2.4.4-2.4.7" else rawurldecode
    for pair in query.split("&") if query else ():
        bits = pair.split("=")
        if len(bits) == 2 and not OAUTH_NAME.search(bits[0]):
            params[decode(bits[0])] = decode(bits[1])
    if profile != "2.4.4-2.4.7":
        params = {k: (v if k == "oauth_signature" else rawurlencode(v)) for k, v in params.items()}
    return params


# PHP 8 numeric strings: optional surrounding whitespace, sign, decimal digits, point, exponent.
PHP_NUMERIC = re.compile(r"[ \t\n\r\v\f]*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\n\r\v\f]*")


def php_ksort_compare(a: str, b: str) -> int:
    """``ksort`` on string keys (PHP 8): two numeric strings compare as numbers, others as bytes."""
    if PHP_NUMERIC.fullmatch(a) and PHP_NUMERIC.fullmatch(b):
        numbers = float(a), float(b)
        return (numbers[0] > numbers[1]) - (numbers[0] < numbers[1])
    raw = a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape")
    return (raw[0] > raw[1]) - (raw[0] < raw[1])


def php_strnatcmp(a: str, b: str) -> int:
    """PHP's ``strnatcmp`` (ext/standard/strnatcmp.c), as a plain comparator on bytes."""
    x, y = a.encode("utf-8", "surrogateescape") + b"\0", b.encode("utf-8", "surrogateescape") + b"\0"
    xl, yl = len(x) - 1, len(y) - 1
    if xl == 0 or yl == 0:
        return (xl > yl) - (xl < yl)
    digit = lambda c: 48 <= c <= 57  # noqa: E731
    space = lambda c: c in b" \t\n\v\f\r"  # noqa: E731
    i = j = 0
    while x[i] == 48 and i + 1 < xl and digit(x[i + 1]):
        i += 1
    while y[j] == 48 and j + 1 < yl and digit(y[j + 1]):
        j += 1
    while True:
        while space(x[i]):
            i += 1
        while space(y[j]):
            j += 1
        if digit(x[i]) and digit(y[j]):
            left = x[i] == 48 or y[j] == 48  # "fractional": compare left-aligned
            bias = 0
            while True:
                dx, dy = digit(x[i]), digit(y[j])
                if not dx or not dy:
                    if dx != dy:
                        return 1 if dx else -1
                    break
                if x[i] != y[j]:
                    if left:
                        return 1 if x[i] > y[j] else -1
                    bias = bias or (1 if x[i] > y[j] else -1)
                i, j = i + 1, j + 1
            if bias:
                return bias
            if i >= xl or j >= yl:
                return (i < xl) - (j < yl)
        if x[i] != y[j]:
            return 1 if x[i] > y[j] else -1
        i, j = i + 1, j + 1
        if i >= xl or j >= yl:
            return (i < xl) - (j < yl)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 (laminas-uri's removePathDotSegments), step by step."""
    output: list[str] = []
    while path:
        if path.startswith(("../", "./")):
            path = path.partition("/")[2]
        elif path.startswith("/./") or path == "/.":
            path = "/" + path[3:]
        elif path.startswith("/../") or path == "/..":
            path = "/" + path[4:]
            output = output[:-1]
        elif path in (".", ".."):
            path = ""
        else:
            end = path.find("/", 1)
            end = len(path) if end < 0 else end
            output.append(path[:end])
            path = path[end:]
    return "".join(output)


def _laminas_uri(url: str, decode_set: str) -> str:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    path = (slash + path).split("?")[0].split("#")[0] or "/"
    authority = authority.lower()
    for default in ((":80", "http"), (":443", "https")):
        if authority.endswith(default[0]) and scheme.lower() == default[1]:
            authority = authority[: -len(default[0])]
    path = _remove_dot_segments(path)
    path = re.sub(r"%([0-9A-Fa-f]{2})",
                  lambda m: chr(int(m.group(1), 16)) if chr(int(m.group(1), 16)) in decode_set else "%" + m.group(1).upper(),
                  path)
    path = re.sub(r"[^A-Za-z0-9\-._~():@&=+$,/;%]|%(?![0-9A-Fa-f]{2})",
                  lambda m: quote(m.group(0).encode("utf-8", "surrogateescape"), safe=""), path)
    return f"{scheme.lower()}://{authority}{path}"


UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def base_string(profile: str, method: str, url: str, params: dict[str, str]) -> str:
    params = {k: v for k, v in params.items() if k != "oauth_signature"}
    if profile == "2.4.8+":
        merged: dict[str, object] = {k: (v if k in NOT_DECODED else urldecode(v)) for k, v in params.items()}
        merged.update(php_parse_str(url.partition("?")[2].partition("#")[0]))
        for key in list(merged):
            if "[" in key and "]" in key.split("[", 1)[1] and isinstance(merged.get(key.split("[", 1)[0]), list):
                del merged[key.split("[", 1)[0]]
        # PHP turns a key into an integer only for ASCII digits that fit a zend_long.
        if any(re.fullmatch(r"0|-?[1-9][0-9]*", k) and -(2**63) <= int(k) < 2**63 for k in merged):
            raise ServerError("integer parameter name")
        pairs = sorted(((k, v) for k, v in merged.items() if isinstance(v, str)),
                       key=functools.cmp_to_key(lambda p, q: php_ksort_compare(p[0], q[0])))
        normalized = "&".join(f"{rawurlencode(k)}={rawurlencode(v)}" for k, v in pairs)
        m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)", url)
        base = f"{m.group(1)}://{m.group(2)}{m.group(3)}"
    else:
        encoded = [(rawurlencode(k), rawurlencode(v)) for k, v in params.items()]
        encoded.sort(key=functools.cmp_to_key(lambda p, q: php_strnatcmp(p[0], q[0])))
        normalized = "&".join(f"{k}={v}" for k, v in encoded)
        decode_set = UNRESERVED + (":@&=+$,/;%" if profile == "2.4.4-2.4.7" else "")
        base = _laminas_uri(url, decode_set)
    return "&".join([method.upper(), rawurlencode(base), rawurlencode(normalized)])


def expected_signature(profile: str, method: str, url: str, params: dict[str, str],
                       consumer_secret: str, token_secret: str) -> str:
    key = (rawurlencode(consumer_secret) + "&" + rawurlencode(token_secret)).encode()
    digest = hmac.new(key, base_string(profile, method, url, params).encode("utf-8", "surrogateescape"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()
