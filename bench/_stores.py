"""Sandbox stores in a process of their own, for benchmarks that want background syncs without
the stores' CPU counting against the load generator.

    python -m bench._stores --stores 10 --products 2000 --churn 600

Prints one JSON line per store (port and the integration's credentials, already activated),
then ``ready``, and serves until its standard input closes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    from werkzeug.serving import make_server

    from integration.sandbox import SandboxState, create_sandbox
    from integration.sandbox.changes import Churn
    from integration.sandbox.state import Token, random_string

    parser = argparse.ArgumentParser()
    parser.add_argument("--stores", type=int, default=10)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--churn", type=float, default=600, help="changes per minute per store")
    args = parser.parse_args()
    for n in range(args.stores):
        state = SandboxState(products=args.products, latency=args.latency)
        integration = state.add_integration(f"Synced {n}")
        integration.token = Token("access", random_string(), random_string(), "")
        integration.status = "Active"
        server = make_server("127.0.0.1", 0, create_sandbox(state), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        Churn(state, args.churn, seed=n).start()
        print(json.dumps({"port": server.server_port, "consumer_key": integration.consumer_key,
                          "consumer_secret": integration.consumer_secret, "token": integration.token.token,
                          "token_secret": integration.token.secret}), flush=True)
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
