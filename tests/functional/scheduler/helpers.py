"""Helpers for placement tests through the API of a private ``Cloud``: openstack-compatible requests with the admin
token, boots, waits, the cloud's own database for what the API does not show."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import config
from common.context import RequestContext
from common.rpc import Transport
from services.scheduler.rpcapi import ConductorAPI
from tests.fixtures.cloud import Cloud, wait_status

__all__ = [
    "SMALL_HOST",
    "api",
    "assert_no_leaked_claims",
    "boot",
    "delete_all",
    "fault",
    "host_of",
    "report_ghost",
    "settle",
    "small_hosts_cloud",
]

# Each simulated host: 2 vCPUs, 4 GiB, 50 GiB, nothing reserved, no over-commit, so a few flavors fill it.
SMALL_HOST = {"vcpus": 2, "memory_mb": 4096, "local_gb": 50, "cpu_allocation_ratio": 1.0,
              "ram_allocation_ratio": 1.0, "reserved_host_memory_mb": 0}  # fmt: skip


@contextlib.contextmanager
def small_hosts_cloud(postgres, rabbit, *, schedulers: int, scheduler: dict[str, Any]) -> Iterator[Cloud]:
    """A started private cloud of three ``SMALL_HOST`` computes and ``schedulers`` schedulers configured with
    ``scheduler`` (the ``[scheduler]`` options); stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="stratus-sched-") as tmp:
        c = Cloud(Path(tmp), postgres, rabbit, compute_hosts=3, schedulers=schedulers,
                  compute_overrides=SMALL_HOST, extra_config={"scheduler": scheduler})  # fmt: skip
        c.start()
        try:
            yield c
        finally:
            c.stop()


def api(cloud: Cloud, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, json) of a compute API request with the admin token."""
    token = cloud.sdk().session.get_token()
    req = urllib.request.Request(
        f"{cloud.endpoint}/compute/v2.1{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Auth-Token": token, "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def boot(
    cloud: Cloud,
    name: str,
    hints: dict | None = None,
    flavor: str = "1",
    count: int = 1,
    az: str | None = None,
    min_count: int | None = None,
    image: str = "tiny",
) -> list[str]:
    """Ids of the servers of one create request (``count`` of them, all or none at ``min_count``, default all),
    in launch order."""
    image_id = cloud.sdk().image.find_image(image, ignore_missing=False).id
    net = cloud.sdk().network.find_network("private", ignore_missing=False)
    body = {"server": {"name": name, "flavorRef": flavor, "imageRef": image_id, "networks": [{"uuid": net.id}],
                       "min_count": count if min_count is None else min_count, "max_count": count}}  # fmt: skip
    if az:
        body["server"]["availability_zone"] = az
    if hints:
        body["os:scheduler_hints"] = hints
    status, data = api(cloud, "POST", "/servers", body)
    assert status == 202, data
    if count == 1:
        return [data["server"]["id"]]
    rows = cloud.query("SELECT id FROM instances WHERE name LIKE $1 ORDER BY launch_index", f"{name}-%")
    return [r["id"] for r in rows]


def settle(cloud: Cloud, ids: list[str], status: str = "ACTIVE") -> list[Any]:
    """Wait until every server is ACTIVE or ERROR; assert it is ``status``."""
    out = []
    for sid in ids:
        s = wait_status(cloud.sdk(), sid, {"ACTIVE", "ERROR"})
        assert s.status == status, s.fault
        out.append(s)
    return out


def host_of(cloud: Cloud, sid: str) -> str | None:
    return api(cloud, "GET", f"/servers/{sid}")[1]["server"]["OS-EXT-SRV-ATTR:host"]


def delete_all(cloud: Cloud) -> None:
    conn = cloud.sdk()
    servers = list(conn.compute.servers(all_projects=True))
    for s in servers:
        conn.compute.delete_server(s.id)
    for s in servers:
        conn.compute.wait_for_delete(s, wait=60)


def fault(cloud: Cloud, sid: str) -> str:
    return cloud.sdk().compute.get_server(sid).fault["message"]


def assert_no_leaked_claims(cloud: Cloud) -> None:
    """Every host's used amounts are exactly the sum of its allocations (nothing claimed without an owner)."""
    rows = cloud.query(
        "SELECT n.host, n.vcpus_used, n.memory_mb_used, n.local_gb_used, COALESCE(SUM(a.vcpus), 0) AS v,"
        " COALESCE(SUM(a.memory_mb), 0) AS m, COALESCE(SUM(a.disk_gb), 0) AS d"
        " FROM compute_nodes n LEFT JOIN allocations a ON a.compute_node_id = n.id GROUP BY n.id"
    )
    for r in rows:
        assert (r["vcpus_used"], r["memory_mb_used"], r["local_gb_used"]) == (r["v"], r["m"], r["d"]), r


def report_ghost(cloud: Cloud, **extra: Any) -> None:
    """A capacity report for host ``ghost``, which no compute service serves: schedulers see a roomy host, and
    a build cast to it is not taken (a failed attempt at the ``cast`` step)."""
    conf = config.parse_args(["--config-file", str(cloud.config)], prog="t", default_config_files=[])

    async def send() -> None:
        transport = await Transport.connect(conf, service="ghost")
        try:
            await ConductorAPI(transport.client()).report_capacity(
                RequestContext.admin(),
                {"host": "ghost", "vcpus": 64, "memory_mb": 262144, "local_gb": 1000, "running_vms": 0,
                 "cpu_allocation_ratio": 1.0, "ram_allocation_ratio": 1.0, "reserved_host_memory_mb": 0, **extra},
            )  # fmt: skip
        finally:
            await transport.close()

    asyncio.run(send())
