"""Every Prometheus metric of the app, in one place.

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory,
cleared at each start) in the environment *before* the app starts: prometheus_client then
keeps the counts in files there and ``/metrics`` adds up every worker's.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

CALLBACKS = Counter("companion_callbacks_total", "Callback POSTs from Magento, by outcome "
                    "(stored, rejected, unavailable).", ["outcome"])
EXCHANGES = Counter("companion_token_exchanges_total", "OAuth token exchanges, by outcome (succeeded, failed).",
                    ["outcome"])
PROXY_CALLS = Counter("companion_proxy_calls_total", "Calls through the signing proxy, by outcome: the store's "
                      "status class (2xx, 4xx, 5xx) or our error code.", ["outcome"])
PROXY_SECONDS = Histogram("companion_proxy_call_seconds", "Time the store took to answer a proxied call "
                          "(retries included).", buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
DISPATCHED = Counter("companion_requests_dispatched_total", "Requests handed to a thread by the gunicorn worker, "
                     "by kind (callback, other) and whether they had to wait for a free thread (yes, no).",
                     ["kind", "waited"])
CALLBACK_HANDOVERS = Counter("companion_callback_handovers_total", "Magento callbacks on new connections, by who "
                             "served them: the worker's callback process (process) or its own lane (lane: the "
                             "process was starting, gone or full).", ["outcome"])
WEBHOOK_DELIVERIES = Counter("companion_webhook_deliveries_total", "Webhook delivery attempts, by outcome.",
                             ["outcome"])

_outbox_depth: Callable[[], int] | None = None


def register_outbox_depth(measure: Callable[[], int] | None) -> None:
    """``measure()`` (events not yet delivered) is called at each scrape, in the scraping process."""
    global _outbox_depth
    _outbox_depth = measure


class _OutboxDepth(Collector):
    def collect(self):
        if _outbox_depth is None:
            return
        gauge = GaugeMetricFamily("companion_outbox_depth", "Webhook events waiting to be delivered.")
        gauge.add_metric([], float(_outbox_depth()))
        yield gauge


_OUTBOX = _OutboxDepth()
REGISTRY.register(_OUTBOX)


def exposition() -> bytes:
    """The text a scrape gets: every worker's counts in multi-process mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_OUTBOX)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
