"""One port's bad data stays with that port: the firewall renderer, ``NftFirewall.apply`` and the build, with the
real ``nft`` (``-c`` checks, and private tables that are deleted afterwards; their chains only match taps these
tests name, so the host's traffic is untouched)."""

from __future__ import annotations

import json
import secrets
import subprocess
import uuid
from typing import Any

import pytest

from services.compute import firewall
from services.compute.imagecache import ImageCache
from services.compute.manager import ComputeManager
from tests.unit.compute.fakes import HOST, FakeNetwork, build_request

GROUP = "11111111-2222-4333-8444-555555555555"


def _port(n: int, *, bridge: str = "brqtest0001", protocol: Any = "tcp", **over: Any) -> dict[str, Any]:
    pid = over.pop("id", f"{n:08x}-0000-4000-8000-000000000000")
    rule = {"direction": "ingress", "ethertype": "IPv4", "protocol": protocol, "port_range_min": 22,
            "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0", "remote_group_id": None}  # fmt: skip
    return {"id": pid, "network_id": "n", "mac_address": f"fa:16:3e:00:01:{n:02x}", "tap": f"tap{pid[:11]}",
            "bridge": bridge, "ips": [f"10.77.0.{n}"], "dhcp_ips": ["10.77.0.2"],
            "security_groups": [{"id": GROUP, "rules": [rule]}], "remote_group_ips": {}, **over}  # fmt: skip


def _nft_check(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nft", "-c", "-f", "-"], input=script, text=True, capture_output=True)


def _chains(table: str) -> dict[str, list[str]]:
    """{chain: [rule comments]} of both families of ``table`` as the kernel holds them."""
    out: dict[str, list[str]] = {}
    for family in ("bridge", "inet"):
        listed = subprocess.run(["nft", "-j", "list", "table", family, table], capture_output=True, text=True)
        for item in json.loads(listed.stdout)["nftables"] if listed.returncode == 0 else []:
            if "chain" in item:
                out.setdefault(item["chain"]["name"], [])
            if "rule" in item:
                out.setdefault(item["rule"]["chain"], []).append(item["rule"].get("comment", ""))
    return out


@pytest.fixture
def table():
    name = f"stratus_ut_{secrets.token_hex(4)}"
    yield name
    for family in ("bridge", "inet"):
        subprocess.run(["nft", "delete", "table", family, name], capture_output=True)


def test_a_port_with_a_unicode_digit_protocol_is_refused_alone():
    good, bad = _port(3), _port(4, protocol="６")
    rendered = firewall.render("stratus_t", [good, bad, _port(5)])
    assert list(rendered.refused) == [bad["id"]]
    assert "protocol" in rendered.refused[bad["id"]] and "'\\uff16'" in rendered.refused[bad["id"]]
    assert "６" not in rendered.script
    # The others keep their rules; the refused one drops everything, both ways.
    assert "tcp dport 22 accept" in rendered.script and '"brqtest0001" . 10.77.0.5' in rendered.script
    assert f'oifname vmap {{ "{bad["tap"]}" : jump out_{bad["id"].replace("-", "")[:16]} }}' in rendered.script
    assert 'counter drop comment "port-refused"' in rendered.script and "10.77.0.4" not in rendered.script
    assert _nft_check(rendered.script).returncode == 0, _nft_check(rendered.script).stderr


@pytest.mark.parametrize(
    ("over", "field"),
    [({"mac_address": "fa:16:3e:00:01:04\n"}, "mac_address"), ({"ips": ["10.77.0.4 "]}, "ips[0]"),
     ({"bridge": 'br"x'}, "bridge"), ({"dhcp_ips": ["10.77.0.２"]}, "dhcp_ips[0]"),
     ({"remote_group_ips": {GROUP: ["10.0.0.1; drop"]}}, f"remote_group_ips[{GROUP}][0]"),
     ({"security_groups": [{"id": GROUP, "rules": [{"direction": "ingress", "protocol": "tcp",
                                                   "port_range_min": 70000}]}]}, "port_range_min"),
     ({"security_groups": [{"id": GROUP, "rules": [{"direction": "ingress",
                                                   "remote_ip_prefix": "10.0.0.0/8 accept"}]}]}, "remote_ip_prefix")],
)  # fmt: skip
def test_every_value_of_a_port_is_checked(over, field):
    bad = _port(4, **over)
    rendered = firewall.render("stratus_t", [_port(3), bad])
    assert list(rendered.refused) == [bad["id"]] and field in rendered.refused[bad["id"]]
    assert _nft_check(rendered.script).returncode == 0


def test_ports_that_clash_do_not_take_the_others_down():
    first = _port(3)
    same_address = _port(4, ips=["10.77.0.3"])  # nft would refuse the whole script: a vmap key twice
    same_tap = _port(5, tap=first["tap"])
    bad_id = _port(6, id="0000006-x\nevil")
    rendered = firewall.render("stratus_t", [first, same_address, same_tap, bad_id, _port(7)])
    assert set(rendered.refused) == {same_address["id"], same_tap["id"], "'0000006-x\\nevil'"}
    assert "earlier port" in rendered.refused[same_address["id"]]
    assert "evil" not in rendered.script
    assert _nft_check(rendered.script).returncode == 0, _nft_check(rendered.script).stderr


async def test_apply_confines_what_nft_itself_rejects_to_its_port(table, monkeypatch):
    """Defense behind the checks: a port's values that pass ``check_port`` but that nft rejects (simulated by
    disabling the interface-name check, so a bridge name with a quote reaches the script) cost only that port."""
    monkeypatch.setattr(firewall.netvalues, "interface_name", lambda value, field="": value)
    good, bad = _port(3), _port(4, bridge='br"x')
    fw = firewall.NftFirewall(table)
    refused = await fw.apply([good, bad, _port(5)])
    assert list(refused) == [bad["id"]] and refused[bad["id"]].startswith("nft refused its rules")
    chains = _chains(table)
    assert "sg-ingress-drop" in chains[f"in_{good['id'].replace('-', '')[:16]}"]
    assert chains[f"out_{bad['id'].replace('-', '')[:16]}"] == ["port-refused"]
    assert f"in_{bad['id'].replace('-', '')[:16]}" not in chains
    assert await fw.apply([good, bad, _port(5)]) == refused  # unchanged: not reloaded, same answer


async def test_a_build_whose_port_is_refused_fails_at_the_network_step(table, conf, driver, conductor, image_file, ctx):
    """The build of the instance with the bad port fails naming the port and the value; another instance on the
    same host builds and its rules are in place."""
    bad_instance, bad_spec = build_request(image_file.image())
    good_instance, good_spec = build_request(image_file.image())
    bad_port, good_port = bad_spec["ports"][0], good_spec["ports"][0]

    class Network(FakeNetwork):
        async def get_host_ports(self, ctx, **kw):
            self.calls.append(("get_host_ports", kw))
            return [_port(3, id=good_port["id"], mac_address=good_port["mac_address"]),
                    _port(4, id=bad_port["id"], protocol="６")]  # fmt: skip

    fw = firewall.NftFirewall(table)
    manager = ComputeManager(conf, HOST, driver, conductor, Network(), ImageCache(conf), firewall=fw)
    try:
        await manager.build_and_run_instance(ctx, instance=bad_instance, request_spec=bad_spec, attempt=1)
        await manager.build_and_run_instance(ctx, instance=good_instance, request_spec=good_spec, attempt=1)
    finally:
        await manager.close()  # its coalesced report would sync the firewall again after the table is gone

    [failed] = conductor.named("build_failed")
    assert failed["step"] == "network" and failed["reason"].startswith(f"network on host {HOST}: port {bad_port['id']}")
    assert "protocol" in failed["reason"] and "'\\uff16'" in failed["reason"]
    assert await driver.get_info(bad_instance["id"]) is None
    assert (await driver.get_info(good_instance["id"])) is not None
    chains = _chains(table)
    assert "sg-ingress-drop" in chains[f"in_{good_port['id'].replace('-', '')[:16]}"]
    assert chains[f"out_{bad_port['id'].replace('-', '')[:16]}"] == ["port-refused"]


def test_raise_if_refused_names_the_first_refused_port():
    firewall.raise_if_refused({"x": "bad"}, ["a", "b"])
    pid = str(uuid.uuid4())
    with pytest.raises(firewall.PortRefused, match=f"port {pid} refused by the firewall .*: bad"):
        firewall.raise_if_refused({pid: "bad"}, ["a", pid])
