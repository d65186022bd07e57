"""Boot N servers through the API with C concurrent clients on libvirt test:///default hosts.

Starts its own PostgreSQL (with devstack's settings: durable, ``synchronous_commit`` off), RabbitMQ and Stratus
services (like the tests; the services on the benchmark's own Python), prints API latency p50/p99 and
end-to-end boots/s (first POST to last ACTIVE), JSON on the last line. ``--record`` appends to RESULTS.md.

    python -m benchmarks.boot --hosts 10 --servers 200 --clients 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._cpu import CpuMeter  # noqa: E402
from benchmarks._results import record  # noqa: E402
from tests.fixtures.cloud import Cloud, admin_token  # noqa: E402
from tests.fixtures.postgres import PostgresServer  # noqa: E402
from tests.fixtures.rabbitmq import RabbitCluster  # noqa: E402


async def bench_network(session: aiohttp.ClientSession, endpoint: str, headers: dict, servers: int) -> str:
    """The bootstrap network (a /24) when it has room, else a network with a subnet big enough for every server."""
    if servers <= 200:
        async with session.get(f"{endpoint}/network/v2.0/networks?name=private", headers=headers) as r:
            return (await r.json())["networks"][0]["id"]
    async with session.post(f"{endpoint}/network/v2.0/networks", headers=headers,
                            json={"network": {"name": "bench"}}) as r:  # fmt: skip
        r.raise_for_status()
        net = (await r.json())["network"]["id"]
    prefix = max(16, 32 - (servers + 16).bit_length() - 1)
    body = {"subnet": {"network_id": net, "cidr": f"10.128.0.0/{prefix}", "ip_version": 4}}
    async with session.post(f"{endpoint}/network/v2.0/subnets", headers=headers, json=body) as r:
        if r.status >= 300:
            raise RuntimeError(f"creating the benchmark subnet failed: {r.status} {await r.text()}")
    return net


async def run(endpoint: str, servers: int, clients: int, timeout: float, meter: CpuMeter) -> dict:
    async with aiohttp.ClientSession() as session:
        tok = await admin_token(session, endpoint)
        headers = {"X-Auth-Token": tok}
        net = await bench_network(session, endpoint, headers, servers)
        async with session.get(f"{endpoint}/image/v2/images?name=tiny", headers=headers) as r:
            image = (await r.json())["images"][0]["id"]
        latencies: list[float] = []
        ids: list[str] = []
        errors = 0
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(servers):
            queue.put_nowait(i)

        async def client() -> None:
            nonlocal errors
            while not queue.empty():
                i = queue.get_nowait()
                body = {"server": {"name": f"bench-{i}", "flavorRef": "1", "imageRef": image,
                                   "networks": [{"uuid": net}]}}  # fmt: skip
                t0 = time.perf_counter()
                async with session.post(f"{endpoint}/compute/v2.1/servers", json=body, headers=headers) as r:
                    data = await r.json()
                    latencies.append(time.perf_counter() - t0)
                    if r.status == 202:
                        ids.append(data["server"]["id"])
                    else:
                        errors += 1

        cpu_before, client_cpu = meter.sample(), time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        posted = time.perf_counter()
        # Poll for "any server still building?" (one row, 10 Hz): the benchmark's own reads stay out of the
        # figures (it listed every BUILD server at 4 Hz before), and the end is seen within 0.1 s.
        base = f"{endpoint}/compute/v2.1/servers?all_tenants=1"
        while time.perf_counter() - start < timeout:
            async with session.get(f"{base}&status=BUILD&limit=1", headers=headers) as r:
                if not (await r.json())["servers"]:
                    break
            await asyncio.sleep(0.1)
        done = time.perf_counter()
        cpu = meter.since(cpu_before)
        cpu["benchmark_client"] = round(time.process_time() - client_cpu, 2)
        unfinished = 0
        for status in ("BUILD", "ERROR"):
            async with session.get(f"{base}&status={status}&limit=1000", headers=headers) as r:
                unfinished += len({s["id"] for s in (await r.json())["servers"]} & set(ids))
        errors += unfinished
        latencies.sort()
        booted = len(ids) - unfinished
        return {
            "servers": servers,
            "clients": clients,
            "boots_per_s": round(booted / (done - start), 1),
            "api_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "api_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
            "post_phase_s": round(posted - start, 2),
            "total_s": round(done - start, 2),
            "errors": errors,
            # CPU seconds per component over the measured phase, and per boot (the budget at 150/s on 2 cores is
            # 13.3 ms for everything together).
            "cpu_s": cpu,
            "cpu_ms_per_boot": round(cpu["total"] * 1000 / max(booted, 1), 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--servers", type=int, default=200)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    ap.add_argument("--db-tcp", action="store_true",
                    help="services reach PostgreSQL over TCP loopback, as from another machine (default: its Unix "
                    "socket, as devstack's services on the database's machine do)")  # fmt: skip
    args = ap.parse_args()
    pg, rabbit = PostgresServer(durable=True), RabbitCluster(1)
    with tempfile.TemporaryDirectory(prefix="stratus-bench-") as tmp:
        pg.start()
        try:
            rabbit.start()
            cloud = Cloud(Path(tmp), pg, rabbit, compute_hosts=args.hosts,
                          compute_overrides={"vcpus": 64, "memory_mb": 262144, "local_gb": 4000,
                                             "report_interval": 10},  # production's default, not the tests' 2 s
                          extra_config={"DEFAULT": {"debug": "false"},
                                        "scheduler": {"service_down_time": 60}},
                          database_socket=not args.db_tcp)  # fmt: skip
            cloud.start(timeout=300)  # 1,000 simulated hosts take a while to report in
            try:
                meter = CpuMeter({
                    **{name: [svc.pid] for name, svc in cloud.services.items()},
                    "postgres": [pg.proc.pid if pg.proc else None],
                    "rabbitmq": [node.proc.pid for node in rabbit.nodes if node.proc],
                })  # fmt: skip
                result = asyncio.run(run(cloud.endpoint, args.servers, args.clients, args.timeout, meter))
            finally:
                cloud.stop()
        finally:
            rabbit.stop()
            rabbit.cleanup()
            pg.stop()
            pg.cleanup()
    result["hosts"] = args.hosts
    result["db"] = "tcp" if args.db_tcp else "socket"
    if args.record:
        config = f"hosts={args.hosts} servers={args.servers} clients={args.clients} db={result['db']}"
        record("boot.py", config, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
