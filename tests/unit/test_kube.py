"""The Kubernetes client layer's error mapping and scrubbing, as tables (the calls themselves
run against the real kube-apiserver in tests/integration/test_kubernetes_actuator.py and
test_lease_failover.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from autoscaler.errors import ActuatorError, ConflictError, NotAllowed, TargetMissing
from autoscaler.kube import KubeApi, Ref, api_error

DEPLOYMENT = Ref("deployments.apps", "mail", "smtp", "Deployment")
LEASE = Ref("leases.coordination.k8s.io", "mail", "autoscaler", "Lease")
HPAS = Ref("horizontalpodautoscalers.autoscaling", "mail")
TOKEN = "s3cr3t-token-value"


def status_error(status: int, reason: str = "", message: str = "",
                 headers: dict[str, str] | None = None) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "message": message}) if message else None
    exc.headers = headers
    return exc


# The bare statuses, as several calls meet them.
FORBIDDEN = status_error(403, "Forbidden")
NOT_FOUND = status_error(404, "Not Found")
CONFLICT = status_error(409, "Conflict")


@pytest.mark.parametrize(("verb", "ref", "exc", "kind", "text"), [
    ("patch", DEPLOYMENT, status_error(403, "Forbidden", "no"), NotAllowed,
     "forbidden: patch deployments.apps in namespace mail — grant it in the Role (no)"),
    ("update", LEASE, FORBIDDEN, NotAllowed,
     "forbidden: update leases.coordination.k8s.io in namespace mail — grant it in the Role"),
    ("get", DEPLOYMENT, status_error(401, "Unauthorized"), ActuatorError,
     "get deployments.apps mail/smtp: unauthorized"),
    ("get", DEPLOYMENT, status_error(404, "Not Found", "gone"), TargetMissing,
     "get deployments.apps mail/smtp: Deployment mail/smtp not found (gone)"),
    ("get", LEASE, NOT_FOUND, TargetMissing,
     "get leases.coordination.k8s.io mail/autoscaler: Lease mail/autoscaler not found"),
    ("list", HPAS, NOT_FOUND, ActuatorError,
     "list horizontalpodautoscalers.autoscaling in namespace mail: not found"),
    ("patch", DEPLOYMENT, CONFLICT, ConflictError,
     "patch deployments.apps mail/smtp: it changed since it was read"),
    ("create", LEASE, status_error(409, "AlreadyExists"), ConflictError,
     "create leases.coordination.k8s.io mail/autoscaler: it changed since it was read"),
    ("get", DEPLOYMENT, status_error(0, "SSL: CERTIFICATE_VERIFY_FAILED"), ActuatorError,
     "cannot reach the API server at https://k8s: SSL: CERTIFICATE_VERIFY_FAILED"),
    ("get", DEPLOYMENT, status_error(429, "Too Many Requests", "slow down",
                                     {"Retry-After": "3"}), ActuatorError,
     "HTTP 429 Too Many Requests: slow down (Retry-After: 3s)"),
    ("patch", DEPLOYMENT, status_error(422, "Unprocessable", "x" * 1000), ActuatorError,
     "HTTP 422 Unprocessable: " + "x" * 300 + "…"),
], ids=["403-workload", "403-lease", "401", "404-workload", "404-lease", "404-collection",
        "409", "409-create", "no-status", "429-retry-after", "422-cut-short"])
def test_http_status_maps_to_one_error_type(verb: str, ref: Ref, exc: ApiException,
                                            kind: type[ActuatorError], text: str) -> None:
    error = api_error(exc, verb, ref, "https://k8s")
    assert type(error) is kind
    assert text in str(error)


@dataclass
class _Configuration:
    host: str = "https://k8s"
    api_key: dict[str, str] = field(default_factory=lambda: {"authorization": f"Bearer {TOKEN}"})


@dataclass
class _Client:
    configuration: _Configuration = field(default_factory=_Configuration)


@pytest.mark.parametrize("failure", [
    ApiException(status=500, reason=f"echoed {TOKEN}"),
    ApiException(status=403, reason=f"Forbidden for {TOKEN}"),
    ConnectionRefusedError(f"refused, token {TOKEN}"),
], ids=["http-500", "http-403", "transport"])
def test_no_credential_reaches_an_error_message(failure: Exception) -> None:
    def call(**_: Any) -> Any:
        raise failure

    with pytest.raises(ActuatorError) as info:
        KubeApi(_Client(), timeout=1.0).call("get", DEPLOYMENT, call)
    assert TOKEN not in str(info.value) and "<redacted>" in str(info.value)


def test_an_answer_that_is_not_json_is_an_error_naming_the_call() -> None:
    @dataclass
    class _Response:
        data: bytes = b"<html>proxy error</html>"

    with pytest.raises(ActuatorError, match=r"get deployments\.apps mail/smtp: unexpected answer"):
        KubeApi(_Client(), timeout=1.0).call("get", DEPLOYMENT, lambda **_: _Response())
