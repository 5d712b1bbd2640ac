"""Where the identity pop-up may send the admin back to: ``success_call_back`` is followed only when it
leads to the store's own host (or an allow-listed one), as a plain http(s) address; anything else gets
the page that lets the admin decide. Linking itself goes ahead either way."""

from __future__ import annotations

import pytest

from .test_identity import activate, login, submit

SUCCESS = "http://127.0.0.1:{port}/admin/admin/integration/loginSuccessCallback/"

#: Each one is refused by exactly one clause of the rule, the others would let it through.
REFUSED = {
    "scheme": "javascript://127.0.0.1/%0aalert(document.cookie)",
    "scheme, upper case": "JAVASCRIPT://127.0.0.1/%0aalert(1)",
    "no host": "http:///admin/integration/loginSuccessCallback/",
    "no host, only a port": "http://:8080/admin/",
    "user name": "http://admin@127.0.0.1/admin/",
    "password only": "http://:secret@127.0.0.1/admin/",
    "space": "http://127.0.0.1/admin/ x",
    "tab": "http://127.0.0.1/admin/\tx",
    "carriage return": "http://127.0.0.1/admin/\rSet-Cookie:%20x=1",
    "line feed": "http://127.0.0.1/admin/\nSet-Cookie:%20x=1",
    "backslash": "http://127.0.0.1/admin\\x",
    "not a URL": "http://[::1/admin/",
    "another host": "https://evil.example/admin/",
    "a host ending like the store's": "http://127.0.0.1.evil.example/admin/",
}


@pytest.fixture
def linked_popup(app, client, sandbox, user):
    """A store linked through the pop-up (the admin logged in); submitting again only picks the way back."""
    login(client)
    integration = activate(client, sandbox)
    back = SUCCESS.format(port=sandbox.server.server_port)
    response = submit(client, integration, back)
    assert response.status_code == 302 and response.headers["Location"] == back
    assert integration.status == "Active"
    return integration, back


@pytest.mark.parametrize("why", sorted(REFUSED))
def test_a_success_call_back_off_the_store_is_never_followed(client, linked_popup, why):
    integration, _ = linked_popup
    response = submit(client, integration, REFUSED[why])
    assert response.status_code == 200, why
    assert "Location" not in response.headers, why
    assert "did not redirect automatically" in response.get_data(as_text=True), why


def test_the_store_itself_and_allow_listed_hosts_are_followed(app, client, linked_popup, sandbox):
    integration, back = linked_popup
    port = sandbox.server.server_port
    for target in (back, f"https://127.0.0.1:{port}/admin/?a=1&b=2", "http://localhost/admin/"):
        response = submit(client, integration, target)
        assert response.status_code == 302 and response.headers["Location"] == target, target
    # The store's own host is followed even when it is not on the allow-list (a public store)...
    app.config["ALLOWED_STORE_HOSTS"] = ("localhost",)
    response = submit(client, integration, back)
    assert response.status_code == 302 and response.headers["Location"] == back
    # ...and an allow-listed host other than the store's is followed too, nothing else.
    response = submit(client, integration, "http://localhost/admin/")
    assert response.status_code == 302 and response.headers["Location"] == "http://localhost/admin/"
    response = submit(client, integration, "http://127.0.0.2/admin/")
    assert response.status_code == 200 and "Location" not in response.headers
