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
``other-ethertype``, ``sg-ingress-drop``, ``sg-egress-drop``): ``counters()`` reads them per port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["NftFirewall", "NoopFirewall", "for_host", "ruleset", "table_name"]

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


def _rule_match(rule: dict[str, Any], direction: str, remote_ips: dict[str, list[str]]) -> str | None:
    """The nft match of one IPv4 security-group rule (None: it can match nothing, e.g. an empty remote group)."""
    peer = "saddr" if direction == "ingress" else "daddr"
    parts = []
    if rule.get("remote_group_id"):
        ips = remote_ips.get(rule["remote_group_id"], [])
        if not ips:
            return None
        parts.append(f"ip {peer} {_set(ips)}")
    elif rule.get("remote_ip_prefix"):
        parts.append(f"ip {peer} {rule['remote_ip_prefix']}")
    proto = (rule.get("protocol") or "").lower()
    if proto in ("tcp", "udp"):
        lo, hi = rule.get("port_range_min"), rule.get("port_range_max")
        if lo is not None:
            parts.append(f"{proto} dport {lo}" + (f"-{hi}" if hi is not None and hi != lo else ""))
        else:
            parts.append(f"meta l4proto {proto}")
    elif proto in ("icmp", "1"):
        parts.append("meta l4proto icmp")
        if rule.get("port_range_min") is not None:
            parts.append(f"icmp type {rule['port_range_min']}")
    elif proto and proto not in ("any", "0"):
        parts.append(f"meta l4proto {proto}")
    return " ".join(parts)


def ruleset(table: str, ports: Sequence[dict[str, Any]]) -> str:
    """The whole nft script for ``ports`` (``get_host_ports`` dicts).

    Deletes and re-creates both tables in one transaction; with no ports it only deletes them.
    """
    lines = [f"table bridge {table}", f"delete table bridge {table}", f"table inet {table}",
             f"delete table inet {table}"]  # fmt: skip
    if not ports:
        return "\n".join(lines) + "\n"
    out_map = ", ".join(f"{_q(p['tap'])} : jump {_chain('out', p['id'])}" for p in ports)
    lines += [f"table bridge {table} {{", "  chain forward {",
              "    type filter hook forward priority -10; policy accept;",
              f"    iifname vmap {{ {out_map} }}", "  }"]  # fmt: skip
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
        rules = [r for g in p["security_groups"] for r in g["rules"] if r.get("ethertype", "IPv4") == "IPv4"]
        remote = p.get("remote_group_ips", {})
        lines.append(f"  chain {_chain('in', p['id'])} {{")
        lines.append("    ct state established,related accept")
        lines.append('    ct state invalid counter drop comment "sg-invalid"')
        lines.append("    udp sport 67 udp dport 68 accept")
        if p.get("dhcp_ips"):
            lines.append(f"    ip saddr {_set(p['dhcp_ips'])} accept")
        for r in rules:
            if r["direction"] == "ingress" and (m := _rule_match(r, "ingress", remote)) is not None:
                lines.append(f"    {m} accept".replace("     ", "    "))
        lines.append('    counter drop comment "sg-ingress-drop"')
        lines.append("  }")
        lines.append(f"  chain {_chain('eg', p['id'])} {{")
        lines.append("    ct state established,related return")
        if p.get("dhcp_ips"):
            lines.append(f"    ip daddr {_set(p['dhcp_ips'])} return")
        for r in rules:
            if r["direction"] == "egress" and (m := _rule_match(r, "egress", remote)) is not None:
                lines.append(f"    {m} return".replace("     ", "    "))
        lines.append('    counter drop comment "sg-egress-drop"')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


async def _nft(*args: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "nft", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode()


class NoopFirewall:
    """For hosts without guests' traffic (libvirt ``test:///``): no rules, nothing to read."""

    enabled = False

    async def apply(self, ports: Sequence[dict[str, Any]]) -> None:
        return None

    async def counters(self) -> dict[str, dict[str, int]]:
        return {}


class NftFirewall:
    """Owns two nftables tables named by ``table_name``. ``apply`` is idempotent and atomic."""

    enabled = True

    def __init__(self, table: str) -> None:
        self.table = table
        self._lock = asyncio.Lock()
        self._last: str | None = None

    async def apply(self, ports: Sequence[dict[str, Any]]) -> None:
        """Make the tables say exactly ``ports``. May raise ``RuntimeError`` with nft's complaint."""
        script = ruleset(self.table, ports)
        async with self._lock:
            # Unchanged rules are not reloaded (that would zero the counters), unless the tables went missing
            # (flushed by hand, a host firewall reload): then they are rebuilt.
            if script == self._last and (not ports or await self._present()):
                return
            await _nft("-f", "-", stdin=script)
            self._last = script
        LOG.info("firewall %s: rules for %d port(s): %s", self.table, len(ports), ", ".join(p["id"] for p in ports))

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
