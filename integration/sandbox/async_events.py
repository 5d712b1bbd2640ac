"""The sandbox as a store with aligent/magento-async-events: subscriptions over REST and
signed pushes when the catalogue changes. Its own code, written from the module's source:

* ``Model/AsyncEventRepository::save``: a new subscription is active, stamped, and never shows
  its verification token again; with a ``subscription_id`` only ``status`` (required) and
  ``metadata`` change. There is no delete.
* ``Service/AsyncEvent/EventDispatcher::dispatch``: each active subscription of the event gets
  ``['data' => $output]``, the output of the event's service (here: the record).
* ``Service/AsyncEvent/HttpNotifier::notify``: ``x-magento-signature`` = ``hash_hmac('sha256',
  json, token)`` of the ``json_encode`` bytes it posts (PHP escapes ``/`` and non-ASCII).

Switches: ``duplicates`` posts every event twice; ``out_of_order`` holds each event back until
the next one has gone (or ``hold`` seconds passed). The module retries failures; the sandbox
does not (it records every answer in ``deliveries`` instead).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
from collections import deque

import requests

MAX_SUBSCRIPTIONS = 100
MAX_DELIVERIES_KEPT = 1000


def php_json(value) -> bytes:
    """``json_encode`` with no flags: compact, ASCII only, ``/`` escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


def signature(body: bytes, token: str) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


class AsyncEvents:
    def __init__(self):
        self.lock = threading.Lock()
        self.subscriptions: dict[int, dict] = {}
        self.duplicates = False
        self.out_of_order = False
        self.hold = 0.5
        #: (monotonic time sent, event name, status or error, body)
        self.deliveries: deque = deque(maxlen=MAX_DELIVERIES_KEPT)
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    # --- the REST API --------------------------------------------------------------------

    def subscribe(self, payload) -> dict:
        event = payload.get("asyncEvent") if isinstance(payload, dict) else None
        if not isinstance(event, dict):
            raise ValueError('"asyncEvent" is required. Enter and try again.')
        for name in ("event_name", "recipient_url", "verification_token"):
            if not isinstance(event.get(name), str) or not event[name]:
                raise ValueError(f'"{name}" is required. Enter and try again.')
        with self.lock:
            if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise ValueError("this sandbox keeps at most 100 subscriptions")
            sub_id = max(self.subscriptions, default=0) + 1
            self.subscriptions[sub_id] = {
                "subscription_id": sub_id, "event_name": event["event_name"][:255],
                "recipient_url": event["recipient_url"][:2048], "verification_token": event["verification_token"],
                "status": True, "metadata": str(event.get("metadata") or "http")[:64], "store_id": 0,
                "subscribed_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
            return self.display(sub_id)

    def display(self, sub_id: int) -> dict:
        sub = self.subscriptions[sub_id]
        return {k: v for k, v in sub.items() if k != "verification_token"}

    def update(self, sub_id: int, payload) -> dict:
        event = payload.get("asyncEvent") if isinstance(payload, dict) else None
        if not isinstance(event, dict) or event.get("status") is None:
            raise ValueError("Status is required")
        with self.lock:
            sub = self.subscriptions[sub_id]  # KeyError: no such subscription
            sub["status"] = bool(event["status"])
            if event.get("metadata"):
                sub["metadata"] = str(event["metadata"])[:64]
            return self.display(sub_id)

    def active(self) -> list[dict]:
        with self.lock:
            return [dict(s) for s in self.subscriptions.values() if s["status"]]

    # --- pushing ---------------------------------------------------------------------------

    def notify(self, event_name: str, output: dict) -> None:
        """Queue ``['data' => $output]`` for each active subscriber of ``event_name``."""
        body = php_json({"data": output})
        for sub in self.active():
            if sub["event_name"] == event_name:
                self._queue.put((sub["recipient_url"], sub["verification_token"], event_name, body))
                self._start()

    def _start(self) -> None:
        with self.lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sandbox-async-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        held = None
        while True:
            try:
                item = self._queue.get(timeout=self.hold if held else 30)
            except queue.Empty:
                if held:
                    self._post(*held)
                    held = None
                    continue
                return
            if self.out_of_order and held is None:
                held = item
                continue
            self._post(*item)
            if held:
                self._post(*held)
                held = None

    def _post(self, url: str, token: str, event_name: str, body: bytes) -> None:
        for _ in range(2 if self.duplicates else 1):
            try:
                answer = requests.post(url, data=body, timeout=(5, 15), headers={
                    "Content-Type": "application/json", "x-magento-signature": signature(body, token)})
                outcome = answer.status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            self.deliveries.append((time.monotonic(), event_name, outcome, body))
