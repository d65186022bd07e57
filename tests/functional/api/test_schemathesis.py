"""Schemathesis over every operation of the API's own OpenAPI document, against a real API process (with its
PostgreSQL, RabbitMQ, scheduler, network service and computes on libvirt ``test:///default``), as a member of one
project and as an admin of another: positive and negative examples, strings of any Unicode including NUL.

Every response must be below 500, have a status the document lists for the operation, and match the documented
content type and schema. The test prints the figures (requests per role, responses by status class, time).
"""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.cloud import ADMIN_PASSWORD

pytestmark = pytest.mark.functional

EXAMPLES = 8  # per operation, generation mode and role
# not_a_server_error is replaced by the count below: a 5xx fails unless the operation documents that status (the
# one that does: os-hypervisors/{id}/uptime answers 501 Not Implemented, as Nova does for a driver that cannot tell).
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
PASSWORD = "schemathesis-pw-1"
# Glance's JSON-patch media type is JSON on the wire.
schemathesis.serializer.alias("application/openstack-images-v2.1-json-patch", "application/json")


def _token(endpoint: str, user: str, password: str, project: str) -> str:
    domain = {"id": "default"}
    user_ref = {"name": user, "password": password, "domain": domain}
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user_ref}},
                     "scope": {"project": {"name": project, "domain": domain}}}}  # fmt: skip
    r = requests.post(f"{endpoint}/identity/v3/auth/tokens", json=body, timeout=30)
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def _make_user(endpoint: str, admin: str, name: str, role: str) -> None:
    """A project ``name`` and a user ``name`` holding ``role`` on it, made through the API."""
    h = {"X-Auth-Token": admin}
    project = requests.post(f"{endpoint}/identity/v3/projects", json={"project": {"name": name}}, headers=h,
                            timeout=30).json()["project"]  # fmt: skip
    user = requests.post(f"{endpoint}/identity/v3/users", json={"user": {"name": name, "password": PASSWORD,
                         "default_project_id": project["id"]}}, headers=h, timeout=30).json()["user"]  # fmt: skip
    roles = requests.get(f"{endpoint}/identity/v3/roles", params={"name": role}, headers=h, timeout=30).json()
    path = f"/identity/v3/projects/{project['id']}/users/{user['id']}/roles/{roles['roles'][0]['id']}"
    assert requests.put(endpoint + path, headers=h, timeout=30).status_code == 204


def test_every_operation_as_member_and_admin(cloud):
    endpoint = cloud.endpoint
    admin = _token(endpoint, "admin", ADMIN_PASSWORD, "admin")
    _make_user(endpoint, admin, "st-member", "member")
    _make_user(endpoint, admin, "st-admin", "admin")
    tokens = {
        "member": _token(endpoint, "st-member", PASSWORD, "st-member"),
        "admin": _token(endpoint, "st-admin", PASSWORD, "st-admin"),
    }
    document = requests.get(f"{endpoint}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    # Hostile strings on (they are schemathesis' defaults; said here so a change of default cannot turn them off).
    schema.config.generation.update(allow_x00=True, codec="utf-8", with_security_parameters=False)

    sent: collections.Counter[str] = collections.Counter()
    classes: dict[str, collections.Counter[str]] = {role: collections.Counter() for role in tokens}
    failures: dict[tuple[str, str], list[Any]] = {}  # (operation, first line of the failure) -> [count, text]
    session = requests.Session()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    for role, token in tokens.items():
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, role, token, endpoint, session, sent, classes[role], failures)
    elapsed = time.monotonic() - started

    leftovers = cloud.query("SELECT id, vm_state FROM instances WHERE deleted_at IS NULL")
    for row in leftovers:  # nothing the fuzzing booted may outlive the test
        requests.delete(f"{endpoint}/compute/v2.1/servers/{row['id']}", headers={"X-Auth-Token": admin}, timeout=30)
    metrics = requests.get(f"{endpoint}/metrics", timeout=30).text
    data_errors = [line for line in metrics.splitlines() if line.startswith("stratus_api_data_errors_total{")]

    print(f"\nschemathesis: {len(operations)} operations, {EXAMPLES} examples per operation, mode and role, "
          f"{elapsed:.1f}s")  # fmt: skip
    for role in tokens:
        by_class = {k: v for k, v in sorted(classes[role].items()) if k != "5xx undocumented"}
        print(f"  {role}: {sent[role]} requests; by status class: {by_class}; 5xx the document does not list: "
              f"{classes[role]['5xx undocumented']}")  # fmt: skip
    print(f"  servers left by the fuzzing (deleted): {len(leftovers)}; database data errors: {data_errors or 0}")
    for (label, _), (count, text) in list(failures.items())[:30]:
        print(f"  FAILURE x{count} {label}: {text}")
    undocumented_5xx = sum(c["5xx undocumented"] for c in classes.values())
    assert undocumented_5xx == 0, "responses >= 500 the document does not list"
    assert failures == {}
    assert not data_errors, data_errors


def _fuzz(operation: Any, mode: GenerationMode, role: str, token: str, endpoint: str, session: requests.Session,
          sent: collections.Counter, classes: collections.Counter, failures: dict) -> None:  # fmt: skip
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception as e:  # an operation schemathesis cannot generate for in this mode is a failure of the test
        failures[(operation.label, "cannot generate")] = [1, f"{mode.value}: {e}"]
        return
    documented = set(operation.definition.raw.get("responses", {}))

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=True)  # fmt: skip
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=endpoint, session=session, headers={"X-Auth-Token": token}, timeout=30)
        sent[role] += 1
        classes[f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500 and str(response.status_code) not in documented:
            classes["5xx undocumented"] += 1
            _record(failures, operation.label, f"{response.status_code} undocumented", f"{role} {mode.value}: "
                    f"{case.as_curl_command()} -> {response.status_code} {response.text[:300]}")  # fmt: skip
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as e:  # schemathesis' FailureGroup: every check that failed
            lines = [line for line in str(e).splitlines() if line.strip()]
            _record(failures, operation.label, lines[1] if len(lines) > 1 else lines[0],
                    f"{role} {mode.value} -> {response.status_code}: " + " | ".join(lines[:14])[:1500])  # fmt: skip

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # An operation with nothing to get wrong (no parameter, no body) has no negative example.


def _record(failures: dict, label: str, kind: str, text: str) -> None:
    entry = failures.setdefault((label, kind), [0, text])
    entry[0] += 1


def test_an_aggregate_ratio_beyond_its_bound_is_refused(cloud):
    """Item 9: allocation-ratio overrides are finite numbers in (0, 1000]; the claim statement casts them to real,
    so 1e308 would fail every claim on the aggregate's hosts (this cloud's schedulers get the change announced)."""
    h = {"X-Auth-Token": _token(cloud.endpoint, "admin", ADMIN_PASSWORD, "admin")}
    base = f"{cloud.endpoint}/compute/v2.1/os-aggregates"
    r = requests.post(base, json={"aggregate": {"name": "ratio-bounds"}}, headers=h, timeout=30)
    assert r.status_code == 200, r.text
    agg = r.json()["aggregate"]["id"]
    try:
        for value in (1e308, "1e308", "inf", "nan", -1, 0, "1001"):
            body = {"set_metadata": {"metadata": {"cpu_allocation_ratio": value}}}
            r = requests.post(f"{base}/{agg}/action", json=body, headers=h, timeout=30)
            assert r.status_code == 400, (value, r.text)
            message = r.json()["badRequest"]["message"]
            assert "cpu_allocation_ratio" in message and "(0, 1000]" in message, message
        body = {"set_metadata": {"metadata": {"ram_allocation_ratio": "1.5"}}}
        r = requests.post(f"{base}/{agg}/action", json=body, headers=h, timeout=30)
        assert r.status_code == 200 and r.json()["aggregate"]["metadata"]["ram_allocation_ratio"] == "1.5"
    finally:
        requests.delete(f"{base}/{agg}", headers=h, timeout=30)
