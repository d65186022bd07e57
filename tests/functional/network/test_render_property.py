"""Property (hypothesis, bounded): whatever the Network API's validation accepts renders to what the real tools take.

- Every security-group rule the API accepts (``security_groups.validated_rule``: the attribute checks, the schema
  and ``common.netvalues``, exactly what the handler runs), in ports of a compute's firewall view with a MAC the
  port API accepts (``ipam.parse_mac``), renders
  (``firewall.render``) with no port refused to a ruleset ``nft -c -f`` accepts.
- Every network, subnet and port the API accepts (``networks.validated_values``, ``subnets.create_plan``, the port
  schema with its ``dns_name`` check, ``ipam.parse_mac``) gives the DHCP agent a plan (``dhcp.plan_from``) with no
  port refused, whose command line and files make a configuration ``dnsmasq --test`` accepts; and all the files of
  the run, loaded by one real dnsmasq in a private namespace, give no complaint in its log.

Candidates are drawn half from well-formed values and half from hostile ones (Unicode digits and letters,
newlines, separators, out-of-range numbers, random text), so both verdicts are exercised; each test asserts it
saw plenty of both. The controls at the end show that both tools do reject broken input.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import re
import secrets
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import exceptions, netvalues
from services.api.network import networks, ports, security_groups, subnets
from services.api.network.common import check_attributes, validate_member
from services.compute import firewall
from services.network import dhcp, ipam

pytestmark = pytest.mark.functional

GROUP = "11111111-2222-4333-8444-555555555555"
BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE = st.one_of(
    st.sampled_from(["６", "٦", "𝟔", "6\n", "\n", "tcp\n", " tcp", "ｔｃｐ", "a\nb", "evil.example\ndhcp-range=1",
                     "x y", "", "é", "192.0.2.1\n", "10.0.0.0/8;", '"', "a\x00", "fe80::1%eth0", "10.0.0.01",
                     "-a", "a-", "a..b", "1.2.3.4", "fa:16:3e:00:00:0１", "0x10", "1e3", "+5", "5 "]),
    st.text(max_size=12),
    st.integers(-(2**40), 2**40),
    st.booleans(),
)  # fmt: skip


def _ipv4_net(min_prefix: int = 0, max_prefix: int = 32) -> st.SearchStrategy[str]:
    return st.builds(lambda ip, p: f"{ip}/{p}", st.ip_addresses(v=4), st.integers(min_prefix, max_prefix))


LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
DOMAIN = st.builds(lambda labels, dot: ".".join(labels) + dot, st.lists(LABEL, min_size=1, max_size=4),
                   st.sampled_from(["", "."]))  # fmt: skip
MAC = st.builds(
    lambda b, upper, sep: sep.join(f"{x:02x}" for x in bytes([b[0] & 0xFE, *b[1:]])).__getattribute__(
        "upper" if upper else "lower"
    )(),
    st.binary(min_size=6, max_size=6), st.booleans(), st.sampled_from([":", "-"]),
)  # fmt: skip
PROTOCOL = st.one_of(
    st.none(), st.sampled_from([*netvalues.PROTOCOL_NUMBERS, "any", "TCP", "Udp", "ICMP"]), st.integers(-2, 260),
    st.from_regex(r"0{0,2}[0-9]{1,3}", fullmatch=True), HOSTILE,
)  # fmt: skip
PORT = st.one_of(st.none(), st.integers(-1, 65536), st.integers(0, 255), HOSTILE)
PREFIX = st.one_of(
    st.none(), _ipv4_net(), st.builds(lambda ip, p: f"{ip}/{p}", st.ip_addresses(v=6), st.integers(0, 128)),
    st.ip_addresses().map(str), HOSTILE,
)  # fmt: skip
MIXED_RULE = st.fixed_dictionaries(
    {"security_group_id": st.just(GROUP), "direction": st.one_of(st.sampled_from(netvalues.DIRECTIONS), HOSTILE)},
    optional={"ethertype": st.one_of(st.sampled_from(netvalues.ETHERTYPES), HOSTILE), "protocol": PROTOCOL,
              "port_range_min": PORT, "port_range_max": PORT, "remote_ip_prefix": PREFIX,
              "remote_group_id": st.one_of(st.none(), st.just(GROUP), HOSTILE)},
)  # fmt: skip


@st.composite
def _well_formed_rule(draw: st.DrawFn) -> dict[str, Any]:
    """A rule as a careful client writes one (the API may still refuse a few: e.g. a prefix and a group)."""
    ethertype = draw(st.sampled_from(netvalues.ETHERTYPES))
    rule: dict[str, Any] = {"security_group_id": GROUP, "direction": draw(st.sampled_from(netvalues.DIRECTIONS)),
                            "ethertype": ethertype}  # fmt: skip
    kind = draw(st.sampled_from(["ports", "icmp", "other"]))
    if kind == "ports":
        rule["protocol"] = draw(st.sampled_from(["tcp", "udp", "TCP", "6", "17", 6, "sctp", "dccp", "udplite", "132"]))
        low = draw(st.one_of(st.none(), st.integers(0, 65535)))
        if low is not None:
            rule["port_range_min"] = low
            rule["port_range_max"] = draw(st.one_of(st.none(), st.integers(low, 65535)))
    elif kind == "icmp":
        names = ["icmp", "1", "ICMP"] if ethertype == "IPv4" else ["ipv6-icmp", "icmpv6", "58"]
        rule["protocol"] = draw(st.sampled_from(names))
        if draw(st.booleans()):
            rule["port_range_min"] = draw(st.integers(0, 255))
            rule["port_range_max"] = draw(st.one_of(st.none(), st.integers(0, 255)))
    else:
        rule["protocol"] = draw(st.sampled_from([None, "any", "0", 0, "gre", "esp", "ah", "vrrp", "47", "255", 112]))
    version = 4 if ethertype == "IPv4" else 6
    remote = draw(st.sampled_from(["none", "prefix", "group"]))
    if remote == "prefix":
        ip = draw(st.ip_addresses(v=version))
        rule["remote_ip_prefix"] = f"{ip}/{draw(st.integers(0, ip.max_prefixlen))}"
    elif remote == "group":
        rule["remote_group_id"] = GROUP
    return rule


RULE = st.one_of(_well_formed_rule(), MIXED_RULE)


RULE_COLUMNS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix",
                "remote_group_id")  # fmt: skip


def _accepted(check: Any, *args: Any) -> Any:
    """``check(*args)`` or None when the API's check answers 400."""
    try:
        return check(*args)
    except exceptions.BadRequest:
        return None


def _nft_check(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nft", "-c", "-f", "-"], input=script, text=True, capture_output=True, timeout=30)


def test_every_rule_the_api_accepts_renders_to_a_ruleset_nft_accepts():
    seen: collections.Counter[str] = collections.Counter()

    @BOUNDED
    @given(
        st.lists(RULE, min_size=1, max_size=8),
        st.lists(st.ip_addresses(v=4).map(str), max_size=3),
        st.one_of(MAC, HOSTILE),
    )
    def run(bodies: list[dict[str, Any]], members: list[str], mac: Any) -> None:
        mac = _accepted(ipam.parse_mac, mac) or "fa:16:3e:00:00:01"  # a port's MAC as create_port takes it
        rules = []
        for body in bodies:
            stored = _accepted(security_groups.validated_rule, body)
            seen["accepted" if stored is not None else "refused"] += 1
            if stored is not None:
                # As the compute's firewall view carries a stored rule (services.network.manager.firewall_ports).
                rules.append({k: stored[k] for k in RULE_COLUMNS})
        view = []
        for n in (1, 2):
            pid = str(uuid.uuid4())
            view.append({"id": pid, "network_id": "n", "mac_address": mac, "tap": f"tap{pid[:11]}",
                         "bridge": "brqprop00001", "ips": [f"10.70.0.{n + 2}"], "dhcp_ips": ["10.70.0.2"],
                         "security_groups": [{"id": GROUP, "rules": rules}],
                         "remote_group_ips": {GROUP: members}})  # fmt: skip
        rendered = firewall.render("stratus_prop", view)
        assert rendered.refused == {}, (rules, rendered.refused)
        checked = _nft_check(rendered.script)
        assert checked.returncode == 0, (rules, checked.stderr)

    run()
    print(f"security-group rules: {dict(seen)}")
    assert seen["accepted"] >= 100 and seen["refused"] >= 100, seen


@st.composite
def _network_case(draw: st.DrawFn) -> dict[str, Any]:
    """A network, its subnet and ports as a careful client writes them, then (most of the time) one value
    replaced by a hostile one."""
    cidr = ipaddress.ip_network(f"{draw(st.ip_addresses(v=4))}/{draw(st.integers(8, 30))}", strict=False)
    hosts = st.integers(1, cidr.num_addresses - 2).map(lambda i: str(cidr.network_address + i))
    network: dict[str, Any] = {"name": "prop"}
    if draw(st.booleans()):
        network["dns_domain"] = draw(st.one_of(DOMAIN, st.just("")))
    if draw(st.booleans()):
        network["mtu"] = draw(st.integers(68, 9000))
    subnet: dict[str, Any] = {"network_id": "n", "cidr": str(cidr), "ip_version": 4}
    if draw(st.booleans()):
        subnet["gateway_ip"] = draw(st.one_of(st.none(), hosts))
    subnet["dns_nameservers"] = draw(st.lists(st.ip_addresses(v=4).map(str), max_size=5, unique=True))
    routes = st.fixed_dictionaries(
        {"destination": _ipv4_net().map(lambda c: str(ipaddress.ip_network(c, strict=False))), "nexthop": hosts}
    )
    subnet["host_routes"] = draw(st.lists(routes, max_size=3, unique_by=lambda r: json.dumps(r, sort_keys=True)))
    port_list = draw(st.lists(st.fixed_dictionaries({"mac_address": MAC, "dns_name": st.one_of(LABEL, st.just(""))}),
                              max_size=4))  # fmt: skip
    case = {"network": network, "subnet": subnet, "ports": port_list}
    spoil = draw(st.sampled_from(["none", "dns_domain", "mtu", "cidr", "gateway_ip", "dns_nameservers",
                                  "host_routes", "nexthop", "mac_address", "dns_name"]))  # fmt: skip
    bad = draw(HOSTILE)
    if spoil in ("dns_domain", "mtu"):
        network[spoil] = bad
    elif spoil in ("cidr", "gateway_ip"):
        subnet[spoil] = bad
    elif spoil == "dns_nameservers":
        subnet[spoil] = [*subnet[spoil][:4], bad]
    elif spoil == "host_routes":
        subnet[spoil] = [{"destination": bad, "nexthop": str(cidr.network_address + 1)}]
    elif spoil == "nexthop":
        subnet["host_routes"] = [{"destination": "0.0.0.0/0", "nexthop": bad}]
    elif spoil in ("mac_address", "dns_name") and port_list:
        port_list[0][spoil] = bad
    return case


def _network_values(body: dict[str, Any]) -> dict[str, Any]:
    check_attributes(body, networks.CREATE_ATTRS)
    return networks.validated_values(body)


def _port_values(body: dict[str, Any]) -> dict[str, Any]:
    """What ``create_port`` checks of a port's DHCP-visible values: the schema, the dns_name, then the MAC
    (``common.db.networks.create_port`` parses it with ``ipam.parse_mac``)."""
    check_attributes(body, ports.CREATE_ATTRS)
    validate_member("port", body, ports.PROPERTIES)
    values = ports._checked_dns_name(body)
    return {**values, "mac_address": ipam.parse_mac(values["mac_address"])}


def _conf_lines(plan: dhcp.NetworkPlan, state: Path) -> list[str]:
    """The agent's command line as configuration-file lines, with the hosts and options files inlined
    (``dnsmasq --test`` parses the configuration, not the files it names; their lines have the syntax of
    ``dhcp-host=`` and ``dhcp-option=``)."""
    lines = [arg[2:] for arg in plan.dnsmasq_argv(state)[1:]]
    lines += [f"dhcp-host={line}" for line in plan.hosts_file().splitlines()]
    lines += [f"dhcp-option={line}" for line in plan.opts_file().splitlines()]
    return lines


def test_every_network_the_api_accepts_renders_to_files_dnsmasq_accepts(tmp_path):
    seen: collections.Counter[str] = collections.Counter()
    files = {kind: tmp_path / f"{kind}.d" for kind in ("hosts", "opts", "addn")}
    for d in files.values():
        d.mkdir()

    @BOUNDED
    @given(_network_case())
    def run(case: dict[str, Any]) -> None:
        net = _accepted(_network_values, case["network"])
        plan = _accepted(subnets.create_plan, case["subnet"])
        seen["network accepted" if net is not None else "network refused"] += 1
        seen["subnet accepted" if plan is not None else "subnet refused"] += 1
        accepted_ports = [p for p in (_accepted(_port_values, p) for p in case["ports"]) if p is not None]
        seen["ports accepted"] += len(accepted_ports)
        seen["ports refused"] += len(case["ports"]) - len(accepted_ports)
        if net is None or plan is None:
            return
        network_id = str(uuid.uuid4())
        # The rows as PostgreSQL gives them back to the agent (services.network.dhcp._plans and _load).
        net_row = {"network_id": network_id, "bridge": ipam.bridge_name("brq", network_id), "mtu": net.get("mtu", 1500),
                   "dns_domain": net.get("dns_domain", "")}  # fmt: skip
        gateway = f"{plan.gateway_ip}/{plan.cidr.prefixlen}" if plan.gateway_ip is not None else None
        subnet_row = {"cidr": str(plan.cidr), "gateway_ip": gateway,
                      "dns_nameservers": json.dumps(plan.dns_nameservers),
                      "host_routes": json.dumps(plan.host_routes)}  # fmt: skip
        addresses = (str(ipaddress.IPv4Address(i)) for pool in plan.allocation_pools
                     for i in range(int(pool.start), int(pool.end) + 1))  # fmt: skip
        dhcp_ip = next(addresses)
        macs = list(dict.fromkeys(p["mac_address"] for p in accepted_ports))  # the column is UNIQUE
        names = {p["mac_address"]: p.get("dns_name", "") for p in accepted_ports}
        rows = [{"id": f"port-{i}", "mac_address": mac, "ip": ip, "dns_name": names[mac]}
                for i, (mac, ip) in enumerate(zip(macs, addresses, strict=False))]  # fmt: skip
        built, bad = dhcp.plan_from(net_row, subnet_row, dhcp_ip, rows, "stratus.local")
        assert bad == {}, (case, bad)
        n = sum(1 for _ in files["hosts"].iterdir())
        for kind, text in (
            ("hosts", built.hosts_file()),
            ("opts", built.opts_file()),
            ("addn", built.addn_hosts_file()),
        ):
            (files[kind] / str(n)).write_text(text)
        state = tmp_path / "state" / network_id
        conf = tmp_path / "dnsmasq.conf"
        conf.write_text("\n".join(_conf_lines(built, state)) + "\n")
        test = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True, timeout=30)
        assert test.returncode == 0 and "syntax check OK" in test.stderr, (case, conf.read_text(), test.stderr)
        seen["rendered"] += 1

    run()
    print(f"networks: {dict(seen)}")
    # Both verdicts, for each kind (about a third of what 150 examples give on average).
    assert seen["rendered"] >= 40 and seen["network refused"] >= 8 and seen["subnet refused"] >= 20, seen
    assert seen["ports accepted"] >= 60 and seen["ports refused"] >= 3, seen
    log = _load_in_dnsmasq(tmp_path, files)
    complaints = [line for line in log.splitlines() if re.search(r"bad|error|fail|cannot|illegal|unknown", line, re.I)]
    assert complaints == [], complaints
    for f in files["addn"].iterdir():
        assert f"read {f} - " in log, log


def _load_in_dnsmasq(tmp_path: Path, files: dict[str, Path]) -> str:
    """Start one real dnsmasq on ``files`` (directories of hosts, options and addn-hosts files) in a private
    namespace, wait until it has read them all, stop it; returns its log."""
    tag = secrets.token_hex(3)
    ns, log = f"stpt-{tag}", tmp_path / f"dnsmasq-{tag}.log"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "add", "d0", "type", "veth", "peer", "name", "d1"], ["link", "set", "d0", "up"],
                    ["link", "set", "d1", "up"], ["addr", "add", "10.69.0.2/24", "dev", "d0"]):  # fmt: skip
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts",
             "--no-resolv", "--interface=d0", "--bind-interfaces", "--leasefile-ro", "--user=root",
             "--dhcp-range=10.69.0.0,static,255.255.255.0,86400s", f"--dhcp-hostsfile={files['hosts']}",
             f"--dhcp-optsfile={files['opts']}", f"--addn-hosts={files['addn']}", f"--log-facility={log}"],
        )  # fmt: skip
        try:
            expected = 3 * sum(1 for _ in files["hosts"].iterdir())
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                if text.count("read ") >= expected:
                    break
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return log.read_text(errors="replace")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_the_oracles_reject_what_is_broken(tmp_path):
    """Controls: both tools do refuse the injections these tests guard against."""
    assert _nft_check("table inet stratus_ctl {\n chain c {\n  meta l4proto ６ accept\n }\n}\n").returncode != 0
    conf = tmp_path / "bad.conf"
    conf.write_text("domain=example.org\ndhcp-range=1\n")  # what a dns_domain with a newline would have written
    assert subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True).returncode != 0
    files = {kind: tmp_path / f"{kind}.d" for kind in ("hosts", "opts", "addn")}
    for kind, text in (("hosts", "fa:16:3e:00:00:01,10.69.0.9,vm a,86400\n"), ("opts", "option:domain-name,a\nb\n"),
                       ("addn", "10.69.0.300 bad\n")):  # fmt: skip
        files[kind].mkdir()
        (files[kind] / "0").write_text(text)
    log = _load_in_dnsmasq(tmp_path, files)
    assert len(re.findall(r"bad", log)) >= 3, log
