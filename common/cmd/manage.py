"""``stratus-manage``: operator commands.

    stratus-manage [--config-file F] db sync
    stratus-manage [--config-file F] bootstrap --admin-password P [--image-name tiny --image-file PATH]
                                               [--network-name private --subnet-cidr 10.10.0.0/24]
    stratus-manage [--config-file F] status

``bootstrap`` is idempotent: run it again and it changes nothing (except resetting the admin password to the one
given). ``status`` exits non-zero when something is wrong, and says what.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from oslo_config import cfg

from common import config
from common.db import flavors, identity, images, migrate, networks
from common.db.pool import Database

__all__ = ["FLAVORS", "main"]

LOG = logging.getLogger("stratus-manage")

# (id, name, vcpus, ram MiB, disk GiB): devstack's set, with m1.nano at 1 GiB so qcow2 overlays have room.
FLAVORS = (
    ("1", "m1.tiny", 1, 128, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("42", "m1.nano", 1, 64, 1),
)
ROLES = ("admin", "member", "reader")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stratus-manage", description="Stratus operator commands.")
    p.add_argument("--config-file", action="append", default=[], help="Configuration file (repeatable).")
    p.add_argument("--config-dir", action="append", default=[], help="Directory of *.conf files (repeatable).")
    p.add_argument("--debug", "-d", action="store_true", help="Log at DEBUG level.")
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="Database schema.")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("sync", help="Apply pending migrations (safe to repeat and to run concurrently).")

    b = sub.add_parser("bootstrap", help="Roles, the admin project and user, flavors; optionally an image, a network.")
    b.add_argument("--admin-password", required=True)
    b.add_argument("--admin-project", default="admin")
    b.add_argument("--admin-user", default="admin")
    b.add_argument("--image-name", default="tiny")
    b.add_argument("--image-file", type=Path, help="Register this file as a public image (location file://PATH).")
    b.add_argument("--image-disk-format", default="qcow2")
    b.add_argument("--network-name", help="Create this shared network (with a subnet) unless it exists.")
    b.add_argument("--subnet-cidr", default="10.10.0.0/24")

    sub.add_parser("status", help="Database, migrations, broker nodes, services and compute hosts.")
    return p


def _conf(args: argparse.Namespace) -> cfg.ConfigOpts:
    argv: list[str] = []
    for f in args.config_file:
        argv += ["--config-file", f]
    for d in args.config_dir:
        argv += ["--config-dir", d]
    if args.debug:
        argv.append("--debug")
    return config.parse_args(argv, prog="stratus-manage")


# ----- db sync ------------------------------------------------------------------------------------------------


async def db_sync(conf: cfg.ConfigOpts) -> int:
    applied = await migrate.sync(conf.database.connection)
    print(f"applied: {', '.join(applied)}" if applied else "database schema is up to date")
    return 0


# ----- bootstrap ----------------------------------------------------------------------------------------------


async def _identity(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    notes = []
    roles = {name: await identity.create_role(conn, name) for name in ROLES}
    project = await identity.get_project_by_name(conn, args.admin_project)
    if project is None:
        project = await identity.create_project(
            conn, name=args.admin_project, description="Bootstrap project for initializing the cloud."
        )
        notes.append(f"created project {project['name']} ({project['id']})")
    user = await identity.get_user_by_name(conn, args.admin_user)
    if user is None:
        user = await identity.create_user(
            conn, name=args.admin_user, password=args.admin_password, default_project_id=project["id"]
        )
        notes.append(f"created user {user['name']} ({user['id']})")
    elif not identity.verify_password(args.admin_password, user["password_hash"]):
        await identity.set_password(conn, user["id"], args.admin_password)
        notes.append(f"reset the password of user {user['name']}")
    await identity.assign_role(conn, user_id=user["id"], project_id=project["id"], role_id=roles["admin"]["id"])
    return project, user, notes


async def _flavors(conn: asyncpg.Connection) -> list[str]:
    notes = []
    for fid, name, vcpus, ram, disk in FLAVORS:
        row = await flavors.ensure(conn, flavor_id=fid, name=name, vcpus=vcpus, ram_mb=ram, disk_gb=disk)
        if row["id"] != fid or (row["vcpus"], row["ram_mb"], row["disk_gb"]) != (vcpus, ram, disk):
            notes.append(f"flavor {name}: an existing flavor {row['name']} ({row['id']}) is kept as it is")
    return notes


async def _image(conn: asyncpg.Connection, project_id: str, args: argparse.Namespace, digests: Any) -> str:
    path = args.image_file.resolve()
    values = digests.active_values(path)
    existing = await conn.fetchrow(
        "SELECT * FROM images WHERE name = $1 AND project_id = $2 AND deleted_at IS NULL ORDER BY created_at LIMIT 1",
        args.image_name,
        project_id,
    )
    if existing is None:
        row = await images.create(
            conn,
            {
                "project_id": project_id,
                "name": args.image_name,
                "visibility": "public",
                "disk_format": args.image_disk_format,
                "container_format": "bare",
                **values,
            },
        )
        return f"registered image {args.image_name} ({row['id']}) at {values['location']}"
    if all(existing[k] == v for k, v in values.items()):
        return f"image {args.image_name} ({existing['id']}) is registered already"
    await images.update(conn, existing["id"], values)
    return f"updated image {args.image_name} ({existing['id']}) to {values['location']}, md5 {digests.checksum}"


async def bootstrap(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    digests = None
    if args.image_file is not None:
        from services.api.image.store import digest_file  # the code the upload path uses

        if not args.image_file.is_file():
            print(f"error: image file {args.image_file} does not exist", file=sys.stderr)
            return 2
        digests = await asyncio.to_thread(digest_file, args.image_file)
    db = await Database.connect(conf)
    try:

        async def work(conn: asyncpg.Connection) -> list[str]:
            project, user, notes = await _identity(conn, args)
            notes += await _flavors(conn)
            if digests is not None:
                notes.append(await _image(conn, project["id"], args, digests))
            if args.network_name:
                net, subnet = await networks.create_network_with_subnet(
                    conn,
                    project["id"],
                    args.network_name,
                    args.subnet_cidr,
                    True,
                    bridge_prefix=conf.network.bridge_prefix,
                )
                notes.append(f"network {net['name']} ({net['id']}) with subnet {subnet['cidr']} ({subnet['id']})")
            return notes

        notes = await db.run(work)
    finally:
        await db.close()
    for note in notes:
        print(note)
    print(
        f"bootstrap done. Authenticate with OS_AUTH_URL={conf.api.public_endpoint.rstrip('/')}/identity/v3 "
        f"OS_USERNAME={args.admin_user} OS_PROJECT_NAME={args.admin_project} OS_USER_DOMAIN_NAME=Default "
        f"OS_PROJECT_DOMAIN_NAME=Default OS_REGION_NAME={conf.api.region_name}"
    )
    return 0


# ----- status -------------------------------------------------------------------------------------------------


async def _broker_nodes(conf: cfg.ConfigOpts) -> list[tuple[str, str | None]]:
    """Each broker node and the error reaching it (None: reachable)."""
    import aio_pika

    from common.rpc.transport import node_name, parse_transport_url

    out = []
    for url in parse_transport_url(conf.transport_url):
        try:
            conn = await asyncio.wait_for(aio_pika.connect(url), 5)
            await conn.close()
            out.append((node_name(url), None))
        except Exception as e:  # any failure means "not reachable from here"; say which
            out.append((node_name(url), f"{type(e).__name__}: {e}"))
    return out


async def status(conf: cfg.ConfigOpts) -> int:
    problems: list[str] = []
    try:
        conn = await asyncio.wait_for(asyncpg.connect(conf.database.connection), 5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        print(f"database: UNREACHABLE ({type(e).__name__}: {e})")
        return 1
    try:
        print("database: reachable")
        have = set()
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is not None:
            have = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        pending = [p.stem for p in sorted(migrate.MIGRATIONS_DIR.glob("*.sql")) if p.stem not in have]
        if pending:
            problems.append(f"migrations pending: {', '.join(pending)} (run: stratus-manage db sync)")
            print(f"migrations: {len(have)} applied, PENDING {', '.join(pending)}")
            return _report(problems)
        print(f"migrations: {len(have)} applied, none pending")
        down_time = conf.scheduler.service_down_time
        services = await conn.fetch(
            'SELECT *, EXTRACT(EPOCH FROM now() - last_seen_at)::float AS age FROM services ORDER BY "binary", host'
        )
        nodes = await conn.fetch(
            "SELECT *, EXTRACT(EPOCH FROM now() - last_report_at)::float AS age FROM compute_nodes ORDER BY host"
        )
    finally:
        await conn.close()

    for node, err in await _broker_nodes(conf):
        print(f"broker {node}: {'reachable' if err is None else 'UNREACHABLE ' + err}")
        if err is not None:
            problems.append(f"broker node {node} unreachable")

    print(f"services ({len(services)}):")
    for s in services:
        up = s["age"] <= down_time and not s["forced_down"]
        state = "up" if up else "DOWN"
        flags = " disabled" if s["disabled"] else ""
        print(
            f"  {s['binary']:<20} {s['host']:<24} {state:<4}{flags} last seen {s['age']:.0f}s ago"
            f" broker {s['broker_node'] or '-'}"
        )
        if not up and not s["disabled"]:
            problems.append(f"{s['binary']} on {s['host']} is down (last seen {s['age']:.0f}s ago)")
    if not any("scheduler" in s["binary"] for s in services):
        problems.append("no scheduler has ever reported: server builds cannot be scheduled")

    print(f"compute hosts ({len(nodes)}):")
    for n in nodes:
        cpu_cap = (n["vcpus"] - n["reserved_host_cpus"]) * n["cpu_allocation_ratio"]
        ram_cap = (n["memory_mb"] - n["reserved_host_memory_mb"]) * n["ram_allocation_ratio"]
        disk_cap = (n["local_gb"] - n["reserved_host_disk_gb"]) * n["disk_allocation_ratio"]
        age = f"{n['age']:.0f}s ago" if n["age"] is not None else "never"
        print(
            f"  {n['host']:<24} az {n['availability_zone']:<8} vcpus {n['vcpus_used']}/{cpu_cap:g}"
            f" ram {n['memory_mb_used']}/{ram_cap:g} MiB disk {n['local_gb_used']}/{disk_cap:g} GiB"
            f" vms {n['running_vms']} {n['virt_type']} reported {age}"
        )
        if n["age"] is None or n["age"] > down_time:
            problems.append(f"compute host {n['host']} is stale: last capacity report {age}")
    if not nodes:
        problems.append("no compute host has reported: nothing can be built")
    return _report(problems)


def _report(problems: list[str]) -> int:
    if not problems:
        print("status: OK")
        return 0
    print("status: PROBLEMS")
    for p in problems:
        print(f"  - {p}")
    return 1


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    conf = _conf(args)
    logging.basicConfig(level=logging.DEBUG if conf.debug else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "db":
        rc = asyncio.run(db_sync(conf))
    elif args.command == "bootstrap":
        rc = asyncio.run(bootstrap(conf, args))
    else:
        rc = asyncio.run(status(conf))
    sys.exit(rc)


if __name__ == "__main__":
    main()
