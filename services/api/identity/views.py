"""Keystone v3 response shapes (pure functions of rows and token payloads)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from common.db.identity import DEFAULT_DOMAIN_ID, DEFAULT_DOMAIN_NAME
from services.api.auth import TokenPayload

__all__ = ["domain_view", "project_view", "role_view", "token_body", "token_time", "user_view"]

DOMAIN_REF = {"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME}


def token_time(ts: float) -> str:
    """Keystone's timestamp format: ``2015-11-07T02:58:43.000000Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token_body(
    payload: TokenPayload,
    *,
    roles: Sequence[Mapping[str, Any]],
    catalog: list[dict[str, Any]] | None,
    methods: Sequence[str],
) -> dict[str, Any]:
    """The ``{"token": ...}`` document: scoped tokens carry project, roles and catalog, unscoped ones none."""
    token: dict[str, Any] = {
        "methods": list(methods),
        "user": {
            "id": payload.user_id,
            "name": payload.user_name,
            "domain": dict(DOMAIN_REF),
            "password_expires_at": None,
        },
        "audit_ids": [payload.audit_id],
        "issued_at": token_time(payload.issued_at),
        "expires_at": token_time(payload.expires_at),
    }
    if payload.project_id is not None:
        token["project"] = {"id": payload.project_id, "name": payload.project_name, "domain": dict(DOMAIN_REF)}
        token["is_domain"] = False
        token["roles"] = [{"id": r["id"], "name": r["name"]} for r in roles]
        if catalog is not None:
            token["catalog"] = catalog
    return {"token": token}


def _links(base: str, collection: str, rid: str) -> dict[str, str]:
    return {"self": f"{base}/identity/v3/{collection}/{rid}"}


def project_view(row: Mapping[str, Any], base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "domain_id": row["domain_id"],
        "enabled": row["enabled"],
        "is_domain": False,
        "parent_id": row["domain_id"],
        "tags": [],
        "options": {},
        "links": _links(base, "projects", row["id"]),
    }


def user_view(row: Mapping[str, Any], base: str) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "name": row["name"],
        "domain_id": row["domain_id"],
        "enabled": row["enabled"],
        "password_expires_at": None,
        "options": {},
        "links": _links(base, "users", row["id"]),
    }
    if row["default_project_id"]:
        view["default_project_id"] = row["default_project_id"]
    return view


def role_view(row: Mapping[str, Any], base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "domain_id": None,
        "description": None,
        "options": {},
        "links": _links(base, "roles", row["id"]),
    }


def domain_view(base: str) -> dict[str, Any]:
    return {
        "id": DEFAULT_DOMAIN_ID,
        "name": DEFAULT_DOMAIN_NAME,
        "description": "The only domain: every project and user lives in it.",
        "enabled": True,
        "tags": [],
        "options": {},
        "links": _links(base, "domains", DEFAULT_DOMAIN_ID),
    }
