"""JSON Schemas of compute request bodies (Nova 2.1, minus what Stratus does not do: those fields are refused)."""

from __future__ import annotations

from typing import Any

from services.api.shapes import FLOAT4_MAX, INT4_MAX, INT8_MAX

__all__ = [
    "ACTION",
    "ACTION_BODY",
    "FLAVOR_CREATE",
    "FLAVOR_EXTRA_SPECS",
    "KEYPAIR_CREATE",
    "SERVER_CREATE",
    "SERVER_UPDATE",
]

# Leading/trailing whitespace is refused in code (``servers.check_name``): a pattern would make a cryptic message.
_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
# Counts are checked against [api] max_servers_per_request by the handler; these bounds keep int() cheap.
_COUNT = {"type": ["integer", "string"], "pattern": r"^[0-9]+$", "maxLength": 10, "minimum": 1, "maximum": INT4_MAX}

_METADATA = {
    "type": "object",
    "maxProperties": 128,
    "propertyNames": {"minLength": 1, "maxLength": 255},
    "additionalProperties": {"type": "string", "maxLength": 255},
}

_NETWORK = {
    "type": "object",
    "properties": {
        "uuid": {"type": "string", "minLength": 1, "maxLength": 255},
        "port": {"type": "string", "minLength": 1, "maxLength": 255},
        "fixed_ip": {"type": "string", "maxLength": 64, "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
        "tag": {"type": "string", "maxLength": 60},
    },
    "additionalProperties": False,
    "anyOf": [{"required": ["uuid"]}, {"required": ["port"]}],
}

# What openstackclient sends next to imageRef: the image as the local root disk. Anything else needs volumes.
_BDM = {
    "type": "object",
    "properties": {
        "uuid": {"type": "string", "maxLength": 255},
        "boot_index": {"type": ["integer", "string", "null"], "maxLength": 10, "minimum": -1, "maximum": INT4_MAX},
        "source_type": {"const": "image"},
        "destination_type": {"const": "local"},
        "delete_on_termination": {"type": ["boolean", "string"], "maxLength": 5},
    },
    "required": ["source_type"],
    "additionalProperties": False,
}

_UUID = {
    "type": "string",
    "pattern": "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$",
    "maxLength": 36,
}
_INSTANCE_IDS = {"oneOf": [_UUID, {"type": "array", "items": _UUID, "minItems": 1, "maxItems": 100}]}
# The hints Stratus' filters read; anything else is refused rather than silently ignored.
_SCHEDULER_HINTS = {
    "type": "object",
    "properties": {
        "group": _UUID,
        "same_host": _INSTANCE_IDS,
        "different_host": _INSTANCE_IDS,
    },
    "additionalProperties": False,
}

SERVER_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["server"],
    "properties": {
        "server": {
            "type": "object",
            "required": ["name", "flavorRef"],
            "properties": {
                "name": _NAME,
                "imageRef": {"type": "string", "maxLength": 1024},
                "flavorRef": {
                    "type": ["string", "integer"],
                    "minLength": 1,
                    "maxLength": 1024,
                    "minimum": 0,
                    "maximum": INT8_MAX,
                },
                "networks": {
                    "oneOf": [
                        {"type": "string", "enum": ["auto", "none"]},
                        {"type": "array", "items": _NETWORK},
                    ]
                },
                "key_name": {"type": "string", "minLength": 1, "maxLength": 255},
                "user_data": {"type": "string", "maxLength": 65535},
                "metadata": _METADATA,
                "availability_zone": {"type": "string", "minLength": 1, "maxLength": 255},
                "min_count": _COUNT,
                "max_count": _COUNT,
                "return_reservation_id": {"type": ["boolean", "string"], "maxLength": 5},
                "security_groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"const": "default"}},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                },
                "block_device_mapping_v2": {"type": "array", "items": _BDM, "maxItems": 1},
                "OS-DCF:diskConfig": {"enum": ["AUTO", "MANUAL"]},
                "accessIPv4": {"type": "string", "format": "ipv4", "maxLength": 64},
                # Nova's boolean_param: a JSON boolean or its string spellings; "" and null mean no drive.
                "config_drive": {"enum": [True, False, "true", "True", "false", "False", "", None]},
            },
            "additionalProperties": False,
        },
        "os:scheduler_hints": _SCHEDULER_HINTS,
        "OS-SCH-HNT:scheduler_hints": _SCHEDULER_HINTS,
    },
    "additionalProperties": False,
}

SERVER_UPDATE: dict[str, Any] = {
    "type": "object",
    "required": ["server"],
    "properties": {
        "server": {
            "type": "object",
            "properties": {"name": _NAME, "accessIPv4": {"type": "string", "format": "ipv4", "maxLength": 64}},
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}


def _int4(minimum: int) -> dict[str, Any]:
    """An ``integer`` column's value, as a JSON integer or a string of digits (the handler bounds a string's
    value: a pattern cannot)."""
    return {"type": ["integer", "string"], "pattern": r"^[0-9]+$", "maxLength": 10, "minimum": minimum,
            "maximum": INT4_MAX}  # fmt: skip


# One key per action: ACTION_BODY, the route's schema, is an object with exactly one of these keys.
ACTION: dict[str, dict[str, Any]] = {
    "os-stop": {"type": "null"},
    "os-start": {"type": "null"},
    "reboot": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": ["SOFT", "HARD", "soft", "hard"]}},
        "additionalProperties": False,
    },
    "os-getConsoleOutput": {
        "type": "object",
        "properties": {
            "length": {
                "oneOf": [
                    {"type": "integer", "minimum": -1, "maximum": INT4_MAX},
                    {"type": "string", "pattern": r"^-?[0-9]+$", "maxLength": 10},
                    {"type": "null"},
                ]
            }
        },
        "additionalProperties": False,
    },
}

FLAVOR_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["flavor"],
    "properties": {
        "flavor": {
            "type": "object",
            "required": ["name", "ram", "vcpus", "disk"],
            "properties": {
                "name": _NAME,
                "id": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": r"^(?! )[a-zA-Z0-9. _-]+(?<! )$",
                },
                "ram": _int4(1),
                "vcpus": _int4(1),
                "disk": _int4(0),
                "OS-FLV-EXT-DATA:ephemeral": _int4(0),
                "swap": {**_int4(0), "pattern": r"^[0-9]*$"},
                # A ``real`` column: finite, at most FLOAT4_MAX (a string is checked by the handler).
                "rxtx_factor": {
                    "type": ["number", "string"],
                    "exclusiveMinimum": 0,
                    "maximum": FLOAT4_MAX,
                    "maxLength": 32,
                    "pattern": r"^[0-9]*\.?[0-9]+([eE][-+]?[0-9]{1,2})?$",
                },
                "os-flavor-access:is_public": {"type": ["boolean", "string"], "maxLength": 5},
                "description": {"type": ["string", "null"], "maxLength": 65535},
            },
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}

FLAVOR_EXTRA_SPECS: dict[str, Any] = {
    "type": "object",
    "required": ["extra_specs"],
    "properties": {
        "extra_specs": {
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 255, "pattern": r"^[a-zA-Z0-9-_:. ]+$"},
            "additionalProperties": {
                "type": ["string", "number", "boolean"],
                "maxLength": 255,
                "$comment": "stored as text",
            },
        }
    },
    "additionalProperties": False,
}

KEYPAIR_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["keypair"],
    "properties": {
        "keypair": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[a-zA-Z0-9 _.@-]+$"},
                "public_key": {"type": "string", "minLength": 1, "maxLength": 16384},
                "type": {"enum": ["ssh"]},
            },
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}

ACTION_BODY: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "properties": ACTION,
    "additionalProperties": False,
}
