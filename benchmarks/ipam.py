"""Port creates in a subnet that already has many addresses in use: ms per create, JSON on the last line.

Starts its own PostgreSQL. ``--window`` sets ``ipam.SEARCH_WINDOW`` (a window as big as the pool searches the
whole pool, as before windows). ``--record`` appends to RESULTS.md.

    python -m benchmarks.ipam --cidr 10.70.0.0/16 --used 20000 --creates 100
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import record  # noqa: E402
from common.db import migrate  # noqa: E402
from common.db import networks as db_networks  # noqa: E402
from common.db.pool import init_connection  # noqa: E402
from services.network import ipam  # noqa: E402
from tests.fixtures.postgres import PostgresServer  # noqa: E402

BASE_MAC = "fa:16:3e:00:00:00"


async def run(dsn: str, cidr: str, used: int, creates: int) -> dict:
    await migrate.sync(dsn)
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        net, subnet = await db_networks.create_network_with_subnet(conn, "bench", "ipam-bench", cidr, False)
        port, _, _ = await db_networks.create_port(conn, network_id=net["id"], project_id="bench", base_mac=BASE_MAC)
        # The addresses in use: the lowest of the pool, as a subnet filled lowest-first has them.
        start = ipam.pools_from_json(subnet["allocation_pools"])[0].start
        await conn.execute(
            "INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id)"
            " SELECT $1, $4::inet + i, $2, $3 FROM generate_series(1, $5) AS i ON CONFLICT DO NOTHING",
            subnet["id"], port["id"], net["id"], str(start), used,
        )  # fmt: skip
        t0 = time.perf_counter()
        for _ in range(creates):
            async with conn.transaction():
                await db_networks.create_port(conn, network_id=net["id"], project_id="bench", base_mac=BASE_MAC)
        elapsed = time.perf_counter() - t0
    finally:
        await conn.close()
    return {"ms_per_create": round(elapsed * 1000 / creates, 2), "creates": creates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cidr", default="10.70.0.0/16")
    ap.add_argument("--used", type=int, default=20000, help="addresses in use before the measured creates")
    ap.add_argument("--creates", type=int, default=100)
    ap.add_argument("--window", type=int, default=ipam.SEARCH_WINDOW, help="ipam.SEARCH_WINDOW for this run")
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.used + args.creates + 2 > ipaddress.ip_network(args.cidr).num_addresses - 3:
        ap.error(f"{args.cidr} has no room for --used {args.used} plus --creates {args.creates}")
    ipam.SEARCH_WINDOW = args.window
    pg = PostgresServer()
    pg.start()
    try:
        result = asyncio.run(run(pg.dsn, args.cidr, args.used, args.creates))
    finally:
        pg.stop()
        pg.cleanup()
    result.update(cidr=args.cidr, used=args.used, window=args.window)
    if args.record:
        record("ipam.py", f"cidr={args.cidr} used={args.used} creates={args.creates} window={args.window}", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
