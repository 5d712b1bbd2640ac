"""Hypothesis properties for the parsers, validators and the signer."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from integration.activation import CallbackRejected, parse_callback
from integration.identity.routes import is_safe_callback
from integration.magento import signing
from integration.magento.client import query_string, segment
from integration.magento.errors import UnsafeStoreURL
from integration.magento.oauth import magento_auth, signed_url
from integration.magento.store_url import normalise_base_url
from integration.models import StoreLink
from integration.sandbox import verify

FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150, deadline=None)
credential = st.one_of(st.text(min_size=0, max_size=40), st.text("abcdefghijklmnopqrstuvwxyz0123456789",
                                                                 min_size=32, max_size=32))
url_text = st.one_of(
    st.text(max_size=60),
    st.builds(lambda s, h, p, path: f"{s}://{h}{p}{path}", st.sampled_from(["http", "https", "HTTP", "ftp", "javascript"]),
              st.sampled_from(["127.0.0.1", "localhost", "10.0.0.1", "[::1]", "user@127.0.0.1", "", "LOCALHOST"]),
              st.sampled_from(["", ":80", ":443", ":8080", ":99999", ":x"]),
              st.text(max_size=20)),
)


@FIXTURES
@given(key=credential, secret=credential, verifier=credential, url=url_text, drop=st.sets(st.integers(0, 3)))
def test_callback_parser_accepts_only_what_magento_sends(app, key, secret, verifier, url, drop):
    fields = [("oauth_consumer_key", key), ("oauth_consumer_secret", secret), ("store_base_url", url),
              ("oauth_verifier", verifier)]
    form = MultiDict([f for i, f in enumerate(fields) if i not in drop])
    with app.test_request_context():
        try:
            callback = parse_callback(form)
        except CallbackRejected as exc:
            assert str(exc)
            return
    assert not drop
    for value in (callback.consumer_key, callback.consumer_secret, callback.verifier):
        assert len(value) == 32 and value.isalnum()
    assert callback.store_base_url == normalise_base_url(url)


@settings(max_examples=400, deadline=None)
@given(url=url_text)
def test_normalised_store_urls_are_canonical(url):
    try:
        out = normalise_base_url(url)
    except UnsafeStoreURL:
        return
    parts = urlsplit(out)
    assert parts.scheme in ("http", "https") and out.endswith("/") and parts.hostname
    assert parts.username is None and not parts.query and not parts.fragment
    assert not any(c.isspace() for c in out)
    assert normalise_base_url(out) == out  # idempotent


@FIXTURES
@given(target=st.one_of(url_text, st.builds(lambda h, p: f"https://{h}/{p}", st.sampled_from(
    ["shop.example.com", "SHOP.example.com", "evil.example", "shop.example.com.evil.example", "127.0.0.1"]),
    st.text(max_size=10))))
def test_success_call_back_only_leads_back_to_the_store(app, target):
    link = StoreLink(base_url="https://shop.example.com/", store_host="shop.example.com")
    with app.test_request_context():
        safe = is_safe_callback(target, link)
    if safe:
        parts = urlsplit(target)
        assert parts.scheme in ("http", "https")
        assert parts.hostname in ("shop.example.com", "127.0.0.1", "localhost")  # the store, or allow-listed


name = st.builds(lambda head, tail: head + tail, st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
                 st.sampled_from(["", "[0]", "[2]", "[10]", "[pageSize]", "[filter_groups][0][filters][1][value]"]))
value = st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(profile=st.sampled_from(signing.PROFILES), method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       sku=st.one_of(st.sampled_from([".", "..", "a.b"]), st.text(min_size=1, max_size=12)), pairs=st.dictionaries(name, value, max_size=6),
       form=st.one_of(st.none(), st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), value, max_size=3)),
       store=st.sampled_from(["default", "all", "de"]))
def test_what_the_client_signs_the_sandbox_verifies_and_tampering_breaks_it(profile, method, sku, pairs, form,
                                                                              store):
    assume(not any("oauth_" in k for k in pairs))
    if method == "GET":
        form = None
    url = f"http://127.0.0.1:8080/rest/{store}/V1/products/{segment(sku)}"
    if pairs:
        url += "?" + query_string(pairs)
    body = query_string(form) if form else None
    headers = {"Content-Type": signing.FORM_CONTENT_TYPE} if body else {}
    auth = magento_auth("c" * 32, "s" * 32, "t" * 32, "u" * 32, profile=profile)
    try:
        prepared = requests.Request(method, url, data=body, headers=headers, auth=auth).prepare()
    except signing.UnsignableRequest:
        return
    assert signed_url(url) == prepared.url  # what the client compares profiles on is what was signed
    environ = _environ(prepared, body)
    params = verify.collect(profile, environ, body or "")
    given_signature = verify.rawurldecode(params["oauth_signature"])

    def expected(env, method=method, token_secret="u" * 32):
        p = verify.collect(profile, env, body or "")
        return verify.expected_signature(profile, method, verify.request_url(env), p, "s" * 32, token_secret)

    assert expected(environ) == given_signature
    assert expected(environ, token_secret="v" * 32) != given_signature
    assert expected(environ, method="PATCH") != given_signature
    moved = dict(environ, REQUEST_URI=environ["REQUEST_URI"].replace("/V1/", "/V2/", 1))
    assert expected(moved) != given_signature
    if pairs:
        tampered = dict(environ, REQUEST_URI=environ["REQUEST_URI"].replace("?", "?zz9=1&", 1))
        assert expected(tampered) != given_signature


def _environ(prepared, body):
    parts = urlsplit(prepared.url)
    return {"REQUEST_METHOD": prepared.method, "REQUEST_URI": parts.path + (f"?{parts.query}" if parts.query else ""),
            "HTTP_HOST": parts.netloc, "wsgi.url_scheme": parts.scheme,
            "HTTP_AUTHORIZATION": prepared.headers["Authorization"],
            "CONTENT_TYPE": prepared.headers.get("Content-Type", "")}


def test_property_tests_are_wired_to_the_real_signer():
    with pytest.raises(ValueError):
        query_string([("a", 1), ("a", 2)])


@settings(max_examples=2000, deadline=None)
@given(a=st.text("0123456789ab %[] ", max_size=12), b=st.text("0123456789ab %[] ", max_size=12))
def test_both_strnatcmp_ports_agree(a, b):
    """Client and sandbox each port PHP's strnatcmp on their own; they must agree."""
    assert signing.strnatcmp(a, b) == verify.php_strnatcmp(a, b)


probe_value = st.one_of(st.from_regex(r"[A-Za-z0-9]{1,6}", fullmatch=True), st.sampled_from(["QqZ0ZqQ", "Q", "1e3", "0"]),
                        st.text(max_size=8))
raw_piece = st.one_of(st.text("ab0=[]%+.5QqZ&", max_size=10),
                      st.builds(lambda n, v: f"{n}={v}", st.sampled_from(["a", "1", "a.b", "a%5B0%5D", "oauth_x", "%51qZ",
                                                                          "a+b", "a[]", "Q"]),
                                st.from_regex(r"[A-Za-z0-9]{0,4}", fullmatch=True)))


@settings(max_examples=400, deadline=None)
@given(method=st.sampled_from(["GET", "DELETE"]), path=st.sampled_from(["products", "products/%2E%2E", "a%51qZ1ZqQ", "x/./y"]),
       pairs=st.dictionaries(name, probe_value, max_size=6), raw=st.lists(raw_piece, max_size=4))
def test_a_probe_worked_out_once_per_request_shape_is_the_probe_itself(method, path, pairs, raw):
    """The base strings the client compares generations on, from a request's shape with its
    plain values put back, are the ones each generation builds from the request itself."""
    from integration.magento import client

    query = "&".join(filter(None, [query_string(pairs) if pairs else "", *raw]))
    url = signed_url(f"http://127.0.0.1:8080/rest/default/V1/{path}" + (f"?{query}" if query else ""))
    for profile in signing.PROFILES:
        assert client._probe_base_of(profile, method, url, None, None) == client._probe_base(
            profile, method, url, None, None)


def test_the_pages_of_a_search_share_one_shape():
    from integration.magento import client
    from integration.magento.search import SearchCriteria

    shapes = {client._template(signed_url("http://127.0.0.1:8080/rest/default/V1/products?" + query_string(
        SearchCriteria().order_by("entity_id").page(100, n).params())))[0] for n in (1, 2, 50)}
    assert len(shapes) == 1


header_line = st.one_of(
    st.builds(lambda n, v: f"{n}: {v}\r\n", st.sampled_from(["Content-Type", "content-length", "X-Magento-Tags",
                                                             "Set-Cookie", "Vary"]),
              st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=30)),
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=30).map(lambda t: t + "\r\n"),
    st.sampled_from([" continued\r\n", "\tfolded\r\n", "No-Colon\r\n", "Bad Name: x\r\n", "A:\rb\r\n",
                     "Lf-Only: x\n", ": empty name\r\n", "Dup: 1\r\n", "Dup: 2\r\n"]),
)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(header_line, max_size=8), end=st.sampled_from(["\r\n", "\n", ""]))
def test_an_answers_head_reads_as_http_client_reads_it(lines, end):
    """transport._parse_head, the quick path for the usual head, gives the same message as
    http.client.parse_headers for any head: the same headers in order, defects and payload."""
    import http.client
    import io

    from integration.magento import transport

    raw = ("".join(lines) + end).encode("iso-8859-1")
    try:
        expected = http.client.parse_headers(io.BytesIO(raw))
    except http.client.HTTPException as exc:
        with pytest.raises(type(exc)):
            transport._parse_head(io.BytesIO(raw))
        return
    got = transport._parse_head(io.BytesIO(raw))
    assert got.items() == expected.items()
    assert [type(d) for d in got.defects] == [type(d) for d in expected.defects]
    assert got.get_payload() == expected.get_payload()


url_part = st.one_of(
    st.text(max_size=30),
    st.text("%5Bb]aZ09-._~!$&'()*+,;=:@/?#%fF Gé\x00", max_size=30),
    st.lists(st.one_of(st.sampled_from(["%5B", "%5b", "%2F", "%", "%%", "%Z1", "%2", "a", "[", " ", "/", "?", "é"]),
                       st.text("abc019=&", max_size=3)), max_size=10).map("".join),
)


@settings(max_examples=1500, deadline=None)
@given(part=url_part, which=st.sampled_from(["_PATH_CHARS", "_QUERY_CHARS", "_FRAGMENT_CHARS", "_USERINFO_CHARS"]))
def test_urllib3s_percent_encoding_is_urllib3s_own_with_the_quick_path(part, which):
    """The quick path transport installs for urllib3's percent-encoding gives urllib3's own
    answer for any part of a URL, and for each set of characters urllib3 allows in one."""
    from urllib3.util import url as urllib3_url

    from integration.magento import transport

    allowed = getattr(urllib3_url, which)
    assert urllib3_url._encode_invalid_chars(part, allowed) == transport.urllib3_encode_invalid_chars(part, allowed)
    assert urllib3_url._encode_invalid_chars(part.encode("utf-8", "surrogatepass"), allowed) == \
        transport.urllib3_encode_invalid_chars(part.encode("utf-8", "surrogatepass"), allowed)


def test_the_percent_encoding_quick_path_is_in_use(monkeypatch):
    """Installed (for this urllib3) and taken for a searchCriteria query, so the property above
    does not hold merely because urllib3's own function still runs."""
    from urllib3.util import url as urllib3_url

    from integration.magento import transport

    original, calls = transport.urllib3_encode_invalid_chars, []
    monkeypatch.setattr(transport, "urllib3_encode_invalid_chars", lambda *a: calls.append(a) or original(*a))
    query = "searchCriteria%5BpageSize%5D=5&searchCriteria%5BcurrentPage%5D=3"
    assert urllib3_url.parse_url(f"http://h/V1/products?{query}").query == query
    assert calls == []
    assert urllib3_url.parse_url("http://h/V1/products?a%5b=1").query == "a%5B=1"  # not encoded as sent: urllib3's
    assert calls


secret_name = st.sampled_from(["oauth_token", "OAuth_Token_Secret", "ACCESS_TOKEN", "Secret", "passWord", "ſecret",
                               "Authorization", "consumer_secret", "oauth_verifier", "aUTHORIZATION", "PASSWORD"])
log_text = st.lists(st.one_of(
    st.tuples(secret_name, st.sampled_from(["=", ": ", '"=', "'", " "]), st.text("abc:/_ ", max_size=4)).map("".join),
    st.sampled_from(["mic_0123456789ab_", "mic_", "MIC_0123456789ab_x", "/magento/events/", "/Magento/events/",
                     "/magento/events/1/abc/", "=", ": ", '"', "'", "&", " ", "\n", "Bearer ", "OAuth ", "?", "/", "K"]),
    st.text("abcdefABCDEF0189_-", max_size=8), st.text(max_size=4)), max_size=8).map("".join)



@settings(max_examples=2000, deadline=None)
@given(text=log_text)
def test_redaction_skips_only_text_that_holds_no_secret(text):
    """The log filter's quick test lets a line skip the patterns only where they would leave it
    as it is: the same output as the patterns alone, for any text."""
    from integration import logs

    assert logs.redact(text) == logs._redact(text)
