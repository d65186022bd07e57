"""Revocation events matched against tokens, and the request context failing closed without a project."""

from __future__ import annotations

import pytest

from common import exceptions
from common.context import RequestContext
from services.api.auth import TokenPayload, TokenSigner
from services.api.revocation import Revocations


def _token(user: str = "u1", project: str | None = "p1", issued_at: float = 100.0, audit: str = "a1") -> TokenPayload:
    return TokenPayload(user, user, project, project, ("member",), issued_at, issued_at + 3600, audit)


def test_events_match_by_audit_id_or_by_user_project_and_issue_time():
    r = Revocations(db_=None, interval=1.0)  # type: ignore[arg-type]
    r.learn([{"audit_id": None, "user_id": "u1", "project_id": "p1", "issued_before": 150.0},
             {"audit_id": "gone", "user_id": None, "project_id": None, "issued_before": 0.0},
             {"audit_id": None, "user_id": "u2", "project_id": None, "issued_before": 150.0}])  # fmt: skip
    assert r.revoked(_token())  # issued before the role went
    assert not r.revoked(_token(issued_at=150.000001))  # issued after: a new token works
    assert not r.revoked(_token(project="p2"))  # another project of the same user
    assert not r.revoked(_token(user="u3"))
    assert r.revoked(_token(user="u2", project="p9"))  # project None: every project of the user
    assert r.revoked(_token(user="u9", audit="gone"))
    assert r.count == 3


def test_context_without_a_project_fails_closed():
    unscoped = RequestContext(user_id="u1", roles=())
    with pytest.raises(exceptions.Forbidden):
        _ = unscoped.project
    with pytest.raises(exceptions.Forbidden):
        _ = unscoped.scope  # never "every project" for a caller who is not an admin
    assert RequestContext(project_id="p1", roles=("member",)).scope == "p1"
    assert RequestContext(project_id="p1", roles=("admin",)).scope is None


def test_tokens_keep_microseconds_so_a_revocation_spares_the_next_token():
    signer = TokenSigner("k" * 32, 600)
    token, payload = signer.issue(user_id="u", user_name="u", project_id="p", project_name="p", roles=[])
    assert signer.verify(token).issued_at == pytest.approx(payload.issued_at, abs=1e-6)
    assert signer.verify(token).issued_at != int(payload.issued_at)


@pytest.mark.parametrize("token", ["é" + "a" * 10, "not-a-jwt", ""])
def test_malformed_tokens_are_unauthorized(token):
    with pytest.raises(exceptions.Unauthorized):
        TokenSigner("k" * 32, 600).verify(token)
