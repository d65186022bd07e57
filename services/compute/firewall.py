"""Per-port anti-spoofing and security groups on a compute host, in nftables.

Two tables per compute service, rebuilt atomically (one ``nft -f`` transaction) from the network service's view of
the host's ports (``network.get_host_ports``) whenever a port appears or goes and at every periodic report, so
rules follow ports through build, start/stop/reboot (the tap name is stable), delete and a compute restart:

- ``bridge <table>``: L2 anti-spoofing on the traffic a guest *sends* (``iifname tap…`` in the bridge forward
  hook): only the port's MAC; ARP only for the port's MAC and IPs; IPv4 only from the port's IPs (and the
  DHCPDISCOVER from 0.0.0.0); no DHCP server replies (UDP source port 67); no other ethertype.
- ``inet <table>``: stateful security groups (conntrack). The kernel here has no bridge-family conntrack, so the
  rules live in the inet forward hook, which bridged IPv4 traverses through ``br_netfilter``
  (``net.bridge.bridge-nf-call-iptables=1``). There the in/out interface is the *bridge*, so a port is
  identified by its bridge and its address — which the bridge table guarantees nobody else can send from.
  Egress rules run for the sender, then ingress rules for the receiver; replies to allowed traffic pass by
  conntrack; DHCP replies from the network's DHCP port always pass.

Every drop has a counter with a comment (``spoof-mac``, ``spoof-arp``, ``spoof-ip``, ``dhcp-server``,
``other-ethertype``, ``sg-ingress-drop``, ``sg-egress-drop``, ``port-refused``): ``counters()`` reads them per port.

One port's bad data stays with that port. The tables are one script for the whole host, so a value nft cannot
parse would stop every tenant's rules; ``render`` therefore checks every value of every port before writing it
(``check_port``: id, tap and bridge names, MAC, addresses, each rule's direction, ethertype, protocol, ports,
prefix and remote group, the remote groups' addresses — with the validators the API uses, ``common.netvalues``).
A port that fails, or that clashes with an earlier port (same tap, chain, or bridge and address), is *refused*:
it fails closed, with one drop-everything chain for both directions of its tap, and the other ports get their
rules. Should nft still reject the script, ``NftFirewall.apply`` finds the ports at fault with ``nft -c``,
refuses them too and applies the rest. ``apply`` returns the refused ports with the reason (the field and value,
or nft's complaint) and logs each with its id; the compute fails the build of an instance whose port is refused
at the network step (``PortRefused``, a ``RequestFault``), naming the port and the value.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common import netvalues
from services.compute.exceptions import RequestFault

__all__ = [
    "NftError",
    "NftFirewall",
    "NoopFirewall",
    "PortRefused",
    "Ruleset",
    "check_port",
    "for_host",
    "raise_if_refused",
    "render",
    "table_name",
]

LOG = logging.getLogger(__name__)


def table_name(host: str, state_path: str) -> str:
    """Unique per compute service on a machine (two test clouds' computes never share tables)."""
    digest = hashlib.sha256(f"{host}:{state_path}".encode()).hexdigest()[:8]
    return f"stratus_{re.sub(r'[^A-Za-z0-9_]', '_', host)[:20]}_{digest}"


def _chain(prefix: str, port_id: str) -> str:
    return f"{prefix}_{port_id.replace('-', '')[:16]}"


def _q(name: str) -> str:
    return json.dumps(name)


def _set(items: Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


class PortRefused(RequestFault):
    """A port of the instance being built was refused by the firewall (``Ruleset.refused``): its values cannot
    be written into nftables, so the port drops all its traffic. The request's fault, not the host's."""


def _list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise netvalues.InvalidInput(field, value, "is not a list")
    return list(value)


def check_port(port: Mapping[str, Any]) -> dict[str, Any]:
    """One ``get_host_ports`` entry with every value the rules would contain checked and normalised
    (``common.netvalues``); raises ``InvalidInput`` naming the first bad field (``security group <id> rule 2
    protocol``). The result has the port's IPv4 rules as ``rules``; its IPv6 rules are checked, not kept."""
    out: dict[str, Any] = {
        "id": netvalues.resource_id(port.get("id"), "id"),
        "tap": netvalues.interface_name(port.get("tap"), "tap"),
        "bridge": netvalues.interface_name(port.get("bridge"), "bridge"),
        "mac_address": netvalues.mac_address(port.get("mac_address")),
    }
    for key in ("ips", "dhcp_ips"):
        ips = [netvalues.ipv4_address(ip, f"{key}[{i}]") for i, ip in enumerate(_list(port.get(key, []), key))]
        out[key] = list(dict.fromkeys(ips))
    rules = []
    for gi, group in enumerate(_list(port.get("security_groups", []), "security_groups")):
        if not isinstance(group, Mapping):
            raise netvalues.InvalidInput(f"security_groups[{gi}]", group, "is not a group")
        gid = netvalues.resource_id(group.get("id"), f"security_groups[{gi}].id")
        for ri, rule in enumerate(_list(group.get("rules", []), f"security group {gid} rules")):
            where = f"security group {gid} rule {ri}"
            if not isinstance(rule, Mapping):
                raise netvalues.InvalidInput(where, rule, "is not a rule")
            checked = netvalues.security_group_rule(rule, f"{where} ")
            if checked["ethertype"] == "IPv4":
                rules.append(checked)
    out["rules"] = rules
    remote = port.get("remote_group_ips", {})
    if not isinstance(remote, Mapping):
        raise netvalues.InvalidInput("remote_group_ips", remote, "is not a mapping")
    out["remote_group_ips"] = {
        netvalues.resource_id(gid, "remote_group_ips"): list(
            dict.fromkeys(netvalues.ipv4_address(ip, f"remote_group_ips[{gid}][{i}]")
                          for i, ip in enumerate(_list(ips, f"remote_group_ips[{gid}]")))
        )
        for gid, ips in remote.items()
    }  # fmt: skip
    return out


def _rule_match(rule: Mapping[str, Any], direction: str, remote_ips: Mapping[str, list[str]]) -> str | None:
    """The nft match of one checked IPv4 rule (None: it can match nothing, e.g. an empty remote group)."""
    peer = "saddr" if direction == "ingress" else "daddr"
    parts = []
    if rule["remote_group_id"]:
        ips = remote_ips.get(rule["remote_group_id"], [])
        if not ips:
            return None
        parts.append(f"ip {peer} {_set(ips)}")
    elif rule["remote_ip_prefix"]:
        parts.append(f"ip {peer} {rule['remote_ip_prefix']}")
    number = netvalues.protocol_number(rule["protocol"])
    lo, hi = rule["port_range_min"], rule["port_range_max"]
    ports = f"{lo}" if hi is None or hi == lo else f"{lo}-{hi}"
    if number in (6, 17):
        name = "tcp" if number == 6 else "udp"
        parts.append(f"{name} dport {ports}" if lo is not None else f"meta l4proto {name}")
    elif number in netvalues.PORT_PROTOCOLS:
        parts.append(f"meta l4proto {number}" + (f" th dport {ports}" if lo is not None else ""))
    elif number == 1:
        parts.append("meta l4proto icmp")
        if lo is not None:
            parts.append(f"icmp type {lo}" + (f" icmp code {hi}" if hi is not None else ""))
    elif number is not None:
        parts.append(f"meta l4proto {number}")
    return " ".join(parts)


@dataclass(frozen=True)
class Ruleset:
    """An nft script and the ports it refuses (port id → why: the field and value, or nft's complaint)."""

    script: str
    refused: dict[str, str] = field(default_factory=dict)


def _port_label(port: object) -> str:
    """How a port is named in ``Ruleset.refused`` and logs: its id, or (an invalid id) that escaped and cut."""
    pid = port.get("id") if isinstance(port, Mapping) else None
    try:
        return netvalues.resource_id(pid)
    except netvalues.InvalidInput:
        return ascii(pid[:64] if isinstance(pid, str) else pid)


def render(
    table: str,
    ports: Sequence[Mapping[str, Any]],
    refuse: Mapping[str, str] | None = None,
    omit: Collection[str] = (),
) -> Ruleset:
    """The whole nft script for ``ports`` (``get_host_ports`` dicts). Pure; never raises for bad port data.

    The script deletes and re-creates both tables in one transaction; with no ports it only deletes them. A
    port is refused when ``check_port`` rejects it, when it is in ``refuse`` (id → reason), or when its tap,
    chain or a bridge-and-address key is an earlier port's: a refused port whose id and tap are valid gets a
    drop-everything chain for both directions of its tap (counter ``port-refused``); one whose id or tap is not
    (or that is in ``omit``) cannot be named in nft and is left out. Either way it is in ``Ruleset.refused``.
    """
    refuse = refuse or {}
    refused: dict[str, str] = {}
    good: list[dict[str, Any]] = []
    dropped: list[tuple[str, str]] = []  # (id, tap) of refused ports that get a drop chain
    taps: set[str] = set()
    chains: set[str] = set()
    keys: set[tuple[str, str]] = set()  # (bridge, address): the inet table's vmap keys
    for port in ports:
        label = _port_label(port)
        if not isinstance(port, Mapping):
            refused[label] = f"is not a port: {type(port).__name__}"
            continue
        try:
            pid = netvalues.resource_id(port.get("id"), "id")
            tap = netvalues.interface_name(port.get("tap"), "tap")
        except netvalues.InvalidInput as e:
            refused[label] = e.message
            continue
        if tap in taps or _chain("out", pid) in chains:
            refused[pid] = f"its tap {tap} or its chain {_chain('out', pid)} is an earlier port's"
            continue
        if pid in omit:
            refused[pid] = refuse.get(pid, "nft refused its rules")
            continue
        taps.add(tap)
        chains.add(_chain("out", pid))
        reason = refuse.get(pid)
        if reason is None:
            try:
                checked = check_port(port)
            except netvalues.InvalidInput as e:
                reason = e.message
            else:
                clash = [ip for ip in checked["ips"] if (checked["bridge"], ip) in keys]
                if clash:
                    reason = f"address {clash[0]} on bridge {checked['bridge']} is an earlier port's"
        if reason is not None:
            refused[pid] = reason
            dropped.append((pid, tap))
            continue
        keys.update((checked["bridge"], ip) for ip in checked["ips"])
        good.append(checked)
    return Ruleset(_script(table, good, dropped), refused)


def _script(table: str, ports: Sequence[Mapping[str, Any]], dropped: Sequence[tuple[str, str]]) -> str:
    lines = [f"table bridge {table}", f"delete table bridge {table}", f"table inet {table}",
             f"delete table inet {table}"]  # fmt: skip
    if not ports and not dropped:
        return "\n".join(lines) + "\n"
    drop_map = [f"{_q(tap)} : jump {_chain('out', pid)}" for pid, tap in dropped]
    out_map = [f"{_q(p['tap'])} : jump {_chain('out', p['id'])}" for p in ports] + drop_map
    lines += [f"table bridge {table} {{", "  chain forward {",
              "    type filter hook forward priority -10; policy accept;",
              f"    iifname vmap {{ {', '.join(out_map)} }}"]  # fmt: skip
    if dropped:
        # Traffic *to* a refused port is dropped too: it has no security-group chain to filter it.
        lines.append(f"    oifname vmap {{ {', '.join(drop_map)} }}")
    lines.append("  }")
    for pid, _ in dropped:
        lines += [f"  chain {_chain('out', pid)} {{", '    counter drop comment "port-refused"', "  }"]
    for p in ports:
        mac, ips = p["mac_address"], p["ips"]
        lines.append(f"  chain {_chain('out', p['id'])} {{")
        lines.append(f'    ether saddr != {mac} counter drop comment "spoof-mac"')
        lines.append(f'    ether type arp arp saddr ether != {mac} counter drop comment "spoof-arp"')
        if ips:
            lines.append(f'    ether type arp arp saddr ip != {_set(ips)} counter drop comment "spoof-arp"')
        else:
            lines.append('    ether type arp counter drop comment "spoof-arp"')
        lines.append("    ether type arp accept")
        lines.append('    ether type ip udp sport 67 counter drop comment "dhcp-server"')
        lines.append("    ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept")
        if ips:
            lines.append(f'    ether type ip ip saddr != {_set(ips)} counter drop comment "spoof-ip"')
            lines.append('    ether type ip counter accept comment "allowed"')
        lines.append('    counter drop comment "other-ethertype"')
        lines.append("  }")
    lines.append("}")

    in_map, eg_map = [], []
    for p in ports:
        for ip in p["ips"]:
            in_map.append(f"{_q(p['bridge'])} . {ip} : jump {_chain('in', p['id'])}")
            eg_map.append(f"{_q(p['bridge'])} . {ip} : jump {_chain('eg', p['id'])}")
    lines += [f"table inet {table} {{", "  chain forward {", "    type filter hook forward priority 0; policy accept;"]
    if eg_map:
        lines.append(f"    iifname . ip saddr vmap {{ {', '.join(eg_map)} }}")
        lines.append(f"    oifname . ip daddr vmap {{ {', '.join(in_map)} }}")
    lines.append("  }")
    for p in ports:
        remote = p["remote_group_ips"]
        lines.append(f"  chain {_chain('in', p['id'])} {{")
        lines.append("    ct state established,related accept")
        lines.append('    ct state invalid counter drop comment "sg-invalid"')
        lines.append("    udp sport 67 udp dport 68 accept")
        if p["dhcp_ips"]:
            lines.append(f"    ip saddr {_set(p['dhcp_ips'])} accept")
        for r in p["rules"]:
            if r["direction"] == "ingress" and (m := _rule_match(r, "ingress", remote)) is not None:
                lines.append(f"    {m} accept" if m else "    accept")
        lines.append('    counter drop comment "sg-ingress-drop"')
        lines.append("  }")
        lines.append(f"  chain {_chain('eg', p['id'])} {{")
        lines.append("    ct state established,related return")
        if p["dhcp_ips"]:
            lines.append(f"    ip daddr {_set(p['dhcp_ips'])} return")
        for r in p["rules"]:
            if r["direction"] == "egress" and (m := _rule_match(r, "egress", remote)) is not None:
                lines.append(f"    {m} return" if m else "    return")
        lines.append('    counter drop comment "sg-egress-drop"')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def raise_if_refused(refused: Mapping[str, str], port_ids: Iterable[str]) -> None:
    """``PortRefused`` naming the first of ``port_ids`` in ``refused`` and why (for the build of their instance)."""
    for pid in port_ids:
        if pid in refused:
            raise PortRefused(f"port {pid} refused by the firewall (its traffic is dropped): {refused[pid]}")


class NftError(RuntimeError):
    """nft refused a command or script; the message is nft's own."""


async def _nft(*args: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "nft", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise NftError(f"nft {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode()


def _complaint(error: NftError) -> str:
    """nft's first error line (it names the script line and what it could not parse)."""
    lines = [line.strip() for line in str(error).splitlines() if "Error:" in line]
    return (lines[0] if lines else str(error))[:300]


class NoopFirewall:
    """For hosts without guests' traffic (libvirt ``test:///``): no rules, nothing to read."""

    enabled = False

    async def apply(self, ports: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        return {}

    async def counters(self) -> dict[str, dict[str, int]]:
        return {}


class NftFirewall:
    """Owns two nftables tables named by ``table_name``. ``apply`` is idempotent and atomic."""

    enabled = True

    def __init__(self, table: str) -> None:
        self.table = table
        self._lock = asyncio.Lock()
        self._last: str | None = None
        self._refused: dict[str, str] = {}

    async def apply(self, ports: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Make the tables say exactly ``ports``; returns the refused ports (id → why), whose traffic is dropped.

        One port's bad data never stops the others' rules: ``render`` refuses a port whose values fail the
        checks, and if nft still rejects the script, ``_isolate`` finds the ports at fault with ``nft -c``,
        refuses them too and the rest is applied. Every refused port is logged (error) with its id and reason
        when the rules change. Raises ``NftError`` only when nft takes no script at all (nft missing, no
        permission): the host's fault, not a port's.
        """
        ruleset = render(self.table, ports)
        async with self._lock:
            # Unchanged rules are not reloaded (that would zero the counters), unless the tables went missing
            # (flushed by hand, a host firewall reload): then they are rebuilt.
            if ruleset.script == self._last and (not ports or await self._present()):
                return dict(self._refused)
            try:
                await _nft("-f", "-", stdin=ruleset.script)
            except NftError as e:
                LOG.error("firewall %s: nft rejected the rules of %d port(s), finding the ports at fault: %s",
                          self.table, len(ports), _complaint(e))  # fmt: skip
                ruleset = await self._isolate(ports, ruleset)
                await _nft("-f", "-", stdin=ruleset.script)
            self._last, self._refused = ruleset.script, dict(ruleset.refused)
        for pid, why in ruleset.refused.items():
            LOG.error("firewall %s: port %s refused, all its traffic is dropped: %s", self.table, pid, why)
        applied = [_port_label(p) for p in ports if _port_label(p) not in ruleset.refused]
        LOG.info("firewall %s: rules for %d port(s): %s", self.table, len(applied), ", ".join(applied))
        return dict(ruleset.refused)

    async def _isolate(self, ports: Sequence[Mapping[str, Any]], first: Ruleset) -> Ruleset:
        """The ruleset of ``ports`` without what nft rejects: ports are added one at a time and each script is
        checked (``nft -c``, nothing applied); a port whose rules fail is refused (a drop chain), and one whose
        drop chain fails as well is left out. Finds faults that only show when two ports meet, too."""
        refuse = dict(first.refused)
        omit: set[str] = set()
        taken: list[Mapping[str, Any]] = []
        for port in ports:
            label = _port_label(port)
            for attempt in ("rules", "drop"):
                script = render(self.table, [*taken, port], refuse, omit).script
                try:
                    await _nft("-c", "-f", "-", stdin=script)
                    break
                except NftError as e:
                    if attempt == "rules" and label not in refuse:
                        refuse[label] = f"nft refused its rules: {_complaint(e)}"
                    else:
                        refuse.setdefault(label, f"nft refused its rules: {_complaint(e)}")
                        omit.add(label)
                        break
            taken.append(port)
        return render(self.table, ports, refuse, omit)

    async def _present(self) -> bool:
        try:
            await _nft("list", "table", "bridge", self.table)
            await _nft("list", "table", "inet", self.table)
        except RuntimeError:
            return False
        return True

    async def counters(self) -> dict[str, dict[str, int]]:
        """``{chain: {comment: packets}}`` for every counted rule (chains are ``out_/in_/eg_<port id hex>``)."""
        result: dict[str, dict[str, int]] = {}
        for family in ("bridge", "inet"):
            try:
                data = json.loads(await _nft("-j", "list", "table", family, self.table))
            except RuntimeError:
                continue
            for item in data.get("nftables", []):
                rule = item.get("rule")
                if not rule or "comment" not in rule:
                    continue
                packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), None)
                if packets is not None:
                    chain = result.setdefault(rule["chain"], {})
                    chain[rule["comment"]] = chain.get(rule["comment"], 0) + packets
        return result


def for_host(connection_uri: str, host: str, state_path: str) -> NftFirewall | NoopFirewall:
    """nftables on a real hypervisor; nothing on libvirt's ``test:///`` (no guest traffic, no host to touch)."""
    if connection_uri.startswith("test:"):
        return NoopFirewall()
    return NftFirewall(table_name(host, state_path))
