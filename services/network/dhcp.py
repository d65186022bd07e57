"""DHCP, DNS and metadata per network on the network node: a namespace, a veth into the bridge, dnsmasq, a
metadata server.

Per network ``N`` with an IPv4 subnet that has DHCP enabled:

- namespace ``sdhcp-<N>``; veth ``sdo<N[:11]>`` (root side, on the network's bridge) / ``sdi<N[:11]>`` (inside)
  carrying the DHCP port's address (a ``network:dhcp`` port allocated by IPAM like any other) and
  169.254.169.254/32. The bridge itself has no address.
- dnsmasq inside the namespace: static DHCP only (``dhcp-range ...,static``: no lease for a MAC it was not told
  about), host entries, options and DNS names in files that a SIGHUP re-reads, so a port change never restarts
  it. Forward and reverse DNS for ``<dns_name>.<dns_domain>`` come from its ``addn-hosts`` file.
- a metadata server process (``services.network.metadata``) listening on 169.254.169.254:80 inside the namespace.

Both processes are daemons with pid files under ``<state_path>/network/<N>/``: they outlive a restart of the
network service, which re-adopts them on start (the pid file plus a command-line check), so restarting the
service costs DHCP and DNS nothing. ``sync()`` converges the node on the database and is idempotent; networks
that are gone (or lost DHCP) are torn down: processes, namespace, veth, and the bridge when nothing else is on it.

Every value written into dnsmasq's files or command line is checked again here (``plan_from``, with the
validators the API uses, ``common.netvalues``), whatever the API let in: a network whose own values fail (its
domain, the subnet's gateway, DNS servers or routes, its bridge) is skipped with an error naming it and the
value, and keeps what already serves it; a port whose MAC or address fails is left out of the hosts file, one
whose name fails is served without a name. Other networks and ports are served as usual.

dnsmasq keeps its leases in memory only (``--leasefile-ro``) for 24 h, while IPAM hands a freed address out at
once. So every pass compares the hosts file on disk (what the running dnsmasq was told, also after a restart of
this service) with the new plan and has dnsmasq release, with ``dhcp_release``, each (address, MAC) that left
it: the address's next owner gets its lease at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from oslo_config import cfg

from common import netvalues
from common.db import networks as db_networks
from common.db.pool import Database
from services.network import linux

__all__ = ["METADATA_IP", "DhcpAgent", "NetworkPlan", "netns_name", "plan_from", "sweep_orphans", "teardown_all"]

LOG = logging.getLogger(__name__)

METADATA_IP = "169.254.169.254"
DEVICE_OWNER_DHCP = "network:dhcp"
NETNS_PREFIX = "sdhcp-"
ROOT = Path(__file__).resolve().parents[2]


def netns_name(network_id: str) -> str:
    return f"{NETNS_PREFIX}{network_id}"


def veth_names(network_id: str) -> tuple[str, str]:
    short = network_id.replace("-", "")[:11]
    return f"sdo{short}", f"sdi{short}"


@dataclass(frozen=True)
class HostEntry:
    mac: str
    ip: str
    name: str  # the short host name, '' when the port has none


@dataclass(frozen=True)
class NetworkPlan:
    """What the node should run for one network: derived from the database, compared with what runs."""

    network_id: str
    bridge: str
    mtu: int
    cidr: str
    gateway_ip: str | None
    dhcp_ip: str
    dns_domain: str
    dns_nameservers: tuple[str, ...]
    host_routes: tuple[tuple[str, str], ...]
    hosts: tuple[HostEntry, ...]

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen

    def hosts_file(self) -> str:
        """dnsmasq ``dhcp-hostsfile``: one static lease per port (``mac,ip[,name],lease``)."""
        lines = []
        for h in self.hosts:
            name = f",{h.name}" if h.name else ""
            lines.append(f"{h.mac},{h.ip}{name},86400\n")
        return "".join(lines)

    def addn_hosts_file(self) -> str:
        """dnsmasq ``addn-hosts``: forward and reverse DNS for every named port."""
        return "".join(f"{h.ip} {h.name}.{self.dns_domain} {h.name}\n" for h in self.hosts if h.name)

    def opts_file(self) -> str:
        """dnsmasq ``dhcp-optsfile``: router, DNS, domain and classless routes (the metadata address first).

        Option 121 replaces the router option for clients that honour it, so the default route is repeated in it.
        """
        routes = [f"{METADATA_IP}/32,{self.dhcp_ip}"]
        routes += [f"{dest},{nexthop}" for dest, nexthop in self.host_routes]
        lines = []
        if self.gateway_ip:
            routes.append(f"0.0.0.0/0,{self.gateway_ip}")
            lines.append(f"option:router,{self.gateway_ip}\n")
        else:
            lines.append("option:router\n")
        lines.append(f"option:classless-static-route,{','.join(routes)}\n")
        lines.append(f"option:dns-server,{','.join(self.dns_nameservers or (self.dhcp_ip,))}\n")
        lines.append(f"option:domain-name,{self.dns_domain}\n")
        lines.append(f"option:mtu,{self.mtu}\n")
        return "".join(lines)

    def dnsmasq_argv(self, state: Path, *, as_root: bool = False) -> list[str]:
        """``as_root``: keep root instead of dropping to ``nobody`` (when ``nobody`` could not read ``state``)."""
        net = ipaddress.ip_network(self.cidr)
        _, inner = veth_names(self.network_id)
        return [
            "dnsmasq",
            *(["--user=root"] if as_root else []),
            "--conf-file=/dev/null",
            "--no-hosts",
            "--no-resolv",
            "--strict-order",
            f"--pid-file={state / 'dnsmasq.pid'}",
            f"--dhcp-hostsfile={state / 'hosts'}",
            f"--addn-hosts={state / 'addn_hosts'}",
            f"--dhcp-optsfile={state / 'opts'}",
            f"--interface={inner}",
            "--except-interface=lo",
            "--bind-interfaces",
            f"--dhcp-range={net.network_address},static,{net.netmask},86400s",
            "--dhcp-authoritative",
            "--leasefile-ro",
            f"--domain={self.dns_domain}",
            f"--local=/{self.dns_domain}/",
            "--domain-needed",
            "--bogus-priv",
            f"--dhcp-lease-max={max(net.num_addresses, 16)}",
            f"--log-facility={state / 'dnsmasq.log'}",
        ]


async def _plans(conn: asyncpg.Connection) -> dict[str, tuple[dict[str, Any], Any]]:
    """Per network with a DHCP-enabled IPv4 subnet: (network row, its first such subnet row)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (s.network_id) n.id AS network_id, n.bridge, n.mtu, n.dns_domain, s.* "
        "FROM subnets s JOIN networks n ON n.id = s.network_id "
        "WHERE s.enable_dhcp AND s.ip_version = 4 ORDER BY s.network_id, s.created_at, s.id"
    )
    return {r["network_id"]: (dict(r), r) for r in rows}


class DhcpAgent:
    """Converges this node's namespaces, dnsmasq and metadata processes on the database.

    ``start()`` syncs once and then on every database notification (channel ``stratus_network``, raised by
    triggers on ports, addresses, subnets and networks) and every ``[network] dhcp_resync_interval`` seconds;
    ``stop()`` leaves the processes running (they serve through a restart). ``teardown_all`` removes them.
    """

    def __init__(self, conf: cfg.ConfigOpts, db: Database, config_files: list[str]) -> None:
        self.conf = conf
        self.db = db
        self.config_files = config_files
        self.state_root = Path(conf.state_path) / "network"
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._listener: asyncpg.Connection | None = None
        self.synced = asyncio.Event()
        self._traversable: bool | None = None

    @property
    def _readable_by_others(self) -> bool:
        """Can dnsmasq, once it dropped to ``nobody``, reach its files (every ancestor searchable by others)?"""
        if self._traversable is None:
            self._traversable = all(p.stat().st_mode & 0o001 for p in (self.state_root, *self.state_root.parents))
            if not self._traversable:
                LOG.warning("%s is not searchable by other users: dnsmasq will keep running as root", self.state_root)
        return self._traversable

    def trigger(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        """May raise ``cfg.ConfigFileValueError`` (``[network] dns_domain`` is no domain name): nothing started."""
        self.conf.network.dns_domain  # noqa: B018 - parsed (and checked) here, not first in a sync pass
        self.state_root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_root, 0o755)
        try:
            self._listener = await asyncpg.connect(self.conf.database.connection)
            await self._listener.add_listener("stratus_network", lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as e:
            interval = self.conf.network.dhcp_resync_interval
            LOG.warning("no database notifications (%s): syncing every %ss only", e, interval)
        self._task = asyncio.create_task(self._loop(), name="dhcp-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._listener is not None:
            await self._listener.close()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                count = await self.sync()
                if not self.synced.is_set():
                    LOG.info("DHCP in sync: serving %d network(s)", count)
                self.synced.set()
            except Exception:
                LOG.exception("DHCP sync failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self.conf.network.dhcp_resync_interval)
            except TimeoutError:
                pass

    async def sync(self) -> int:
        """One convergence pass; returns how many networks this node serves. Idempotent.

        A network whose data fails the checks (``plan_from``: its domain, subnet options, bridge...) is skipped
        with an error log naming it and the value; whatever already serves it (dnsmasq on its last good files)
        is left as it is, and every other network is served as usual.
        """
        plans, refused = await self.db.run(self._load)
        for net_id, why in refused.items():
            LOG.error("network %s: DHCP not updated, its data is refused (what serves it is left as it is): %s",
                      net_id, why)  # fmt: skip
        for plan in plans.values():
            try:
                await self._ensure(plan)
            except linux.NetworkSetupError as e:
                LOG.error("network %s: DHCP setup failed: %s", plan.network_id, e.message)
        for state in sorted(self.state_root.iterdir()) if self.state_root.is_dir() else []:
            if state.is_dir() and state.name not in plans and state.name not in refused:
                LOG.info("network %s: no longer served here; tearing down its DHCP", state.name)
                await teardown(state, delete_bridge=True)
        return len(plans)

    async def _load(self, conn: asyncpg.Connection) -> tuple[dict[str, NetworkPlan], dict[str, str]]:
        """(plans of the networks to serve, {network id: why its data is refused}), every value checked."""
        plans, refused = {}, {}
        for net_id, (net, subnet) in (await _plans(conn)).items():
            dhcp_ip = await self._dhcp_address(conn, net_id, subnet)
            if dhcp_ip is None:
                continue
            rows = await conn.fetch(
                "SELECT p.id, p.mac_address, host(a.ip_address) AS ip, p.dns_name FROM ports p "
                "JOIN ip_allocations a ON a.port_id = p.id "
                "WHERE a.subnet_id = $1 AND p.device_owner <> $2 AND p.admin_state_up ORDER BY a.ip_address",
                subnet["id"],
                DEVICE_OWNER_DHCP,
            )
            try:
                plan, bad_ports = plan_from(net, subnet, dhcp_ip, rows, self.conf.network.dns_domain)
            except netvalues.InvalidInput as e:
                refused[net_id] = e.message
                continue
            for port_id, why in bad_ports.items():
                LOG.error("network %s: port %s: %s", net_id, port_id, why)
            plans[net_id] = plan
        return plans, refused

    async def _dhcp_address(self, conn: asyncpg.Connection, network_id: str, subnet: Any) -> str | None:
        """The address of this network's DHCP port, made on first need (IPAM allocates it like any port's)."""
        ip = await conn.fetchval(
            "SELECT host(a.ip_address) FROM ports p JOIN ip_allocations a ON a.port_id = p.id "
            "WHERE p.network_id = $1 AND p.device_owner = $2 AND a.subnet_id = $3 ORDER BY p.created_at LIMIT 1",
            network_id,
            DEVICE_OWNER_DHCP,
            subnet["id"],
        )
        if ip is not None:
            return ip
        made = await db_networks.create_port(
            conn,
            network_id=network_id,
            project_id=subnet["project_id"],
            base_mac=self.conf.network.base_mac,
            fixed_ips=[{"subnet_id": subnet["id"]}],
            device_id=f"dhcp-{self.conf.host}",
            device_owner=DEVICE_OWNER_DHCP,
            binding_host=self.conf.host,
            status="ACTIVE",
            name="dhcp",
        )
        return str(made.addresses[0][1])

    async def _ensure(self, plan: NetworkPlan) -> None:
        state = self.state_root / plan.network_id
        state.mkdir(exist_ok=True)
        os.chmod(state, 0o755)
        ns = netns_name(plan.network_id)
        outer, inner = veth_names(plan.network_id)
        await linux.ensure_bridge(plan.bridge, plan.mtu)
        await linux.ensure_netns(ns)
        await linux.ensure_veth(outer, inner, ns, plan.bridge, plan.mtu)
        await _ensure_addresses(ns, inner, [f"{plan.dhcp_ip}/{plan.prefixlen}", f"{METADATA_IP}/32"])
        leased = _hosts_in(state / "hosts")  # what the running dnsmasq was told: (ip, mac) it may have leased
        changed = False
        for name, text in (("hosts", plan.hosts_file()), ("addn_hosts", plan.addn_hosts_file()),
                           ("opts", plan.opts_file())):  # fmt: skip
            changed |= _write_if_changed(state / name, text)
        argv = plan.dnsmasq_argv(state, as_root=not self._readable_by_others)
        pid = linux.pid_alive(state / "dnsmasq.pid", str(state))
        running_argv = (state / "dnsmasq.argv").read_text() if (state / "dnsmasq.argv").exists() else ""
        kept = pid is not None and running_argv == json.dumps(argv)
        if pid is not None and not kept:
            LOG.info("network %s: dnsmasq's command line changed; replacing it", plan.network_id)
            await _replace_dnsmasq(ns, state, argv)
            LOG.info("network %s: dnsmasq replaced in %s (%d hosts)", plan.network_id, ns, len(plan.hosts))
        elif pid is None:
            await linux.run("ip", "netns", "exec", ns, *argv)
            (state / "dnsmasq.argv").write_text(json.dumps(argv))
            LOG.info(
                "network %s: dnsmasq started in %s on %s (%d hosts)", plan.network_id, ns, plan.dhcp_ip, len(plan.hosts)
            )
        elif changed:
            os.kill(pid, signal.SIGHUP)
            LOG.info("network %s: dnsmasq (pid %d) reloaded: %d hosts", plan.network_id, pid, len(plan.hosts))
        if kept:
            # A dnsmasq that keeps running keeps its leases in memory (--leasefile-ro, no lease file): release
            # those whose port went or changed MAC, or the address's next owner gets no lease until the old one
            # expires. A dnsmasq just started (or replaced) has none.
            await _release(plan.network_id, ns, inner, leased - {(h.ip, h.mac) for h in plan.hosts})
        await self._ensure_metadata(plan, state, ns)

    async def _ensure_metadata(self, plan: NetworkPlan, state: Path, ns: str) -> None:
        if linux.pid_alive(state / "metadata.pid", plan.network_id) is not None:
            return
        argv = [sys.executable, "-m", "services.network.metadata", "--network-id", plan.network_id,
                "--netns", ns, "--pid-file", str(state / "metadata.pid")]  # fmt: skip
        for f in self.config_files:
            argv += ["--config-file", f]
        log = (state / "metadata.log").open("ab")
        try:
            await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while linux.pid_alive(state / "metadata.pid", plan.network_id) is None:
            if loop.time() > deadline:
                raise linux.NetworkSetupError(f"metadata server of network {plan.network_id} did not start")
            await asyncio.sleep(0.05)
        LOG.info("network %s: metadata server listening on %s:80 in %s", plan.network_id, METADATA_IP, ns)


HANDOVER_DNS_PORT = 5353
_REDIRECT = """table ip stratus_handover {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    udp dport 53 redirect to :{port}
    tcp dport 53 redirect to :{port}
  }}
}}
"""


async def _replace_dnsmasq(ns: str, state: Path, argv: list[str]) -> None:
    """Swap the running dnsmasq for one started with ``argv``, start before stop: no query goes unanswered.

    1. a handover dnsmasq with the new configuration starts, DNS on port 5353 (DHCP sockets of two dnsmasq
       processes coexist on one interface and answer the same static leases);
    2. inside the namespace, new DNS flows to port 53 are redirected to it (nftables NAT; flows already
       open keep going to the old process, which is still alive);
    3. the old dnsmasq stops, the new one starts on port 53, the redirect goes;
    4. after a grace period for flows the handover instance still holds, it stops too.
    """
    handover_pid = state / "dnsmasq-handover.pid"
    handover = [a for a in argv if not a.startswith(("--pid-file=", "--log-facility="))]
    handover += [f"--port={HANDOVER_DNS_PORT}", f"--pid-file={handover_pid}",
                 f"--log-facility={state / 'dnsmasq-handover.log'}"]  # fmt: skip
    await linux.run("ip", "netns", "exec", ns, *handover)
    redirected = False
    try:
        await _nft_in(ns, _REDIRECT.format(port=HANDOVER_DNS_PORT))
        redirected = True
        await linux.kill_pid_file(state / "dnsmasq.pid", str(state))
        await linux.run("ip", "netns", "exec", ns, *argv)
        (state / "dnsmasq.argv").write_text(json.dumps(argv))
    finally:
        if redirected:
            await _nft_in(ns, "delete table ip stratus_handover\n")
        await asyncio.sleep(0.3)  # replies of flows the handover instance took
        await linux.kill_pid_file(handover_pid, str(state))


async def _nft_in(ns: str, script: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, "nft", "-f", "-",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise linux.NetworkSetupError(f"nft in {ns}: {err.decode(errors='replace').strip()}")


def _json(value: Any) -> list[Any]:
    """A jsonb column's value, whether the connection decodes jsonb or not."""
    return (json.loads(value) if isinstance(value, str) else value) or []


def _json_list(value: Any, field: str) -> list[Any]:
    """A jsonb column that must hold a list (``InvalidInput`` naming ``field`` otherwise)."""
    try:
        items = _json(value)
    except ValueError:
        raise netvalues.InvalidInput(field, value, "is not JSON") from None
    if not isinstance(items, list):
        raise netvalues.InvalidInput(field, items, "is not a list")
    return items


def _host_label(dns_name: str) -> str:
    """The DNS label a port's ``dns_name`` gives its host entry: the first label (an instance's hostname may be
    dotted), lower case, other ASCII characters than letters, digits and ``-`` made ``-``. Text with non-ASCII
    characters comes back as it is, for ``netvalues.dns_label`` to refuse."""
    first = (dns_name or "").split(".")[0]
    if not first.isascii():
        return first
    return re.sub(r"[^a-z0-9-]", "-", first.lower())[:63].strip("-")


def plan_from(
    net: Mapping[str, Any],
    subnet: Mapping[str, Any],
    dhcp_ip: str,
    ports: Sequence[Mapping[str, Any]],
    default_domain: str,
) -> tuple[NetworkPlan, dict[str, str]]:
    """A network's plan from its rows (``networks`` + its DHCP subnet, the subnet's ports as ``id``,
    ``mac_address``, ``ip``, ``dns_name``), every value that reaches dnsmasq's files or command line checked and
    normalised with ``common.netvalues``. Pure.

    Raises ``InvalidInput`` naming the field when a value of the network or the subnet is bad: the network's
    files cannot be written. A port's bad value costs only that port: a bad MAC or address leaves its entry out,
    a name that is no DNS label leaves it nameless. Returns the plan and ``{port id: why}`` of such ports.
    """
    network_id = netvalues.resource_id(net["network_id"], "network id")
    cidr = netvalues.cidr(str(subnet["cidr"]), 4, "cidr")
    gateway = subnet["gateway_ip"]
    gateway = netvalues.ipv4_address(str(gateway).split("/")[0], "gateway_ip") if gateway is not None else None
    domain = netvalues.dns_domain(net["dns_domain"] or default_domain, "dns_domain", allow_empty=False)
    nameservers = _json_list(subnet["dns_nameservers"], "dns_nameservers")
    routes = []
    for i, route in enumerate(_json_list(subnet["host_routes"], "host_routes")):
        if not isinstance(route, Mapping):
            raise netvalues.InvalidInput(f"host_routes[{i}]", route, "is not a route")
        routes.append((netvalues.cidr(route.get("destination"), 4, f"host_routes[{i}].destination"),
                       netvalues.ipv4_address(route.get("nexthop"), f"host_routes[{i}].nexthop")))  # fmt: skip
    hosts, bad = [], {}
    for port in ports:
        try:
            mac = netvalues.mac_address(str(port["mac_address"]))
            ip = netvalues.ipv4_address(port["ip"], "fixed_ips")
        except netvalues.InvalidInput as e:
            bad[str(port["id"])] = f"no DHCP entry: {e.message}"
            continue
        try:
            name = netvalues.dns_label(_host_label(port["dns_name"]), "dns_name")
        except netvalues.InvalidInput as e:
            bad[str(port["id"])] = f"served without a DNS name: {e.message}"
            name = ""
        hosts.append(HostEntry(mac, ip, name))
    plan = NetworkPlan(
        network_id=network_id,
        bridge=netvalues.interface_name(net["bridge"], "bridge"),
        mtu=netvalues.mtu(net["mtu"]),
        cidr=cidr,
        gateway_ip=gateway,
        dhcp_ip=netvalues.ipv4_address(dhcp_ip, "DHCP port address"),
        # Lower case: DNS does not care, and dnsmasq (built with IDN) refuses an upper-case label with "--" in
        # its third and fourth characters (IDNA's reserved labels) that it takes in lower case.
        dns_domain=domain.rstrip(".").lower(),
        dns_nameservers=tuple(netvalues.ipv4_address(ns, f"dns_nameservers[{i}]") for i, ns in enumerate(nameservers)),
        host_routes=tuple(routes),
        hosts=tuple(hosts),
    )
    return plan, bad


def _hosts_in(path: Path) -> set[tuple[str, str]]:
    """(ip, mac) of every well-formed entry of a ``dhcp-hostsfile`` as written (empty when there is none)."""
    found = set()
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        fields = line.split(",")
        try:
            found.add((netvalues.ipv4_address(fields[1]), netvalues.mac_address(fields[0])))
        except (IndexError, netvalues.InvalidInput):
            continue
    return found


async def _release(network_id: str, ns: str, dev: str, gone: set[tuple[str, str]]) -> None:
    """Have dnsmasq forget the leases of ``gone`` (ip, mac): ``dhcp_release`` (dnsmasq-utils) sends it a
    DHCPRELEASE for each from inside the namespace. Never raises: a release that fails is logged; the lease
    then lasts until it expires."""
    for ip, mac in sorted(gone):
        try:
            await linux.dhcp_release(ns, dev, ip, mac)
        except linux.NetworkSetupError as e:
            LOG.error("network %s: the lease of %s for %s could not be released: %s", network_id, ip, mac, e.message)
        else:
            LOG.info("network %s: released the lease of %s for %s (its port went or changed)", network_id, ip, mac)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    tmp.replace(path)  # atomic: dnsmasq never reads half a file
    return True


async def _ensure_addresses(ns: str, dev: str, addresses: list[str]) -> None:
    _, out = await linux.run("ip", "-n", ns, "-o", "addr", "show", "dev", dev)
    have = {f.split()[3] for f in out.splitlines() if " inet " in f}
    for addr in addresses:
        if addr not in have:
            await linux.run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
    for stale in have - set(addresses):
        await linux.run("ip", "-n", ns, "addr", "del", stale, "dev", dev, check=False)


async def teardown(state: Path, *, delete_bridge: bool) -> None:
    """Stop one network's processes and remove its namespace, veth and (when empty) bridge. Idempotent."""
    network_id = state.name
    await linux.kill_pid_file(state / "metadata.pid", network_id)
    await linux.kill_pid_file(state / "dnsmasq.pid", str(state))
    await linux.kill_pid_file(state / "dnsmasq-handover.pid", str(state))
    outer, _ = veth_names(network_id)
    bridge = _master_of(outer)
    await linux.delete_netns(netns_name(network_id))  # takes the inner veth, and with it the outer one
    await linux.delete_link(outer)
    if delete_bridge and bridge and not linux.bridge_members(bridge):
        await linux.delete_link(bridge)
    _remove_dir(state)


def _master_of(link: str) -> str | None:
    master = Path("/sys/class/net", link, "master")
    return master.resolve().name if master.exists() else None


def _remove_dir(state: Path) -> None:
    for f in state.iterdir():
        f.unlink()
    state.rmdir()


async def teardown_all(state_path: Path | str) -> list[str]:
    """Remove every network this node serves from ``state_path`` (tests, decommissioning). Returns their ids."""
    root = Path(state_path) / "network"
    done = []
    for state in sorted(root.iterdir()) if root.is_dir() else []:
        if state.is_dir():
            await teardown(state, delete_bridge=True)
            done.append(state.name)
    return done


def _orphans() -> list[tuple[int, Path]]:
    """dnsmasq and metadata processes of ours whose state directory is gone (their node was torn down badly)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        state = None
        if argv and argv[0].endswith("dnsmasq"):
            state = next((Path(a.split("=", 1)[1]).parent for a in argv if a.startswith("--pid-file=")), None)
        elif "services.network.metadata" in argv and "--pid-file" in argv:
            state = Path(argv[argv.index("--pid-file") + 1]).parent
        if state is not None and state.parent.name == "network" and not state.exists():
            found.append((int(proc.name), state))
    return found


async def sweep_orphans() -> list[str]:
    """Kill Stratus dnsmasq/metadata processes whose state directory no longer exists and remove their
    namespaces, veths and (empty) bridges. Safe beside live nodes: a live node's state directory exists.
    Returns the network ids swept."""
    swept = {}
    for pid, state in _orphans():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        swept[state.name] = state
    for network_id in swept:
        outer, _ = veth_names(network_id)
        bridge = _master_of(outer)
        await linux.delete_netns(netns_name(network_id))
        await linux.delete_link(outer)
        if bridge and not linux.bridge_members(bridge):
            await linux.delete_link(bridge)
    return sorted(swept)
