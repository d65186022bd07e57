import json
from datetime import UTC, datetime
from decimal import Decimal
from ipaddress import IPv4Address

import numpy as np
import pytest

from common import jsonutils


def test_what_json_has_no_type_for_is_written_as_str_like_the_standard_library_did():
    value = {
        "at": datetime(2026, 11, 22, 6, 20, 19, 123456, tzinfo=UTC),
        "ip": IPv4Address("10.0.0.2"),
        "price": Decimal("1.50"),
        "nested": [{"when": datetime(2026, 1, 2, tzinfo=UTC)}],
        1: "int key",
    }
    assert json.loads(jsonutils.dumps(value)) == json.loads(json.dumps(value, default=str))
    assert jsonutils.loads(jsonutils.dumps(value))["at"] == "2026-11-22 06:20:19.123456+00:00"


def test_numpy_numbers_are_numbers():
    assert jsonutils.loads(jsonutils.dumps({"n": np.int64(5), "f": np.float64(0.5)})) == {"n": 5, "f": 0.5}


def test_text_for_the_database_codecs_and_bytes_or_text_back():
    text = jsonutils.dumps_str({"a": [1, "é"]})
    assert isinstance(text, str)
    assert jsonutils.loads(text) == jsonutils.loads(text.encode()) == {"a": [1, "é"]}


@pytest.mark.parametrize("bad", [b"{not json", b"\xff\xfe", ""])
def test_malformed_input_is_a_value_error(bad):
    with pytest.raises(ValueError):
        jsonutils.loads(bad)
