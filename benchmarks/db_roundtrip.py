"""CPU per PostgreSQL round trip, TCP loopback against the Unix socket: client and server microseconds, JSON on the
last line.

Starts its own PostgreSQL. A round trip is one prepared ``SELECT $1`` through asyncpg; a transaction is BEGIN,
that statement and COMMIT. The client figure is this process's CPU (kernel included: on loopback the sender's
``write`` runs much of the receiver's TCP stack too), the server figure the backend's. ``--record`` appends to
RESULTS.md.

    python -m benchmarks.db_roundtrip --count 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import record  # noqa: E402
from tests.fixtures.postgres import PostgresServer  # noqa: E402


async def measure(dsn: str, count: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))

        def cpu() -> tuple[float, float]:
            return time.process_time(), sum(backend.cpu_times()[:2])

        async def statement() -> None:
            await conn.fetchval("SELECT $1::int", 1)

        async def transaction() -> None:
            async with conn.transaction():
                await statement()

        out = {}
        for name, unit in (("statement", statement), ("transaction", transaction)):
            await unit()
            (c0, s0) = cpu()
            for _ in range(count):
                await unit()
            (c1, s1) = cpu()
            out[f"{name}_client_us"] = round((c1 - c0) * 1e6 / count, 1)
            out[f"{name}_server_us"] = round((s1 - s0) * 1e6 / count, 1)
        return out
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = ap.parse_args()
    pg = PostgresServer()
    pg.start()
    try:
        result = {
            "tcp": asyncio.run(measure(pg.dsn_for(pg.dbname), args.count)),
            "socket": asyncio.run(measure(pg.dsn_for(pg.dbname, socket=True), args.count)),
        }
    finally:
        pg.stop()
        pg.cleanup()
    if args.record:
        record("db_roundtrip.py", f"count={args.count}", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
