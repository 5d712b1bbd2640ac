"""``python -m integration.sandbox``: serve a sandbox store, optionally with a ready integration.

``--seed-credentials`` creates an Active integration and prints its four credentials as one
JSON line on stdout (for benchmarks and scripted demos), then serves.
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
    args = parser.parse_args(argv)
    state = SandboxState(profile=args.profile, products=args.products, latency=args.latency, bearer=args.bearer,
                         consumer_expiry=args.consumer_expiry, async_events=args.async_events)
    state.input_limit, state.async_api = args.input_limit, not args.no_async
    state.async_events.duplicates, state.async_events.out_of_order = args.push_duplicates, args.push_out_of_order
    server = make_server(args.host, args.port, create_sandbox(state), threaded=True)
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


if __name__ == "__main__":
    main()
