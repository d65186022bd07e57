"""The metadata server's layouts, on the shared document builders (``common.metadata``), with a fake database."""

import json

from aiohttp.test_utils import TestClient, TestServer

from services.network import metadata

INST = {
    "id": "8d3c1a52-3f6e-4a8e-9a57-0b9b6f4c2d11", "name": "vm", "hostname": "vm", "dns_name": "vm",
    "project_id": "p1", "key_name": "k1", "key_data": "ssh-ed25519 AAAA k1", "user_data": None, "metadata": "{}",
    "availability_zone": None, "launch_index": 0, "image_id": "img", "flavor": '{"name": "m1.tiny"}',
    "reservation_id": "r-1", "mac_address": "fa:16:3e:00:00:01", "address": "127.0.0.1",
    "ports": [{"id": "0b8e1c9a-5d1f-4c1e", "mac_address": "fa:16:3e:00:00:01", "network_id": "n1", "mtu": 1500,
               "ip": "127.0.0.1", "cidr": "127.0.0.0/8", "gateway_ip": None}],
}  # fmt: skip


class FakeDb:
    async def run(self, fn):
        return INST


async def test_openstack_and_ec2_layouts_from_the_shared_builders():
    async with TestClient(TestServer(metadata.build_app(FakeDb(), "n1", "example.org"))) as client:
        meta = await (await client.get("/openstack/latest/meta_data.json")).json()
        assert meta["hostname"] == "vm.example.org" and meta["public_keys"] == {"k1": "ssh-ed25519 AAAA k1"}
        net = json.loads(await (await client.get("/openstack/2012-08-10/network_data.json")).text())
        assert net["networks"][0]["netmask"] == "255.0.0.0"
        assert (await client.get("/openstack/latest/user_data")).status == 404
        assert await (await client.get("/latest/meta-data/local-ipv4")).text() == "127.0.0.1"
        assert await (await client.get("/latest/meta-data/public-keys/0/openssh-key")).text() == "ssh-ed25519 AAAA k1"
        assert await (await client.get("/latest/meta-data/instance-type")).text() == "m1.tiny"
