"""A DHCP + DNS prober, run inside a client namespace on a tenant bridge (``ip netns exec NS python -m ...``).

Every ``--interval`` seconds it sends one DHCPDISCOVER (broadcast flag set, ``--mac`` as chaddr) and one DNS A
query for ``--name``; a reply that does not come within ``--timeout`` (or is wrong) is a failure. Runs until
``--duration`` passes or SIGTERM, then prints one JSON line: counts, failures, and the longest stretch without a
good answer (the outage window), per protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import socket
import struct
import time


def dhcp_discover(mac: str, xid: int) -> bytes:
    chaddr = bytes.fromhex(mac.replace(":", "")) + b"\0" * 10
    head = struct.pack("!BBBBIHH4s4s4s4s16s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4, b"\0" * 4,
                       b"\0" * 4, chaddr)  # fmt: skip
    opts = b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\x37\x03\x01\x03\x06" + b"\xff"
    return head + b"\0" * 192 + opts


def dhcp_offer_ip(packet: bytes, xid: int) -> str | None:
    if len(packet) < 240 or packet[0] != 2 or struct.unpack("!I", packet[4:8])[0] != xid:
        return None
    return socket.inet_ntoa(packet[16:20])


def dns_query(name: str, qid: int) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def dns_answer_ip(packet: bytes, qid: int) -> str | None:
    if len(packet) < 12 or struct.unpack("!H", packet[:2])[0] != qid:
        return None
    ancount = struct.unpack("!H", packet[6:8])[0]
    if ancount == 0 or packet[3] & 0x0F != 0:
        return None
    return socket.inet_ntoa(packet[-4:])  # one A record answer: its rdata ends the packet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", required=True)
    ap.add_argument("--mac", required=True)
    ap.add_argument("--expect-ip", required=True)
    ap.add_argument("--expect-dns", help="the address --name resolves to (default: --expect-ip)")
    ap.add_argument("--server", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    dhcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dhcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dhcp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    dhcp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.dev.encode())
    dhcp.bind(("0.0.0.0", 68))

    stats = {p: {"ok": 0, "failed": 0, "max_gap_ms": 0.0, "errors": []} for p in ("dhcp", "dns")}
    last_ok = {"dhcp": time.monotonic(), "dns": time.monotonic()}

    def result(proto: str, ok: bool, detail: str = "") -> None:
        now = time.monotonic()
        s = stats[proto]
        if ok:
            s["ok"] += 1
            last_ok[proto] = now
        else:
            s["failed"] += 1
            if len(s["errors"]) < 5:
                s["errors"].append(detail)
        s["max_gap_ms"] = max(s["max_gap_ms"], (now - last_ok[proto]) * 1000)

    def exchange(sock: socket.socket, send: bytes, dest: tuple[str, int], parse) -> str | None:
        sock.sendto(send, dest)
        deadline = time.monotonic() + args.timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            got = parse(sock.recv(2048))
            if got is not None:
                return got
        return None

    end = time.monotonic() + args.duration
    while time.monotonic() < end and not stop["now"]:
        xid = random.getrandbits(32)
        try:
            got = exchange(dhcp, dhcp_discover(args.mac, xid), ("255.255.255.255", 67),
                           lambda p, x=xid: dhcp_offer_ip(p, x))  # fmt: skip
            result("dhcp", got == args.expect_ip, f"offer {got}")
        except OSError as e:
            result("dhcp", False, str(e))
        qid = random.getrandbits(16)
        # A fresh socket (source port) per query, as stub resolvers do.
        dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            got = exchange(dns, dns_query(args.name, qid), (args.server, 53), lambda p, q=qid: dns_answer_ip(p, q))
            result("dns", got == (args.expect_dns or args.expect_ip), f"answer {got}")
        except OSError as e:
            result("dns", False, str(e))
        finally:
            dns.close()
        time.sleep(args.interval)
    print(json.dumps(stats), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
