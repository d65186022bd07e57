"""Image v2 (Glance-compatible subset) under ``/image``: version list, images, their data.

Data uploaded here is stored on this API node (``<state_path>/images-store``) and registered with a ``file://``
location computes on the same machine read; see ``store``. ``ROUTES`` is the Image part of the route table
(``services.api.routes``); errors take the ``{title: {code, message}}`` shape.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.api import routes
from services.api.app import CONF, public
from services.api.compute import NOVA_ERROR
from services.api.image import images
from services.api.image.store import ImageStore
from services.api.routes import Param, Route
from services.api.shapes import BOOL, ID, INT, LIMIT, LINKS, MARKER, STR, TEXT, arr, nullable, obj, text

__all__ = ["API", "ROUTES", "add_routes"]

API = routes.Api(
    name="image",
    prefix="/image",
    title="Image v2 (Glance); errors {title: {code, message}}",
    error_body=routes.error_body,
    error_schema=NOVA_ERROR,
)


def _versions(base: str) -> dict:
    href = f"{base}/image/v2/"
    return {
        "versions": [
            {"id": "v2.9", "status": "CURRENT", "links": [{"rel": "self", "href": href}]},
            {"id": "v2.0", "status": "SUPPORTED", "links": [{"rel": "self", "href": href}]},
        ]
    }


@public
async def versions(request: web.Request) -> web.Response:
    """The Image API versions (keystoneauth's discovery)."""
    return web.json_response(_versions(request.app[CONF].api.public_endpoint.rstrip("/")))


NSTR, NINT = nullable(STR), nullable(INT)
# Core attributes; the image's own properties (strings) sit beside them at the top level.
IMAGE = {
    **obj(
        {
            "id": STR, "name": NSTR, "status": STR, "visibility": STR, "protected": BOOL, "os_hidden": BOOL,
            "checksum": NSTR, "os_hash_algo": NSTR, "os_hash_value": NSTR, "owner": STR, "size": NINT,
            "virtual_size": NINT, "min_ram": INT, "min_disk": INT, "disk_format": NSTR, "container_format": NSTR,
            "created_at": NSTR, "updated_at": NSTR, "tags": arr(STR), "self": STR, "file": STR, "schema": STR,
            "direct_url": STR,
        },
        required=("id", "status", "visibility", "owner", "self", "file"),
    ),
}  # fmt: skip
IMAGES = obj({"images": arr(IMAGE), "first": STR, "schema": STR, "next": STR}, required=("images",))
VERSIONS = obj({"versions": arr(obj({"id": STR, "status": STR, "links": LINKS}))}, required=("versions",))
_ID = {"image_id": ID}
V2 = "/image/v2"
ROUTES: list[Route] = [
    Route("GET", "/image", versions, "Image API versions", {200: VERSIONS}),
    Route("GET", "/image/", versions, "Image API versions", {200: VERSIONS}),
    Route("GET", "/image/versions", versions, "Image API versions", {200: VERSIONS}),
    Route("GET", f"{V2}/images", images.list_images, "List images", {200: IMAGES},
          query={"limit": LIMIT, "marker": MARKER, "visibility": Param(text(16), "public, private, shared, "
                 "community or all"), "name": Param(TEXT), "status": Param(text(32)), "owner": Param(ID)}),
    Route("POST", f"{V2}/images", images.create_image, "Register an image", {201: IMAGE},
          body=images.IMAGE_SCHEMA),
    Route("GET", f"{V2}/images/{{image_id}}", images.show_image, "Show an image", {200: IMAGE}, _ID),
    Route("PATCH", f"{V2}/images/{{image_id}}", images.update_image, "Update an image (JSON patch)",
          {200: IMAGE}, _ID, body=images.PATCH_SCHEMA,
          body_media_type="application/openstack-images-v2.1-json-patch"),
    Route("DELETE", f"{V2}/images/{{image_id}}", images.delete_image, "Delete an image", {204: None}, _ID),
    Route("PUT", f"{V2}/images/{{image_id}}/file", images.upload_image, "Upload an image's data", {204: None}, _ID,
          raw_body="application/octet-stream"),
    Route("GET", f"{V2}/images/{{image_id}}/file", images.download_image, "Download an image's data",
          {200: {"type": "string", "format": "binary"}, 204: None, 302: None}, _ID,
          media={200: "application/octet-stream"}),
]  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register ``ROUTES`` and the image store they use."""
    app[images.STORE] = ImageStore(Path(app[CONF].state_path) / "images-store")
    routes.register(app, API, ROUTES)
