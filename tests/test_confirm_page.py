"""The page shown when ``success_call_back`` leads off the store's host: only an http(s)
address becomes a link; anything else stays text."""

from __future__ import annotations

import re

import pytest

from .test_identity import activate, login, submit


def links_to(page: str) -> list[str]:
    return re.findall(r'<a href="([^"]*)"', page.split("<main>", 1)[1])


@pytest.mark.parametrize("target", [
    "javascript:alert(document.cookie)", "JavaScript:alert(1)", " javascript:alert(1)", "\tjavascript:alert(1)",
    "java\tscript:alert(1)", "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)", "//evil.example/x",
    "mailto:someone@example.com", "http:evil", "https:/evil.example",
])
def test_a_target_that_is_not_a_web_address_is_shown_as_text_only(client, sandbox, user, target):
    login(client)
    integration = activate(client, sandbox)
    response = submit(client, integration, target)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "Location" not in response.headers
    assert "not a web address" in page and "continue</a>" not in page
    assert links_to(page) == []
    assert "<script>alert" not in page


def test_an_http_target_on_another_host_is_offered_as_a_link(client, sandbox, user):
    login(client)
    integration = activate(client, sandbox)
    page = submit(client, integration, "https://other.example/back?x=1&y=2").get_data(as_text=True)
    assert links_to(page) == ["https://other.example/back?x=1&amp;y=2"]
