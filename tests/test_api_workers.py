"""The API under gunicorn with several workers: metrics add up across them, and an API key in
a query string never reaches the access log."""

from __future__ import annotations

import re

import requests

from .apikit import bearer, make_key
from .servers import Gunicorn
from .test_workers import env_for


def test_metrics_add_up_across_workers_and_the_access_log_masks_keys_and_intake_tokens(app, app_config, linked, tmp_path,
                                                                      monkeypatch):
    link_id, _ = linked
    key = make_key(app)
    access_log = tmp_path / "access.log"
    monkeypatch.setenv("GUNICORN_ACCESS_LOG", str(access_log))
    (tmp_path / "prom").mkdir()
    server = Gunicorn(env_for(app_config, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom")), workers=3, threads=4)
    try:
        url = f"{server.url}/api/v1/stores/{link_id}/rest/default/V1/store/storeConfigs"
        for _ in range(30):
            assert requests.get(url, headers=bearer(key), timeout=10).status_code == 200
        counts = set()
        for _ in range(6):  # each scrape may land on any worker
            text = requests.get(f"{server.url}/metrics", timeout=10).text
            match = re.search(r'^companion_proxy_calls_total\{outcome="2xx"\} (\S+)$', text, re.M)
            counts.add(float(match.group(1)))
        assert counts == {30.0}
        refused = requests.get(f"{server.url}/api/v1/stores", params={"api_key": key}, timeout=10)
        assert refused.status_code == 400
        # Percent-encoded, which the app decodes and refuses, and the log must not keep either.
        for hidden in ("%6Dic_" + key[4:], key.replace("_", "%5F"), "%256Dic_" + key[4:]):
            refused = requests.get(f"{server.url}/api/v1/stores?x={hidden}", headers=bearer(key), timeout=10)
            assert refused.status_code in (200, 400)
        # The events intake's secret is its URL's last segment (a wrong one is refused, and masked too).
        path_token = "0cOkcSWkeE00UMYZUHiJxCUYv5GqyN1v"
        pushed = requests.post(f"{server.url}/magento/events/{link_id}/aligent/{path_token}?event=x", data=b"{}",
                               timeout=10)
        assert pushed.status_code in (401, 404)
    finally:
        server.stop()
    logged = access_log.read_text()
    assert "/api/v1/stores?api_key=" + key[:16] + "_[redacted]" in logged
    assert key[17:] not in logged and key[17:].replace("_", "%5F") not in logged
    assert logged.count(f"/api/v1/stores?x={key[:16]}_[redacted]") == 3
    assert f"/magento/events/{link_id}/aligent/[redacted]?event=x" in logged and path_token not in logged
