"""Export benchmark: 10,000 products from the sandbox store, 100 ms latency per request, page size 100.

Contenders (each in its own process, so RSS growth is its own):
  ours-c1   our signed client, one page at a time
  ours-c8   our signed client, 8 pages at a time
  pymagento PyMagento with a bearer token (the sandbox in enable_integration_as_bearer mode), its own paging
  ideal-c8  plain requests fetching the same 100 pages 8 at a time (the ceiling)
Plus the cost of signing one request, and a signed against an unsigned call to the same endpoint.

    .venv/bin/python bench/export.py [--products 10000] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def rss_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def run_contender(name: str, creds: dict, page_size: int) -> dict:
    import requests

    from integration.magento.client import Credentials, StoreClient
    from integration.magento.export import export
    from integration.magento.store_url import StorePolicy

    start_rss = rss_kb()
    started = time.perf_counter()
    count = 0
    if name.startswith("ours"):
        concurrency = int(name.split("-c")[1])
        client = StoreClient(creds["base_url"], Credentials(creds["consumer_key"], creds["consumer_secret"],
                                                            creds["access_token"], creds["access_token_secret"]),
                             policy=StorePolicy(("127.0.0.1",)), pool_size=concurrency)
        with open(os.devnull, "w") as sink:
            count = export(client, "products", None, concurrency=concurrency, page_size=page_size, stdout=sink)
    elif name == "pymagento":
        from magento import Magento

        client = Magento(token=creds["access_token"], base_url=creds["base_url"].rstrip("/"), scope="default",
                         batch_page_size=page_size)
        for _ in client.get_products():
            count += 1
    elif name == "ideal-c8":
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=8)
        session.mount("http://", adapter)
        headers = {"Authorization": f"Bearer {creds['access_token']}"}
        url = creds["base_url"] + "rest/default/V1/products"

        def page(n: int) -> int:
            r = session.get(url, headers=headers, params={"searchCriteria[pageSize]": page_size,
                                                          "searchCriteria[currentPage]": n}, timeout=30)
            r.raise_for_status()
            return len(r.json()["items"])

        first = session.get(url, headers=headers, params={"searchCriteria[pageSize]": page_size,
                                                          "searchCriteria[currentPage]": 1}, timeout=30).json()
        count = len(first["items"])
        pages = (first["total_count"] + page_size - 1) // page_size
        with ThreadPoolExecutor(8) as pool:
            count += sum(pool.map(page, range(2, pages + 1)))
    wall = time.perf_counter() - started
    return {"name": name, "records": count, "wall_s": wall, "records_per_s": count / wall,
            "rss_growth_mb": (rss_kb("VmHWM") - start_rss) / 1024}


def signing_cost(creds: dict, rounds: int = 2000) -> dict:
    import requests

    from integration.magento.oauth import magento_auth

    url = creds["base_url"] + "rest/default/V1/products?searchCriteria%5BpageSize%5D=1&searchCriteria%5BcurrentPage%5D=1"
    auth = magento_auth(creds["consumer_key"], creds["consumer_secret"], creds["access_token"],
                        creds["access_token_secret"])
    t0 = time.perf_counter()
    for _ in range(rounds):
        requests.Request("GET", url).prepare()
    unsigned_prepare = (time.perf_counter() - t0) / rounds
    t0 = time.perf_counter()
    for _ in range(rounds):
        requests.Request("GET", url, auth=auth).prepare()
    signed_prepare = (time.perf_counter() - t0) / rounds
    session = requests.Session()
    calls = 200
    t0 = time.perf_counter()
    for _ in range(calls):
        session.get(url, headers={"Authorization": f"Bearer {creds['access_token']}"}).raise_for_status()
    unsigned_call = (time.perf_counter() - t0) / calls
    t0 = time.perf_counter()
    for _ in range(calls):
        session.get(url, auth=auth).raise_for_status()
    signed_call = (time.perf_counter() - t0) / calls
    return {"sign_us": (signed_prepare - unsigned_prepare) * 1e6, "unsigned_call_us": unsigned_call * 1e6,
            "signed_call_us": signed_call * 1e6}


def start_sandbox(products: int, latency: float) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "integration.sandbox", "--port", "0", "--products", str(products),
                             "--latency", str(latency), "--bearer", "--seed-credentials"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, json.loads(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=10000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--creds", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:  # child process
        print(json.dumps(run_contender(args.contender, json.loads(args.creds), args.page_size)))
        return

    proc, creds = start_sandbox(args.products, args.latency)
    try:
        results = []
        for name in ("ours-c1", "ours-c8", "pymagento", "ideal-c8"):
            out = subprocess.run([sys.executable, __file__, "--contender", name, "--creds", json.dumps(creds),
                                  "--page-size", str(args.page_size)], capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout))
            r = results[-1]
            print(f"{r['name']:10} {r['records']:6d} records  {r['wall_s']:7.2f} s  {r['records_per_s']:8.0f} rec/s  "
                  f"RSS +{r['rss_growth_mb']:.1f} MB", flush=True)
        by = {r["name"]: r for r in results}
        print(f"ours-c8 / pymagento: {by['ours-c8']['records_per_s'] / by['pymagento']['records_per_s']:.1f}x "
              f"(target >= 5x)")
        print(f"ours-c8 / ideal-c8:  {100 * by['ours-c8']['records_per_s'] / by['ideal-c8']['records_per_s']:.0f}% "
              f"(target >= 75%)")
        proc_fast, creds_fast = start_sandbox(10, 0.0)
        try:
            cost = signing_cost(creds_fast)
        finally:
            proc_fast.terminate()
        print(f"signing one request: {cost['sign_us']:.0f} us; GET unsigned {cost['unsigned_call_us']:.0f} us, "
              f"signed {cost['signed_call_us']:.0f} us (local sandbox, no latency)")
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
