"""The callback Magento POSTs when an admin clicks Activate or Reauthorize."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from integration.extensions import db
from integration.models import Activation, StoreLink

KEY, SECRET, VERIFIER = "k" * 31 + "1", "s" * 31 + "2", "v" * 31 + "3"


def post(client, **fields):
    data = {"oauth_consumer_key": KEY, "oauth_consumer_secret": SECRET,
            "store_base_url": "http://127.0.0.1:8080/", "oauth_verifier": VERIFIER}
    data.update(fields)
    return client.post("/magento/callback", data={k: v for k, v in data.items() if v is not None})


def count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_valid_callback_is_stored_and_answered_200_without_redirect(app, client):
    response = post(client, store_base_url="HTTP://127.0.0.1:8080")
    assert response.status_code == 200
    assert "Location" not in response.headers
    with app.app_context():
        link = StoreLink.by_consumer_key(KEY)
        assert link.base_url == "http://127.0.0.1:8080/"  # normalised: lower case, trailing slash
        assert link.status == "pending"
        assert link.consumer_secret == SECRET
        assert link.activations[0].verifier == VERIFIER
        assert link.activations[0].kind == "activate"


def test_secrets_are_not_stored_in_plain_text(app, client):
    post(client)
    with app.app_context():
        raw = db.session.execute(text("SELECT consumer_secret FROM store_links")).scalar_one()
        raw_verifier = db.session.execute(text("SELECT verifier FROM activations")).scalar_one()
    assert SECRET not in raw and VERIFIER not in raw_verifier
    assert raw.startswith("gAAAA")  # Fernet token


@pytest.mark.parametrize("fields, reason", [
    ({"oauth_consumer_key": None}, "oauth_consumer_key is missing"),
    ({"oauth_consumer_secret": None}, "oauth_consumer_secret is missing"),
    ({"store_base_url": None}, "store_base_url is missing"),
    ({"oauth_verifier": None}, "oauth_verifier is missing"),
    ({"oauth_consumer_key": "short"}, "oauth_consumer_key must be 32"),
    ({"oauth_consumer_secret": "s" * 33}, "oauth_consumer_secret must be 32"),
    ({"oauth_verifier": "v" * 5000}, "oauth_verifier must be 32"),
    ({"oauth_verifier": "v" * 31 + "!"}, "oauth_verifier must be 32"),
    ({"store_base_url": "not a url"}, "store_base_url"),
    ({"store_base_url": "ftp://127.0.0.1/"}, "http:// or https://"),
    ({"store_base_url": "http://10.0.0.5/"}, "not a public address"),
    ({"store_base_url": "http://169.254.169.254/"}, "not a public address"),
    ({"store_base_url": "http://[::1]:8080/"}, "not a public address"),
    ({"store_base_url": "http://user:pw@127.0.0.1/"}, "user name or password"),
    ({"store_base_url": "http://127.0.0.1/?x=1"}, "query string"),
    ({"store_base_url": "http://127.0.0.1/" + "a" * 3000}, "longer than"),
])
def test_bad_callback_gets_400_with_reason_and_stores_nothing(app, client, fields, reason):
    response = post(client, **fields)
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True)
    assert count(app, StoreLink) == 0 and count(app, Activation) == 0


def test_repeated_field_is_rejected(app, client):
    response = client.post("/magento/callback", data={
        "oauth_consumer_key": [KEY, KEY], "oauth_consumer_secret": SECRET,
        "store_base_url": "http://127.0.0.1/", "oauth_verifier": VERIFIER})
    assert response.status_code == 400 and "more than once" in response.get_data(as_text=True)


def test_json_body_is_rejected(client):
    response = client.post("/magento/callback", json={"oauth_consumer_key": KEY})
    assert response.status_code == 415


def test_oversized_body_is_rejected(app, client):
    response = post(client, padding="x" * 20000)
    assert response.status_code == 413
    assert count(app, StoreLink) == 0


def test_get_explains_what_the_url_is_for(client):
    response = client.get("/magento/callback")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Callback URL" in page and "/magento/identity" in page


def test_reauthorize_updates_in_place_and_keeps_history(app, client):
    post(client)
    with app.app_context():
        link = StoreLink.by_consumer_key(KEY)
        link.access_token, link.access_token_secret, link.status = "a" * 32, "b" * 32, "linked"
        db.session.commit()
    assert post(client, oauth_verifier="w" * 32, store_base_url="https://localhost/shop/").status_code == 200
    with app.app_context():
        link = StoreLink.by_consumer_key(KEY)
        assert count(app, StoreLink) == 1
        assert [a.kind for a in link.activations] == ["reauthorize", "activate"]
        assert link.activations[0].verifier == "w" * 32
        assert link.base_url == "https://localhost/shop/"
        assert link.status == "pending" and link.access_token is None  # Magento deleted the old token


def test_same_key_with_another_secret_is_refused_and_keeps_the_link(app, client):
    post(client)
    response = post(client, oauth_consumer_secret="x" * 32, store_base_url="http://localhost:9/")
    assert response.status_code == 400 and "different consumer secret" in response.get_data(as_text=True)
    with app.app_context():
        link = StoreLink.by_consumer_key(KEY)
        assert link.base_url == "http://127.0.0.1:8080/" and len(link.activations) == 1


def test_callback_needs_no_csrf_token_but_other_posts_do(client):
    assert post(client).status_code == 200
    assert client.post("/auth/login", data={"email": "a@b.c", "password": "x"}).status_code == 400


def test_a_repeated_callback_adds_no_row_and_leaves_a_finished_activation_alone(app, client):
    assert post(client).status_code == 200
    assert post(client).status_code == 200  # a retried POST
    assert count(app, Activation) == 1 and count(app, StoreLink) == 1
    with app.app_context():
        link = StoreLink.by_consumer_key(KEY)
        link.activations[0].state = "linked"
        link.status, link.access_token, link.access_token_secret = "linked", "a" * 32, "b" * 32
        db.session.commit()
    assert post(client).status_code == 200  # a replay after linking
    with app.app_context():
        link = StoreLink.by_consumer_key(KEY)
        assert link.status == "linked" and link.access_token == "a" * 32 and count(app, Activation) == 1


def test_a_repeated_callback_makes_a_failed_activation_ready_again(app, client):
    post(client)
    with app.app_context():
        link = StoreLink.by_consumer_key(KEY)
        link.activations[0].state, link.activations[0].error = "failed", "Consumer key has expired"
        link.status = "failed"
        db.session.commit()
    post(client)
    with app.app_context():
        activation = StoreLink.by_consumer_key(KEY).activations[0]
        assert activation.state == "received" and activation.error is None
        assert count(app, Activation) == 1


def test_callbacks_are_limited_per_address(app, app_config):
    from integration import create_app

    client = create_app({**app_config, "CALLBACK_RATE_LIMIT": "3 per minute"}).test_client()
    codes = [post(client, oauth_consumer_key=f"{i:032d}").status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]
    other = client.post("/magento/callback", environ_base={"REMOTE_ADDR": "203.0.113.9"}, data={
        "oauth_consumer_key": "9" * 32, "oauth_consumer_secret": SECRET, "store_base_url": "http://127.0.0.1/",
        "oauth_verifier": VERIFIER})
    assert other.status_code == 200
    assert count(app, StoreLink) == 4


@pytest.mark.parametrize("size, status, stored", [(8192, 200, 1), (8193, 413, 0), (3_000_000, 413, 0)])
def test_a_chunked_body_is_held_to_the_callback_limit(app, live_app, size, status, stored):
    """No Content-Length: the 8 KiB limit is counted on the bytes read."""
    import socket
    from urllib.parse import urlsplit

    body = ("oauth_consumer_key=" + KEY + "&oauth_consumer_secret=" + SECRET + "&oauth_verifier=" + VERIFIER +
            "&store_base_url=http%3A%2F%2F127.0.0.1%2F&padding=").encode()
    body += b"x" * (size - len(body))
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096]) for i in range(0, len(body), 4096))
    address = urlsplit(live_app.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"POST /magento/callback HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
        try:
            sock.sendall(chunks + b"0\r\n\r\n")
        except OSError:
            pass  # the server may stop reading once it has refused
        answer = b""
        while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:200]
    assert count(app, StoreLink) == stored
