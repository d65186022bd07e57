from common.rpc.transport import node_name, order_nodes, parse_transport_url


def test_transport_url_splits_into_one_url_per_node():
    urls = parse_transport_url("amqp://u:p@127.0.0.1:5672,127.0.0.1:5673 , 127.0.0.1:5674/vh")
    assert urls == [
        "amqp://u:p@127.0.0.1:5672/vh",
        "amqp://u:p@127.0.0.1:5673/vh",
        "amqp://u:p@127.0.0.1:5674/vh",
    ]
    assert [node_name(u) for u in urls] == ["127.0.0.1:5672", "127.0.0.1:5673", "127.0.0.1:5674"]


def test_single_node_without_credentials():
    assert parse_transport_url("amqp://h:1/") == ["amqp://h:1/"]


def test_static_keeps_order_and_roundrobin_is_a_stable_rotation():
    nodes = ["a", "b", "c"]
    assert order_nodes(nodes, "static", "x") == nodes
    rr = order_nodes(nodes, "roundrobin", "svc@host:1")
    assert rr == order_nodes(nodes, "roundrobin", "svc@host:1")
    assert sorted(rr) == nodes
    assert rr[rr.index("a") :] + rr[: rr.index("a")] == nodes  # a rotation, not a shuffle


def test_roundrobin_spreads_processes_across_nodes():
    nodes = ["a", "b", "c"]
    firsts = {order_nodes(nodes, "roundrobin", f"svc@host:{pid}")[0] for pid in range(60)}
    assert firsts == set(nodes)


def test_shuffle_is_a_permutation():
    assert sorted(order_nodes(["a", "b", "c"], "shuffle", "s")) == ["a", "b", "c"]
