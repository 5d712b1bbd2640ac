"""Memory benchmark: what a hostile store's answer costs us, a JSON array of ``{}`` (about 20
times its size once parsed).

Contenders (each in its own process, so the peak RSS growth is its own):
  baseline    plain requests + .json() of a 31 MiB answer (what reading up to 32 MiB allowed)
  ours-31MiB  our client, the same answer: refused as too large while reading
  ours-4MiB   our client, the largest answer it accepts (just under 4 MiB), parsed

    .venv/bin/python bench/answers.py [--size-mib 31]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MIB = 1024 * 1024


def peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def contender(name: str, url: str) -> dict:
    import requests

    from integration.magento import errors
    from integration.magento.client import Credentials, StoreClient
    from integration.magento.store_url import StorePolicy

    client = StoreClient(url, Credentials("a" * 32, "b" * 32, "c" * 32, "d" * 32), policy=StorePolicy(("127.0.0.1",)))
    session = requests.Session()
    start = peak_rss_kb()
    outcome = ""
    if name == "baseline":
        outcome = f"{len(session.get(url + 'big', timeout=60).json()):,} objects parsed"
    elif name == "ours-31MiB":
        try:
            client.get("big")
        except errors.AnswerTooLarge as exc:
            outcome = f"refused: {exc.message.split(' is ')[-1]}"
    else:
        outcome = f"{len(client.get('limit')):,} objects parsed"
    return {"name": name, "outcome": outcome, "peak_rss_growth_mb": (peak_rss_kb() - start) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=float, default=31)
    parser.add_argument("--contender")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.contender:
        print(json.dumps(contender(args.contender, args.url)))
        return

    from integration.magento.transport import MAX_ANSWER_BYTES
    from tests.servers import Served

    def objects(size: int) -> bytes:
        return b"[" + b"{}," * (size // 3 - 1) + b"{}]"

    bodies = {"/rest/default/V1/big": objects(int(args.size_mib * MIB)), "/big": objects(int(args.size_mib * MIB)),
              "/rest/default/V1/limit": objects(MAX_ANSWER_BYTES - 16)}

    def app(environ, start_response):
        body = bodies[environ["PATH_INFO"]]
        start_response("200 OK", [("Content-Type", "application/json")])  # no length: read until the end
        return (body[i:i + 65536] for i in range(0, len(body), 65536))

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    served = Served(app)
    results = []
    try:
        for name in ("baseline", "ours-31MiB", "ours-4MiB"):
            out = subprocess.run([sys.executable, __file__, "--contender", name, "--url", served.url + "/"],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        served.stop()
    base = results[0]["peak_rss_growth_mb"]
    for r in results:
        print(f"{r['name']:<11} peak RSS +{r['peak_rss_growth_mb']:7.1f} MB  "
              f"({r['peak_rss_growth_mb'] / base:6.1%} of baseline)  {r['outcome']}")


if __name__ == "__main__":
    main()
