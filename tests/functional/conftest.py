import tempfile
from pathlib import Path

import pytest

from tests.fixtures.cloud import Cloud


@pytest.fixture(scope="module")
def cloud(postgres, rabbit):
    """A private Stratus (api, scheduler, network, compute with 2 hosts on libvirt test:///default), its services
    on PostgreSQL's Unix socket as in devstack (the other clouds of the tests use TCP)."""
    with tempfile.TemporaryDirectory(prefix="stratus-cloud-") as tmp:
        c = Cloud(Path(tmp), postgres, rabbit, compute_hosts=2, database_socket=True)
        c.start()
        try:
            yield c
        finally:
            c.stop()
