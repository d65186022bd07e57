"""The files dnsmasq reads and the nftables script a compute loads, from plain data (no processes)."""

from pathlib import Path

import pytest

from common import netvalues
from services.compute.firewall import render, table_name
from services.network.dhcp import HostEntry, NetworkPlan, _host_label, _hosts_in, plan_from, veth_names


def _plan(**kw):
    base = dict(network_id="0123abcd-0000-4000-8000-000000000000", bridge="brq0123abcd-00", mtu=1500,
                cidr="10.99.0.0/24", gateway_ip="10.99.0.1", dhcp_ip="10.99.0.2", dns_domain="stratus.local",
                dns_nameservers=(), host_routes=(),
                hosts=(HostEntry("fa:16:3e:00:00:01", "10.99.0.3", "vm-a"),
                       HostEntry("fa:16:3e:00:00:02", "10.99.0.4", "")))  # fmt: skip
    base.update(kw)
    return NetworkPlan(**base)


def test_hosts_files_give_static_leases_and_dns_names():
    plan = _plan()
    assert plan.hosts_file() == "fa:16:3e:00:00:01,10.99.0.3,vm-a,86400\nfa:16:3e:00:00:02,10.99.0.4,86400\n"
    assert plan.addn_hosts_file() == "10.99.0.3 vm-a.stratus.local vm-a\n"


def test_options_route_metadata_via_the_dhcp_port_and_keep_the_default_route():
    opts = _plan(host_routes=(("192.168.5.0/24", "10.99.0.9"),)).opts_file()
    routes = "169.254.169.254/32,10.99.0.2,192.168.5.0/24,10.99.0.9,0.0.0.0/0,10.99.0.1"
    assert f"option:classless-static-route,{routes}" in opts
    assert "option:dns-server,10.99.0.2" in opts
    assert "option:router\n" in _plan(gateway_ip=None).opts_file()


def test_dnsmasq_serves_static_leases_only_on_its_namespace_interface():
    argv = _plan().dnsmasq_argv(Path("/s"))
    assert "--dhcp-range=10.99.0.0,static,255.255.255.0,86400s" in argv
    assert f"--interface={veth_names(_plan().network_id)[1]}" in argv and "--bind-interfaces" in argv
    assert "--user=root" not in argv and "--user=root" in _plan().dnsmasq_argv(Path("/s"), as_root=True)
    assert all(len(n) <= 15 for n in veth_names("0123abcd-0000-4000-8000-000000000000"))


def test_host_label_is_a_dns_label():
    assert _host_label("My_VM.example.org") == "my-vm"
    assert _host_label("") == ""
    assert _host_label("a\nb") == "a-b"
    assert _host_label("wéb") == "wéb"  # left for the check to refuse, not made into something else


NET = {"network_id": "0123abcd-0000-4000-8000-000000000000", "bridge": "brq0123abcd-00", "mtu": 1450,
       "dns_domain": ""}  # fmt: skip
SUBNET = {"cidr": "10.99.0.0/24", "gateway_ip": "10.99.0.1/24", "dns_nameservers": ["192.0.2.53"],
          "host_routes": [{"destination": "192.168.5.0/24", "nexthop": "10.99.0.9"}]}  # fmt: skip
PORT = {"id": "p-good", "mac_address": "fa:16:3e:00:00:01", "ip": "10.99.0.3", "dns_name": "vm-a"}


def test_plan_from_rows_checks_and_normalises_every_value():
    plan, bad = plan_from(NET, SUBNET, "10.99.0.2", [PORT], "stratus.local.")
    assert bad == {}
    assert plan.dns_domain == "stratus.local" and plan.gateway_ip == "10.99.0.1" and plan.mtu == 1450
    assert plan.hosts == (HostEntry("fa:16:3e:00:00:01", "10.99.0.3", "vm-a"),)
    assert plan.host_routes == (("192.168.5.0/24", "10.99.0.9"),)


@pytest.mark.parametrize(
    ("net", "subnet", "field"),
    [({"dns_domain": "evil.example\ndhcp-range=10.0.0.0,10.0.0.9"}, {}, "dns_domain"),
     ({"dns_domain": "ｅvil.example"}, {}, "dns_domain"),
     ({"bridge": "br x"}, {}, "bridge"),
     ({"mtu": 70000}, {}, "mtu"),
     ({"network_id": "../../etc"}, {}, "network id"),
     ({}, {"dns_nameservers": ["192.0.2.1\nserver=x"]}, "dns_nameservers[0]"),
     ({}, {"dns_nameservers": '"192.0.2.1"'}, "dns_nameservers"),  # jsonb as asyncpg returns it: text
     ({}, {"host_routes": [{"destination": "0.0.0.0/0,evil", "nexthop": "10.99.0.9"}]}, "host_routes[0].destination"),
     ({}, {"host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.99.0.9 "}]}, "host_routes[0].nexthop"),
     ({}, {"gateway_ip": "10.99.0.1\n"}, "gateway_ip")],
)  # fmt: skip
def test_a_network_with_a_bad_value_has_no_plan(net, subnet, field):
    with pytest.raises(netvalues.InvalidInput) as e:
        plan_from({**NET, **net}, {**SUBNET, **subnet}, "10.99.0.2", [PORT], "stratus.local")
    assert e.value.field == field


def test_a_port_with_a_bad_value_costs_only_that_port():
    ports = [PORT, {**PORT, "id": "p-name", "ip": "10.99.0.4", "mac_address": "fa:16:3e:00:00:02", "dns_name": "wéb"},
             {**PORT, "id": "p-mac", "ip": "10.99.0.5", "mac_address": "fa:16:3e:00:00:03\n"}]  # fmt: skip
    plan, bad = plan_from(NET, SUBNET, "10.99.0.2", ports, "stratus.local")
    assert [h.name for h in plan.hosts] == ["vm-a", ""]
    assert set(bad) == {"p-name", "p-mac"} and "dns_name" in bad["p-name"] and "mac_address" in bad["p-mac"]
    assert "fa:16:3e:00:00:03" not in plan.hosts_file()


def test_the_hosts_file_on_disk_is_read_back_as_address_and_mac(tmp_path):
    hosts = tmp_path / "hosts"
    assert _hosts_in(hosts) == set()
    hosts.write_text(_plan().hosts_file() + "garbage\nzz:zz,10.99.0.9,86400\n")
    assert _hosts_in(hosts) == {("10.99.0.3", "fa:16:3e:00:00:01"), ("10.99.0.4", "fa:16:3e:00:00:02")}


G = "11111111-2222-4333-8444-555555555555"


def test_firewall_ruleset_pins_mac_and_ips_and_deletes_everything_without_ports():
    port = {"id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "mac_address": "fa:16:3e:00:00:01", "tap": "tapaaaaaaaa-bb",
            "bridge": "brqx", "ips": ["10.99.0.3"], "dhcp_ips": ["10.99.0.2"],
            "security_groups": [{"id": G, "rules": [
                {"direction": "ingress", "ethertype": "IPv4", "protocol": None, "port_range_min": None,
                 "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": G},
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
                 "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0", "remote_group_id": None},
                {"direction": "egress", "ethertype": "IPv4", "protocol": None, "port_range_min": None,
                 "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": None}]}],
            "remote_group_ips": {G: ["10.99.0.3", "10.99.0.4"]}}  # fmt: skip
    rendered = render("stratus_t", [port])
    assert rendered.refused == {}
    script = rendered.script
    assert 'ether saddr != fa:16:3e:00:00:01 counter drop comment "spoof-mac"' in script
    assert 'ether type ip ip saddr != { 10.99.0.3 } counter drop comment "spoof-ip"' in script
    assert 'ether type ip udp sport 67 counter drop comment "dhcp-server"' in script
    assert "ip saddr { 10.99.0.3, 10.99.0.4 } accept" in script
    assert "ip saddr 0.0.0.0/0 tcp dport 22 accept" in script
    assert '"brqx" . 10.99.0.3 : jump in_aaaaaaaabbbbcccc' in script
    empty = render("stratus_t", []).script
    assert "chain" not in empty and "delete table inet stratus_t" in empty
    assert table_name("compute", "/a") != table_name("compute", "/b")
