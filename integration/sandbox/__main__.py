"""``python -m integration.sandbox``: serve a sandbox store, optionally with a ready integration.

``--seed-credentials`` creates an Active integration and prints its four credentials as one
JSON line on stdout (for benchmarks and scripted demos), then serves.

``--keep-alive-threads N`` serves it with gunicorn (one process, N threads) keeping connections
alive, as the web server in front of a real Magento does; Werkzeug's server (the default) opens
a connection and a thread per request, which a benchmark would measure instead of the client.
"""

from __future__ import annotations

import argparse
import json
import sys

from werkzeug.serving import make_server

from . import create_sandbox
from .state import SandboxState, Token, random_string


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m integration.sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each REST call")
    parser.add_argument("--profile", default="2.4.8+", choices=["2.4.8+", "2.4.4-2.4.7", "patch-37278"])
    parser.add_argument("--bearer", action="store_true", help="accept access tokens as bearer tokens")
    parser.add_argument("--consumer-expiry", type=int, default=300,
                        help="Magento's oauth/consumer/expiration_period: seconds from the callback POST in "
                             "which the request-token call is accepted (<= 0 means 300, as in Magento)")
    parser.add_argument("--seed-credentials", action="store_true")
    parser.add_argument("--input-limit", type=int, metavar="MAX", nargs="?", const=300,
                        help="input limits on: searches refuse a pageSize above MAX (default 300)")
    parser.add_argument("--grant", metavar="RESOURCES",
                        help="the seeded integration's ACL, comma-separated (default: all resources)")
    parser.add_argument("--async-events", action="store_true",
                        help="act as a store with aligent/magento-async-events (subscriptions, signed pushes)")
    parser.add_argument("--push-duplicates", action="store_true", help="post every pushed event twice")
    parser.add_argument("--push-out-of-order", action="store_true", help="post each pushed event after the next")
    parser.add_argument("--no-async", action="store_true", help="no Magento_WebapiAsync (async/schema is a 404)")
    parser.add_argument("--keep-alive-threads", type=int, default=0,
                        help="serve with gunicorn, keeping connections alive, with this many threads")
    args = parser.parse_args(argv)
    state = SandboxState(profile=args.profile, products=args.products, latency=args.latency, bearer=args.bearer,
                         consumer_expiry=args.consumer_expiry, async_events=args.async_events)
    state.input_limit, state.async_api = args.input_limit, not args.no_async
    state.async_events.duplicates, state.async_events.out_of_order = args.push_duplicates, args.push_out_of_order
    wsgi = create_sandbox(state)
    if args.keep_alive_threads:
        server = _KeepAlive(wsgi, args.host, args.port, args.keep_alive_threads)
    else:
        server = make_server(args.host, args.port, wsgi, threaded=True)
    if args.seed_credentials:
        grant = tuple(r.strip() for r in args.grant.split(",") if r.strip()) if args.grant else None
        integration = state.add_integration("Seeded", "", "", resources=grant)
        integration.token = Token("access", random_string(), random_string(), "")
        integration.status = "Active"
        print(json.dumps({"base_url": f"http://{args.host}:{server.server_port}/",
                          "consumer_key": integration.consumer_key, "consumer_secret": integration.consumer_secret,
                          "access_token": integration.token.token,
                          "access_token_secret": integration.token.secret}), flush=True)
    else:
        print(f"sandbox store on http://{args.host}:{server.server_port}/admin/integrations", file=sys.stderr)
    server.serve_forever()


class _KeepAlive:
    """gunicorn (gthread) in this process's child, serving the store state made here."""

    def __init__(self, wsgi, host: str, port: int, threads: int):
        from gunicorn.app.base import BaseApplication

        if not port:
            raise SystemExit("--keep-alive-threads needs a --port")
        settings = {"bind": f"{host}:{port}", "workers": 1, "worker_class": "gthread", "threads": threads,
                    "keepalive": 30, "accesslog": None, "loglevel": "warning", "graceful_timeout": 2,
                    "timeout": 600}  # a loaded machine must not get the one worker (and its state) restarted

        class Store(BaseApplication):
            def load_config(self):
                for name, value in settings.items():
                    self.cfg.set(name, value)

            def load(self):
                return wsgi

        self.server_port, self._gunicorn = port, Store()

    def serve_forever(self) -> None:
        self._gunicorn.run()


if __name__ == "__main__":
    main()
