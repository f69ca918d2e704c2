"""Secrets in the config: a password in the URL is hidden in check-config's output, and what
weakens the secrets (readable secret files, TLS verification off, credentials over plain
HTTP) is a warning naming the file or key — never a refusal to start."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from autoscaler.cli import main
from autoscaler.config import (
    load_config_data,
    redacted_dump,
    security_warnings,
    url_without_password,
)

TARGET = {"name": "smtp", "backend": "swarm", "service": "s", "max_replicas": 3,
          "preset": "stalwart-smtp"}
K8S_TARGET = {"name": "k", "backend": "kubernetes", "namespace": "mail", "deployment": "d",
              "max_replicas": 3, "preset": "stalwart-smtp"}


@pytest.mark.parametrize(("url", "expected"), [
    ("https://prom:9090", "https://prom:9090"),
    ("https://user@prom:9090/x", "https://user@prom:9090/x"),
    ("https://user:s3cret@prom:9090", "https://user:<redacted>@prom:9090"),
    ("http://u:p%40ss@prom/path?q=1", "http://u:<redacted>@prom/path?q=1"),
    ("https://u:a@b@prom:1/", "https://u:<redacted>@prom:1/"),
])
def test_url_without_password(url: str, expected: str) -> None:
    assert url_without_password(url) == expected


def test_check_config_hides_the_password_in_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"prometheus": {"url": "https://ops:hunter2-xyz@prom:9090"},
                                "targets": [TARGET]}))
    path.chmod(0o600)
    assert main(["check-config", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "hunter2-xyz" not in out + err
    assert json.loads(out)["prometheus"]["url"] == "https://ops:<redacted>@prom:9090"
    dumped = redacted_dump(load_config_data(json.loads(path.read_text()), environ={}))
    assert "hunter2-xyz" not in json.dumps(dumped)


def secret_file(tmp_path: Path, name: str, mode: int) -> Path:
    path = tmp_path / name
    path.write_text("s3cret\n")
    path.chmod(mode)
    return path


def settings_with(prometheus: dict[str, Any], target: dict[str, Any] = TARGET) -> Any:
    return load_config_data({"prometheus": prometheus, "targets": [target]}, environ={})


CASES: list[tuple[str, Any, list[str]]] = [
    # (id, prometheus block builder(tmp_path), substrings of the expected warnings)
    ("nothing-secret", lambda t: {}, []),
    ("token-file-0600", lambda t: {"bearer_token_file": str(secret_file(t, "tok", 0o600))}, []),
    ("token-file-0644", lambda t: {"bearer_token_file": str(secret_file(t, "tok", 0o644))},
     ["tok: prometheus.bearer_token_file is readable by group or others (mode 0644)"]),
    ("token-file-0640", lambda t: {"bearer_token_file": str(secret_file(t, "tok", 0o640))},
     ["(mode 0640)"]),
    ("password-file-0604", lambda t: {"basic_auth": {
        "username": "u", "password_file": str(secret_file(t, "pw", 0o604))}},
     ["pw: prometheus.basic_auth.password_file is readable"]),
    ("missing-token-file", lambda t: {"bearer_token_file": str(t / "absent")}, []),
    ("verify-off-https", lambda t: {"url": "https://prom:9090", "verify_tls": False},
     ["prometheus.verify_tls is false: the certificate of https://prom:9090 is not checked"]),
    ("verify-off-with-ca", lambda t: {"url": "https://prom:9090", "verify_tls": False,
                                      "ca_file": str(t / "ca.pem")}, []),
    ("verify-off-http", lambda t: {"url": "http://prom:9090", "verify_tls": False}, []),
    ("header-over-http", lambda t: {"url": "http://prom.example:9090",
                                    "headers": {"X-Scope-OrgID": "x"}},
     ["credentials are sent in clear text to prom.example"]),
    ("header-over-loopback", lambda t: {"url": "http://127.0.0.1:9090",
                                        "headers": {"X-Scope-OrgID": "x"}}, []),
]


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_security_warnings(tmp_path: Path, build: Any, expected: list[str]) -> None:
    warnings = security_warnings(settings_with(build(tmp_path)), None, environ={})
    assert len(warnings) == len(expected), warnings
    for want, got in zip(expected, warnings, strict=True):
        assert want in got


@pytest.mark.parametrize(("mode", "holds_secret", "warned"), [
    (0o644, True, True), (0o600, True, False), (0o644, False, False), (0o640, True, True),
], ids=["secret-0644", "secret-0600", "no-secret-0644", "secret-0640"])
def test_the_config_file_itself_when_it_holds_a_secret(
    tmp_path: Path, mode: int, holds_secret: bool, warned: bool
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("x")
    path.chmod(mode)
    prometheus = {"headers": {"Authorization": "Bearer abc"}} if holds_secret else {}
    warnings = security_warnings(settings_with(prometheus), path, environ={})
    assert bool(warnings) is warned, warnings
    if warned:
        assert warnings[0].startswith(f"{path}: config file (holds prometheus.headers)")


@pytest.mark.parametrize(("target", "mode", "in_pod", "warned"), [
    (K8S_TARGET, 0o644, False, True),
    (K8S_TARGET, 0o600, False, False),
    (K8S_TARGET, 0o644, True, False),  # in a pod the service account is used, not the file
    (TARGET, 0o644, False, False),  # no Kubernetes in use: the file is not read
], ids=["k8s-0644", "k8s-0600", "in-pod", "swarm-only"])
def test_the_kubeconfig(tmp_path: Path, target: dict[str, Any], mode: int, in_pod: bool,
                        warned: bool) -> None:
    kubeconfig = secret_file(tmp_path, "kubeconfig", mode)
    env = {"KUBECONFIG": f"{kubeconfig}{os.pathsep}/other"}
    if in_pod:
        env["KUBERNETES_SERVICE_HOST"] = "10.0.0.1"
    warnings = security_warnings(settings_with({}, target), None, environ=env)
    assert bool(warnings) is warned, warnings
    if warned:
        assert warnings[0].startswith(f"{kubeconfig}: kubeconfig")


def test_check_config_warns_and_still_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = secret_file(tmp_path, "token", 0o644)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"prometheus": {"url": "https://prom:9090", "verify_tls": False,
                                               "bearer_token_file": str(token)},
                                "targets": [TARGET]}))
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"# {path}: valid.")
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"autoscaler: warning: {token}: prometheus.bearer_token_file")
    assert lines[1].startswith("autoscaler: warning: prometheus.verify_tls is false")
    assert "s3cret" not in out + err


@pytest.mark.parametrize(("prometheus", "refused"), [
    ({"url": "https://u:p@prom:9090"}, False),
    ({"url": "https://u:p@prom:9090", "bearer_token_file": "/t"}, True),
    ({"url": "https://u:p@prom:9090", "basic_auth": {"username": "u", "password_file": "/p"}},
     True),
    ({"url": "https://prom:9090/a@b", "bearer_token_file": "/t"}, False),  # @ in the path
    ({"url": "https://prom:9090", "bearer_token_file": "/t"}, False),
], ids=["url-only", "url-and-bearer", "url-and-basic", "at-in-path", "bearer-only"])
def test_credentials_in_the_url_exclude_other_auth(prometheus: dict[str, Any],
                                                   refused: bool) -> None:
    """requests sends the URL's user:password and silently drops the token: refuse both."""
    from autoscaler.config import ConfigError

    try:
        settings_with(prometheus)
    except ConfigError as exc:
        assert refused, exc
        assert [i.key for i in exc.issues] == ["prometheus.url"]
        assert "cannot be combined" in exc.issues[0].message
    else:
        assert not refused
