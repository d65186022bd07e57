"""Configuration: every Stratus option, in oslo.config groups, with help text.

Options are declared here, grouped by the service that reads them; code receives the parsed ``ConfigOpts``
at construction and reads typed attributes (``conf.compute.virt_type``), never string keys deep in a call path.
``list_opts()`` is the ``oslo.config.opts`` entry point that ``oslo-config-generator`` uses to write
``etc/stratus/stratus.conf.sample``.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from oslo_config import cfg, types

from common import netvalues

__all__ = ["list_opts", "new_conf", "parse_args"]


class _DnsDomain(types.String):
    """An option type: a DNS domain name as ``common.netvalues.dns_domain`` accepts it (not empty)."""

    def __init__(self) -> None:
        super().__init__(type_name="DNS domain name")

    def __call__(self, value: str) -> str:
        try:
            return netvalues.dns_domain(super().__call__(value), "dns_domain", allow_empty=False)
        except netvalues.InvalidInput as e:
            raise ValueError(e.message) from None


cli_opts = [
    cfg.BoolOpt("debug", short="d", default=False, help="Log at DEBUG level."),
    cfg.StrOpt("log-file", dest="log_file", help="Write logs to this file instead of stderr."),
]

default_opts = [
    cfg.StrOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<hostname>",
        help="Name of this host as other services see it: the compute topic is compute.<host>.",
    ),
    cfg.StrOpt(
        "transport_url",
        default="amqp://guest:guest@127.0.0.1:5672/",
        secret=True,
        help="Broker nodes, comma-separated (amqp://user:pass@host1:5672,host2:5672/vhost): clients fail over "
        "between them in the order [messaging]/failover_strategy gives.",
    ),
    cfg.StrOpt(
        "state_path",
        default="/var/lib/stratus",
        help="Top directory for state this host keeps (instances, image cache, network namespaces' files).",
    ),
    cfg.StrOpt(
        "event_loop",
        default="uvloop",
        choices=[
            ("uvloop", "libuv's loop (uvloop): less CPU per request and message than asyncio's own"),
            ("asyncio", "the standard library's loop, e.g. to rule the loop out when diagnosing a daemon"),
        ],
        help="The event loop every Stratus daemon runs on.",
    ),
]

database_opts = [
    cfg.StrOpt(
        "connection",
        default="postgresql://stratus:stratus@127.0.0.1:5432/stratus",
        secret=True,
        help="PostgreSQL DSN. Never set on compute hosts: computes hold no database credentials.",
    ),
    cfg.IntOpt("min_pool_size", default=2, min=1, help="Connections kept open in each process's pool."),
    cfg.IntOpt("max_pool_size", default=10, min=1, help="Most connections one process's pool opens."),
    cfg.FloatOpt(
        "attempt_timeout",
        default=15.0,
        min=1.0,
        help="Seconds one attempt of a unit of database work may take (acquire, statements, commit) before it "
        "is abandoned and retried; bounds what a connection broken by a server restart can hang.",
    ),
    cfg.FloatOpt(
        "retry_timeout",
        default=30.0,
        help="Seconds a service keeps retrying a database operation that failed on a lost connection "
        "(for example across a PostgreSQL restart) before giving up.",
    ),
]

messaging_opts = [
    cfg.FloatOpt("rpc_timeout", default=30.0, help="Seconds an RPC call waits for its reply."),
    cfg.IntOpt("prefetch_count", default=32, min=1, help="Unacknowledged messages a consumer holds at once."),
    cfg.IntOpt(
        "delivery_limit",
        default=5,
        min=1,
        help="Deliveries of one message before the quorum queue dead-letters it to <topic>.dlq.",
    ),
    cfg.StrOpt(
        "failover_strategy",
        default="roundrobin",
        choices=[
            ("static", "nodes in the order written"),
            ("roundrobin", "list rotated by a stable per-process offset, spreading clients evenly"),
            ("shuffle", "random order per process"),
        ],
        help="How each process orders the transport_url nodes; the first is its preferred node.",
    ),
    cfg.FloatOpt(
        "preferred_node_check_interval",
        default=30.0,
        help="Seconds between checks whether the preferred broker node is back (0 disables moving back).",
    ),
    cfg.FloatOpt(
        "reconnect_timeout",
        default=60.0,
        help="Seconds a publish waits for a broker connection during a failover before it fails.",
    ),
    cfg.FloatOpt(
        "broadcast_batch_window",
        default=0.05,
        min=0.0,
        help="Seconds a fanout message (a capacity report) waits for others to the same exchange, to go out "
        "together as one message; 0 sends each at once. Reports are periodic, so a short wait costs nothing, "
        "and a process simulating many hosts sends hundreds a second.",
    ),
]

api_opts = [
    cfg.HostAddressOpt("listen_host", default="127.0.0.1", help="Address the API node listens on."),
    cfg.PortOpt("listen_port", default=18080, help="Port the API node listens on."),
    cfg.StrOpt(
        "public_endpoint",
        default="http://127.0.0.1:8080",
        help="Base URL clients use (the load balancer): the service catalog points here.",
    ),
    cfg.StrOpt("region_name", default="RegionOne", help="Region name in the service catalog and clouds.yaml."),
    cfg.StrOpt(
        "token_secret",
        secret=True,
        default="change-me",
        sample_default="change-me",
        help="Key that signs tokens. Every API node of a cloud must share it: tokens are verified, not stored.",
    ),
    cfg.IntOpt("token_ttl", default=86400, min=60, help="Seconds a token stays valid."),
    cfg.FloatOpt(
        "revocation_refresh_interval",
        default=1.0,
        min=0.1,
        help="Seconds between reloads of the revocation events (removed roles, revoked tokens) from the database: "
        "a revocation made on another API node is honoured here within this time (at once on the node that "
        "made it).",
    ),
    cfg.FloatOpt(
        "drain_seconds",
        default=3.0,
        help="On SIGTERM, seconds /healthcheck answers 503 (so the load balancer stops sending) before the "
        "node stops accepting connections and finishes in-flight requests.",
    ),
    cfg.IntOpt("max_servers_per_request", default=100, help="Largest max_count a server create may ask for."),
]

scheduler_opts = [
    cfg.IntOpt(
        "host_subset_size",
        default=25,
        min=1,
        help="Pick randomly among this many best-weighed hosts, so parallel schedulers rarely collide.",
    ),
    cfg.IntOpt("max_attempts", default=3, min=1, help="Hosts a build is tried on before the instance goes to ERROR."),
    cfg.IntOpt(
        "service_down_time",
        default=60,
        min=1,
        help="Seconds without a capacity report after which a compute host is left out of placement.",
    ),
    cfg.ListOpt(
        "enabled_filters",
        default=[
            "ComputeFilter",
            "RetryFilter",
            "AvailabilityZoneFilter",
            "RamFilter",
            "CoreFilter",
            "DiskFilter",
            "AggregateInstanceExtraSpecsFilter",
            "ImagePropertiesFilter",
            "ServerGroupAntiAffinityFilter",
            "ServerGroupAffinityFilter",
            "SameHostFilter",
            "DifferentHostFilter",
            "BuildFailureFilter",
        ],
        help="Host filters, in the order they run (services/scheduler/filters.py). An unknown name stops the "
        "scheduler at start.",
    ),
    cfg.ListOpt(
        "weighers",
        default=[
            "RAMWeigher",
            "CPUWeigher",
            "DiskWeigher",
            "NumInstancesWeigher",
            "ServerGroupSoftAffinityWeigher",
            "ServerGroupSoftAntiAffinityWeigher",
            "BuildFailureWeigher",
        ],
        help="Host weighers (services/scheduler/weighers.py); each one's score is normalised to 0..1 across the "
        "candidates and multiplied by its multiplier.",
    ),
    cfg.FloatOpt("ram_weight_multiplier", default=1.0, help="Free RAM weight: positive spreads, negative packs."),
    cfg.FloatOpt("cpu_weight_multiplier", default=0.5, help="Free vCPU weight: positive spreads, negative packs."),
    cfg.FloatOpt("disk_weight_multiplier", default=0.0, help="Free disk weight: positive spreads, negative packs."),
    cfg.FloatOpt(
        "num_instances_weight_multiplier",
        default=-0.1,
        help="Instance count weight: negative prefers hosts with fewer instances.",
    ),
    cfg.FloatOpt(
        "soft_affinity_weight_multiplier",
        default=10.0,
        min=0.0,
        help="How strongly soft-affinity groups pull members onto hosts already holding members. The default "
        "outweighs the spreading weighers (RAM 1.0, CPU 0.5), so the policy holds wherever a member's host fits; "
        "at Nova's 1.0 they would spread the group.",
    ),
    cfg.FloatOpt(
        "soft_anti_affinity_weight_multiplier",
        default=10.0,
        min=0.0,
        help="How strongly soft-anti-affinity groups push members away from hosts already holding members (the "
        "default outweighs the resource weighers, as for soft_affinity_weight_multiplier).",
    ),
    cfg.FloatOpt(
        "build_failure_weight_multiplier",
        default=1000000.0,
        min=0.0,
        help="How strongly hosts with recent failed builds sink (the default outweighs every other weigher).",
    ),
    cfg.IntOpt(
        "build_failure_threshold",
        default=3,
        min=0,
        help="BuildFailureFilter leaves out hosts with this many failed builds within build_failure_window (0: never).",
    ),
    cfg.FloatOpt(
        "build_failure_window",
        default=600.0,
        min=1.0,
        help="Seconds a failed build counts against its host (filter and weigher).",
    ),
    cfg.FloatOpt(
        "usage_refresh_interval",
        default=0.25,
        min=0.05,
        help="Seconds between reloads of the hosts whose usage changed in the database (claims of other "
        "schedulers); keeps parallel schedulers from racing for hosts they believe empty.",
    ),
    cfg.FloatOpt(
        "aggregate_refresh_interval",
        default=30.0,
        min=1.0,
        help="Seconds between reloads of host aggregates from the database (the API also tells schedulers at "
        "once through the capacity fanout).",
    ),
]

compute_opts = [
    cfg.StrOpt(
        "virt_type",
        default="auto",
        choices=[
            ("auto", "kvm when a KVM guest really runs here, else qemu (decided by a quick probe at start)"),
            ("kvm", "hardware virtualisation"),
            ("qemu", "software emulation (TCG)"),
        ],
        help="Domain type for guests.",
    ),
    cfg.StrOpt(
        "connection_uri",
        default="qemu:///system",
        help="libvirt URI. test:///default gives libvirt's in-process fake hypervisor, used for scale tests.",
    ),
    cfg.IntOpt(
        "simulated_hosts",
        default=0,
        min=0,
        help="With the test:/// driver: run this many simulated hosts (<host>-0 ...) in one process.",
    ),
    cfg.StrOpt(
        "instances_path",
        help="Where instance disks and console logs live. Default: <state_path>/instances.",
    ),
    cfg.StrOpt("image_cache_path", help="Where downloaded images are cached. Default: <state_path>/images."),
    cfg.FloatOpt(
        "report_interval",
        default=10.0,
        help="Most seconds between two capacity reports of a host (its heartbeat): a report also goes out after "
        "every change, and the periodic one is due this long after the last report of either kind.",
    ),
    cfg.FloatOpt(
        "min_report_interval",
        default=0.5,
        min=0.0,
        help="Least seconds between two capacity reports sent after changes: a change is reported at once, and the "
        "changes that follow within this interval share one report at its end (a burst of builds on one host "
        "costs two reports, not one per build).",
    ),
    cfg.FloatOpt(
        "progress_interval",
        default=5.0,
        min=0.0,
        help="Seconds a build's step events may wait to be sent together with its next state change. A quick "
        "build sends all of them with its final report (one message); a slower one shows its steps after at "
        "most this long.",
    ),
    cfg.IntOpt("vcpus", default=0, help="vCPUs to report (0: what the hypervisor reports)."),
    cfg.IntOpt("memory_mb", default=0, help="Memory to report in MiB (0: what the hypervisor reports)."),
    cfg.IntOpt("local_gb", default=0, help="Disk to report in GiB (0: size of the instances filesystem)."),
    cfg.FloatOpt("cpu_allocation_ratio", default=16.0, help="vCPUs claimable per physical CPU."),
    cfg.FloatOpt("ram_allocation_ratio", default=1.5, help="Memory claimable per MiB of physical memory."),
    cfg.FloatOpt("disk_allocation_ratio", default=1.0, help="Disk claimable per GiB of physical disk."),
    cfg.IntOpt("reserved_host_memory_mb", default=512, help="Memory kept for the host itself."),
    cfg.IntOpt("reserved_host_disk_gb", default=0, help="Disk kept for the host itself."),
    cfg.IntOpt("reserved_host_cpus", default=0, help="CPUs kept for the host itself."),
    cfg.StrOpt("availability_zone", default="nova", help="Availability zone this host belongs to."),
    cfg.IntOpt("image_download_retries", default=3, min=1, help="Tries to download an image before the build fails."),
    cfg.FloatOpt(
        "image_download_retry_interval",
        default=1.0,
        min=0.0,
        help="Seconds before the second try of an image download; each later try waits twice as long (at most 30 s).",
    ),
    cfg.FloatOpt(
        "virt_probe_timeout",
        default=2.0,
        min=0.1,
        help="With virt_type=auto: seconds a tiny KVM probe guest has to finish before this host falls back to "
        "qemu. The decision is cached in <state_path>/compute/virt_type.json until the kernel or the emulator "
        "changes; delete that file to probe again.",
    ),
    cfg.FloatOpt(
        "shutdown_timeout",
        default=60.0,
        min=0.0,
        help="Seconds a guest has to shut down cleanly (stop, soft reboot) before it is powered off hard "
        "(0: always hard).",
    ),
    cfg.BoolOpt(
        "create_bridges",
        default=True,
        help="Create a port's Linux bridge (no address, up) when it is missing, for hosts that are network node "
        "and compute at once. When false, a missing bridge fails the build, naming the bridge.",
    ),
    cfg.BoolOpt(
        "force_config_drive",
        default=False,
        help="Give every guest built on this host a config drive (an ISO 9660 volume labelled config-2 with its "
        "OpenStack metadata, user data and network configuration), as if it had been booted with "
        "config_drive=true. For networks whose metadata service guests cannot reach.",
    ),
]

network_opts = [
    cfg.StrOpt(
        "base_mac",
        default="fa:16:3e:00:00:00",
        help="MAC prefix for ports: the first three octets are kept, the rest random (locally administered).",
    ),
    cfg.StrOpt("bridge_prefix", default="brq", help="Prefix of the Linux bridge made for each network."),
    cfg.Opt(
        "dns_domain",
        type=_DnsDomain(),
        default="stratus.local",
        help="DNS domain guests' names live in (networks without a dns_domain of their own): an RFC 1123 name in "
        "ASCII, as dnsmasq is given it.",
    ),
    cfg.BoolOpt(
        "serve_dhcp",
        default=False,
        help="Make this network service the network node: per network a namespace with dnsmasq (static DHCP, "
        "forward and reverse DNS) and a metadata server on 169.254.169.254, joined to the network's bridge. "
        "Off: IP/MAC allocation only (the processes it starts outlive it; `stratus-network --teardown` removes "
        "them).",
    ),
    cfg.FloatOpt(
        "dhcp_resync_interval",
        default=10.0,
        min=0.1,
        help="Seconds between full DHCP/DNS/metadata convergence passes; database notifications trigger one "
        "at once, this is the safety net.",
    ),
]

_GROUPS: list[tuple[str | None, list[cfg.Opt]]] = [
    (None, default_opts),
    ("database", database_opts),
    ("messaging", messaging_opts),
    ("api", api_opts),
    ("scheduler", scheduler_opts),
    ("compute", compute_opts),
    ("network", network_opts),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The ``oslo.config.opts`` entry point: every group with its options."""
    return [(group or "DEFAULT", list(opts) + (cli_opts if group is None else [])) for group, opts in _GROUPS]


def new_conf() -> cfg.ConfigOpts:
    """A fresh ``ConfigOpts`` with every Stratus option registered (tests build one per service)."""
    conf = cfg.ConfigOpts()
    conf.register_cli_opts(cli_opts)
    for group, opts in _GROUPS:
        conf.register_opts(opts, group=group)
    return conf


def parse_args(argv: Sequence[str], *, prog: str, default_config_files: Sequence[str] | None = None) -> cfg.ConfigOpts:
    """Parse ``--config-file`` and friends for a service's ``main()``."""
    conf = new_conf()
    if default_config_files is None:
        default_config_files = cfg.find_config_files(project="stratus", prog=prog)
    conf(list(argv), project="stratus", prog=prog, default_config_files=list(default_config_files))
    return conf
