"""DHCP, DNS and teardown on the network node with real dnsmasq, namespaces and bridges (a whole private cloud
whose network service has ``[network] serve_dhcp`` on; no computes)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from services.network import dhcp
from tests.fixtures._common import wait_for
from tests.fixtures.cloud import Cloud

pytestmark = pytest.mark.functional
ROOT = Path(__file__).resolve().parents[3]
CLIENT_PREFIX = "stcl-"


def _sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


def sweep_clients() -> None:
    for line in _sh("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(CLIENT_PREFIX):
            _sh("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="module")
def dhcp_cloud(postgres, rabbit):
    with tempfile.TemporaryDirectory(prefix="stratus-dhcp-") as tmp:
        c = Cloud(Path(tmp), postgres, rabbit, compute_hosts=0, schedulers=0,
                  extra_config={"network": {"serve_dhcp": "true", "dhcp_resync_interval": 5}})  # fmt: skip
        try:
            c.start(timeout=60)
            yield c
        finally:
            c.stop()
            asyncio.run(dhcp.teardown_all(Path(tmp) / "state"))
            sweep_clients()
    asyncio.run(dhcp.sweep_orphans())  # anything whose directory is gone (an earlier run killed mid-way)


class Client:
    """A namespace on the tenant bridge standing in for a guest: its veth carries a port's MAC and address."""

    def __init__(self, bridge: str, mac: str, ip: str | None, prefixlen: int = 24) -> None:
        tag = secrets.token_hex(3)
        self.ns, self.outer, self.dev = f"{CLIENT_PREFIX}{tag}", f"stco{tag}", "eth0"
        _sh("ip", "netns", "add", self.ns)
        _sh("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.dev, "netns", self.ns)
        _sh("ip", "link", "set", self.outer, "master", bridge, "up")
        _sh("ip", "-n", self.ns, "link", "set", self.dev, "address", mac, "up")
        _sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        if ip is not None:  # None: left for a DHCP client to configure
            _sh("ip", "-n", self.ns, "addr", "add", f"{ip}/{prefixlen}", "dev", self.dev)
        self.mac, self.ip = mac, ip

    def probe(self, server: str, name: str, duration: float) -> subprocess.Popen:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.functional.network.dhcp_probe",
             "--dev", self.dev, "--mac", self.mac, "--expect-ip", self.ip, "--server", server, "--name", name,
             "--duration", str(duration)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def close(self) -> None:
        _sh("ip", "netns", "del", self.ns, check=False)


def _lease(client: Client, attempts: int = 4) -> str | None:
    """The address a real DHCP client (busybox udhcpc, as in the guest image: it sends its MAC as client id)
    obtains with a full DISCOVER/OFFER/REQUEST/ACK exchange, or None. The interface is left unconfigured."""
    out = subprocess.run(
        ["ip", "netns", "exec", client.ns, "busybox", "udhcpc", "-i", client.dev, "-f", "-q", "-n",
         "-t", str(attempts), "-T", "1", "-s", "/bin/true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    found = re.search(r"lease of (\S+) obtained", out.stdout + out.stderr)
    return found.group(1) if found else None


def _probe_once(client: Client, server: str) -> bool:
    out = json.loads(client.probe(server, "probe-host.stratus.local", 0.5).communicate(timeout=30)[0])
    return out["dhcp"]["ok"] > 0 and out["dns"]["ok"] > 0


def _dhcp_ip(c: Cloud, network_id: str) -> str:
    rows = c.query(
        "SELECT host(a.ip_address) AS ip FROM ports p JOIN ip_allocations a ON a.port_id = p.id "
        "WHERE p.network_id = $1 AND p.device_owner = 'network:dhcp'",
        network_id,
    )
    return rows[0]["ip"] if rows else ""


def _state(c: Cloud, network_id: str) -> Path:
    return c.workdir / "state" / "network" / network_id


def test_port_gets_static_dhcp_and_dns_and_restarts_lose_nothing(dhcp_cloud):
    c = dhcp_cloud
    conn = c.sdk()
    net = conn.network.find_network("private", ignore_missing=False)
    port = conn.network.create_port(network_id=net.id, name="probe", dns_name="probe-host")
    ip = port.fixed_ips[0]["ip_address"]
    hosts = _state(c, net.id) / "hosts"
    wait_for(lambda: hosts.exists() and port.mac_address in hosts.read_text(), 20, what="DHCP host entry")
    assert f"{port.mac_address},{ip},probe-host" in hosts.read_text()
    assert "probe-host.stratus.local" in (_state(c, net.id) / "addn_hosts").read_text()
    ns = dhcp.netns_name(net.id)
    assert Path("/run/netns", ns).exists()
    # The bridge is a switch only: no address in the root namespace.
    assert "inet" not in _sh("ip", "-o", "addr", "show", "dev", f"brq{net.id[:11]}")
    server = _dhcp_ip(c, net.id)
    client = Client(f"brq{net.id[:11]}", port.mac_address, ip, 24)
    try:
        # The port's MAC gets its address offered, its name resolves (once the fresh veth carries traffic).
        try:
            wait_for(lambda: _probe_once(client, server), 20, what="first DHCP offer and DNS answer", interval=0.2)
        except Exception:
            for f in sorted(_state(c, net.id).iterdir()):
                print(f"--- {f}\n{f.read_text(errors='replace')[-3000:]}")
            print(_sh("ip", "-n", ns, "addr"), _sh("ip", "-n", client.ns, "addr"), _sh("bridge", "link"))
            raise

        dnsmasq_pid = (_state(c, net.id) / "dnsmasq.pid").read_text().strip()
        probe = client.probe(server, "probe-host.stratus.local", 600)
        svc = c.services["network"]
        t0 = time.monotonic()
        for _ in range(10):
            svc.stop()
            before = c.grep_logs("DHCP in sync").get("network", 0)
            svc.start()
            wait_for(lambda b=before: c.grep_logs("DHCP in sync").get("network", 0) > b, 30, what="network restart")
        restarts_s = time.monotonic() - t0
        # The same dnsmasq served throughout: re-adopted, never restarted.
        assert (_state(c, net.id) / "dnsmasq.pid").read_text().strip() == dnsmasq_pid
        # A dnsmasq whose command line must change is replaced start-before-stop (handover instance + redirect).
        pid_file = _state(c, net.id) / "dnsmasq.pid"
        argv_file = _state(c, net.id) / "dnsmasq.argv"
        for i in range(3):
            old = pid_file.read_text().strip()
            argv_file.write_text("[]")
            conn.network.update_port(port.id, description=f"replace-{i}")  # any change wakes the agent
            # Replaced: a new pid, and the agent has recorded the new command line (it writes the argv file after
            # the new dnsmasq wrote its pid; the next round's "[]" written before that would be overwritten).
            wait_for(lambda o=old: pid_file.exists() and pid_file.read_text().strip() not in ("", o)
                     and argv_file.read_text() not in ("", "[]"), 60, what="dnsmasq replaced")  # fmt: skip
        time.sleep(0.5)
        probe.terminate()
        stats = json.loads(probe.communicate(timeout=30)[0])
        print(f"10 restarts in {restarts_s:.1f}s, then 3 dnsmasq replacements; probe: {stats}")
        assert stats["dhcp"]["failed"] == 0 and stats["dns"]["failed"] == 0, stats
        assert stats["dhcp"]["ok"] > 20 and stats["dns"]["ok"] > 20, stats
        assert not (_state(c, net.id) / "dnsmasq-handover.pid").exists()
    finally:
        client.close()
    conn.network.delete_port(port.id)
    wait_for(lambda: port.mac_address not in hosts.read_text(), 20, what="host entry removed")


def test_stranger_mac_gets_no_lease(dhcp_cloud):
    c = dhcp_cloud
    conn = c.sdk()
    net = conn.network.find_network("private", ignore_missing=False)
    wait_for(lambda: _dhcp_ip(c, net.id) != "", 20, what="DHCP port")
    client = Client(f"brq{net.id[:11]}", "fa:16:3e:de:ad:01", "10.99.0.250", 24)
    try:
        out = json.loads(client.probe(_dhcp_ip(c, net.id), "nobody.stratus.local", 1.5).communicate(timeout=30)[0])
        assert out["dhcp"]["ok"] == 0 and out["dhcp"]["failed"] > 0, out
    finally:
        client.close()


def test_deleting_network_leaves_nothing_behind(dhcp_cloud):
    c = dhcp_cloud
    conn = c.sdk()
    net = conn.network.create_network(name="doomed")
    conn.network.create_subnet(network_id=net.id, cidr="10.98.7.0/24", ip_version=4)
    port = conn.network.create_port(network_id=net.id, dns_name="doomed-vm")
    state = _state(c, net.id)
    bridge = f"brq{net.id[:11]}"
    wait_for(lambda: (state / "hosts").exists() and port.mac_address in (state / "hosts").read_text()
             and (state / "metadata.pid").exists(), 20, what="DHCP for the new network")  # fmt: skip
    dnsmasq_pid = int((state / "dnsmasq.pid").read_text())
    meta_pid = int((state / "metadata.pid").read_text())
    with pytest.raises(Exception) as err:
        conn.network.delete_network(net.id)
    assert "409" in str(err.value) or "in use" in str(err.value), err.value
    conn.network.delete_port(port.id)
    conn.network.delete_network(net.id)
    ns = dhcp.netns_name(net.id)
    outer, _ = dhcp.veth_names(net.id)

    def gone() -> bool:
        return not (state.exists() or Path("/run/netns", ns).exists() or Path("/sys/class/net", bridge).exists()
                    or Path("/sys/class/net", outer).exists() or Path(f"/proc/{dnsmasq_pid}").exists()
                    or Path(f"/proc/{meta_pid}").exists())  # fmt: skip

    wait_for(gone, 20, what="namespace, veth, bridge, dnsmasq and metadata server removed")


def test_openstack_cli_security_group_commands(dhcp_cloud):
    """The unchanged `openstack` CLI drives security groups, rules and port membership."""
    import os

    from tests.fixtures.cloud import ADMIN_PASSWORD

    env = {**os.environ, "OS_AUTH_URL": f"{dhcp_cloud.endpoint}/identity/v3", "OS_USERNAME": "admin",
           "OS_PASSWORD": ADMIN_PASSWORD, "OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_NAME": "Default",
           "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3",
           "OS_REGION_NAME": "RegionOne"}  # fmt: skip
    cli = str(Path(sys.executable).with_name("openstack"))

    def run(*args: str) -> dict | list:
        out = subprocess.run([cli, *args, "-f", "json"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    group = run("security", "group", "create", "cli-web", "--description", "from the CLI")
    rule = run("security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "443",
               "--remote-ip", "198.51.100.0/24", group["id"])  # fmt: skip
    assert rule["port_range_min"] == 443 and rule["remote_ip_prefix"] == "198.51.100.0/24"
    port = run("port", "create", "--network", "private", "--security-group", group["id"], "cli-port")
    assert group["id"] in str(port["security_group_ids"])
    listed = run("security", "group", "rule", "list", group["id"])
    assert any(r.get("Port Range") == "443:443" for r in listed), listed
    subprocess.run([cli, "port", "delete", port["id"]], env=env, check=True, capture_output=True, timeout=60)
    subprocess.run([cli, "security", "group", "delete", group["id"]], env=env, check=True, capture_output=True,
                   timeout=60)  # fmt: skip


def test_a_reused_address_gets_a_lease_at_once(dhcp_cloud):
    """On a /29, an address whose port went (with its lease still in dnsmasq's memory) and that IPAM gives to a
    new port with another MAC is leased to the new MAC at once: the agent released the old lease. Also when the
    port changed while the network service was down (the first pass after its restart)."""
    c = dhcp_cloud
    conn = c.sdk()
    net = conn.network.create_network(name="reuse")
    conn.network.create_subnet(network_id=net.id, cidr="10.96.0.0/29", ip_version=4)
    state, bridge = _state(c, net.id), f"brq{net.id[:11]}"
    hosts = state / "hosts"
    clients: list[Client] = []

    def port_served(mac: str, ip: str) -> None:
        wait_for(lambda: hosts.exists() and f"{mac},{ip}," in hosts.read_text(), 20, what=f"host entry {mac} {ip}")

    def lease_for(port) -> str | None:
        client = Client(bridge, port.mac_address, None)
        clients.append(client)
        return _lease(client)

    try:
        first = conn.network.create_port(network_id=net.id, name="first")
        ip = first.fixed_ips[0]["ip_address"]
        port_served(first.mac_address, ip)
        wait_for(lambda: lease_for(first) == ip, 30, what="the first port's lease", interval=0.5)

        conn.network.delete_port(first.id)
        second = conn.network.create_port(network_id=net.id, name="second", fixed_ips=[{"ip_address": ip}])
        assert second.mac_address != first.mac_address
        port_served(second.mac_address, ip)
        assert lease_for(second) == ip, (state / "dnsmasq.log").read_text()[-2000:]
        log = (state / "dnsmasq.log").read_text()
        assert re.search(rf"DHCPRELEASE\(\S+\) {re.escape(ip)} {first.mac_address}", log), log[-2000:]

        svc = c.services["network"]
        svc.stop()
        conn.network.delete_port(second.id)
        third = conn.network.create_port(network_id=net.id, name="third", fixed_ips=[{"ip_address": ip}])
        before = c.grep_logs("DHCP in sync").get("network", 0)
        svc.start()
        wait_for(lambda: c.grep_logs("DHCP in sync").get("network", 0) > before, 30, what="network restart")
        port_served(third.mac_address, ip)
        assert lease_for(third) == ip, (state / "dnsmasq.log").read_text()[-2000:]
        conn.network.delete_port(third.id)
    finally:
        for client in clients:
            client.close()
    conn.network.delete_network(net.id)


def test_a_network_with_a_bad_value_is_skipped_and_the_others_are_served(dhcp_cloud):
    """A dns_domain with a newline put straight into the database (as before the API checked it): that network
    keeps its running dnsmasq and last files, an error names it and the value, and another network's new port is
    served."""
    c = dhcp_cloud
    conn = c.sdk()
    nets = [conn.network.create_network(name=f"skip-{i}") for i in range(2)]
    for i, net in enumerate(nets):
        conn.network.create_subnet(network_id=net.id, cidr=f"10.95.{i}.0/24", ip_version=4)
    bad, good = nets
    for net in nets:
        wait_for(lambda n=net: (_state(c, n.id) / "dnsmasq.pid").exists(), 20, what=f"DHCP for {net.name}")
    pid = (_state(c, bad.id) / "dnsmasq.pid").read_text()
    c.query("UPDATE networks SET dns_domain = $1 WHERE id = $2 RETURNING id", "evil.example\ndhcp-range=1", bad.id)
    on_bad = conn.network.create_port(network_id=bad.id, name="on-bad")
    on_good = conn.network.create_port(network_id=good.id, name="on-good")
    wait_for(lambda: on_good.mac_address in (_state(c, good.id) / "hosts").read_text(), 20, what="good network served")
    wait_for(lambda: c.grep_logs(f"network {bad.id}: DHCP not updated").get("network", 0) > 0, 20,
             what="an error naming the skipped network")  # fmt: skip
    [line] = [ln for ln in c.services["network"].log_file.read_text().splitlines()
              if f"network {bad.id}: DHCP not updated" in ln][-1:]  # fmt: skip
    assert "dns_domain" in line and "'evil.example\\ndhcp-range=1'" in line, line
    assert on_bad.mac_address not in (_state(c, bad.id) / "hosts").read_text()
    assert "evil" not in "".join(
        f.read_text() for f in _state(c, bad.id).iterdir() if f.name in ("opts", "dnsmasq.argv")
    )
    assert (_state(c, bad.id) / "dnsmasq.pid").read_text() == pid and Path(f"/proc/{pid.strip()}").exists()
    # Repaired, it is served again.
    c.query("UPDATE networks SET dns_domain = '' WHERE id = $1 RETURNING id", bad.id)
    conn.network.update_port(on_bad.id, description="wake")
    wait_for(lambda: on_bad.mac_address in (_state(c, bad.id) / "hosts").read_text(), 20, what="repaired network")
    for port, net in ((on_bad, bad), (on_good, good)):
        conn.network.delete_port(port.id)
        conn.network.delete_network(net.id)
