"""Signatures: every vector captured from Magento's own code, for all three generations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from integration.magento import signing
from integration.magento.oauth import magento_auth
from integration.sandbox import verify

# Kept in the repository (a copy of ../shared/magento-signature-vectors.json): a missing file is an
# error at collection, never a skip.
VECTORS = json.loads((Path(__file__).parent / "data" / "magento-signature-vectors.json").read_text())
CASES = [(case, profile) for case in VECTORS["cases"] for profile in case["expected"]]
IDS = [f"{case['name']}[{profile}]" for case, profile in CASES]


@pytest.mark.parametrize(("case", "profile"), CASES, ids=IDS)
def test_client_signer_reproduces_magento(case, profile):
    expected = case["expected"][profile]
    base = signing.base_string(profile, case["method"], case["url"], list(case["oauth_params"].items()),
                               case["body"], case["headers"].get("Content-Type"))
    assert base == expected["base_string"]
    assert signing.signature(base, case["consumer_secret"], case["token_secret"]) == expected["signature"]


@pytest.mark.parametrize(("case", "profile"), CASES, ids=IDS)
def test_sandbox_verifier_reproduces_magento_from_the_raw_request(case, profile):
    """The sandbox checks signatures with its own code, starting from what is on the wire."""
    parts = urlsplit(case["url"])
    header = "OAuth " + ", ".join(f'{k}="{signing.enc(v)}"' for k, v in case["oauth_params"].items())
    environ = {
        "REQUEST_METHOD": case["method"], "REQUEST_URI": parts.path + (f"?{parts.query}" if parts.query else ""),
        "HTTP_HOST": parts.netloc, "wsgi.url_scheme": parts.scheme, "HTTP_AUTHORIZATION": header,
        "CONTENT_TYPE": case["headers"].get("Content-Type", ""),
    }
    params = verify.collect(profile, environ, case["body"] or "")
    assert verify.base_string(profile, case["method"], verify.request_url(environ), params) == \
        case["expected"][profile]["base_string"]


def test_natural_order_and_ksort_differ_for_index_ten():
    params = [("oauth_consumer_key", "k" * 32)]
    url = ("https://shop.example.com/rest/V1/products?searchCriteria%5BsortOrders%5D%5B2%5D%5Bfield%5D=a"
           "&searchCriteria%5BsortOrders%5D%5B10%5D%5Bfield%5D=b")
    new = signing.base_string(signing.PROFILE_248, "GET", url, params)
    old = signing.base_string(signing.PROFILE_244, "GET", url, params)
    assert new.index("%255B10%255D") < new.index("%255B2%255D")
    assert old.index("%255B2%255D") < old.index("%255B10%255D")


@pytest.mark.parametrize("a, b, expected", [
    ("a2", "a10", -1), ("a10", "a2", 1), ("a", "a", 0), ("", "a", -1), ("x01", "x1", -1), ("img12", "img10", 1),
    ("a%5B2%5D", "a%5B10%5D", -1),
])
def test_strnatcmp_matches_php(a, b, expected):
    assert signing.strnatcmp(a, b) == expected


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown signature profile"):
        signing.base_string("2.3", "GET", "https://x.example/", [])


def test_array_form_field_is_refused_where_magento_would_crash():
    with pytest.raises(signing.UnsignableRequest, match="array"):
        signing.base_string(signing.PROFILE_248, "POST", "https://x.example/rest/V1/x", [],
                            "f%5B%5D=1", signing.FORM_CONTENT_TYPE)


def test_auth_header_carries_every_oauth_parameter_and_a_fresh_32_char_nonce():
    auth = magento_auth("c" * 32, "s" * 32, "t" * 32, "u" * 32, verifier="v" * 32)
    headers = []
    for _ in range(2):
        prepared = requests.Request("POST", "https://shop.example.com/oauth/token/access", auth=auth).prepare()
        headers.append(prepared.headers["Authorization"])
    for header in headers:
        assert header.startswith("OAuth ")
        for name in ("oauth_consumer_key", "oauth_nonce", "oauth_signature_method=\"HMAC-SHA256\"", "oauth_timestamp",
                     "oauth_token", "oauth_verifier", "oauth_version=\"1.0\"", "oauth_signature"):
            assert name in header
        assert re.search(r'oauth_nonce="[a-z0-9]{32}"', header)
    nonces = [re.search(r'oauth_nonce="([^"]+)"', h).group(1) for h in headers]
    assert nonces[0] != nonces[1]


def test_signed_request_verifies_in_the_sandbox_and_tampering_breaks_it():
    auth = magento_auth("c" * 32, "s" * 32, "t" * 32, "u" * 32)
    url = "http://127.0.0.1:9/rest/default/V1/products?searchCriteria%5BpageSize%5D=5&q=a%20b"
    prepared = requests.Request("GET", url, auth=auth).prepare()
    environ = {"REQUEST_METHOD": "GET", "REQUEST_URI": url.split("127.0.0.1:9", 1)[1], "HTTP_HOST": "127.0.0.1:9",
               "wsgi.url_scheme": "http", "HTTP_AUTHORIZATION": prepared.headers["Authorization"]}
    params = verify.collect("2.4.8+", environ, "")
    given = verify.rawurldecode(params["oauth_signature"])
    assert verify.expected_signature("2.4.8+", "GET", verify.request_url(environ), params, "s" * 32, "u" * 32) == given
    environ["REQUEST_URI"] = environ["REQUEST_URI"].replace("pageSize%5D=5", "pageSize%5D=6")
    tampered = verify.collect("2.4.8+", environ, "")
    assert verify.expected_signature("2.4.8+", "GET", verify.request_url(environ), tampered, "s" * 32, "u" * 32) != given
