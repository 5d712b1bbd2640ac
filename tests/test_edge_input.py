"""Edge input gets a clear 4xx or message, never a 500 (on SQLite and on PostgreSQL alike)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from integration import stores
from integration.extensions import db
from integration.magento.client import Credentials
from integration.magento.errors import MagentoError
from integration.models import StoreLink

from .conftest import PASSWORD, csrf_from
from .servers import Served

KEY, SECRET, VERIFIER = "k" * 31 + "1", "s" * 31 + "2", "v" * 31 + "3"


def login(client, email="admin@example.com"):
    page = client.get("/auth/login").get_data(as_text=True)
    return client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})


def post(client, url, page_url, **data):
    page = client.get(page_url).get_data(as_text=True)
    return client.post(url, data={"csrf_token": csrf_from(page), **data})


def callback(client, **fields):
    data = {"oauth_consumer_key": KEY, "oauth_consumer_secret": SECRET,
            "store_base_url": "http://127.0.0.1:8080/", "oauth_verifier": VERIFIER, **fields}
    return client.post("/magento/callback", data=data)


def links(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(StoreLink))


@pytest.mark.parametrize("name", ["oauth_consumer_key", "oauth_consumer_secret", "oauth_verifier"])
def test_a_callback_credential_ending_in_a_newline_is_refused(app, client, name):
    response = callback(client, **{name: {"oauth_consumer_key": KEY, "oauth_consumer_secret": SECRET,
                                          "oauth_verifier": VERIFIER}[name] + "\n"})
    assert response.status_code == 400 and f"{name} must be 32 letters or digits" in response.get_data(as_text=True)
    assert links(app) == 0


def test_a_manual_link_credential_ending_in_a_newline_is_refused(app, client, admin):
    login(client)
    fields = {"base_url": "http://127.0.0.1:9/", "consumer_key": KEY + "\n", "consumer_secret": SECRET,
              "access_token": "t" * 32, "access_token_secret": "u" * 32}
    response = post(client, "/stores/new", "/stores/new", **fields)
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "32 letters or digits" in page
    assert 'id="consumer_key-error"' in page  # said at the field, before any call to the store
    assert links(app) == 0


def test_the_service_refuses_malformed_credentials_whoever_calls_it(app):
    """The CLI's `stores add` and the web form both end here; neither can store a bad credential."""
    with app.app_context():
        for creds in (Credentials(KEY + "\n", SECRET, "t" * 32, "u" * 32),
                      Credentials(KEY, "s" * 31 + "é", "t" * 32, "u" * 32),
                      Credentials(KEY, SECRET, "t" * 31, "u" * 32)):
            with pytest.raises(MagentoError) as refused:
                stores.add_manual("http://127.0.0.1:9/", creds)
            assert "32 letters or digits" in refused.value.message
            assert SECRET not in refused.value.message
    assert links(app) == 0


def test_the_cli_says_which_credential_is_malformed(app):
    result = app.test_cli_runner().invoke(
        args=["stores", "add", "--base-url", "http://127.0.0.1:9/", "--consumer-key", KEY],
        input=f"{SECRET}\nnot a token\n{'u' * 32}\n")
    assert result.exit_code == 1 and "access token must be 32 letters or digits" in result.output
    assert "Traceback" not in result.output and links(app) == 0


def test_the_cli_says_when_standard_input_runs_out_of_secrets(app):
    result = app.test_cli_runner().invoke(
        args=["stores", "add", "--base-url", "http://127.0.0.1:9/", "--consumer-key", KEY], input=f"{SECRET}\n")
    assert result.exit_code == 1 and "Access token: expected one line on standard input" in result.output
    assert links(app) == 0


def test_a_base_url_that_normalises_past_2048_characters_is_refused(app, client):
    url = "http://127.0.0.1:8080/" + "a" * (2048 - len("http://127.0.0.1:8080/"))
    assert len(url) == 2048 and not url.endswith("/")  # normalising adds the trailing slash
    response = callback(client, store_base_url=url)
    assert response.status_code == 400 and "longer than 2048" in response.get_data(as_text=True)
    assert links(app) == 0
    fits = callback(client, store_base_url=url[:-1] + "/")
    assert fits.status_code == 200


@pytest.mark.parametrize("url", ["/?page=99999999999999999999", "/?page=0", "/?page=-3",
                                 "/audit?page=99999999999999999999"])
def test_a_page_number_out_of_range_is_a_400(client, admin, url):
    login(client)
    response = client.get(url)
    assert response.status_code == 400 and "page" in response.get_data(as_text=True)


def test_a_page_past_the_end_is_an_empty_page_not_an_error(client, admin):
    login(client)
    page = client.get("/?page=7")
    assert page.status_code == 200 and "page 7" in page.get_data(as_text=True)


@pytest.mark.parametrize("link_id", ["2147483648", "99999999999999999999"])
def test_a_store_id_beyond_the_id_column_is_a_404(client, admin, link_id):
    login(client)
    assert client.get(f"/stores/{link_id}").status_code == 404
    token = csrf_from(client.get("/stores/new").get_data(as_text=True))
    for action in ("test", "unlink", "console", "label"):
        assert client.post(f"/stores/{link_id}/{action}", data={"csrf_token": token}).status_code == 404


@pytest.mark.parametrize("link_id", ["2147483648", "99999999999999999999"])
def test_a_cli_store_id_beyond_the_id_column_says_no_such_store(app, link_id):
    result = app.test_cli_runner().invoke(args=["stores", "show", link_id])
    assert result.exit_code == 1 and f"no store with id {link_id}" in result.output


@pytest.mark.parametrize("key", ["k" * 31 + "\x00", "k" * 31 + "é", KEY + "\n"])
def test_the_identity_popup_treats_a_malformed_key_as_no_callback(client, key):
    callback(client)
    response = client.get("/magento/identity", query_string={"oauth_consumer_key": key, "success_call_back": ""})
    assert response.status_code == 404 and "never reached us" in response.get_data(as_text=True)


@pytest.fixture
def odd_store(app, admin):
    """A linked store whose every REST answer is ``odd_store.answer`` (JSON text)."""

    def wsgi(environ, start_response):
        body = served.answer.encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    served = Served(wsgi)
    served.answer = "[]"
    with app.app_context():
        link = StoreLink(consumer_key=KEY, consumer_secret=SECRET, base_url=served.url + "/",
                         store_host="127.0.0.1", status="linked", access_token="t" * 32,
                         access_token_secret="u" * 32)
        db.session.add(link)
        db.session.commit()
        served.link_id = link.id
    yield served
    served.stop()


def test_deeply_nested_json_in_the_console_body_is_a_form_error(client, odd_store):
    login(client)
    nested = "[" * 20000 + "]" * 20000
    response = post(client, f"/stores/{odd_store.link_id}/console", f"/stores/{odd_store.link_id}",
                    method="PUT", path="products/x", store_code="default", body=nested, confirm="y")
    assert response.status_code == 400 and "nested too deeply" in response.get_data(as_text=True)


@pytest.mark.parametrize("depth", [20000, 2000])
def test_a_deeply_nested_store_answer_is_a_clear_error(client, odd_store, depth):
    login(client)
    odd_store.answer = "[" * depth + "]" * depth
    response = post(client, f"/stores/{odd_store.link_id}/console", f"/stores/{odd_store.link_id}",
                    method="GET", path="products", store_code="default")
    assert response.status_code == 200 and "not JSON" in response.get_data(as_text=True)


def test_deeply_nested_json_given_to_the_cli_is_a_usage_error(app, odd_store):
    result = app.test_cli_runner().invoke(args=["stores", "call", str(odd_store.link_id), "PUT", "products/x",
                                                "--data", "[" * 20000 + "]" * 20000])
    assert result.exit_code == 2 and "nested too deeply" in result.output


@pytest.mark.parametrize("answer", ["[1, 2, 3]", "{\"code\": \"default\"}", "[[]]", "null"])
def test_store_configs_answering_something_else_fails_the_test_clearly(app, client, odd_store, answer):
    odd_store.answer = answer
    login(client)
    response = post(client, f"/stores/{odd_store.link_id}/test", f"/stores/{odd_store.link_id}")
    assert response.status_code == 302
    page = client.get(f"/stores/{odd_store.link_id}").get_data(as_text=True)
    assert "Test failed" in page and "store configs" in page
    result = app.test_cli_runner().invoke(args=["stores", "check", str(odd_store.link_id)])
    assert result.exit_code == 1 and "store configs" in result.output


def test_store_configs_with_a_store_view_pass_the_test(client, odd_store):
    odd_store.answer = json.dumps([{"id": 1, "code": "default", "base_url": "x"}])
    login(client)
    post(client, f"/stores/{odd_store.link_id}/test", f"/stores/{odd_store.link_id}")
    assert "store view default" in client.get(f"/stores/{odd_store.link_id}").get_data(as_text=True)
