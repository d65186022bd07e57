import pytest

from common import exceptions
from services.api.compute.microversion import NotAcceptable, requested_version, version_doc


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"OpenStack-API-Version": "compute 2.1"},
        {"OpenStack-API-Version": "compute latest"},
        {"OpenStack-API-Version": "image 2.5, compute 2.1"},
        {"X-OpenStack-Nova-API-Version": "2.1"},
        {"OpenStack-API-Version": "volume 3.0"},  # not for us: the default applies
    ],
)
def test_versions_served(headers):
    assert requested_version(headers) == (2, 1)


@pytest.mark.parametrize("value", ["compute 2.37", "compute 3.0", "compute 2.0"])
def test_versions_refused_with_406(value):
    with pytest.raises(NotAcceptable) as e:
        requested_version({"OpenStack-API-Version": value})
    assert e.value.code == 406
    assert "Minimum is 2.1 and maximum is 2.1" in e.value.message


def test_malformed_version_is_400():
    with pytest.raises(exceptions.BadRequest):
        requested_version({"X-OpenStack-Nova-API-Version": "two"})


def test_version_document_for_discovery():
    doc = version_doc("http://h:1")
    assert (doc["id"], doc["version"], doc["min_version"], doc["status"]) == ("v2.1", "2.1", "2.1", "CURRENT")
    assert {"rel": "self", "href": "http://h:1/compute/v2.1/"} in doc["links"]
