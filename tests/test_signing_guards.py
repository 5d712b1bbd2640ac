"""The signer's rules that the captured vectors never exercise.

Every vector was captured on 127.0.0.1:8765, so no vector has a host name, a default port, a
missing port or an upper-case host; none carries ``oauth_*`` fields in a form body or a signature
among its parameters. Each test here starts from a captured vector and changes one thing; the
expected base string is the vector's with only the part that the rule in
``shared/signature-profiles.md`` changes rewritten, and the sandbox store (its own code, written
from Magento's server side) must compute the same string from the raw request.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.magento import signing
from integration.sandbox import verify

VECTORS = json.loads((Path(__file__).parent / "data" / "magento-signature-vectors.json").read_text())
CASES = {case["name"]: case for case in VECTORS["cases"]}
LAMINAS = (signing.PROFILE_244, signing.PROFILE_PATCH)


def _enc(text: str) -> str:
    return quote(text, safe="-._~")


def _sign(profile: str, case: dict, url: str | None = None, oauth_params: dict | None = None,
          body: str | None = None) -> str:
    return signing.base_string(profile, case["method"], url or case["url"],
                               list((oauth_params or case["oauth_params"]).items()),
                               case["body"] if body is None else body, case["headers"].get("Content-Type"))


def _store_computes(profile: str, case: dict, url: str, body: str | None = None) -> str:
    """The base string the sandbox store computes from the raw request (Host header, request URI)."""
    parts = urlsplit(url)
    header = "OAuth " + ", ".join(f'{k}="{_enc(v)}"' for k, v in case["oauth_params"].items())
    environ = {"REQUEST_METHOD": case["method"], "HTTP_HOST": parts.netloc, "wsgi.url_scheme": parts.scheme,
               "REQUEST_URI": parts.path + (f"?{parts.query}" if parts.query else ""), "HTTP_AUTHORIZATION": header,
               "CONTENT_TYPE": case["headers"].get("Content-Type", "")}
    body = case["body"] if body is None else body
    params = verify.collect(profile, environ, body or "")
    return verify.base_string(profile, case["method"], verify.request_url(environ), params)


def _with_base_url(base: str, url: str) -> str:
    method, _, rest = base.partition("&")
    _, _, params = rest.partition("&")
    return f"{method}&{_enc(url)}&{params}"


# --- the base URL: host case and ports ---------------------------------------------------------

PATH = "/rest/V1/store/storeConfigs"
# (URL as sent, what 2.4.8+ signs, what laminas-era stores (2.4.4-2.4.7, patch-37278) sign).
# 2.4.8+ uses scheme://Host-header/path verbatim; laminas-uri lower-cases the host and drops the port
# only when it is the scheme's default.
BASE_URLS = [
    ("https://shop.example.com" + PATH, "https://shop.example.com" + PATH, "https://shop.example.com" + PATH),
    ("http://Shop.Example.COM" + PATH, "http://Shop.Example.COM" + PATH, "http://shop.example.com" + PATH),
    ("http://shop.example.com:80" + PATH, "http://shop.example.com:80" + PATH, "http://shop.example.com" + PATH),
    ("https://shop.example.com:443" + PATH, "https://shop.example.com:443" + PATH, "https://shop.example.com" + PATH),
    ("http://shop.example.com:443" + PATH, "http://shop.example.com:443" + PATH,
     "http://shop.example.com:443" + PATH),
    ("https://shop.example.com:80" + PATH, "https://shop.example.com:80" + PATH, "https://shop.example.com:80" + PATH),
    ("https://SHOP.example.com:8443" + PATH, "https://SHOP.example.com:8443" + PATH,
     "https://shop.example.com:8443" + PATH),
    ("http://[2001:DB8::A]" + PATH, "http://[2001:DB8::A]" + PATH, "http://[2001:db8::a]" + PATH),
    ("http://[2001:db8::a]:80" + PATH, "http://[2001:db8::a]:80" + PATH, "http://[2001:db8::a]" + PATH),
    ("https://[2001:db8::a]:8443" + PATH, "https://[2001:db8::a]:8443" + PATH,
     "https://[2001:db8::a]:8443" + PATH),
    ("https://shop.example.com", "https://shop.example.com", "https://shop.example.com/"),  # laminas: empty path is /
    ("http://h.example/rest/V1/./products/../orders/.", "http://h.example/rest/V1/./products/../orders/.",
     "http://h.example/rest/V1/orders/"),  # RFC 3986 dot-segment removal
]


@pytest.mark.parametrize("profile", signing.PROFILES)
@pytest.mark.parametrize(("url", "signed_by_248", "signed_by_laminas"), BASE_URLS, ids=[u for u, _, _ in BASE_URLS])
def test_each_generation_signs_host_and_port_as_its_store_rebuilds_them(profile, url, signed_by_248,
                                                                        signed_by_laminas):
    case = CASES["rest_get_no_query"]
    signed = signed_by_248 if profile == signing.PROFILE_248 else signed_by_laminas
    expected = _with_base_url(case["expected"][profile]["base_string"], signed)
    assert _sign(profile, case, url) == expected
    assert _store_computes(profile, case, url) == expected


@pytest.mark.parametrize("profile", LAMINAS)
def test_a_laminas_store_signs_the_same_string_with_or_without_the_default_port(profile):
    """requests leaves :443 out of the Host header; a store reached with it must still accept us."""
    case = CASES["rest_get_no_query"]
    with_port = _sign(profile, case, "https://shop.example.com:443" + PATH)
    assert with_port == _sign(profile, case, "https://shop.example.com" + PATH)
    assert signing.sign(profile, "GET", "https://Shop.example.com:443" + PATH, list(case["oauth_params"].items()),
                        case["consumer_secret"], case["token_secret"]) == \
        signing.signature(with_port, case["consumer_secret"], case["token_secret"])


# --- what is not signed ------------------------------------------------------------------------

@pytest.mark.parametrize("profile", signing.PROFILES)
def test_oauth_fields_in_a_form_body_are_not_signed(profile):
    """Magento takes protocol parameters from the Authorization header only: a form field named
    ``oauth_*`` (even one that imitates the token) does not enter the base string."""
    case = CASES["rest_post_form"]
    body = case["body"] + "&oauth_token=forged&oauth_nonce=other&x_oauth_mode=test"
    expected = case["expected"][profile]["base_string"]
    assert _sign(profile, case, body=body) == expected
    assert _store_computes(profile, case, case["url"], body) == expected


@pytest.mark.parametrize("profile", LAMINAS)
def test_oauth_pairs_in_the_query_are_not_signed_by_laminas_stores(profile):
    case = CASES["rest_get_paging"]
    url = case["url"] + "&oauth_token=forged&oauth_callback=x"
    expected = case["expected"][profile]["base_string"]
    assert _sign(profile, case, url) == expected
    assert _store_computes(profile, case, url) == expected


@pytest.mark.parametrize("profile", signing.PROFILES)
def test_a_received_signature_is_left_out_of_the_base_string(profile):
    """Recomputing the base string of a request that already carries ``oauth_signature`` (as a
    verifier does) gives the string that was signed, not one that includes the signature."""
    case = CASES["rest_get_paging"]
    carried = {**case["oauth_params"], "oauth_signature": case["expected"][profile]["signature"]}
    assert _sign(profile, case, oauth_params=carried) == case["expected"][profile]["base_string"]


# --- raw queries and form bodies: what we sign is what the store rebuilds ---------------------

# Wire-legal pieces of names and values, chosen for PHP's parse_str and rawurldecode quirks:
# escaped space, tab, NUL, brackets, dot, plus; a lone '%'; invalid UTF-8.
_ATOMS = ["a", "b", "e", "z", "1", "0", "9", ".", "_", "-", "~", "+", "[", "]", "%5B", "%5D", "%20", "%09", "%00",
          "%2E", "%2B", "%25", "%", "%FF", "%C3%BC", "%3D", "%26"]
# Names may look like PHP numbers ("05", "1e1", " 5") or integers ("5", "-7": Magento 2.4.8 answers 500).
_name = st.builds(lambda lead, first, rest: lead + first + rest,
                  st.sampled_from(["", "+", "%20", "%20%20", "%09", ".", "_", "[", "%5B", "]", "%00", "-", "0"]),
                  st.sampled_from(["a", "b", "z", "1", "5", "9", "e"]),
                  st.lists(st.sampled_from(_ATOMS), max_size=6).map("".join))
_value = st.lists(st.sampled_from([*_ATOMS, "=", "oauth_x"]), max_size=6).map("".join)
_pair = st.one_of(st.builds(lambda n, v: f"{n}={v}", _name, _value), _name, st.just(""), _value,
                  st.builds(lambda v: f"={v}", _value))
_raw_query = st.lists(_pair, max_size=6).map("&".join)
_segment = st.one_of(st.sampled_from([".", "..", "", "%2E", "%2E%2e"]), st.lists(st.sampled_from(
    ["a", "Z", "1", ".", "(", ")", "'", "*", "!", "%28", "%2F", "%2f", "%20", "%41", "%7E", "%25", "%2541", "%3A", "%40",
     "%", "%FF", "%C3%BC", ":", "@", ";", "=", ",", "$", "&", "+"]), min_size=1, max_size=4).map("".join))
_raw_path = st.lists(_segment, max_size=6).map("/".join)


@settings(max_examples=500, deadline=None)
@given(profile=st.sampled_from(signing.PROFILES), path=_raw_path, query=_raw_query,
       body=st.one_of(st.none(), _raw_query))
def test_for_any_raw_path_query_and_form_body_we_sign_what_the_store_rebuilds(profile, path, query, body):
    """The sandbox store's verifier shares no code with the signer; for any request both either
    agree on the base string or both refuse it (Magento answers 500 to array form fields and, on
    2.4.8+, to integer parameter names)."""
    case = CASES["rest_post_form"]
    url = "http://127.0.0.1:8765/rest/V1/" + path + (f"?{query}" if query else "")
    try:
        ours = _sign(profile, case, url, body=body or "")
    except signing.UnsignableRequest:
        ours = "refused"
    try:
        theirs = _store_computes(profile, case, url, body or "")
    except verify.ServerError:
        theirs = "refused"
    assert ours == theirs


# --- 2.4.8+: credentials, PHP key order and what makes Magento answer 500 ------------------------

@pytest.mark.parametrize("name", ["oauth_consumer_key", "oauth_token", "oauth_consumer_secret", "oauth_token_secret"])
def test_2_4_8_signs_credentials_as_sent_and_decodes_every_other_value(name):
    """The request helper encodes every value; 2.4.8's processNonRequiredParams decodes all but the
    credentials again, so a credential with a '+' is signed encoded twice, any other value once."""
    case = CASES["rest_get_no_query"]
    params = {**case["oauth_params"], name: "a+b", "oauth_nonce": "n+1"}
    base = _sign(signing.PROFILE_248, case, oauth_params=params)
    assert f"{name}%3Da%25252Bb" in base
    assert "oauth_nonce%3Dn%252B1" in base
    header = "OAuth " + ", ".join(f'{k}="{_enc(v)}"' for k, v in params.items())
    environ = {"REQUEST_METHOD": "GET", "HTTP_HOST": "127.0.0.1:8765", "wsgi.url_scheme": "http",
               "REQUEST_URI": PATH, "HTTP_AUTHORIZATION": header}
    assert verify.base_string(signing.PROFILE_248, "GET", verify.request_url(environ),
                              verify.collect(signing.PROFILE_248, environ, "")) == base


def _names_in_order(base: str) -> list[str]:
    return [pair.split("%3D")[0] for pair in base.split("&")[2].split("%26")]


def test_2_4_8_orders_numeric_names_as_numbers_like_php_ksort():
    """PHP 8's ksort compares two numeric strings as numbers (3e0 is 3, 1e1 is 10), anything else
    byte by byte; laminas-era stores sort the encoded names in natural order."""
    case = CASES["rest_get_no_query"]
    url = "http://127.0.0.1:8765" + PATH + "?3e0=x&1e1=y&2e0=z&b=w"
    for profile, order in ((signing.PROFILE_248, ["2e0", "3e0", "1e1", "b"]),
                           (signing.PROFILE_244, ["1e1", "2e0", "3e0", "b"])):
        base = _sign(profile, case, url)
        assert _names_in_order(base)[:4] == order
        assert _store_computes(profile, case, url) == base


@pytest.mark.parametrize("query", ["1e1=y&10e0=x", "10e0=x&1e1=y"])
def test_2_4_8_keeps_equal_numbers_in_the_order_sent(query):
    """1e1 and 10e0 are both 10: PHP 8's sort is stable, so they stay as they came."""
    case = CASES["rest_get_no_query"]
    url = "http://127.0.0.1:8765" + PATH + "?" + query
    base = _sign(signing.PROFILE_248, case, url)
    assert _names_in_order(base)[:2] == [pair.split("=")[0] for pair in query.split("&")]
    assert _store_computes(signing.PROFILE_248, case, url) == base


def test_2_4_8_signs_an_array_with_an_integer_name():
    """``5[x]=1`` makes PHP's ``5`` an array, which Magento drops before its integer check, so the
    request is signed (with the bracketed pair); a bare ``5`` would crash it."""
    case = CASES["rest_get_no_query"]
    url = "http://127.0.0.1:8765" + PATH + "?5%5Bx%5D=1"
    base = _sign(signing.PROFILE_248, case, url)
    assert base.split("&")[2].startswith("5%255Bx%255D%3D1%26oauth_consumer_key")
    assert _store_computes(signing.PROFILE_248, case, url) == base
    # Only a name with '[' and a later ']' drops PHP's array; if the helper dropped that pair (two
    # '='), a '5]' or '5[b' beside it does not, and the integer name crashes Magento.
    for query in ("5%5Bb%5D=1=2&5%5D=3", "5%5Bb%5D=1=2&5%5Bc=3"):
        with pytest.raises(signing.UnsignableRequest, match="integer"):
            _sign(signing.PROFILE_248, case, "http://127.0.0.1:8765" + PATH + "?" + query)


@pytest.mark.parametrize("query", ["5=x", "0=x", "-7=x", "a=1&10=y"])
def test_2_4_8_refuses_integer_names_which_crash_magento(query):
    case = CASES["rest_get_no_query"]
    with pytest.raises(signing.UnsignableRequest, match="integer"):
        _sign(signing.PROFILE_248, case, "http://127.0.0.1:8765" + PATH + "?" + query)
    for profile in LAMINAS:  # laminas-era stores sign them like any other name
        assert f"{query.split('=')[0].split('&')[-1]}%3D" in _sign(profile, case, "http://127.0.0.1:8765" + PATH +
                                                                    "?" + query)


@pytest.mark.parametrize("query", ["05=x", "1.5=x", "5.0=x", "a5=x", "1e3=x"])
def test_2_4_8_signs_names_php_keeps_as_strings(query):
    case = CASES["rest_get_no_query"]
    assert _sign(signing.PROFILE_248, case, "http://127.0.0.1:8765" + PATH + "?" + query)


# --- form bodies -------------------------------------------------------------------------------

def test_an_array_form_field_is_signed_as_array_by_2_4_4_and_refused_where_magento_crashes():
    """PHP casts an array to the string 'Array' (2.4.4-2.4.7); the later code paths encode it and fail."""
    case = CASES["rest_post_form"]
    body = "f%5B%5D=1&f%5B%5D=2&g=3"
    base = _sign(signing.PROFILE_244, case, body=body)
    assert "f%3DArray%26g%3D3%26oauth_consumer_key" in base
    assert _store_computes(signing.PROFILE_244, case, case["url"], body) == base
    for profile in (signing.PROFILE_PATCH, signing.PROFILE_248):
        with pytest.raises(signing.UnsignableRequest, match="array"):
            _sign(profile, case, body=body)


@pytest.mark.parametrize("profile", signing.PROFILES)
def test_a_body_is_signed_only_when_it_is_a_form(profile):
    """Magento reads form fields only from an application/x-www-form-urlencoded body (any case, with
    parameters); a JSON or untyped body and a form type without a body add nothing."""
    form = CASES["rest_post_form"]
    bare = CASES["rest_delete_no_body"]
    unsigned = signing.base_string(profile, "POST", form["url"], list(form["oauth_params"].items()))
    assert signing.base_string(profile, "POST", form["url"], list(form["oauth_params"].items()), form["body"],
                               None) == unsigned
    assert signing.base_string(profile, "POST", form["url"], list(form["oauth_params"].items()), form["body"],
                               "application/json") == unsigned
    assert signing.base_string(profile, "POST", form["url"], list(form["oauth_params"].items()), form["body"],
                               "Application/X-WWW-Form-Urlencoded; charset=UTF-8") == \
        form["expected"][profile]["base_string"]
    assert unsigned != form["expected"][profile]["base_string"]
    assert signing.base_string(profile, "DELETE", bare["url"], list(bare["oauth_params"].items()), None,
                               signing.FORM_CONTENT_TYPE) == bare["expected"][profile]["base_string"]


@pytest.mark.parametrize("profile", LAMINAS)
def test_laminas_stores_sign_a_value_that_looks_like_a_protocol_name(profile):
    """Only pairs *named* oauth_* are skipped from the query, never a value that mentions one."""
    case = CASES["rest_get_no_query"]
    url = "http://127.0.0.1:8765" + PATH + "?q=oauth_token"
    base = _sign(profile, case, url)
    assert base.endswith("%26q%3Doauth_token")
    assert _store_computes(profile, case, url) == base


# --- PHP strnatcmp on its own ------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b", "expected"), [
    ("x ", "x", 1),         # PHP stops as soon as one string has ended
    ("x\0", "x", 1),
    ("x", "x ", -1),
    ("x", "x\0", -1),
    ("x ", "x\0", 0),       # past its end PHP reads the string's terminating NUL
    ("x ", "x\x01", -1),
    ("x0a", "x01", -1),     # left-aligned digit runs (a leading 0): the run that ends first is smaller
    ("x01", "x0a", 1),
])
def test_strnatcmp_matches_php_at_the_end_of_strings_and_digit_runs(a, b, expected):
    assert signing.strnatcmp(a, b) == expected
    assert verify.php_strnatcmp(a, b) == expected


@pytest.mark.parametrize("space", ["\t", "\n", "\v", "\f", "\r", " "])
def test_strnatcmp_skips_the_whitespace_php_skips(space):
    assert signing.strnatcmp(f"x{space}5", "x5") == 0
    assert signing.strnatcmp(f"x{space}{space}5", "x6") == -1


@pytest.mark.parametrize("other", ["\b", "\x0e", "\x1f", "!"])
def test_strnatcmp_compares_other_control_characters_as_bytes(other):
    assert signing.strnatcmp(f"x{other}5", "x5") == -1


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("a12", "a012", 1),    # a run starting with 0 on either side compares left-aligned
    ("a012", "a12", -1),
    ("a/1", "a01", -1),    # '/' and ':' sit next to the digits in ASCII but are not digits
    ("a:1", "a91", 1),
    ("b", "a\udcff", 1),   # undecodable bytes (kept as surrogates) compare as their bytes
    ("a\udcff", "a\udcfe", 1),
])
def test_strnatcmp_matches_php_on_edge_cases(a, b, expected):
    assert signing.strnatcmp(a, b) == expected
    assert verify.php_strnatcmp(a, b) == expected


_NAT = "00129a/:\0\x01\t\n\x0b\x0c\r\x0e \udcff"


@settings(max_examples=1000, deadline=None)
@given(a=st.text(_NAT, max_size=8), b=st.text(_NAT, max_size=8))
def test_strnatcmp_agrees_with_the_sandbox_port_on_whitespace_and_neighbours_of_digits(a, b):
    assert signing.strnatcmp(a, b) == verify.php_strnatcmp(a, b)


@pytest.mark.parametrize("query", ["5%0A=x", "99999999999999999999=x", "9223372036854775808=x",
                                   "-9223372036854775809=x", "%D9%A3=x"])
def test_2_4_8_signs_names_php_keeps_as_strings(query):
    """PHP makes a key an integer only for ASCII digits that fit 64 bits: a trailing newline, a
    number past PHP_INT_MAX or an Arabic-Indic digit stays a string name, which Magento signs."""
    case = CASES["rest_get_no_query"]
    url = "http://127.0.0.1:8765" + PATH + "?" + query
    base = _sign(signing.PROFILE_248, case, url)
    assert _store_computes(signing.PROFILE_248, case, url) == base


@pytest.mark.parametrize("name", ["9223372036854775807", "-9223372036854775808"])
def test_2_4_8_refuses_the_largest_and_smallest_integer_names_php_has(name):
    case = CASES["rest_get_no_query"]
    with pytest.raises(signing.UnsignableRequest, match="integer"):
        _sign(signing.PROFILE_248, case, "http://127.0.0.1:8765" + PATH + f"?{name}=x")


def test_2_4_8_orders_non_ascii_digits_as_text_not_numbers():
    """PHP's is_numeric knows ASCII digits only: U+0663 (Arabic-Indic three) sorts by its bytes,
    by its bytes after every ASCII name, not between 2 and 4."""
    case = CASES["rest_get_no_query"]
    url = "http://127.0.0.1:8765" + PATH + "?%D9%A3=x&2e0=y&4e0=z"
    base = _sign(signing.PROFILE_248, case, url)
    names = _names_in_order(base)
    assert names[:2] == ["2e0", "4e0"] and names[-1] == "%25D9%25A3"
    assert _store_computes(signing.PROFILE_248, case, url) == base
