"""JSON Schemas of compute request bodies (Nova 2.1, minus what Stratus does not do: those fields are refused)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ACTION",
    "FLAVOR_CREATE",
    "FLAVOR_EXTRA_SPECS",
    "KEYPAIR_CREATE",
    "SERVER_CREATE",
    "SERVER_UPDATE",
]

# Leading/trailing whitespace is refused in code (``servers.check_name``): a pattern would make a cryptic message.
_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
_COUNT = {"type": ["integer", "string"], "pattern": r"^[0-9]+$", "minimum": 1}

_METADATA = {
    "type": "object",
    "maxProperties": 128,
    "propertyNames": {"minLength": 1, "maxLength": 255},
    "additionalProperties": {"type": "string", "maxLength": 255},
}

_NETWORK = {
    "type": "object",
    "properties": {
        "uuid": {"type": "string", "minLength": 1},
        "port": {"type": "string", "minLength": 1},
        "fixed_ip": {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
        "tag": {"type": "string"},
    },
    "additionalProperties": False,
    "anyOf": [{"required": ["uuid"]}, {"required": ["port"]}],
}

# What openstackclient sends next to imageRef: the image as the local root disk. Anything else needs volumes.
_BDM = {
    "type": "object",
    "properties": {
        "uuid": {"type": "string"},
        "boot_index": {"type": ["integer", "string", "null"]},
        "source_type": {"const": "image"},
        "destination_type": {"const": "local"},
        "delete_on_termination": {"type": ["boolean", "string"]},
    },
    "required": ["source_type"],
    "additionalProperties": False,
}

_UUID = {
    "type": "string",
    "pattern": "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$",
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
                "imageRef": {"type": "string"},
                "flavorRef": {"type": ["string", "integer"], "minLength": 1},
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
                "return_reservation_id": {"type": ["boolean", "string"]},
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
                "accessIPv4": {"type": "string", "format": "ipv4"},
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
            "properties": {"name": _NAME, "accessIPv4": {"type": "string", "format": "ipv4"}},
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}

# One key per action; the handler picks the schema of the one given.
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
                    {"type": "integer", "minimum": -1},
                    {"type": "string", "pattern": r"^-?[0-9]+$"},
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
                "ram": {"type": ["integer", "string"], "pattern": r"^[0-9]+$", "minimum": 1},
                "vcpus": {"type": ["integer", "string"], "pattern": r"^[0-9]+$", "minimum": 1},
                "disk": {"type": ["integer", "string"], "pattern": r"^[0-9]+$", "minimum": 0},
                "OS-FLV-EXT-DATA:ephemeral": {"type": ["integer", "string"], "pattern": r"^[0-9]+$", "minimum": 0},
                "swap": {"type": ["integer", "string"], "pattern": r"^[0-9]*$", "minimum": 0},
                "rxtx_factor": {"type": ["number", "string"], "exclusiveMinimum": 0},
                "os-flavor-access:is_public": {"type": ["boolean", "string"]},
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
            "additionalProperties": {"type": ["string", "number", "boolean"], "maxLength": 255},
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
                "public_key": {"type": "string", "minLength": 1},
                "type": {"enum": ["ssh"]},
            },
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}
