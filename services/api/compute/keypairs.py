"""``/os-keypairs``: import-only SSH key pairs (Stratus never generates or holds a private key)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions
from common.db import keypairs as db
from services.api.app import DB, ctx, paginate
from services.api.compute.views import isotime_naive
from services.api.validation import json_body

__all__ = ["KEY_TYPES", "create_keypair", "delete_keypair", "fingerprint", "list_keypairs", "show_keypair"]

KEY_TYPES = frozenset(
    {
        "ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)  # fmt: skip


def fingerprint(public_key: str) -> str:
    """The MD5 fingerprint (``aa:bb:...``) Nova shows for an OpenSSH public key. Raises ``BadRequest``."""
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise exceptions.BadRequest(
            "Keypair data is invalid: expected an OpenSSH public key line such as 'ssh-ed25519 AAAA... comment'."
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise exceptions.BadRequest("Keypair data is invalid: the key is not valid base64.") from None
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if n <= 0 or blob[4 : 4 + n] != parts[0].encode():
        raise exceptions.BadRequest(f"Keypair data is invalid: the key blob is not a {parts[0]} key.")
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _view(row: Mapping[str, Any], *, full: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": row["name"],
        "public_key": row["public_key"],
        "fingerprint": row["fingerprint"],
    }
    if full:
        view.update(
            {
                "user_id": row["user_id"],
                "id": row["id"],
                "created_at": isotime_naive(row["created_at"]),
                "deleted": False,
                "deleted_at": None,
                "updated_at": None,
            }
        )
    return view


async def create_keypair(request: web.Request) -> web.Response:
    """POST /os-keypairs: import ``public_key``. Generating keys is refused: the private key would cross the wire."""
    c = ctx(request)
    k = (await json_body(request))["keypair"]
    if "public_key" not in k:
        raise exceptions.BadRequest(
            "public_key is required: Stratus imports key pairs but does not generate them "
            "(run ssh-keygen and pass the public key)."
        )
    public_key = k["public_key"].strip()
    fp = fingerprint(public_key)
    try:
        row = await request.app[DB].run(
            lambda conn: db.create(
                conn,
                user_id=c.user_id,
                project_id=c.project,
                name=k["name"],
                public_key=public_key,
                fingerprint=fp,
                key_type=k.get("type", "ssh"),
            )
        )
    except asyncpg.UniqueViolationError:
        raise exceptions.Conflict(f"Key pair '{k['name']}' already exists.") from None
    view = _view(row, full=False)
    view["user_id"] = row["user_id"]
    return web.json_response({"keypair": view})


async def list_keypairs(request: web.Request) -> web.Response:
    c = ctx(request)
    limit, marker = paginate(request.query)
    rows = await request.app[DB].run(lambda conn: db.list_(conn, c.user_id, limit=limit, marker=marker))
    return web.json_response({"keypairs": [{"keypair": _view(r, full=False)} for r in rows]})


async def show_keypair(request: web.Request) -> web.Response:
    c = ctx(request)
    name = request.match_info["name"]
    row = await request.app[DB].run(lambda conn: db.get(conn, c.user_id, name))
    if row is None:
        raise exceptions.NotFound(f"Keypair {name} not found for user {c.user_id}")
    return web.json_response({"keypair": _view(row, full=True)})


async def delete_keypair(request: web.Request) -> web.Response:
    c = ctx(request)
    name = request.match_info["name"]
    if not await request.app[DB].run(lambda conn: db.delete(conn, c.user_id, name)):
        raise exceptions.NotFound(f"Keypair {name} not found for user {c.user_id}")
    return web.Response(status=202)
