"""Tokens, passwords, the catalog and the token document."""

import time

import jwt
import pytest

from common import exceptions
from common.config import new_conf
from common.db.identity import hash_password, verify_password
from services.api.auth import TokenSigner
from services.api.identity.catalog import build_catalog, identity_versions
from services.api.identity.views import token_body

KEY = "a-test-key-of-thirty-two-bytes-or-more"


def _issue(signer, **kw):
    args = dict(user_id="u1", user_name="alice", project_id="p1", project_name="demo", roles=["member"])
    args.update(kw)
    return signer.issue(**args)


def test_token_round_trip():
    signer = TokenSigner(KEY, 3600)
    token, issued = _issue(signer)
    p = signer.verify(token)
    assert (p.user_id, p.user_name, p.project_id, p.project_name, p.roles) == ("u1", "alice", "p1", "demo", ("member",))
    assert p.audit_id == issued.audit_id
    assert 3599 <= p.expires_at - p.issued_at <= 3601


def test_token_signed_with_another_key_is_refused():
    token, _ = _issue(TokenSigner("another-key-of-thirty-two-bytes-or-more", 3600))
    with pytest.raises(exceptions.Unauthorized):
        TokenSigner(KEY, 3600).verify(token)


def test_tampered_token_is_refused():
    signer = TokenSigner(KEY, 3600)
    token, _ = _issue(signer)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["roles"] = ["admin"]
    forged = jwt.encode(claims, "a-guessed-key-of-thirty-two-bytes-or-more", algorithm="HS256")
    with pytest.raises(exceptions.Unauthorized):
        signer.verify(forged)
    with pytest.raises(exceptions.Unauthorized):
        signer.verify("not-a-token")


def test_expired_token_says_so():
    signer = TokenSigner(KEY, 3600)
    claims = {"sub": "u1", "un": "a", "pid": None, "pn": None, "roles": [], "iat": int(time.time()) - 100,
              "exp": int(time.time()) - 10, "aud": "stratus", "jti": "x"}  # fmt: skip
    with pytest.raises(exceptions.Unauthorized, match="expired"):
        signer.verify(jwt.encode(claims, KEY, algorithm="HS256"))


def test_a_verified_token_still_expires(monkeypatch):
    """Verified tokens are remembered (no signature check per request), but never past their expiry."""
    signer = TokenSigner(KEY, 60)
    token, payload = _issue(signer)
    assert signer.verify(token).user_id == payload.user_id
    assert signer.verify(token) is signer.verify(token)  # from the cache
    later = time.time() + 120
    monkeypatch.setattr("services.api.auth.time.time", lambda: later)
    with pytest.raises(exceptions.Unauthorized, match="expired"):
        signer.verify(token)


def test_password_hash_round_trip_and_salt():
    h1, h2 = hash_password("pw"), hash_password("pw")
    assert h1 != h2, "salted"
    assert h1.startswith("scrypt$")
    assert "pw" not in h1.split("$", 4)[-1]
    assert verify_password("pw", h1)
    assert not verify_password("pW", h1)
    assert not verify_password("pw", "garbage")
    assert not verify_password("pw", "md5$1$2$3$zz$00")


def _conf():
    conf = new_conf()
    conf([], project="stratus-test", default_config_files=[])
    conf.set_override("public_endpoint", "http://lb.example:8080/", group="api")
    conf.set_override("region_name", "R1", group="api")
    return conf


def test_catalog_points_every_service_at_the_public_endpoint():
    catalog = {s["type"]: s for s in build_catalog(_conf())}
    assert set(catalog) == {"identity", "compute", "image", "network"}
    urls = {t: {e["interface"]: e["url"] for e in s["endpoints"]} for t, s in catalog.items()}
    assert urls["compute"]["public"] == "http://lb.example:8080/compute/v2.1"
    assert urls["identity"]["internal"] == "http://lb.example:8080/identity/v3"
    assert urls["image"]["admin"] == "http://lb.example:8080/image"
    assert urls["network"]["public"] == "http://lb.example:8080/network"
    assert all(e["region_id"] == "R1" for s in catalog.values() for e in s["endpoints"])
    assert build_catalog(_conf()) == build_catalog(_conf()), "every API node builds the same catalog"


def test_identity_versions_document():
    doc = identity_versions("http://h")
    (v,) = doc["versions"]["values"]
    assert v["id"].startswith("v3.") and v["status"] == "stable"
    assert v["links"][0]["href"] == "http://h/identity/v3/"


def test_token_body_scoped_and_unscoped():
    signer = TokenSigner(KEY, 60)
    _, payload = _issue(signer)
    body = token_body(payload, roles=[{"id": "r1", "name": "member"}], catalog=[{"type": "compute"}],
                      methods=["password"])["token"]  # fmt: skip
    assert body["project"] == {"id": "p1", "name": "demo", "domain": {"id": "default", "name": "Default"}}
    assert body["roles"] == [{"id": "r1", "name": "member"}]
    assert body["catalog"] == [{"type": "compute"}]
    assert body["expires_at"].endswith("Z") and body["issued_at"] < body["expires_at"]
    assert body["audit_ids"] == [payload.audit_id]
    _, unscoped = _issue(signer, project_id=None, project_name=None, roles=[])
    body = token_body(unscoped, roles=[], catalog=[], methods=["password"])["token"]
    assert "project" not in body and "catalog" not in body
