"""Reaching stores without letting one store (or one name) hold the app up: DNS lookups,
deadlines, answer sizes, address checks."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from integration import create_app
from integration.magento import errors
from integration.magento.client import Credentials, StoreClient
from integration.magento.store_url import StorePolicy

from .servers import FakeDNS, Served, free_port


def _callback(url: str, host: str, n: int) -> requests.Response:
    key = f"{n:032d}"
    return requests.post(f"{url}/magento/callback", timeout=30, data={
        "oauth_consumer_key": key, "oauth_consumer_secret": "s" * 32, "store_base_url": f"https://{host}/",
        "oauth_verifier": "v" * 32})


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

CREDENTIALS = Credentials("a" * 32, "b" * 32, "c" * 32, "d" * 32)


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
