"""Reaching stores without letting one store (or one name) hold the app up: DNS lookups,
deadlines, answer sizes, address checks."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from integration import create_app
from integration.extensions import db
from integration.models import StoreLink
from integration.magento import errors
from integration.magento.client import Credentials, StoreClient
from integration.magento.store_url import StorePolicy
from integration.magento.token_exchange import Consumer, TokenExchange
from integration.magento.transport import Deadline, safe_session

from .conftest import PASSWORD
from .servers import FakeDNS, Gunicorn, Served, SlowStore, csrf_from, free_port
from .test_workers import env_for

LOCAL = StorePolicy(("127.0.0.1",))
CREDENTIALS = Credentials("a" * 32, "b" * 32, "c" * 32, "d" * 32)


def _callback(url: str, host: str, n: int) -> requests.Response:
    key = f"{n:032d}"
    return requests.post(f"{url}/magento/callback", timeout=30, data={
        "oauth_consumer_key": key, "oauth_consumer_secret": "s" * 32, "store_base_url": f"https://{host}/",
        "oauth_verifier": "v" * 32})


# --- deadlines --------------------------------------------------------------------------

@pytest.mark.parametrize("drip", [{}, {"drip_headers": True}, {"tls": True}], ids=["body", "headers", "handshake"])
def test_a_store_that_drips_its_answer_is_cut_at_the_deadline(drip):
    """Two bytes every half second never trip the 20 s read timeout; the deadline ends it."""
    store = SlowStore(**drip)
    try:
        client = StoreClient(store.url + "/", CREDENTIALS, policy=LOCAL, timeout=(5, 20), deadline=Deadline(2))
        started = time.monotonic()
        with pytest.raises(errors.StoreTimeout, match="did not answer GET .* within 2 s"):
            client.get("store/storeConfigs")
        took = time.monotonic() - started
    finally:
        store.stop()
    assert 1.9 < took < 3.0


def test_a_short_deadline_is_kept_while_a_longer_one_is_waiting():
    """One watchdog keeps every request's deadline: a 1 s call started after a 4 s one is cut
    after 1 s, not when the longer one is."""
    store = SlowStore()
    try:
        def client(seconds: float) -> StoreClient:  # a deadline runs from when it is made
            return StoreClient(store.url + "/", CREDENTIALS, policy=LOCAL, timeout=(5, 20), deadline=Deadline(seconds))

        with ThreadPoolExecutor(2) as pool:
            long_call = pool.submit(client(4).get, "products")
            time.sleep(0.3)
            started = time.monotonic()
            quick = client(1)
            with pytest.raises(errors.StoreTimeout, match="within 1 s"):
                quick.get("products")
            took = time.monotonic() - started
            with pytest.raises(errors.StoreTimeout, match="within 4 s"):
                long_call.result()
    finally:
        store.stop()
    assert 0.9 < took < 2.0


def test_a_deadline_that_runs_out_as_the_request_is_sent_is_a_timeout():
    """Not a ValueError from urllib3 (a timeout of 0), which the proxy answered as a bad request."""
    class RunsOutNow(Deadline):
        expired = False  # when first asked; by the time the timeouts are worked out, nothing is left

        def remaining(self) -> float:
            return 0.0

    store = SlowStore()
    try:
        client = StoreClient(store.url + "/", CREDENTIALS, policy=LOCAL, deadline=RunsOutNow(2), retries=0)
        with pytest.raises(errors.StoreTimeout, match="within 2 s"):
            client.get("products")
    finally:
        store.stop()
    assert store.connections == 0


def test_each_call_of_an_export_gets_its_own_deadline():
    store = SlowStore()
    try:
        client = StoreClient(store.url + "/", CREDENTIALS, policy=LOCAL, call_deadline=1)
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises(errors.StoreTimeout, match="within 1 s"):
                client.get("products")
        took = time.monotonic() - started
    finally:
        store.stop()
    assert 1.9 < took < 3.0 and store.connections == 2


def test_the_token_exchange_is_cut_at_its_deadline():
    store = SlowStore()
    try:
        exchange = TokenExchange(safe_session(LOCAL), timeout=(5, 20), deadline=2)
        started = time.monotonic()
        with pytest.raises(errors.StoreTimeout, match="oauth/token/request within 2 s"):
            exchange.run(store.url + "/", Consumer("a" * 32, "b" * 32), "v" * 32)
        took = time.monotonic() - started
    finally:
        store.stop()
    assert 1.9 < took < 3.0


def _throttling_store(retry_after: str):
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        start_response("503 Service Unavailable", [("Retry-After", retry_after), ("Content-Type", "application/json")])
        return [b'{"message": "busy"}']

    return Served(app), calls


@pytest.mark.parametrize("retry_after, waits", [("60", []), ("9.5", []), ("2", [2.0, 2.0, 2.0])])
def test_retry_after_is_only_waited_for_when_another_attempt_fits_before_the_deadline(retry_after, waits):
    served, calls = _throttling_store(retry_after)
    slept = []
    try:
        client = StoreClient(served.url + "/", CREDENTIALS, policy=LOCAL, deadline=Deadline(10), sleep=slept.append)
        with pytest.raises(errors.ServerError):
            client.get("store/storeConfigs")
    finally:
        served.stop()
    assert slept == waits and len(calls) == len(waits) + 1


def _link_to(app, base_url: str, owner_id: int) -> int:
    with app.app_context():
        link = StoreLink(consumer_key="k" * 32, consumer_secret="s" * 32, base_url=base_url, store_host="127.0.0.1",
                         status="linked", owner_id=owner_id, access_token="t" * 32, access_token_secret="u" * 32)
        db.session.add(link)
        db.session.commit()
        return link.id


def _logged_in(url: str) -> requests.Session:
    session = requests.Session()
    page = session.get(url + "/auth/login", timeout=10).text
    session.post(url + "/auth/login", timeout=10, data={
        "csrf_token": csrf_from(page), "email": "owner@example.com", "password": PASSWORD})
    return session


def test_callbacks_keep_answering_while_every_thread_waits_on_a_dripping_store(app, app_config, user):
    """One worker, two threads, both on a Test connection of a store that drips its answer:
    the deadline frees them, so a callback queued behind them still makes Magento's 5 s."""
    store = SlowStore()
    link_id = _link_to(app, store.url + "/", user)
    server = Gunicorn(env_for(app_config, INTEGRATION_STORE_DEADLINE="2"), workers=1, threads=2)
    try:
        sessions = [_logged_in(server.url) for _ in range(2)]
        tokens = [csrf_from(s.get(f"{server.url}/stores/{link_id}", timeout=10).text) for s in sessions]

        def test_connection(i: int) -> tuple[requests.Response, float]:
            started = time.monotonic()
            answer = sessions[i].post(f"{server.url}/stores/{link_id}/test", data={"csrf_token": tokens[i]},
                                      allow_redirects=False, timeout=30)
            return answer, time.monotonic() - started

        with ThreadPoolExecutor(2) as pool:
            tests = [pool.submit(test_connection, i) for i in range(2)]
            time.sleep(0.5)  # both threads now wait on the store
            started = time.monotonic()
            callback = _callback(server.url, "127.0.0.1", 1)
            callback_took = time.monotonic() - started
            results = [f.result() for f in tests]
        page = sessions[0].get(f"{server.url}/stores/{link_id}", timeout=10).text
        for session in sessions:
            session.close()  # no kept-alive connection for gunicorn to wait on when stopping
    finally:
        server.stop()
        store.stop()
    assert callback.status_code == 200 and callback_took < 4.0, callback_took
    assert all(answer.status_code == 302 and took < 3.5 for answer, took in results), results
    assert "Test failed: the store did not answer GET" in page and "within 2 s" in page


def test_a_store_asking_to_retry_in_a_minute_fails_the_test_at_once(app, client, user):
    served, calls = _throttling_store("60")
    link_id = _link_to(app, served.url + "/", user)
    try:
        page = client.get("/auth/login").get_data(as_text=True)
        client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": "owner@example.com",
                                         "password": PASSWORD})
        token = csrf_from(client.get(f"/stores/{link_id}").get_data(as_text=True))
        started = time.monotonic()
        page = client.post(f"/stores/{link_id}/test", data={"csrf_token": token},
                           follow_redirects=True).get_data(as_text=True)
        took = time.monotonic() - started
    finally:
        served.stop()
    assert took < 2.0 and "Test failed" in page and len(calls) == 1


# --- answer sizes -----------------------------------------------------------------------

MIB = 1024 * 1024


def _store_answering(pages: dict[str, bytes], *, chunked: bool):
    """Answers ``pages[searchCriteria[currentPage]]`` (or ``pages[""]``), with or without a length."""
    from urllib.parse import parse_qs

    def app(environ, start_response):
        page = parse_qs(environ.get("QUERY_STRING", "")).get("searchCriteria[currentPage]", [""])[0]
        body = pages[page]
        headers = [("Content-Type", "application/json")] + ([] if chunked else [("Content-Length", str(len(body)))])
        start_response("200 OK", headers)
        return (body[i:i + 65536] for i in range(0, len(body), 65536))

    return Served(app)


def _empty_objects(size: int) -> bytes:
    """A JSON array of ``{}`` of about ``size`` bytes: some 20 times that once parsed."""
    return b"[" + b"{}," * (size // 3 - 1) + b"{}]"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_answer_over_4_mib_is_refused_before_it_is_parsed(chunked):
    served = _store_answering({"": _empty_objects(31 * MIB)}, chunked=chunked)
    try:
        client = StoreClient(served.url + "/", CREDENTIALS, policy=LOCAL)
        with pytest.raises(errors.AnswerTooLarge, match="answer to GET .* is larger than 4 MiB") as caught:
            client.get("store/storeConfigs")
        assert "smaller page size" in caught.value.hint
    finally:
        served.stop()


def test_an_answer_just_under_the_limit_is_read():
    served = _store_answering({"": _empty_objects(4 * MIB - 16)}, chunked=True)
    try:
        assert len(StoreClient(served.url + "/", CREDENTIALS, policy=LOCAL).get("products")) > 1_000_000
    finally:
        served.stop()


def test_the_console_says_when_an_answer_is_too_large(app, client, admin):
    served = _store_answering({"": _empty_objects(31 * MIB)}, chunked=True)
    link_id = _link_to(app, served.url + "/", admin)
    try:
        page = client.get("/auth/login").get_data(as_text=True)
        client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": "admin@example.com",
                                         "password": PASSWORD})
        token = csrf_from(client.get(f"/stores/{link_id}").get_data(as_text=True))
        page = client.post(f"/stores/{link_id}/console", data={
            "csrf_token": token, "method": "GET", "path": "products", "store_code": "default"}).get_data(as_text=True)
    finally:
        served.stop()
    assert "is larger than 4 MiB" in page and "smaller page size" in page


def test_an_export_reads_page_by_page_each_within_the_limit():
    first = b'{"items": [{"id": 1}, {"id": 2}], "total_count": 4}'
    served = _store_answering({"1": first, "2": _empty_objects(5 * MIB)}, chunked=True)
    items = []
    try:
        client = StoreClient(served.url + "/", CREDENTIALS, policy=LOCAL)
        with pytest.raises(errors.AnswerTooLarge):
            for item in client.iter_search("products", page_size=2):
                items.append(item)
    finally:
        served.stop()
    assert items == [{"id": 1}, {"id": 2}]


# --- DNS --------------------------------------------------------------------------------

def test_names_whose_dns_never_answers_do_not_hold_up_other_callbacks(app_config):
    dns = FakeDNS({"shop.example": ["93.184.216.34"]}, silent={f"silent{i}.example" for i in range(12)})
    served = Served(create_app({**app_config, "DNS_SERVERS": (dns.address,)}))
    try:
        with ThreadPoolExecutor(12) as pool:
            silent = [pool.submit(_callback, served.url, f"silent{i}.example", i) for i in range(12)]
            time.sleep(0.3)  # every one of those lookups is under way
            started = time.monotonic()
            answer = _callback(served.url, "shop.example", 99)
            took = time.monotonic() - started
            refused = [f.result() for f in silent]
    finally:
        served.stop()
        dns.stop()
    assert answer.status_code == 200 and took < 1.0, (answer.text, took)
    assert all(r.status_code == 400 and "did not resolve within 2 s" in r.text for r in refused)


# --- addresses --------------------------------------------------------------------------


def test_refusals_do_not_tell_an_open_port_from_a_closed_one():
    """Nothing allow-listed: loopback is refused before a packet goes to it, open port or not."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    texts = set()
    try:
        for port in (listener.getsockname()[1], free_port()):
            client = StoreClient(f"http://127.0.0.1:{port}/", CREDENTIALS, policy=StorePolicy(), retries=0)
            with pytest.raises(errors.UnsafeStoreURL) as caught:
                client.get("store/storeConfigs")
            texts.add(str(caught.value))
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection was ever made
    finally:
        listener.close()
    assert texts == {"store host 127.0.0.1 is not a public address"}


def test_the_address_a_name_resolves_to_is_logged_not_told(app_config, caplog):
    dns = FakeDNS({"inside.example": ["10.1.2.3"], "nat64.example": ["64:ff9b::a01:203"]})
    try:
        client = create_app({**app_config, "DNS_SERVERS": (dns.address,)}).test_client()
        answers = [client.post("/magento/callback", data={
            "oauth_consumer_key": "k" * 32, "oauth_consumer_secret": "s" * 32, "oauth_verifier": "v" * 32,
            "store_base_url": f"https://{host}/"}).get_data(as_text=True) for host in ("inside.example", "nat64.example")]
    finally:
        dns.stop()
    assert "store host inside.example is not a public address" in answers[0]
    assert "store host nat64.example is not a public address" in answers[1]
    assert "10.1.2.3" not in answers[0] and "64:ff9b" not in answers[1]
    assert "inside.example resolves to 10.1.2.3" in caplog.text


def test_a_name_that_rebinds_to_nat64_loopback_is_refused_when_connecting():
    dns = FakeDNS(answers={"shop.example": [["93.184.216.34"], [], ["64:ff9b::7f00:1"]]})
    try:
        policy = StorePolicy(nameservers=(dns.address,))
        url = policy.check("http://shop.example/")  # public when checked
        client = StoreClient(url, CREDENTIALS, policy=policy, retries=0)
        with pytest.raises(errors.UnsafeStoreURL, match="^store host shop.example is not a public address$"):
            client.get("store/storeConfigs")
    finally:
        dns.stop()


def test_socket_errors_are_logged_not_told(caplog):
    client = StoreClient(f"http://127.0.0.1:{free_port()}/", CREDENTIALS, policy=StorePolicy(("127.0.0.1",)),
                         retries=0)
    with pytest.raises(errors.StoreUnreachable) as caught:
        client.get("store/storeConfigs")
    assert str(caught.value) == "could not connect to the store"
    assert "Connection refused" in caplog.text


# --- settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("setting, value", [("STORE_DEADLINE", 0.5), ("STORE_DEADLINE", 120.0),
                                            ("DNS_SERVERS", ("dns.example",)), ("DNS_SERVERS", ("10.0.0.1:x",))])
def test_settings_for_reaching_stores_are_checked_at_start(app_config, setting, value):
    from integration.config import ConfigError

    with pytest.raises(ConfigError, match=f"INTEGRATION_{setting}"):
        create_app({**app_config, setting: value})


def test_an_export_outlasts_the_deadline_that_bounds_each_of_its_pages(app, linked, sandbox):
    link_id, _ = linked
    app.config["STORE_DEADLINE"] = 1.0
    sandbox.state.latency = 0.25  # 6 pages: 1.5 s in all, each well inside the second
    result = app.test_cli_runner().invoke(args=["stores", "export", str(link_id), "products", "--page-size", "10",
                                                "--concurrency", "1"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 60


def test_the_identity_popup_answers_by_the_deadline_when_the_store_drips(app, client, user):
    """The token exchange gets the app's deadline: the admin reads why, instead of waiting."""
    store = SlowStore()
    app.config["STORE_DEADLINE"] = 1.0
    try:
        assert client.post("/magento/callback", data={
            "oauth_consumer_key": "k" * 32, "oauth_consumer_secret": "s" * 32, "oauth_verifier": "v" * 32,
            "store_base_url": store.url + "/"}).status_code == 200
        page = client.get("/magento/identity?oauth_consumer_key=" + "k" * 32).get_data(as_text=True)
        started = time.monotonic()
        answer = client.post("/magento/identity", data={
            "csrf_token": csrf_from(page), "oauth_consumer_key": "k" * 32, "success_call_back": "",
            "email": "owner@example.com", "password": PASSWORD})
        took = time.monotonic() - started
    finally:
        store.stop()
    assert answer.status_code == 502 and "did not answer POST" in answer.get_data(as_text=True)
    assert took < 2.0
