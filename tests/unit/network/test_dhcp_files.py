"""The files dnsmasq reads and the nftables script a compute loads, from plain data (no processes)."""

from pathlib import Path

from services.compute.firewall import ruleset, table_name
from services.network.dhcp import HostEntry, NetworkPlan, _host_label, veth_names


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


def test_firewall_ruleset_pins_mac_and_ips_and_deletes_everything_without_ports():
    port = {"id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "mac_address": "fa:16:3e:00:00:01", "tap": "tapaaaaaaaa-bb",
            "bridge": "brqx", "ips": ["10.99.0.3"], "dhcp_ips": ["10.99.0.2"],
            "security_groups": [{"id": "g", "rules": [
                {"direction": "ingress", "ethertype": "IPv4", "protocol": None, "port_range_min": None,
                 "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": "g"},
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
                 "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0", "remote_group_id": None},
                {"direction": "egress", "ethertype": "IPv4", "protocol": None, "port_range_min": None,
                 "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": None}]}],
            "remote_group_ips": {"g": ["10.99.0.3", "10.99.0.4"]}}  # fmt: skip
    script = ruleset("stratus_t", [port])
    assert 'ether saddr != fa:16:3e:00:00:01 counter drop comment "spoof-mac"' in script
    assert 'ether type ip ip saddr != { 10.99.0.3 } counter drop comment "spoof-ip"' in script
    assert 'ether type ip udp sport 67 counter drop comment "dhcp-server"' in script
    assert "ip saddr { 10.99.0.3, 10.99.0.4 } accept" in script
    assert "ip saddr 0.0.0.0/0 tcp dport 22 accept" in script
    assert '"brqx" . 10.99.0.3 : jump in_aaaaaaaabbbbcccc' in script
    empty = ruleset("stratus_t", [])
    assert "chain" not in empty and "delete table inet stratus_t" in empty
    assert table_name("compute", "/a") != table_name("compute", "/b")
