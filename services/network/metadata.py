"""The metadata server of one network: ``http://169.254.169.254/`` inside the network's namespace.

Started (and re-adopted through its pid file) by the DHCP agent, one process per network. Its listening socket
is made inside the namespace (``setns`` for the bind only); everything else — the database — stays in the root
namespace. A request is answered for the instance that owns the *source address* on *this* network: the
address is the only identity, and the compute's anti-spoofing rules make sure a guest can only send from its
own. Nothing in the request (headers, path, query) can select another instance.

Layouts: OpenStack (``/openstack/latest/meta_data.json``, ``user_data``, ``network_data.json``; also under
``/openstack/2012-08-10``) and EC2 (``/latest/meta-data/...``, ``/latest/user-data``; also under
``/2009-04-04``).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from common import config, log
from common.db.pool import Database
from common.metadata import ec2_metadata, instance_documents
from common.service import run_daemon

__all__ = ["build_app", "main"]

LOG = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
OPENSTACK_VERSIONS = ("latest", "2012-08-10", "2013-04-04", "2015-10-15", "2016-06-30", "2018-08-27")
EC2_VERSIONS = ("latest", "2009-04-04")
DB_KEY = web.AppKey("db", Database)
NETWORK_KEY = web.AppKey("network_id", str)
DOMAIN_KEY = web.AppKey("dns_domain", str)


def listen_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket bound inside ``netns``; the calling thread is back in its own namespace after."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the root namespace")
    finally:
        os.close(own)
        os.close(target)
    return sock


async def _lookup(conn: asyncpg.Connection, network_id: str, address: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT i.*, p.id AS port_id, p.mac_address, p.dns_name FROM ip_allocations a "
        "JOIN ports p ON p.id = a.port_id JOIN instances i ON i.id = p.device_id AND i.project_id = p.project_id "
        "WHERE a.network_id = $1 AND a.ip_address = $2::inet AND p.device_owner = 'compute:nova' "
        "AND i.vm_state <> 'deleted' LIMIT 1",
        network_id,
        address,
    )
    if row is None:
        return None
    inst = dict(row)
    ports = await conn.fetch(
        "SELECT p.id, p.mac_address, p.network_id, n.mtu, host(a.ip_address) AS ip, s.cidr, s.gateway_ip "
        "FROM ports p JOIN networks n ON n.id = p.network_id JOIN ip_allocations a ON a.port_id = p.id "
        "JOIN subnets s ON s.id = a.subnet_id WHERE p.device_id = $1 AND p.project_id = $2 "
        "AND p.device_owner = 'compute:nova' ORDER BY p.created_at, p.id, a.ip_address",
        inst["id"],
        inst["project_id"],
    )
    inst["ports"] = [dict(p) for p in ports]
    inst["address"] = address
    return inst


def _walk(tree: Any, parts: list[str]) -> web.Response:
    node = tree
    for part in parts:
        if isinstance(node, dict):
            match = next((k for k in node if k == part or k.split("=")[0] == part), None)
            if match is None:
                raise web.HTTPNotFound()
            node = node[match]
        else:
            raise web.HTTPNotFound()
    if isinstance(node, dict):
        listing = [k.split("=")[0] + "/" if isinstance(v, dict) and "=" not in k else k for k, v in node.items()]
        return web.Response(text="\n".join(listing))
    return web.Response(text=str(node))


async def handle(request: web.Request) -> web.StreamResponse:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        raise web.HTTPForbidden()
    address = peer[0]
    db = request.app[DB_KEY]
    inst = await db.run(lambda conn: _lookup(conn, request.app[NETWORK_KEY], address))
    if inst is None:
        LOG.warning("metadata request for %s from %s: no instance owns that address here", request.path, address)
        raise web.HTTPNotFound(text=f"no instance has address {address} on this network\n")
    docs = instance_documents(inst, request.app[DOMAIN_KEY])
    parts = [p for p in request.path.split("/") if p]
    LOG.info("metadata %s for instance %s (%s)", request.path, inst["id"], address)
    if not parts:
        return web.Response(text="latest\n" + "\n".join(EC2_VERSIONS[1:]) + "\nopenstack\n")
    if parts[0] == "openstack":
        if len(parts) == 1:
            return web.Response(text="\n".join(OPENSTACK_VERSIONS) + "\n")
        if parts[1] not in OPENSTACK_VERSIONS:
            raise web.HTTPNotFound()
        if len(parts) == 2:
            return web.Response(text="meta_data.json\nnetwork_data.json\nuser_data\nvendor_data.json\n")
        name = "/".join(parts[2:])
        if name == "meta_data.json":
            return web.json_response(docs["meta_data"])
        if name == "network_data.json":
            return web.json_response(docs["network_data"])
        if name in ("vendor_data.json", "vendor_data2.json"):
            return web.json_response({})
        if name == "user_data":
            if docs["user_data"] is None:
                raise web.HTTPNotFound()
            return web.Response(body=docs["user_data"], content_type="application/octet-stream")
        raise web.HTTPNotFound()
    if parts[0] in EC2_VERSIONS:
        if len(parts) == 1:
            return web.Response(text="meta-data/\nuser-data\n")
        if parts[1] == "user-data":
            if docs["user_data"] is None:
                raise web.HTTPNotFound()
            return web.Response(body=docs["user_data"], content_type="application/octet-stream")
        if parts[1] == "meta-data":
            return _walk(ec2_metadata(inst, docs), parts[2:])
    raise web.HTTPNotFound()


def build_app(db: Database, network_id: str, dns_domain: str) -> web.Application:
    app = web.Application()
    app[DB_KEY] = db
    app[NETWORK_KEY] = network_id
    app[DOMAIN_KEY] = dns_domain
    app.router.add_get("/{tail:.*}", handle)
    return app


async def serve(conf: Any, network_id: str, netns: str, pid_file: Path, port: int = 80) -> None:
    sock = listen_in_netns(netns, "169.254.169.254", port)
    db = await Database.connect(conf)
    domain = await db.run(lambda c: c.fetchval("SELECT dns_domain FROM networks WHERE id = $1", network_id))
    runner = web.AppRunner(build_app(db, network_id, (domain or conf.network.dns_domain).rstrip(".")), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    _write_pid(pid_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    LOG.info("metadata of network %s serving on 169.254.169.254:%d in %s", network_id, port, netns)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await db.close()
        _remove_pid(pid_file)


def _write_pid(pid_file: Path) -> None:
    pid_file.write_text(f"{os.getpid()}\n")


def _remove_pid(pid_file: Path) -> None:
    pid_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="stratus-metadata")
    parser.add_argument("--network-id", required=True)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--pid-file", required=True, type=Path)
    args, rest = parser.parse_known_args(sys.argv[1:])
    conf = config.parse_args(rest, prog="stratus-metadata")
    log.setup(conf, "stratus-metadata")
    run_daemon(conf, serve(conf, args.network_id, args.netns, args.pid_file))


if __name__ == "__main__":
    main()
