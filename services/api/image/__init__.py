"""Image v2 (Glance-compatible subset) under ``/image``: version list, images, their data.

Data uploaded here is stored on this API node (``<state_path>/images-store``) and registered with a ``file://``
location computes on the same machine read; see ``store``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.api.app import CONF, public
from services.api.image import images
from services.api.image.store import ImageStore

__all__ = ["add_routes"]


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
    return web.json_response(_versions(request.app[CONF].api.public_endpoint.rstrip("/")))


def add_routes(app: web.Application) -> None:
    app[images.STORE] = ImageStore(Path(app[CONF].state_path) / "images-store")
    r = app.router
    for path in ("/image", "/image/", "/image/versions"):
        r.add_get(path, versions)
    v2 = "/image/v2"
    r.add_route("GET", v2 + "/images", images.list_images)
    r.add_route("POST", v2 + "/images", images.create_image)
    r.add_route("GET", v2 + "/images/{image_id}", images.show_image)
    r.add_route("PATCH", v2 + "/images/{image_id}", images.update_image)
    r.add_route("DELETE", v2 + "/images/{image_id}", images.delete_image)
    r.add_route("PUT", v2 + "/images/{image_id}/file", images.upload_image)
    r.add_route("GET", v2 + "/images/{image_id}/file", images.download_image)
