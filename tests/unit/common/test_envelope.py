import json

import pytest

from common import exceptions
from common.context import RequestContext
from common.rpc import envelope


def test_request_round_trip_keeps_context_and_args():
    ctx = RequestContext(user_id="u1", project_id="p1", roles=("member", "admin"))
    body, headers = envelope.encode_request("build", {"a": 1, "b": [1, 2]}, ctx, "svc@h")
    req = envelope.decode_request(body, {k: v.encode() if isinstance(v, str) else v for k, v in headers.items()})
    assert req.method == "build"
    assert req.args == {"a": 1, "b": [1, 2]}
    assert req.ctx.request_id == ctx.request_id
    assert req.ctx.project_id == "p1"
    assert req.ctx.roles == ("member", "admin")
    assert req.ctx.is_admin
    assert req.sender == "svc@h"
    assert req.sent_at is not None and req.sent_at > 0
    assert json.loads(body)["version"] == envelope.VERSION


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"method": 1, "args": {}}', b'{"method": "x"}'])
def test_malformed_bodies_are_rejected(body):
    with pytest.raises(envelope.MalformedMessage):
        envelope.decode_request(body, {})


def test_whitelisted_error_is_rebuilt_as_its_class():
    reply = envelope.encode_error(exceptions.NotFound("no such port"))
    with pytest.raises(exceptions.NotFound, match="no such port"):
        envelope.decode_reply(reply)


def test_other_errors_arrive_as_remote_error_naming_the_class():
    reply = envelope.encode_error(KeyError("x"))
    with pytest.raises(exceptions.RemoteError) as info:
        envelope.decode_reply(reply)
    assert info.value.exc_type == "KeyError"


def test_result_round_trip():
    assert envelope.decode_reply(envelope.encode_result({"x": [1]})) == {"x": [1]}


def test_requests_in_reads_one_request_or_each_of_a_batch():
    one = envelope.encode_request("build", {"n": 1}, RequestContext(request_id="r1"), "svc@h")
    two = envelope.encode_request("build", {"n": 2}, RequestContext(request_id="r2"), "svc@h")
    assert [(r.args, r.ctx.request_id) for r in envelope.requests_in(*one)] == [({"n": 1}, "r1")]
    batch = envelope.encode_batch([one, two], "svc@h")
    assert [(r.args, r.ctx.request_id) for r in envelope.requests_in(*batch)] == [({"n": 1}, "r1"), ({"n": 2}, "r2")]
