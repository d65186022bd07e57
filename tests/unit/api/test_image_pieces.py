"""Image views and the store: digests of what was received, nothing left behind by a failed upload."""

import hashlib
from datetime import UTC, datetime

import pytest

from services.api.image.store import ImageStore, digest_file, location_path
from services.api.image.views import image_view


async def _chunks(*parts, fail=False):
    for p in parts:
        yield p
    if fail:
        raise ConnectionResetError("client went away")


async def test_store_write_digests_and_atomic_file(tmp_path):
    store = ImageStore(tmp_path / "store")
    data = [b"a" * 100_000, b"", b"b" * 5]
    path, d = await store.write("img-1", _chunks(*data))
    blob = b"".join(data)
    assert path == tmp_path / "store" / "img-1"
    assert path.read_bytes() == blob
    assert d.size == len(blob)
    assert d.checksum == hashlib.md5(blob).hexdigest()
    assert (d.os_hash_algo, d.os_hash_value) == ("sha256", hashlib.sha256(blob).hexdigest())
    assert digest_file(path) == d, "bootstrap and upload compute the same digests"
    assert sorted(p.name for p in path.parent.iterdir()) == ["img-1"]


async def test_failed_upload_leaves_nothing(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(ConnectionResetError):
        await store.write("img-2", _chunks(b"partial", fail=True))
    assert list(tmp_path.iterdir()) == []


async def test_store_refuses_path_tricks_and_removes_only_its_files(tmp_path):
    store = ImageStore(tmp_path / "s")
    for bad in ("../etc", "", ".hidden"):
        with pytest.raises(ValueError):
            store.path(bad)
    outside = tmp_path / "keep.img"
    outside.write_bytes(b"x")
    await store.remove(outside)
    assert outside.exists()


def test_location_path():
    assert str(location_path("file:///var/lib/x%20y.img")) == "/var/lib/x y.img"
    assert location_path("http://example/x.img") is None
    assert location_path(None) is None


def test_image_view_flattens_properties_and_hides_location_from_members():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    row = {"id": "i", "name": "tiny", "status": "active", "visibility": "public", "protected": False,
           "checksum": "c", "os_hash_algo": "sha256", "os_hash_value": "h", "project_id": "p", "size": 3,
           "virtual_size": None, "min_ram": 0, "min_disk": 0, "disk_format": "qcow2", "container_format": "bare",
           "created_at": t, "updated_at": t, "tags": ["a"], "properties": {"hw_x": "1", "name": "shadowed"},
           "location": "file:///x"}  # fmt: skip
    view = image_view(row)
    assert view["hw_x"] == "1"
    assert view["name"] == "tiny", "core attributes win over same-named properties"
    assert view["owner"] == "p"
    assert view["self"] == "/v2/images/i" and view["file"] == "/v2/images/i/file"
    assert view["created_at"] == "2026-01-01T00:00:00Z"
    assert "direct_url" not in view
    assert image_view(row, is_admin=True)["direct_url"] == "file:///x"
