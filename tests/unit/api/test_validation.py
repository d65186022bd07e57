"""Body validation: jsonschema-rs decides what is valid, jsonschema names the field of what is not, and the
validators compiled for schemas built per request neither pile up nor get mixed up."""

from __future__ import annotations

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import exceptions
from services.api import validation
from services.api.compute import schemas
from services.api.validation import validate

IMG = "0b2c1b6e-4bb1-4c69-bd0d-7f2a3e9a3c11"

# Server create bodies mixing what is valid with what is not: names of every length, counts as numbers and
# strings, networks in each of their shapes, hints, metadata, and values of the wrong type everywhere.
scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=False), st.text(max_size=4))
network = st.one_of(
    st.sampled_from(["auto", "none", "some"]),
    st.lists(
        st.dictionaries(
            st.sampled_from(["uuid", "port", "fixed_ip", "tag", "other"]),
            st.one_of(st.text(max_size=3), scalar),
            max_size=3,
        ),
        max_size=2,
    ),
)
server = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=3), scalar), "flavorRef": st.one_of(st.just("1"), scalar)},
    optional={
        "imageRef": st.one_of(st.just(IMG), scalar),
        "networks": network,
        "min_count": st.one_of(st.integers(-1, 3), st.sampled_from(["2", "x", "1\n"])),
        "metadata": st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=3), scalar), max_size=2),
        "os:scheduler_hints": st.dictionaries(
            st.sampled_from(["group", "same_host", "zone"]), st.one_of(st.just(IMG), scalar), max_size=2
        ),
        "extra": scalar,
    },
)


# And bodies that are valid but for one value at most, so both verdicts come up often.
good_server = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8), "flavorRef": st.sampled_from(["1", 2])},
    optional={
        "imageRef": st.just(IMG),
        "networks": st.one_of(
            st.sampled_from(["auto", "none"]),
            st.lists(st.fixed_dictionaries({"uuid": st.just(IMG)}, optional={"fixed_ip": st.text(max_size=8)})),
        ),
        "min_count": st.one_of(st.integers(0, 3), st.sampled_from(["2", "1\n", "x"])),
        "metadata": st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=3), st.integers()), max_size=2),
    },
)


@settings(max_examples=400, deadline=None)
@given(
    body=st.one_of(st.fixed_dictionaries({"server": good_server}), st.fixed_dictionaries({"server": server}), scalar)
)
def test_the_verdict_is_jsonschemas(body):
    expected = jsonschema.Draft202012Validator(schemas.SERVER_CREATE).is_valid(body)
    try:
        validate(schemas.SERVER_CREATE, body)
        valid = True
    except exceptions.BadRequest as e:
        valid = False
        assert e.message.startswith("Invalid input for field/attribute ")
    assert valid == expected


def test_a_body_only_jsonschema_accepts_is_accepted():
    # Python's "$" matches before a final newline; Rust's regex does not, so the fast check refuses this one and
    # jsonschema, which decides, accepts it (as it did before the fast check).
    validate({"type": "string", "pattern": "^[0-9]+$"}, "12\n")
    with pytest.raises(exceptions.BadRequest, match="does not match"):
        validate({"type": "string", "pattern": "^[0-9]+$"}, "12x")


def test_the_message_names_the_field():
    body = {"server": {"name": "vm", "flavorRef": "1", "imageRef": IMG, "networks": [{"uuid": 7}]}}
    with pytest.raises(exceptions.BadRequest) as e:
        validate(schemas.SERVER_CREATE, body)
    assert e.value.message.startswith("Invalid input for field/attribute server/networks")


def test_schemas_built_per_request_are_bounded_and_never_mixed_up():
    for i in range(3 * validation._BY_ID_MAX):
        schema = {"type": "object", "properties": {f"m{i % 7}": {"type": "integer", "maximum": i}}}
        validate(schema, {f"m{i % 7}": i})
        with pytest.raises(exceptions.BadRequest):
            validate(schema, {f"m{i % 7}": i + 1})
    assert len(validation._by_id) <= validation._BY_ID_MAX
    assert validation._compiled.cache_info().currsize <= validation._BY_ID_MAX
    # The same schema built again (a new dict) is found by its text, not compiled again.
    last = 3 * validation._BY_ID_MAX - 1
    hits = validation._compiled.cache_info().hits
    validate({"type": "object", "properties": {f"m{last % 7}": {"type": "integer", "maximum": last}}}, {})
    assert validation._compiled.cache_info().hits == hits + 1


def test_the_message_states_the_limit_and_cuts_the_value():
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 255}}}
    with pytest.raises(exceptions.BadRequest) as e:
        validate(schema, {"name": "x" * 1_000_000})
    assert "(maxLength 255)" in e.value.message and "1000000 characters" in e.value.message
    assert len(e.value.message) < validation.ECHO_LIMIT + 200


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"[" * 40 + b"]" * 40, "nested deeper than 32"),
        (b"[" * 5000 + b"]" * 5000, "nested deeper than 32"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogates"),
        (b'{"a": "\xed\xa0\x80"}', "lone UTF-16 surrogates"),
        (b'{"a": {"b": ["x", "y\\u0000"]}}', "a/b/1: NUL characters"),
        (b'{"a\\u0000": 1}', "a key holds a NUL"),
        (b'{"a": NaN}', "Malformed request body"),
        (b'{"a": 1e999}', "Malformed request body"),
        (b"", "empty"),
    ],
)
def test_parse_body_refuses_what_no_column_holds(raw, needle):
    with pytest.raises(exceptions.BadRequest) as e:
        validation.parse_body(raw)
    assert needle in e.value.message


def test_parse_body_takes_an_escaped_backslash_before_u0000_as_text():
    # "\\u0000" is a backslash then "u0000": no NUL, so the walk finds nothing and the body is accepted.
    assert validation.parse_body(b'{"a": "\\\\u0000"}') == {"a": "\\u0000"}
