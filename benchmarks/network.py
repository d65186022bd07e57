"""Network service benchmark on a private cloud whose network service is the network node (real dnsmasq).

1. ports/s: N ports created through the Network API by C concurrent clients;
2. create → DHCP live: for K ports one at a time, from the POST until a DHCPDISCOVER with the port's MAC
   (sent every 10 ms from a client namespace on the tenant bridge) gets an offer of the port's address;
3. restart outage: a DHCP + DNS prober runs while the network service restarts R times; reports failed
   queries and the longest stretch without an answer;
4. dnsmasq replacement outage: the same while the agent replaces dnsmasq (stop, then start) N times.

Prints JSON on the last line; ``--record`` appends it to benchmarks/RESULTS.md.

    python -m benchmarks.network --ports 200 --clients 20 --live 20 --restarts 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import record  # noqa: E402
from services.network import dhcp  # noqa: E402
from tests.fixtures._common import wait_for  # noqa: E402
from tests.fixtures.cloud import Cloud, admin_token  # noqa: E402
from tests.fixtures.postgres import PostgresServer  # noqa: E402
from tests.fixtures.rabbitmq import RabbitCluster  # noqa: E402
from tests.functional.network.dhcp_probe import dhcp_discover, dhcp_offer_ip  # noqa: E402


def helper() -> None:
    """Inside the client namespace: for each "mac ip" line, DISCOVER every 10 ms until offered ip; print "ok"."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    sock.bind(("0.0.0.0", 68))
    for line in sys.stdin:
        mac, ip = line.split()
        deadline = time.monotonic() + 30
        got = None
        while got != ip and time.monotonic() < deadline:
            xid = int.from_bytes(os.urandom(4), "big")
            sock.sendto(dhcp_discover(mac, xid), ("255.255.255.255", 67))
            end = time.monotonic() + 0.01
            while (left := end - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
                got = dhcp_offer_ip(sock.recv(2048), xid) or got
                if got == ip:
                    break
        print("ok" if got == ip else "timeout", flush=True)


async def create_ports(endpoint: str, net: str, n: int, clients: int) -> dict:
    async with aiohttp.ClientSession() as session:
        headers = {"X-Auth-Token": await admin_token(session, endpoint)}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        latencies, errors, ids = [], 0, []

        async def client() -> None:
            nonlocal errors
            while not queue.empty():
                i = queue.get_nowait()
                t0 = time.perf_counter()
                body = {"port": {"network_id": net, "name": f"bench-{i}", "dns_name": f"bench-{i}"}}
                async with session.post(f"{endpoint}/network/v2.0/ports", json=body, headers=headers) as r:
                    data = await r.json()
                    latencies.append(time.perf_counter() - t0)
                    if r.status == 201:
                        ids.append(data["port"])
                    else:
                        errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
        latencies.sort()
        macs = [p["mac_address"] for p in ids]
        ips = [p["fixed_ips"][0]["ip_address"] for p in ids]
        return {
            "ports": len(ids),
            "ports_per_s": round(len(ids) / elapsed, 1),
            "api_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "api_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
            "errors": errors,
            "unique_macs": len(set(macs)) == len(macs),
            "unique_ips": len(set(ips)) == len(ips),
            "port_ids": [p["id"] for p in ids],
        }


async def create_to_live(endpoint: str, net: str, k: int, helper_proc: subprocess.Popen) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as session:
        headers = {"X-Auth-Token": await admin_token(session, endpoint)}
        for i in range(k):
            t0 = time.perf_counter()
            body = {"port": {"network_id": net, "name": f"live-{i}", "dns_name": f"live-{i}"}}
            async with session.post(f"{endpoint}/network/v2.0/ports", json=body, headers=headers) as r:
                port = (await r.json())["port"]
            helper_proc.stdin.write(f"{port['mac_address']} {port['fixed_ips'][0]['ip_address']}\n")
            helper_proc.stdin.flush()
            line = await asyncio.to_thread(helper_proc.stdout.readline)
            if line.strip() == "ok":
                out.append((time.perf_counter() - t0) * 1000)
    return out


def measure_replacements(cloud, network_id: str, ns: str, port, ip: str, server: str, n: int) -> dict:
    """Force the agent to replace dnsmasq ``n`` times (as a changed command line does: stop, then start) while
    the prober runs; the window is what a subnet/domain change costs (the service restart costs nothing)."""
    state = Path(cloud.workdir) / "state" / "network" / network_id
    probe = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.functional.network.dhcp_probe",
         "--dev", "eth0", "--mac", port.mac_address, "--expect-ip", ip, "--server", server,
         "--name", "probe.stratus.local", "--duration", "600", "--interval", "0.02", "--timeout", "0.5"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1)
    conn = cloud.sdk()
    for i in range(n):
        old = (state / "dnsmasq.pid").read_text().strip()
        (state / "dnsmasq.argv").write_text("[]")  # "the running one was started differently"
        conn.network.update_port(port.id, description=f"replace-{i}")  # a DB change wakes the agent
        wait_for(lambda o=old: (state / "dnsmasq.pid").exists()
                 and (state / "dnsmasq.pid").read_text().strip() not in ("", o), 30, "dnsmasq replaced")  # fmt: skip
        time.sleep(1)
    probe.terminate()
    stats = json.loads(probe.communicate(timeout=30)[0])
    return {
        "replacements": n,
        "dhcp_failed": stats["dhcp"]["failed"],
        "dns_failed": stats["dns"]["failed"],
        "queries": stats["dhcp"]["ok"] + stats["dhcp"]["failed"],
        "max_gap_ms": round(max(stats["dhcp"]["max_gap_ms"], stats["dns"]["max_gap_ms"]), 1),
    }


def _ns(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def main() -> None:
    if sys.argv[1:] == ["--helper"]:
        return helper()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ports", type=int, default=200)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--live", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--replacements", type=int, default=5, help="forced dnsmasq replacements to measure")
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = ap.parse_args()
    pg, rabbit = PostgresServer(), RabbitCluster(1)
    ns = f"stcl-bench{secrets.token_hex(2)}"
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="stratus-bench-") as tmp:
        pg.start()
        try:
            rabbit.start()
            cloud = Cloud(Path(tmp), pg, rabbit, compute_hosts=0, schedulers=0,
                          extra_config={"DEFAULT": {"debug": "false"},
                                        "network": {"serve_dhcp": "true"}})  # fmt: skip
            try:
                cloud.start(timeout=120)
                conn = cloud.sdk()
                net = conn.network.find_network("private", ignore_missing=False)
                wait_for(lambda: (Path(tmp) / "state/network" / net.id / "dnsmasq.pid").exists(), 30, "dnsmasq")
                created = asyncio.run(create_ports(cloud.endpoint, net.id, args.ports, args.clients))
                created.pop("port_ids")
                result.update(created)
                # A client namespace on the bridge, with a port of its own (its MAC and address) for the probes.
                probe_port = conn.network.create_port(network_id=net.id, name="probe", dns_name="probe")
                ip = probe_port.fixed_ips[0]["ip_address"]
                outer = f"stco{ns[-4:]}"
                _ns("ip", "netns", "add", ns)
                _ns("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ns("ip", "link", "set", outer, "master", f"brq{net.id[:11]}", "up")
                _ns("ip", "-n", ns, "link", "set", "eth0", "address", probe_port.mac_address, "up")
                _ns("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
                time.sleep(1)
                helper_proc = subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, "-m", "benchmarks.network", "--helper"],
                    cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                try:
                    live = asyncio.run(create_to_live(cloud.endpoint, net.id, args.live, helper_proc))
                finally:
                    helper_proc.stdin.close()
                    helper_proc.wait(timeout=30)
                live.sort()
                result["create_to_dhcp_live_ms"] = {
                    "n": len(live), "p50": round(statistics.median(live), 1), "max": round(live[-1], 1),
                }  # fmt: skip
                server = cloud.query(
                    "SELECT host(a.ip_address) AS ip FROM ports p JOIN ip_allocations a ON a.port_id = p.id "
                    "WHERE p.network_id = $1 AND p.device_owner = 'network:dhcp'", net.id,
                )[0]["ip"]  # fmt: skip
                probe = subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.functional.network.dhcp_probe",
                     "--dev", "eth0", "--mac", probe_port.mac_address, "--expect-ip", ip, "--server", server,
                     "--name", "probe.stratus.local", "--duration", "600", "--interval", "0.02"],
                    cwd=ROOT, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                time.sleep(1)
                svc = cloud.services["network"]
                t0 = time.monotonic()
                for _ in range(args.restarts):
                    svc.stop()
                    before = cloud.grep_logs("DHCP in sync").get("network", 0)
                    svc.start()
                    wait_for(lambda b=before: cloud.grep_logs("DHCP in sync").get("network", 0) > b, 60, "restart")
                restarts_s = time.monotonic() - t0
                time.sleep(1)
                probe.terminate()
                stats = json.loads(probe.communicate(timeout=30)[0])
                replace = measure_replacements(cloud, net.id, ns, probe_port, ip, server, args.replacements)
                result["restart"] = {
                    "restarts": args.restarts,
                    "seconds": round(restarts_s, 1),
                    "dhcp_queries": stats["dhcp"]["ok"] + stats["dhcp"]["failed"],
                    "dhcp_failed": stats["dhcp"]["failed"],
                    "dns_queries": stats["dns"]["ok"] + stats["dns"]["failed"],
                    "dns_failed": stats["dns"]["failed"],
                    "outage_window_ms": round(max(stats["dhcp"]["max_gap_ms"], stats["dns"]["max_gap_ms"]), 1),
                }
                result["dnsmasq_replace"] = replace
            finally:
                cloud.stop()
                asyncio.run(dhcp.teardown_all(Path(tmp) / "state"))
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        finally:
            rabbit.stop()
            rabbit.cleanup()
            pg.stop()
            pg.cleanup()
    params = (f"ports={args.ports} clients={args.clients} live={args.live} restarts={args.restarts} "
              f"replacements={args.replacements}")  # fmt: skip
    if args.record:
        record("network.py", params, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
