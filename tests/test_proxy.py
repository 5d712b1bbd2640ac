"""The signing proxy over real HTTP against the sandbox store: pass-through, typed failures,
retries, path rules and the per-store concurrency cap (in process and in Redis)."""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlsplit

import pytest
import redis
import requests
from sqlalchemy import select

from integration import create_app
from integration.extensions import db
from integration.magento.client import Credentials, StoreClient
from integration.magento.search import SearchCriteria
from integration.magento.store_url import StorePolicy
from integration.models import AuditEvent, StoreLink
from integration.store_cap import RedisCap, StoreBusy

from .apikit import bearer, make_key
from .conftest import redis_database
from .servers import Served

REDIS_URL = "redis://127.0.0.1:6379/8"


def proxy_url(live_app, link_id, tail, store_code="default"):
    return f"{live_app.url}/api/v1/stores/{link_id}/rest/{store_code}/V1/{tail}"


def direct_client(sandbox, integration) -> StoreClient:
    creds = Credentials(integration.consumer_key, integration.consumer_secret, integration.token.token,
                        integration.token.secret)
    return StoreClient(sandbox.url + "/", creds, policy=StorePolicy(("127.0.0.1",)))


def test_a_search_criteria_get_passes_magentos_status_and_json_through(app, live_app, linked, sandbox):
    link_id, integration = linked
    key = make_key(app)
    criteria = SearchCriteria().where("sku", "SB-0001%", "like").order_by("entity_id", "DESC").page(3, 2)
    response = requests.get(proxy_url(live_app, link_id, "products"), params=criteria.params(), headers=bearer(key),
                            timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Companion-Store-Status"] == "linked"
    assert float(response.headers["X-Companion-Elapsed-Ms"]) > 0
    assert response.json() == direct_client(sandbox, integration).search("products", criteria)
    assert [p["sku"] for p in response.json()["items"]] == ["SB-00016", "SB-00015", "SB-00014"]
    configs = requests.get(proxy_url(live_app, link_id, "store/storeConfigs", "all"), headers=bearer(key), timeout=10)
    assert configs.json()[0]["code"] == "all"


def test_a_put_and_magentos_own_errors_pass_through(app, live_app, linked, sandbox):
    link_id, _ = linked
    key = make_key(app)
    put = requests.put(proxy_url(live_app, link_id, "products/SB-00001"), json={"product": {"price": 12.5}},
                       headers=bearer(key), timeout=10)
    assert put.status_code == 200 and put.json()["price"] == 12.5
    assert sandbox.state.products["SB-00001"]["price"] == 12.5
    missing = requests.get(proxy_url(live_app, link_id, "products/NOPE"), headers=bearer(key), timeout=10)
    assert missing.status_code == 404
    assert missing.json() == {"message": "The product that was requested doesn't exist. Verify the product and try "
                                         "again."}
    bad = requests.post(proxy_url(live_app, link_id, "products"), json={"nope": 1}, headers=bearer(key), timeout=10)
    assert bad.status_code == 400
    assert bad.json() == {"message": '"%fieldName" is required. Enter and try again.',
                          "parameters": {"fieldName": "product"}}
    deleted = requests.delete(proxy_url(live_app, link_id, "products/SB-00001"), headers=bearer(key), timeout=10)
    assert deleted.status_code == 200 and deleted.json() is True and "SB-00001" not in sandbox.state.products


def test_post_is_never_retried_get_is(app, live_app, linked, sandbox):
    link_id, _ = linked
    key = make_key(app)
    sandbox.state.failures.append(["/products", 503, 2])
    post = requests.post(proxy_url(live_app, link_id, "products"), json={"product": {"sku": "P-1"}},
                         headers=bearer(key), timeout=10)
    assert post.status_code == 503 and post.json()["error"]["code"] == "store_http_error"
    assert post.json()["error"]["store_error"]["status"] == 503
    assert sandbox.state.failures[-1][2] == 1 and "P-1" not in sandbox.state.products  # one attempt only
    got = requests.get(proxy_url(live_app, link_id, "products/SB-00002"), headers=bearer(key), timeout=10)
    assert got.status_code == 200 and sandbox.state.failures[-1][2] == 0  # the GET retried past the 503


def test_a_revoked_token_is_a_503_and_marks_the_store_revoked(app, live_app, linked, sandbox):
    link_id, integration = linked
    key = make_key(app)
    sandbox.state.integrations.pop(integration.id)  # the merchant deleted the integration
    response = requests.get(proxy_url(live_app, link_id, "products"), headers=bearer(key), timeout=10)
    assert response.status_code == 503
    assert response.headers["X-Companion-Store-Status"] == "revoked"
    error = response.json()["error"]
    assert error["code"] == "store_token_revoked" and error["store_error"]["status"] == 401
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        assert link.status == "revoked" and link.revoked_at is not None
        assert db.session.scalar(select(AuditEvent.id).where(AuditEvent.action == "store.revoked")) is not None
    # A store whose tokens we forgot is not linked: 409, nothing sent.
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        link.forget_token()
        db.session.commit()
    unlinked = requests.get(proxy_url(live_app, link_id, "products"), headers=bearer(key), timeout=10)
    assert unlinked.status_code == 409 and unlinked.json()["error"]["code"] == "store_not_linked"


def test_an_unreachable_store_is_a_502(app, live_app, user):
    key = make_key(app)
    with app.app_context():
        link = StoreLink(consumer_key="u" * 32, consumer_secret="s" * 32, base_url="http://127.0.0.1:9/",
                         store_host="127.0.0.1", status="linked", access_token="t" * 32,
                         access_token_secret="x" * 32)
        db.session.add(link)
        db.session.commit()
        link_id = link.id
    started = time.monotonic()
    response = requests.get(proxy_url(live_app, link_id, "products"), headers=bearer(key), timeout=30)
    assert response.status_code == 502 and response.json()["error"]["code"] == "store_unreachable"
    assert "could not connect" in response.json()["error"]["store_error"]["message"]
    assert time.monotonic() - started < 10


def test_dot_segments_and_malformed_requests_are_refused_before_the_store(app, live_app, linked, sandbox):
    link_id, _ = linked
    key = make_key(app)
    calls = sandbox.state.counters.rest_calls
    host = urlsplit(live_app.url).netloc
    for tail in ("../../admin", "products/../../x", "products/%2e%2e/x", "products/%2E%2e%2Fadmin",
                 "products/%252e%252e/x", "products/%25252e%25252E/x", "./products", "products/.", "products/..%5c..%5cadmin",
                 "products/a|b", "products/%zz"):
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request("GET", f"/api/v1/stores/{link_id}/rest/default/V1/{tail}", headers=bearer(key))
        answer = conn.getresponse()
        body = answer.read()
        assert answer.status == 400, (tail, body)
        assert b'"bad_path"' in body or b"Bad Request" in body, tail
        conn.close()
    for tail, kwargs, code in (
            ("products", {"data": b"{nope", "method": "POST"}, "bad_json"),
            ("products", {"data": b"[" * 100000, "method": "POST"}, "bad_json"),
            ("products?a=1&a=2", {"method": "GET"}, "invalid_request")):
        response = requests.request(kwargs.pop("method"), proxy_url(live_app, link_id, tail),
                                    headers={**bearer(key), "Content-Type": "application/json"}, timeout=10,
                                    **kwargs)
        assert response.status_code == 400 and response.json()["error"]["code"] == code, (tail, response.text)
    bad_code = requests.get(proxy_url(live_app, link_id, "products", "Default!"), headers=bearer(key), timeout=10)
    assert bad_code.status_code == 400 and bad_code.json()["error"]["code"] == "bad_path"
    assert sandbox.state.counters.rest_calls == calls
    # An encoded slash inside a segment is the caller's and stays one segment.
    sku = requests.put(proxy_url(live_app, link_id, "products/A%2FB"), json={"product": {"name": "slash"}},
                       headers=bearer(key), timeout=10)
    assert sku.status_code == 200 and sandbox.state.products["A/B"]["name"] == "slash"


# --- the per-store cap ------------------------------------------------------------------

def _served(app_config, **config):
    app = create_app({**app_config, **config})
    served = Served(app)
    served.app = app
    return served


def _at_once(n, call):
    """``n`` calls started together; their answers."""
    barrier, answers = threading.Barrier(n), [None] * n

    def run(i):
        barrier.wait()
        answers[i] = call()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return answers


def _cap_holds(served, link_id, key, sandbox):
    """Two slots, a slow store (the two calls hold them for 1.5 s), a third caller waits
    0.2 s and gets 429; once the store has answered, calls go through again."""
    sandbox.state.latency = 1.5
    answers = _at_once(3, lambda: requests.get(proxy_url(served, link_id, "store/storeConfigs"),
                                               headers=bearer(key), timeout=20))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429], [a.text for a in answers]
    busy = next(a for a in answers if a.status_code == 429)
    assert busy.headers["Retry-After"] == "1" and busy.json()["error"]["code"] == "store_busy"
    sandbox.state.latency = 0
    assert requests.get(proxy_url(served, link_id, "store/storeConfigs"), headers=bearer(key),
                        timeout=10).status_code == 200


def test_the_per_store_cap_answers_429_with_retry_after(app_config, linked, sandbox):
    link_id, _ = linked
    served = _served(app_config, STORE_CONCURRENCY=2, STORE_CAP_WAIT=0.2)
    try:
        _cap_holds(served, link_id, make_key(served.app), sandbox)
    finally:
        served.stop()


@pytest.fixture
def redis_db():
    with redis_database(REDIS_URL) as client:
        yield client


def test_the_cap_in_redis_holds_across_app_processes(app_config, linked, sandbox, redis_db):
    link_id, _ = linked
    config = dict(STORE_CONCURRENCY=2, STORE_CAP_WAIT=0.2, REDIS_URL=REDIS_URL)
    first, second = _served(app_config, **config), _served(app_config, **config)
    try:
        key = make_key(first.app)
        _cap_holds(first, link_id, key, sandbox)
        # Two calls in flight through the first app fill the store's slots for the second.
        sandbox.state.latency = 1.5
        answers = [None, None]
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, requests.get(
            proxy_url(first, link_id, "store/storeConfigs"), headers=bearer(key), timeout=20))) for i in range(2)]
        [t.start() for t in threads]
        deadline = time.monotonic() + 5
        while redis_db.zcard(f"storecap:{link_id}") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        other = requests.get(proxy_url(second, link_id, "store/storeConfigs"), headers=bearer(key), timeout=20)
        [t.join() for t in threads]
        assert other.status_code == 429 and [a.status_code for a in answers] == [200, 200]
        assert redis_db.zcard(f"storecap:{link_id}") == 0  # every slot given back
    finally:
        sandbox.state.latency = 0
        first.stop()
        second.stop()


def test_a_redis_lease_expires_when_its_holder_died(redis_db):
    cap = RedisCap(redis.Redis.from_url(REDIS_URL), limit=2, wait=0.05, lease_seconds=1.0)
    cap.acquire(7)  # never released: its process "died"
    time.sleep(0.6)
    cap.acquire(7)  # a live holder, taken later
    with pytest.raises(StoreBusy):
        cap.acquire(7)
    time.sleep(0.5)  # the first lease has expired, the second not yet
    cap.acquire(7)
    with pytest.raises(StoreBusy):
        cap.acquire(7)


def test_with_redis_down_the_cap_counts_per_process():
    cap = RedisCap(redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2), limit=1,
                   wait=0.05, lease_seconds=5)
    release = cap.acquire(7)
    with pytest.raises(StoreBusy):
        cap.acquire(7)
    release()
    cap.acquire(7)()


# --- the API's rate limit in Redis ---------------------------------------------------------

def test_the_api_rate_limit_in_redis_counts_across_app_processes(app, app_config, redis_db):
    first, second = (create_app({**app_config, "RATELIMIT_STORAGE_URI": REDIS_URL, "API_RATE_LIMIT": "3 per minute"})
                     for _ in range(2))
    key = make_key(app)

    def status(app):
        return app.test_client().get("/api/v1/stores", headers=bearer(key)).status_code

    assert [status(first), status(second), status(first)] == [200, 200, 200]
    over = second.test_client().get("/api/v1/stores", headers=bearer(key))
    assert over.status_code == 429 and over.json["error"]["code"] == "rate_limited"
    assert 0 < int(over.headers["Retry-After"]) <= 60
    assert status(first) == 429
    assert redis_db.keys("*LIMITER/api/key:*")  # counted in Redis, not in either process


def test_with_redis_down_the_api_rate_limit_counts_per_process_and_goes_back_to_redis(monkeypatch, caplog, redis_db):
    from limits.storage import RedisStorage

    from integration.api import limits

    class Flaky(RedisStorage):
        """Redis, or (while ``down``) a Redis that cannot be reached."""

        down = True

        def incr(self, *args, **kwargs):
            if self.down:
                raise redis.ConnectionError("down")
            return super().incr(*args, **kwargs)

    monkeypatch.setattr(limits, "RETRY_STORAGE_AFTER", (0.3,))
    storage = Flaky(REDIS_URL)
    limit = limits.RateLimit("2 per minute", storage)
    assert [limit.hit("key:a"), limit.hit("key:a")] == [None, None]
    assert 0 < limit.hit("key:a") <= 60  # counted in this process meanwhile
    assert "counting API requests in this process" in caplog.text
    assert not redis_db.keys("*LIMITER/*")
    storage.down = False
    assert 0 < limit.hit("key:a") <= 60  # Redis is not asked again before the back-off is over
    assert not redis_db.keys("*LIMITER/*")
    time.sleep(0.35)
    assert limit.hit("key:a") is None  # Redis again, with its own count
    assert redis_db.keys("*LIMITER/api/key:a/*")


def test_with_redis_unreachable_api_requests_are_answered_and_still_limited(app, app_config):
    key = make_key(app)
    down = create_app({**app_config, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:9/0",
                       "API_RATE_LIMIT": "2 per minute"})
    answers = [down.test_client().get("/api/v1/stores", headers=bearer(key)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1].json["error"]["code"] == "rate_limited"
