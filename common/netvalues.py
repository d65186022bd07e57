"""Values that reach nftables, dnsmasq and command lines, validated as the exact ASCII they must be.

One module for both ends. The Network API checks what a request sends with these functions (an ``InvalidInput``
is a ``BadRequest``: a 400 in Neutron's shape naming the field), and the renderers (``services.compute.firewall``,
``services.network.dhcp``) check every value again before they write it, so that data which did not come through
the API (an old row, a direct database write, a bug) cannot break a ruleset or a file that other tenants share.

Every function takes the raw value, returns it normalised (the form to store and to render: plain ASCII, no
whitespace) and raises ``InvalidInput`` naming the field, the value (cut to a few dozen characters) and the
reason. Python's ``int()``, ``str.isdigit()`` and ``str.isalnum()`` accept non-ASCII digits and letters
(``int("６") == 6``), and ``re``'s ``$`` matches before a final newline, so text is only ever matched whole
(``fullmatch``) against ASCII character classes before anything converts it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from common import exceptions

__all__ = [
    "DIRECTIONS",
    "ETHERTYPES",
    "ICMP_PROTOCOLS",
    "MAX_MTU",
    "MIN_MTU",
    "PORT_PROTOCOLS",
    "PROTOCOL_NUMBERS",
    "InvalidInput",
    "cidr",
    "direction",
    "dns_domain",
    "dns_label",
    "ethertype",
    "interface_name",
    "ip_address",
    "ipv4_address",
    "mac_address",
    "mtu",
    "port_range",
    "protocol",
    "protocol_number",
    "resource_id",
    "security_group_rule",
]

# IP protocol names a security-group rule may use, as Neutron accepts them (neutron-lib's IP_PROTOCOL_MAP), with
# their IANA numbers. Rules render with the number, so the host's /etc/protocols never matters.
PROTOCOL_NUMBERS: Mapping[str, int] = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2, "ipip": 4,
    "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60,
    "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136,
    "vrrp": 112,
}  # fmt: skip
ANY_PROTOCOL = ("any", "0")  # stored as NULL: the rule matches every protocol
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})  # tcp, udp, dccp, sctp, udplite: port_range is a port range
ICMP_PROTOCOLS = frozenset({1, 58})  # icmp, ipv6-icmp: port_range_min is the type, port_range_max the code
DIRECTIONS = ("ingress", "egress")
ETHERTYPES = ("IPv4", "IPv6")
MIN_MTU, MAX_MTU = 68, 9000

_DIGITS = re.compile(r"[0-9]{1,3}")
_PROTOCOL_NAME = re.compile(r"[a-z0-9-]{1,16}")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_IP_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_CIDR_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")
_MAC_TEXT = re.compile(r"[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}")
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHOWN = 64  # characters of a refused value quoted back


class InvalidInput(exceptions.BadRequest):
    """A value that may not reach a ruleset, a configuration file or a command line.

    ``field`` names where it was (``protocol``, ``security_groups[0].rules[2].protocol``), ``value`` is the value
    as given, ``reason`` says what it should be. The message quotes at most the first 64 characters of the value,
    with everything outside printable ASCII escaped (``'\\uff16'`` for ``"６"``), so it cannot forge a log line.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        cut = value[:_SHOWN] if isinstance(value, str) else value
        shown = ascii(cut) + ("..." if isinstance(value, str) and len(value) > _SHOWN else "")
        super().__init__(f"Invalid input for {field}. Reason: {shown} {reason}.")
        self.field = field
        self.value = value
        self.reason = reason


def _text(value: object, field: str, pattern: re.Pattern[str], reason: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidInput(field, value, reason)
    return value


def _integer(value: object, field: str, low: int, high: int) -> int:
    """An ``int`` (not a ``bool``, not text) within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(field, value, f"is not an integer between {low} and {high}")
    return value


# ----- security-group rules --------------------------------------------------------------------------------------


def protocol(value: object, field: str = "protocol") -> str | None:
    """A rule's protocol: None (any), a name of ``PROTOCOL_NUMBERS`` in lower case, or an ASCII decimal 1-255
    without leading zeros. ``"any"``, ``"0"`` and ``0`` mean any protocol (None), as in Neutron."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value) if 0 <= value <= 255 else value
    if isinstance(value, str) and _DIGITS.fullmatch(value) and int(value) <= 255:
        number = str(int(value))
        return None if number == "0" else number
    if isinstance(value, str) and value.isascii() and _PROTOCOL_NAME.fullmatch(value.lower()):
        name = value.lower()
        if name in ANY_PROTOCOL:
            return None
        if name in PROTOCOL_NUMBERS:
            return name
    names = ", ".join(sorted(PROTOCOL_NUMBERS))
    raise InvalidInput(field, value, f"is not a supported protocol: use one of {names}, any, or 0-255 in ASCII digits")


def protocol_number(value: str | None) -> int | None:
    """The IANA number of a protocol as ``protocol()`` returns it (None stays None: any protocol)."""
    if value is None:
        return None
    return PROTOCOL_NUMBERS[value] if value in PROTOCOL_NUMBERS else int(value)


def direction(value: object, field: str = "direction") -> str:
    if value not in DIRECTIONS:
        raise InvalidInput(field, value, "is not 'ingress' or 'egress'")
    return str(value)


def ethertype(value: object, field: str = "ethertype") -> str:
    if value not in ETHERTYPES:
        raise InvalidInput(field, value, "is not 'IPv4' or 'IPv6'")
    return str(value)


def port_range(proto: str | None, low: object, high: object, prefix: str = "") -> tuple[int | None, int | None]:
    """A rule's ``(port_range_min, port_range_max)`` for protocol ``proto`` (as ``protocol()`` returns it).

    Port protocols (tcp, udp, dccp, sctp, udplite): ports 0-65535, min <= max; a min alone means that one port.
    ICMP and IPv6-ICMP: min is the type and max the code, each 0-255; a code needs a type. Any other protocol
    (or any protocol) takes no range. ``prefix`` goes before the field names in errors.
    """
    number = protocol_number(proto)
    lo_field, hi_field = f"{prefix}port_range_min", f"{prefix}port_range_max"
    if low is None and high is None:
        return None, None
    if number in PORT_PROTOCOLS:
        lo = _integer(low, lo_field, 0, 65535) if low is not None else None
        hi = _integer(high, hi_field, 0, 65535) if high is not None else None
        if lo is None:
            raise InvalidInput(hi_field, high, "needs port_range_min as well")
        hi = lo if hi is None else hi
        if lo > hi:
            raise InvalidInput(lo_field, lo, f"is greater than port_range_max {hi}: port_range_min must be <= max")
        return lo, hi
    if number in ICMP_PROTOCOLS:
        lo = _integer(low, lo_field, 0, 255) if low is not None else None
        hi = _integer(high, hi_field, 0, 255) if high is not None else None
        if lo is None:
            raise InvalidInput(hi_field, high, "is an ICMP code and needs an ICMP type in port_range_min")
        return lo, hi
    raise InvalidInput(lo_field if low is not None else hi_field, low if low is not None else high,
                       f"is a port range, which protocol {proto or 'any'} does not take: only tcp, udp, dccp, sctp, "
                       "udplite (ports) and icmp, ipv6-icmp (type and code) do")  # fmt: skip


def cidr(value: object, version: int | None = None, field: str = "remote_ip_prefix") -> str:
    """A network in canonical text (host bits cleared, ``/32`` added to a bare address) of IP ``version``."""
    if not isinstance(value, str) or _CIDR_TEXT.fullmatch(value) is None:
        raise InvalidInput(field, value, "is not a CIDR")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidInput(field, value, "is not a CIDR") from None
    if version is not None and net.version != version:
        raise InvalidInput(field, value, f"is not an IPv{version} CIDR")
    return str(net)


def ip_address(value: object, version: int | None = None, field: str = "ip_address") -> str:
    """An IP address in canonical text, of IP ``version`` when given (no scope id, no whitespace)."""
    if not isinstance(value, str) or _IP_TEXT.fullmatch(value) is None:
        raise InvalidInput(field, value, "is not an IP address")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidInput(field, value, "is not an IP address") from None
    if version is not None and ip.version != version:
        raise InvalidInput(field, value, f"is not an IPv{version} address")
    return str(ip)


def ipv4_address(value: object, field: str = "ip_address") -> str:
    return ip_address(value, 4, field)


def security_group_rule(rule: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A whole rule's values (``direction``, ``ethertype``, ``protocol``, ``port_range_min``/``max``,
    ``remote_ip_prefix``, ``remote_group_id``), checked together and normalised; other keys are kept as they are.

    ``ethertype`` defaults to IPv4. Neutron's combinations hold: IPv6-ICMP only with IPv6, a prefix of the
    rule's ethertype, not both a prefix and a remote group.
    """
    out = dict(rule)
    out["direction"] = direction(rule.get("direction"), f"{prefix}direction")
    out["ethertype"] = ethertype(rule.get("ethertype", "IPv4"), f"{prefix}ethertype")
    proto = protocol(rule.get("protocol"), f"{prefix}protocol")
    if protocol_number(proto) == 58 and out["ethertype"] == "IPv4":
        raise InvalidInput(f"{prefix}protocol", rule.get("protocol"), "is IPv6-ICMP, which needs ethertype IPv6")
    out["protocol"] = proto
    out["port_range_min"], out["port_range_max"] = port_range(
        proto, rule.get("port_range_min"), rule.get("port_range_max"), prefix
    )
    prefix_value = rule.get("remote_ip_prefix")
    version = 4 if out["ethertype"] == "IPv4" else 6
    out["remote_ip_prefix"] = cidr(prefix_value, version, f"{prefix}remote_ip_prefix") if prefix_value else None
    group = rule.get("remote_group_id")
    if group is not None and group != "":
        if out["remote_ip_prefix"] is not None:
            raise InvalidInput(f"{prefix}remote_group_id", group, "is given with remote_ip_prefix: only one may be")
        out["remote_group_id"] = resource_id(group, f"{prefix}remote_group_id")
    else:
        out["remote_group_id"] = None
    return out


# ----- links, addresses, names -----------------------------------------------------------------------------------


def mac_address(value: object, field: str = "mac_address") -> str:
    """A unicast, non-zero MAC in lower-case colon form (``-`` separators are accepted)."""
    text = _text(value, field, _MAC_TEXT, "is not a MAC address").lower().replace("-", ":")
    if int(text[:2], 16) & 1:
        raise InvalidInput(field, value, "is a multicast address")
    if text == "00:00:00:00:00:00":
        raise InvalidInput(field, value, "is the all-zero address")
    return text


def interface_name(value: object, field: str = "interface") -> str:
    """A Linux interface name Stratus makes (bridge, tap, veth): 1-15 of ``A-Za-z0-9_.-``, not starting with
    ``.``, ``-`` or ``_``."""
    return _text(value, field, _IFNAME, "is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")


def resource_id(value: object, field: str = "id") -> str:
    """A resource id as Stratus makes them: a UUID in canonical lower-case text."""
    return _text(value, field, _UUID_TEXT, "is not a UUID in canonical lower-case form")


def mtu(value: object, field: str = "mtu") -> int:
    return _integer(value, field, MIN_MTU, MAX_MTU)


def dns_label(value: object, field: str = "dns_name", *, allow_empty: bool = True) -> str:
    """One DNS label (RFC 1123): 1-63 ASCII letters, digits and hyphens, no hyphen first or last. Returned as
    given (DNS is case-insensitive); ``""`` when ``allow_empty`` (no name)."""
    if allow_empty and value == "":
        return ""
    return _text(value, field, _LABEL, "is not a DNS label (1-63 of a-z 0-9 -, not starting or ending with -)")


def dns_domain(value: object, field: str = "dns_domain", *, allow_empty: bool = True) -> str:
    """A DNS domain name (RFC 1123): labels as ``dns_label`` joined by dots, at most 253 characters without
    the optional final dot, the top-level label not all digits. Returned as given; ``""`` when ``allow_empty``
    (no domain of its own)."""
    if allow_empty and value == "":
        return ""
    if not isinstance(value, str) or not value.isascii():
        raise InvalidInput(field, value, "is not a domain name in ASCII")
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        raise InvalidInput(field, value, "is not a domain name of 1-253 characters")
    labels = name.split(".")
    for label in labels:
        if _LABEL.fullmatch(label) is None:
            raise InvalidInput(field, value, f"has label {label!r}: not 1-63 of a-z 0-9 - (no - first or last)")
    if labels[-1].isdigit():
        raise InvalidInput(field, value, "has an all-numeric top-level label")
    return value
