"""Two real QEMU guests on one network: DHCP from dnsmasq, hostname and ssh key from the metadata service,
anti-spoofing and security groups in nftables on the compute — all observed from the guests' consoles, the
compute's nft counters and a client namespace on the tenant bridge.

Guest A boots first (with a keypair) and only answers. Guest B's user data (run by the guest's init) probes A
and the metadata service, then tries to spoof an IP, a MAC, and to serve DHCP; each attempt prints a
``PROBE key=value`` line on B's console.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.compute import firewall
from services.network import dhcp
from tests.fixtures.cloud import wait_status

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SPOOF_IP = "10.99.0.250"
SPOOF_MAC = "02:00:00:00:00:99"
# A well-formed ed25519 public key (wire format: name, then 32 bytes); nobody holds its private half.
PUBKEY = (
    "ssh-ed25519 "
    + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))).decode()
    + " stratus@test"
)

B_SCRIPT = """#!/bin/sh
A={a_ip}; DHCP={dhcp_ip}
ME=$(ip -4 -o addr show eth0 | awk '{{split($4, x, "/"); print x[1]}}')
p() {{ echo "PROBE $*"; }}
ping -c 3 -W 2 $A >/dev/null && p ping-a=ok || p ping-a=fail
md=$(timeout 5 wget -q -O - --header "X-Instance-ID: {a_id}" "http://169.254.169.254/openstack/latest/meta_data.json?uuid={a_id}")
p meta-forged=$(echo "$md" | tr -d '\\n' | sed -n 's/.*"uuid": *"\\([^"]*\\)".*/\\1/p')
p ec2-id=$(timeout 5 wget -q -O - http://169.254.169.254/latest/meta-data/instance-id)
ip addr add {spoof_ip}/32 dev eth0
ping -c 3 -W 1 -I {spoof_ip} $A >/dev/null && p spoof-ip=passed || p spoof-ip=blocked
ip addr del {spoof_ip}/32 dev eth0
ip addr add $A/32 dev eth0
ip route replace 169.254.169.254/32 via $DHCP dev eth0 src $A
md=$(timeout 5 wget -q -O - http://169.254.169.254/openstack/latest/meta_data.json)
p meta-as-a=${{md:+GOT}}${{md:-none}}
ip route replace 169.254.169.254/32 via $DHCP dev eth0 src $ME
ip addr del $A/32 dev eth0
OLD=$(cat /sys/class/net/eth0/address)
ip link set eth0 address {spoof_mac}
ping -c 3 -W 1 $A >/dev/null && p spoof-mac=passed || p spoof-mac=blocked
ip link set eth0 address $OLD
ping -c 2 -W 2 $A >/dev/null && p ping-a-after=ok || p ping-a-after=fail
printf 'start 10.99.0.200\\nend 10.99.0.210\\ninterface eth0\\nlease_file /tmp/udhcpd.leases\\n' >/tmp/udhcpd.conf
touch /tmp/udhcpd.leases
udhcpd -f /tmp/udhcpd.conf >/dev/null 2>&1 &
p rogue-dhcp=running
sleep 25
kill $!
p done
"""


def _console(conn, server) -> str:
    return conn.compute.get_server_console_output(server)["output"]


def _wait_console(conn, server, needle: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = _console(conn, server)
        if needle in out:
            return out
        time.sleep(1)
    raise AssertionError(f"{needle!r} not on the console of {server.id} after {timeout}s:\n{out[-3000:]}")


def _probes(console: str) -> dict[str, str]:
    return dict(re.findall(r"^PROBE ([\w-]+)=(\S*)", console, re.M))


class Watch:
    """A test-owned bridge table counting what reaches a port's tap (runs after the compute's rules)."""

    def __init__(self, tap: str, matches: dict[str, str]) -> None:
        self.table = f"stratus_watch_{secrets.token_hex(3)}"
        rules = "\n".join(f'    oifname "{tap}" {m} counter comment "{name}"' for name, m in matches.items())
        script = (f"table bridge {self.table} {{\n  chain watch {{\n    type filter hook forward priority 10;\n"
                  f"{rules}\n  }}\n}}\n")  # fmt: skip
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)

    def counts(self) -> dict[str, int]:
        data = json.loads(subprocess.run(["nft", "-j", "list", "table", "bridge", self.table],
                                         capture_output=True, text=True, check=True).stdout)  # fmt: skip
        out = {}
        for item in data["nftables"]:
            rule = item.get("rule")
            if rule and "comment" in rule:
                out[rule["comment"]] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        return out

    def close(self) -> None:
        subprocess.run(["nft", "delete", "table", "bridge", self.table], capture_output=True)


def _compute_counters(cloud, port_id: str) -> dict[str, int]:
    table = firewall.table_name("compute", str(cloud.workdir / "state"))
    merged: dict[str, int] = {}
    for family in ("bridge", "inet"):
        out = subprocess.run(["nft", "-j", "list", "table", family, table], capture_output=True, text=True)
        if out.returncode:
            continue
        for item in json.loads(out.stdout)["nftables"]:
            rule = item.get("rule")
            if rule and "comment" in rule and rule["chain"].endswith(port_id.replace("-", "")[:16]):
                packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), 0)
                merged[rule["comment"]] = merged.get(rule["comment"], 0) + packets
    return merged


class ClientNs:
    """A namespace on the tenant bridge that is no port of the cloud: a stranger to every security group."""

    def __init__(self, bridge: str, ip: str) -> None:
        tag = secrets.token_hex(3)
        self.ns, outer = f"stcl-{tag}", f"stco{tag}"
        self.mac = "fa:16:3e:aa:bb:" + tag[:2]
        for cmd in (["ip", "netns", "add", self.ns],
                    ["ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", self.ns],
                    ["ip", "link", "set", outer, "master", bridge, "up"],
                    ["ip", "-n", self.ns, "link", "set", "eth0", "address", self.mac, "up"],
                    ["ip", "-n", self.ns, "addr", "add", f"{ip}/24", "dev", "eth0"]):  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)  # fmt: skip

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture(scope="module")
def two_guests(qemu_cloud):
    c = qemu_cloud
    conn = c.sdk()
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    image = conn.image.find_image("tiny", ignore_missing=False)
    net = conn.network.find_network("private", ignore_missing=False)
    c.bridges = [f"brq{net.id[:11]}"]
    conn.compute.create_keypair(name="int-key", public_key=PUBKEY)
    t0 = time.monotonic()
    a = conn.compute.create_server(name="int-net-a", flavor_id=flavor.id, image_id=image.id, key_name="int-key",
                                   networks=[{"uuid": net.id}])  # fmt: skip
    a = wait_status(conn, a.id, {"ACTIVE", "ERROR"}, timeout=120)
    assert a.status == "ACTIVE", a.fault
    a_console = _wait_console(conn, a, "STRATUS-GUEST: ready")
    a_ready_s = time.monotonic() - t0
    a_port = next(iter(conn.network.ports(device_id=a.id)))
    a_ip = a_port.fixed_ips[0]["ip_address"]
    dhcp_ip = c.query("SELECT host(a.ip_address) AS ip FROM ports p JOIN ip_allocations a ON a.port_id = p.id "
                      "WHERE p.network_id = $1 AND p.device_owner = 'network:dhcp'", net.id)[0]["ip"]  # fmt: skip
    watch = Watch(f"tap{a_port.id[:11]}", {
        "from-spoof-ip": f"ip saddr {SPOOF_IP}",
        "from-spoof-mac": f"ether saddr {SPOOF_MAC}",
        "dhcp-server-from-guest": f"udp sport 67 ip saddr != {dhcp_ip}",
        "icmp-in": "ip protocol icmp",
    })  # fmt: skip
    script = B_SCRIPT.format(a_ip=a_ip, dhcp_ip=dhcp_ip, a_id=a.id, spoof_ip=SPOOF_IP, spoof_mac=SPOOF_MAC)
    try:
        b = conn.compute.create_server(name="int-net-b", flavor_id=flavor.id, image_id=image.id,
                                       networks=[{"uuid": net.id}],
                                       user_data=base64.b64encode(script.encode()).decode())  # fmt: skip
        b = wait_status(conn, b.id, {"ACTIVE", "ERROR"}, timeout=120)
        assert b.status == "ACTIVE", b.fault
        b_port = next(iter(conn.network.ports(device_id=b.id)))
        yield {"conn": conn, "net": net, "a": a, "b": b, "a_port": a_port, "b_port": b_port, "a_ip": a_ip,
               "dhcp_ip": dhcp_ip, "a_console": a_console, "watch": watch, "a_ready_s": a_ready_s}  # fmt: skip
    finally:
        watch.close()


def test_guest_gets_dhcp_address_hostname_and_key_from_metadata(two_guests):
    g = two_guests
    console = g["a_console"]
    print(f"guest A ready (DHCP + metadata) {g['a_ready_s']:.1f}s after create")
    assert f"STRATUS-GUEST: ip={g['a_ip']}" in console, console[-2000:]
    assert "STRATUS-GUEST: hostname=int-net-a" in console, console[-2000:]
    assert "STRATUS-GUEST: ssh-key=1" in console, console[-2000:]
    assert f"STRATUS-GUEST: uuid={g['a'].id}" in console
    assert "no-dhcp" not in console and "no-metadata" not in console


def test_spoofing_and_rogue_dhcp_are_dropped_metadata_is_private(two_guests, qemu_cloud):
    g = two_guests
    conn, b = g["conn"], g["b"]
    _wait_console(conn, b, "PROBE rogue-dhcp=running")
    # While B runs a DHCP server: a stranger's DISCOVER gets no offer (dnsmasq: unknown MAC; B's: dropped).
    client = ClientNs(f"brq{g['net'].id[:11]}", "10.99.0.240")
    try:
        probe = client.run(sys.executable, "-m", "tests.functional.network.dhcp_probe", "--dev", "eth0",
                           "--mac", client.mac, "--expect-ip", "10.99.0.240", "--server", g["dhcp_ip"],
                           "--name", "int-net-a.stratus.local", "--expect-dns", g["a_ip"],
                           "--duration", "4")  # fmt: skip
        stats = json.loads(probe.stdout)
        assert stats["dhcp"]["ok"] == 0, stats
        # Security group 'default': ingress only from members of the group — this namespace is none.
        ping = client.run("busybox", "ping", "-c", "2", "-W", "1", g["a_ip"])
        assert ping.returncode != 0, ping.stdout
        # DNS from the network's dnsmasq: the guest's name resolves to its address.
        assert stats["dns"]["ok"] > 0 and stats["dns"]["failed"] == 0, stats
    finally:
        client.close()
    console = _wait_console(conn, b, "PROBE done", timeout=120)
    probes = _probes(console)
    print("guest B probes:", probes)
    assert probes["ping-a"] == "ok", console[-3000:]  # same security group: allowed
    assert probes["meta-forged"] == b.id, probes  # headers and query cannot select another instance
    assert probes["ec2-id"] == b.id, probes
    assert probes["spoof-ip"] == "blocked", probes
    assert probes["meta-as-a"] == "none", probes  # A's address from B never reaches the metadata server
    assert probes["spoof-mac"] == "blocked", probes
    assert probes["ping-a-after"] == "ok", probes
    b_counts = _compute_counters(qemu_cloud, g["b_port"].id)
    a_counts = _compute_counters(qemu_cloud, g["a_port"].id)
    seen_by_a = g["watch"].counts()
    print("compute counters B:", b_counts, "A:", a_counts, "reached A's tap:", seen_by_a)
    assert b_counts["spoof-ip"] > 0 and b_counts["spoof-mac"] > 0 and b_counts["spoof-arp"] >= 0, b_counts
    assert b_counts["dhcp-server"] > 0, b_counts
    assert a_counts["sg-ingress-drop"] > 0, a_counts  # the stranger's pings
    assert seen_by_a["from-spoof-ip"] == 0 and seen_by_a["from-spoof-mac"] == 0, seen_by_a
    assert seen_by_a["dhcp-server-from-guest"] == 0, seen_by_a
    assert seen_by_a["icmp-in"] > 0, seen_by_a  # the watch works: B's legitimate pings reached A


def _ping_until(client: ClientNs, ip: str, want_ok: bool, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (client.run("busybox", "ping", "-c", "1", "-W", "1", ip).returncode == 0) == want_ok:
            return True
    return False


def test_security_group_rules_allow_and_deny_as_configured(two_guests):
    g = two_guests
    conn = g["conn"]
    group = conn.network.create_security_group(name="int-icmp-from-240")
    rule = conn.network.create_security_group_rule(security_group_id=group.id, direction="ingress",
                                                   protocol="icmp", remote_ip_prefix="10.99.0.240/32")  # fmt: skip
    bridge = f"brq{g['net'].id[:11]}"
    allowed, other = ClientNs(bridge, "10.99.0.240"), ClientNs(bridge, "10.99.0.241")
    try:
        assert _ping_until(allowed, g["a_ip"], want_ok=False, timeout=5)  # default group: strangers denied
        conn.network.update_port(g["a_port"].id, security_groups=[group.id])
        assert _ping_until(allowed, g["a_ip"], want_ok=True), "ICMP from 10.99.0.240/32 should now be allowed"
        assert _ping_until(other, g["a_ip"], want_ok=False, timeout=5), "10.99.0.241 is outside the rule's CIDR"
        conn.network.delete_security_group_rule(rule.id)
        assert _ping_until(allowed, g["a_ip"], want_ok=False), "the rule is gone: ICMP denied again"
    finally:
        allowed.close()
        other.close()
        conn.network.update_port(g["a_port"].id, security_groups=["default"])
    conn.network.delete_security_group(group.id)


def test_rules_are_rebuilt_after_a_compute_restart_and_when_lost(two_guests, qemu_cloud):
    g = two_guests
    table = firewall.table_name("compute", str(qemu_cloud.workdir / "state"))
    chains = [f"out_{p.id.replace('-', '')[:16]}" for p in (g["a_port"], g["b_port"])]

    def rebuilt() -> bool:
        out = subprocess.run(["nft", "list", "table", "bridge", table], capture_output=True, text=True).stdout
        return all(c in out for c in chains)

    def wait_rebuilt(what: str) -> None:
        deadline = time.monotonic() + 60
        while not rebuilt():
            assert time.monotonic() < deadline, f"rules not rebuilt {what}"
            time.sleep(0.5)

    svc = qemu_cloud.services["compute"]
    svc.stop()
    for family in ("bridge", "inet"):  # as after a host reboot: the kernel forgot the rules
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True)
    svc.start()
    wait_rebuilt("after the compute restarted")
    subprocess.run(["nft", "delete", "table", "bridge", table], check=True)  # lost while the compute runs
    wait_rebuilt("by the periodic sync")


def test_rules_follow_the_port_through_stop_and_start(two_guests, qemu_cloud):
    g = two_guests
    conn, a = g["conn"], g["a"]
    table = firewall.table_name("compute", str(qemu_cloud.workdir / "state"))
    chain = f"out_{g['a_port'].id.replace('-', '')[:16]}"
    conn.compute.stop_server(a)
    wait_status(conn, a.id, {"SHUTOFF", "ERROR"}, timeout=120)
    out = subprocess.run(["nft", "list", "table", "bridge", table], capture_output=True, text=True).stdout
    assert chain in out  # the port still exists: its rules stay while the guest is off
    conn.compute.start_server(a)
    assert wait_status(conn, a.id, {"ACTIVE", "ERROR"}, timeout=120).status == "ACTIVE"
    console = _wait_console(conn, a, "STRATUS-GUEST: ready")
    assert f"STRATUS-GUEST: ip={g['a_ip']}" in console and "STRATUS-GUEST: hostname=int-net-a" in console, console
    out = subprocess.run(["nft", "list", "table", "bridge", table], capture_output=True, text=True).stdout
    assert chain in out


def test_deleting_guests_removes_their_rules(two_guests, qemu_cloud):
    g = two_guests
    conn = g["conn"]
    for s in (g["a"], g["b"]):
        conn.compute.delete_server(s.id)
    for s in (g["a"], g["b"]):
        conn.compute.wait_for_delete(s, wait=60)
    table = firewall.table_name("compute", str(qemu_cloud.workdir / "state"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        if table not in tables:
            break
        time.sleep(0.5)
    assert table not in tables, tables
    hosts = qemu_cloud.workdir / "state" / "network" / g["net"].id / "hosts"
    assert g["a_port"].mac_address not in hosts.read_text()
    assert Path("/run/netns", dhcp.netns_name(g["net"].id)).exists()  # the network itself stays served


def test_a_guest_given_a_freed_address_gets_it_by_dhcp(qemu_cloud):
    """On a /29, a server is deleted and the next one gets its address (IPAM hands out the lowest free one) with
    another MAC: the second guest's DHCP client gets that lease (the DHCP agent released the first guest's)."""
    c = qemu_cloud
    conn = c.sdk()
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    image = conn.image.find_image("tiny", ignore_missing=False)
    net = conn.network.create_network(name="int-reuse")
    c.bridges.append(f"brq{net.id[:11]}")
    conn.network.create_subnet(network_id=net.id, cidr="10.94.0.0/29", ip_version=4)
    seen = []
    for name in ("int-reuse-1", "int-reuse-2"):
        server = conn.compute.create_server(name=name, flavor_id=flavor.id, image_id=image.id,
                                            networks=[{"uuid": net.id}])  # fmt: skip
        server = wait_status(conn, server.id, {"ACTIVE", "ERROR"}, timeout=120)
        assert server.status == "ACTIVE", server.fault
        port = next(iter(conn.network.ports(device_id=server.id)))
        ip = port.fixed_ips[0]["ip_address"]
        console = _wait_console(conn, server, "STRATUS-GUEST: ready")
        seen.append((ip, port.mac_address))
        assert f"STRATUS-GUEST: ip={ip}" in console and "no-dhcp" not in console, console[-2000:]
        conn.compute.delete_server(server.id)
        conn.compute.wait_for_delete(server, wait=60)
    (ip1, mac1), (ip2, mac2) = seen
    assert ip1 == ip2 and mac1 != mac2, seen  # the same address, another MAC: the case that had no lease
    conn.network.delete_network(net.id)
