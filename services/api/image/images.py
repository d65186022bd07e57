"""``/image/v2/images``: register, list, show, update (JSON patch), upload, download, delete."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import jsonpatch
from aiohttp import web

from common import exceptions
from common.context import RequestContext
from common.db import images as db
from services.api.app import DB, ctx, paginate
from services.api.image.store import CHUNK, ImageStore, location_path
from services.api.image.views import CORE, READ_ONLY, image_view
from services.api.shapes import INT4_MAX
from services.api.validation import json_body, shorten, validate

__all__ = [
    "IMAGE_SCHEMA",
    "PATCH_SCHEMA",
    "STORE",
    "create_image",
    "delete_image",
    "download_image",
    "list_images",
    "show_image",
    "update_image",
    "upload_image",
]

LOG = logging.getLogger(__name__)

STORE = web.AppKey("image_store", ImageStore)
MAX_LIMIT = 1000

DISK_FORMATS = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]
CONTAINER_FORMATS = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]
VISIBILITIES = ["public", "private", "shared", "community"]

_ATTRS = {
    "id": {"type": "string", "format": "uuid", "maxLength": 36},
    "name": {"type": ["string", "null"], "maxLength": 255},
    "visibility": {"enum": VISIBILITIES},
    "protected": {"type": "boolean"},
    "os_hidden": {"type": "boolean"},
    "disk_format": {"enum": [*DISK_FORMATS, None]},
    "container_format": {"enum": [*CONTAINER_FORMATS, None]},
    "min_disk": {"type": "integer", "minimum": 0, "maximum": INT4_MAX},
    "min_ram": {"type": "integer", "minimum": 0, "maximum": INT4_MAX},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}, "uniqueItems": True, "maxItems": 128},
    "owner": {"type": ["string", "null"], "maxLength": 255},
}
# A PATCH body (RFC 6902), as the route validates it; the patched image is then checked against IMAGE_SCHEMA.
_POINTER = {"type": "string", "maxLength": 1024}
PATCH_SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": 256,
    "items": {
        "type": "object",
        "required": ["op", "path"],
        "properties": {
            "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
            "path": _POINTER,
            "from": _POINTER,
        },
    },
}
# Extra properties are strings, as Glance has them.
IMAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": _ATTRS,
    "propertyNames": {"maxLength": 255},
    "additionalProperties": {"type": "string", "maxLength": 65535},
}


def _check_read_only(keys: Any, allowed: frozenset[str] = frozenset()) -> None:
    for key in keys:
        if key in READ_ONLY and key not in allowed:
            raise exceptions.Forbidden(f"Attribute '{key}' is read-only.")


def _check_visibility(c: RequestContext, visibility: str | None) -> None:
    if visibility == "public" and not c.is_admin:
        raise exceptions.Forbidden("You are not authorized to complete publicize_image action.")


async def _visible(conn: asyncpg.Connection, c: RequestContext, image_id: str) -> asyncpg.Record:
    row = await db.get(conn, image_id)
    if row is None or not (
        c.is_admin or row["visibility"] in ("public", "community") or row["project_id"] == c.project_id
    ):
        raise exceptions.NotFound(f"No image found with ID {image_id}")
    return row


async def _owned(conn: asyncpg.Connection, c: RequestContext, image_id: str, verb: str) -> asyncpg.Record:
    row = await _visible(conn, c, image_id)
    if not c.is_admin and row["project_id"] != c.project_id:
        raise exceptions.Forbidden(f"You are not permitted to {verb} image {image_id}: it belongs to another project.")
    return row


def _response(row: Mapping[str, Any], c: RequestContext, status: int = 200) -> web.Response:
    return web.json_response(image_view(row, is_admin=c.is_admin), status=status)


async def create_image(request: web.Request) -> web.Response:
    """POST /v2/images: a ``queued`` image without data. 201."""
    c = ctx(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise exceptions.BadRequest("The request body must be a JSON object describing the image.")
    _check_read_only(body, allowed=frozenset({"id", "owner"}))  # the route validated body against IMAGE_SCHEMA
    _check_visibility(c, body.get("visibility"))
    owner = body.get("owner") or c.project
    if owner != c.project_id and not c.is_admin:
        raise exceptions.Forbidden("Only an admin may create an image owned by another project.")
    image_id = body.get("id") or str(uuid.uuid4())
    try:
        uuid.UUID(image_id)
    except ValueError:
        raise exceptions.BadRequest(f"Invalid input for field/attribute id: {image_id!r} is not a UUID.") from None
    properties = {k: v for k, v in body.items() if k not in _ATTRS}
    values = {
        "id": image_id,
        "project_id": owner,
        "name": body.get("name"),
        "status": "queued",
        "visibility": body.get("visibility", "shared"),
        "protected": body.get("protected", False),
        "disk_format": body.get("disk_format"),
        "container_format": body.get("container_format"),
        "min_disk": body.get("min_disk", 0),
        "min_ram": body.get("min_ram", 0),
        "tags": body.get("tags", []),
        "properties": properties,
    }
    try:
        row = await request.app[DB].run(lambda conn: db.create(conn, values))
    except asyncpg.UniqueViolationError:
        raise exceptions.Conflict(f"An image with identifier {image_id} already exists.") from None
    LOG.info("image %s (%s) registered", row["id"], row["name"])
    return _response(row, c, status=201)


async def list_images(request: web.Request) -> web.Response:
    """GET /v2/images: public, community (when asked) and the project's own images; admins see all."""
    c = ctx(request)
    q = request.query
    limit, marker = paginate(q)
    limit = MAX_LIMIT if limit is None else min(limit, MAX_LIMIT)
    visibility = q.get("visibility")
    if visibility is not None and visibility not in (*VISIBILITIES, "all"):
        raise exceptions.BadRequest(f"Invalid visibility value: {shorten(visibility)}")

    async def work(conn: asyncpg.Connection) -> list:
        if marker is not None and await db.get(conn, marker) is None:
            raise exceptions.BadRequest(f"marker [{marker}] not found")
        return await db.list_(
            conn,
            project_id=c.scope,
            visibility=visibility,
            name=q.get("name"),
            status=q.get("status"),
            owner=q.get("owner"),
            limit=limit,
            marker=marker,
        )

    rows = await request.app[DB].run(work)
    doc: dict[str, Any] = {
        "images": [image_view(r, is_admin=c.is_admin) for r in rows],
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }
    if rows and len(rows) == limit:
        params = [(k, v) for k, v in q.items() if k not in ("marker", "limit")]
        params += [("limit", str(limit)), ("marker", rows[-1]["id"])]
        doc["next"] = f"/v2/images?{urlencode(params)}"
    return web.json_response(doc)


async def show_image(request: web.Request) -> web.Response:
    c = ctx(request)
    iid = request.match_info["image_id"]
    row = await request.app[DB].run(lambda conn: _visible(conn, c, iid))
    return _response(row, c)


def _patchable(row: Mapping[str, Any]) -> dict[str, Any]:
    doc = image_view(row)
    doc.pop("os_hidden", None)
    return doc


async def update_image(request: web.Request) -> web.Response:
    """PATCH /v2/images/{id} with ``application/openstack-images-v2.1-json-patch`` (RFC 6902 operations)."""
    c = ctx(request)
    iid = request.match_info["image_id"]
    ops = await json_body(request)
    if not isinstance(ops, list):
        raise exceptions.BadRequest("A JSON patch is a list of operations.")
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise exceptions.BadRequest(f"Invalid JSON patch operation: {shorten(op)}")
        key = op["path"].lstrip("/").split("/", 1)[0].replace("~1", "/").replace("~0", "~")
        _check_read_only([key])

    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        row = await _owned(conn, c, iid, "modify")
        before = _patchable(row)
        try:
            after = jsonpatch.apply_patch(before, ops)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise exceptions.BadRequest(f"Invalid JSON patch: {e}") from None
        changed = {k for k in set(before) | set(after) if before.get(k, KeyError) != after.get(k, KeyError)}
        _check_read_only(changed)
        for key in changed & CORE:
            if key not in after:
                raise exceptions.Forbidden(f"Attribute '{key}' is reserved and cannot be removed.")
        new = {k: v for k, v in after.items() if k in CORE or k not in READ_ONLY}
        validate(IMAGE_SCHEMA, new)
        _check_visibility(c, new.get("visibility") if "visibility" in changed else None)
        if ({"disk_format", "container_format"} & changed) and row["status"] != "queued":
            raise exceptions.Forbidden("disk_format and container_format can only be changed on a queued image.")
        values = {k: new[k] for k in changed & CORE if k != "os_hidden"}
        values["properties"] = {k: v for k, v in new.items() if k not in CORE}
        updated = await db.update(conn, iid, values)
        if updated is None:
            raise exceptions.NotFound(f"No image found with ID {iid}")
        return updated

    row = await request.app[DB].run(work)
    return _response(row, c)


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    while chunk := await request.content.read(CHUNK):
        yield chunk


async def upload_image(request: web.Request) -> web.Response:
    """PUT /v2/images/{id}/file: queued → saving → active, with size, MD5 and SHA-256 of what was received.

    Only one upload per image can run (the ``saving`` status claims it); a failed upload returns it to queued.
    """
    c = ctx(request)
    iid = request.match_info["image_id"]
    store = request.app[STORE]
    dbase = request.app[DB]

    async def claim(conn: asyncpg.Connection) -> None:
        row = await _owned(conn, c, iid, "upload data to")
        if row["status"] == "queued" and not (row["disk_format"] and row["container_format"]):
            raise exceptions.BadRequest("Properties disk_format, container_format must be set prior to saving data.")
        if row["status"] != "queued" or await db.set_status(conn, iid, "saving", expected_status="queued") is None:
            raise exceptions.Conflict(f"Image status transition from {row['status']} to saving is not allowed")

    await dbase.run(claim)
    try:
        path, digests = await store.write(iid, _body_chunks(request))
    except BaseException as e:
        LOG.warning("upload of image %s failed (%s); it is queued again", iid, e or type(e).__name__)
        await dbase.run(lambda conn: db.set_status(conn, iid, "queued", expected_status="saving"))
        if isinstance(e, OSError):  # a local disk problem, not the database's (as the middleware would assume)
            raise exceptions.ServiceUnavailable(f"Could not store the data of image {iid}: {e}") from e
        raise
    values = digests.active_values(path)
    row = await dbase.run(lambda conn: db.update(conn, iid, values, expected_status="saving"))
    if row is None:  # deleted while we were receiving
        await store.remove(path)
        raise exceptions.Conflict(f"Image {iid} was deleted during the upload.")
    LOG.info("image %s: %d bytes stored, md5 %s", iid, digests.size, digests.checksum)
    return web.Response(status=204)


async def download_image(request: web.Request) -> web.StreamResponse:
    """GET /v2/images/{id}/file: the data (204 when there is none yet); a remote location is a redirect."""
    c = ctx(request)
    iid = request.match_info["image_id"]
    row = await request.app[DB].run(lambda conn: _visible(conn, c, iid))
    if row["status"] != "active" or not row["location"]:
        return web.Response(status=204)
    path = location_path(row["location"])
    if path is None:
        return web.Response(status=302, headers={"Location": row["location"]})
    if not path.is_file():
        raise exceptions.ServiceUnavailable(f"The data of image {iid} is not on this API node ({path}).")
    headers = {"Content-Type": "application/octet-stream"}
    if row["checksum"]:
        headers["Content-MD5"] = row["checksum"]
    return web.FileResponse(path, headers=headers)


async def delete_image(request: web.Request) -> web.Response:
    """DELETE /v2/images/{id}: 204. Servers booted from it keep working (computes cache what they use)."""
    c = ctx(request)
    iid = request.match_info["image_id"]

    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        row = await _owned(conn, c, iid, "delete")
        if row["protected"]:
            raise exceptions.Forbidden(f"Image {iid} is protected and cannot be deleted.")
        await db.mark_deleted(conn, iid)
        return row

    row = await request.app[DB].run(work)
    path = location_path(row["location"])
    if path is not None:
        await request.app[STORE].remove(Path(path))
    return web.Response(status=204)
