"""No secret ever leaves the daemon: not in its log, /metrics, /readyz, /healthz, nor in the
output of `explain`, `check-config` or `run --once`, on the happy path or on error paths.

Known secret values go where operators put them — a basic-auth password file, a bearer-token
file, custom headers, a password in the URL, the Kubernetes token in a kubeconfig — and the
real shared Prometheus sits behind an auth proxy on loopback that demands them, refuses the
first request of each connection kind (so an auth failure is in every run), and echoes back
what it was sent in its 401 body, as some proxies do. Every byte the processes print or serve
is collected and searched for each secret (and the base64 forms that go on the wire).

Also: group/other-readable secrets are warned about, naming the file, without refusing to
start; TLS is verified unless `verify_tls: false`, which is logged as a warning (a real HTTPS
endpoint with a self-signed certificate on loopback).
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.daemon import daemon, daemon_env
from tests.support.kube import namespace_with_deployment
from tests.support.loopback import answer
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
HEADER = "X-Scope-OrgID"
RUN = uuid.uuid4().hex[:10]
PASSWORD = f"pw-{RUN}-Secret"
TOKEN = f"tok-{RUN}-Secret"
HEADER_VALUE = f"hdr-{RUN}-Secret"
URL_PASSWORD = f"urlpw-{RUN}"
WRONG_PASSWORD = f"wrongpw-{RUN}"
BAD_KUBE_TOKEN = f"badkube-{RUN}-token"
USER = "ops"


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# --------------------------------------------------------------------------- auth proxy


class AuthProxy:
    """HTTP(S) on loopback in front of the real Prometheus: forwards only requests carrying
    the expected Authorization and header; refuses the first query whatever it carries
    (auth fails once), and every refusal echoes the credentials it got."""

    def __init__(self, upstream: str, authorization: str, tls: ssl.SSLContext | None = None
                 ) -> None:
        self.upstream, self.authorization = upstream, authorization
        self.refused = self.forwarded = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                got_auth = self.headers.get("Authorization", "")
                got_header = self.headers.get(HEADER, "")
                with proxy.lock:  # the first request to the API is refused (the probe too)
                    first = proxy.refused == 0 and self.path.startswith("/api/")
                ok = got_auth == proxy.authorization and got_header == HEADER_VALUE
                if first or not ok:
                    with proxy.lock:
                        proxy.refused += 1
                    body = json.dumps({"status": "error", "errorType": "unauthorized",
                                       "error": f"refused: Authorization={got_auth!r} "
                                                f"{HEADER}={got_header!r}"}).encode()
                    self._answer(401, "application/json", body)
                    return
                with proxy.lock:
                    proxy.forwarded += 1
                try:
                    upstream = requests.get(proxy.upstream + self.path, timeout=10)
                except requests.RequestException:
                    self._answer(502, "text/plain", b"upstream down")
                    return
                self._answer(upstream.status_code,
                             upstream.headers.get("Content-Type", "application/json"),
                             upstream.content)

            def _answer(self, status: int, kind: str, body: bytes) -> None:
                answer(self, status, kind, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> AuthProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


# --------------------------------------------------------------------------- helpers


def secret_file(path: Path, value: str, mode: int = 0o600) -> Path:
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def write_config(path: Path, prometheus: dict[str, Any], targets: list[dict[str, Any]],
                 mode: int = 0o600, **top: Any) -> Path:
    """A config file (mode 0600 unless said); a generous query timeout, as the tick's budget
    also bounds the Kubernetes read of a loaded machine."""
    path.write_text(yaml.safe_dump({"evaluation_interval": "1s", "prometheus": {
        "timeout": "20s", "scrape_interval": "1s", **prometheus}, "targets": targets, **top}))
    path.chmod(mode)
    return path


def policy() -> list[dict[str, Any]]:
    return [{"type": "threshold", "name": "steady", "query": "vector(50)",
             "scale_up_above": 70, "scale_down_below": 30}]


def kube_target(ns: str) -> dict[str, Any]:
    return {"name": "k", "backend": "kubernetes", "namespace": ns, "deployment": "smtp",
            "min_replicas": 1, "max_replicas": 3, "dry_run": True, "policies": policy()}


def write_kubeconfig(path: Path, realenv: RealEnv, token: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": realenv.kube_api_url,
                                               "certificate-authority":
                                                   str(realenv.kube_ca_file)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
    }))
    path.chmod(0o600)
    return path


def cli(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the command; everything it printed, with its exit code."""
    done = subprocess.run([sys.executable, "-m", "autoscaler.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def assert_no_secret(texts: dict[str, str], secrets: list[str]) -> None:
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in {where}:\n{text[-3000:]}"


@pytest.fixture(scope="module")
def deployment(realenv: RealEnv, kube_api: Any) -> Iterator[str]:
    with namespace_with_deployment(kube_api, "secrets") as ns:
        yield ns


@contextmanager
def proxied(realenv: RealEnv, authorization: str) -> Iterator[AuthProxy]:
    with AuthProxy(realenv.prometheus_url, authorization) as proxy:
        yield proxy


# --------------------------------------------------------------------------- the leak hunt


# One scenario, step by step, read top to bottom: clearer as one function.
def test_no_secret_in_any_output(realenv: RealEnv, deployment: str, tmp_path: Path) -> None:  # noqa: PLR0915
    kube_token = realenv.kube_admin_token
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", realenv, kube_token)
    env = daemon_env(KUBECONFIG=str(kubeconfig), DOCKER_HOST=realenv.docker_host)
    password_file = secret_file(tmp_path / "password", PASSWORD)
    token_file = secret_file(tmp_path / "token", TOKEN)
    secrets = [PASSWORD, basic(USER, PASSWORD), TOKEN, HEADER_VALUE, kube_token,
               URL_PASSWORD, basic(USER, URL_PASSWORD), WRONG_PASSWORD,
               basic(USER, WRONG_PASSWORD), BAD_KUBE_TOKEN]
    outputs: dict[str, str] = {}
    headers = {HEADER: HEADER_VALUE}

    # 1. The daemon with basic auth + header: auth fails once, then it reads and decides.
    with proxied(realenv, f"Basic {basic(USER, PASSWORD)}") as proxy:
        port = free_port()
        config = write_config(tmp_path / "basic.yaml", {
            "url": proxy.url, "headers": headers,
            "basic_auth": {"username": USER, "password_file": str(password_file)}},
            [kube_target(deployment)], listen=f"127.0.0.1:{port}")
        with daemon(config, env, tmp_path, port=port, label="basic") as d:
            wait_until("an ok signal through auth",
                       lambda: any(p["state"] == "ok" for r in d.decisions("k")
                                 for p in r["policies"]), 90)
            for path in ("/metrics", "/readyz", "/statusz", "/healthz"):
                response = d.get(path)
                assert response is not None
                outputs[f"daemon {path}"] = response.text
            assert d.stop() == 0
            outputs["daemon log"] = d.log_text()
        assert proxy.refused >= 1 and proxy.forwarded >= 1
        assert any("HTTP 401" in json.dumps(r) for r in d.records()), \
            "the refused first query is in the log"
        outputs["explain --json (basic)"] = cli(["explain", "--config", str(config), "--json"],
                                               env, tmp_path)
        outputs["check-config"] = cli(["check-config", str(config)], env, tmp_path)

        # Error path: the wrong password, refused every time; in the daemon and explain.
        wrong = config.with_name("wrong.yaml")
        wrong_file = secret_file(tmp_path / "wrong-password", WRONG_PASSWORD)
        write_config(wrong, {"url": proxy.url, "headers": headers,
                             "basic_auth": {"username": USER,
                                            "password_file": str(wrong_file)}},
                     [kube_target(deployment)], listen=f"127.0.0.1:{port}")
        text = cli(["explain", "--config", str(wrong)], env, tmp_path)
        assert text.startswith("exit 1") and "HTTP 401" in text, text
        outputs["explain (wrong password)"] = text
        with daemon(wrong, env, tmp_path, port=port, label="wrong") as d:
            wait_until("two decisions", lambda: len(d.decisions("k")) >= 2, 90)
            ready = d.get("/statusz")
            assert ready is not None and ready.status_code == 503
            outputs["daemon /statusz (wrong password)"] = ready.text
            outputs["daemon /readyz (wrong password)"] = (d.get("/readyz") or ready).text
            outputs["daemon /metrics (wrong password)"] = (d.get("/metrics") or ready).text
            d.stop()
            outputs["daemon log (wrong password)"] = d.log_text()
        outputs["run --once (wrong password)"] = cli(["run", "--config", str(wrong), "--once"],
                                                     env, tmp_path)

    # 2. Bearer token + header (explain, run --once); then a password in the URL.
    with proxied(realenv, f"Bearer {TOKEN}") as proxy:
        config = write_config(tmp_path / "bearer.yaml", {
            "url": proxy.url, "headers": headers, "bearer_token_file": str(token_file)},
            [kube_target(deployment)])
        outputs["run --once (bearer)"] = cli(["run", "--config", str(config), "--once"], env,
                                             tmp_path)
        outputs["explain (bearer)"] = cli(["explain", "--config", str(config)], env, tmp_path)
        assert proxy.forwarded >= 1, outputs["explain (bearer)"]
        outputs["check-config (bearer)"] = cli(["check-config", str(config), "--json"], env,
                                               tmp_path)
        assert "<redacted>" in outputs["check-config (bearer)"]
    with proxied(realenv, f"Basic {basic(USER, URL_PASSWORD)}") as proxy:
        config = write_config(tmp_path / "url.yaml", {
            "url": proxy.url.replace("://", f"://{USER}:{URL_PASSWORD}@"), "headers": headers},
            [kube_target(deployment)])
        outputs["explain (url password)"] = cli(["explain", "--config", str(config)], env,
                                                tmp_path)
        assert outputs["explain (url password)"].startswith("exit 0")
        assert proxy.forwarded >= 1
        outputs["check-config (url password)"] = cli(["check-config", str(config)], env,
                                                     tmp_path)
        assert f"{USER}:<redacted>@" in outputs["check-config (url password)"]

    # 3. Error paths without a proxy: unreachable Prometheus with a password in the URL,
    # a token file holding a line break, a missing password file, a refused Kubernetes token.
    dead = f"http://{USER}:{URL_PASSWORD}@127.0.0.1:{free_port()}"
    broken_token = secret_file(tmp_path / "broken-token", f"{TOKEN}\nsecond-line")
    bad_kubeconfig = write_kubeconfig(tmp_path / "bad-kubeconfig", realenv, BAD_KUBE_TOKEN)
    cases: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("unreachable", {"url": dead, "timeout": "3s"}, env),  # retried until the deadline
        ("broken token file", {"url": realenv.prometheus_url,
                               "bearer_token_file": str(broken_token)}, env),
        ("missing password file", {"url": realenv.prometheus_url, "basic_auth": {
            "username": USER, "password_file": str(tmp_path / "absent")}}, env),
        ("refused kube token", {"url": realenv.prometheus_url}, {
            **env, "KUBECONFIG": str(bad_kubeconfig)}),
    ]
    commands = []
    for name, prometheus, run_env in cases:
        config = write_config(tmp_path / f"{name.replace(' ', '-')}.yaml", prometheus,
                              [kube_target(deployment)])
        commands.append((f"explain ({name})", ["explain", "--config", str(config)], run_env))
    commands.append(("run --once (unreachable)", ["run", "--config",
                                                  str(tmp_path / "unreachable.yaml"), "--once"],
                     env))
    with ThreadPoolExecutor(2) as pool:
        for (name, _, _), text in zip(commands, pool.map(lambda c: cli(c[1], c[2], tmp_path),
                                                         commands), strict=True):
            assert text.startswith("exit 1"), text
            outputs[name] = text
    assert "Unauthorized" in outputs["explain (refused kube token)"] or \
        "401" in outputs["explain (refused kube token)"], outputs["explain (refused kube token)"]
    assert str(broken_token) in outputs["explain (broken token file)"]

    assert_no_secret(outputs, secrets)
    assert len(outputs) >= 18


# --------------------------------------------------------------------------- permissions


def test_readable_secret_files_are_warned_about_naming_the_file(
    realenv: RealEnv, deployment: str, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", realenv, realenv.kube_admin_token)
    kubeconfig.chmod(0o644)
    env = daemon_env(KUBECONFIG=str(kubeconfig), DOCKER_HOST=realenv.docker_host)
    token_file = secret_file(tmp_path / "token", TOKEN, mode=0o644)
    with proxied(realenv, f"Bearer {TOKEN}") as proxy:
        port = free_port()
        config = write_config(tmp_path / "open.yaml", {
            "url": proxy.url, "headers": {HEADER: HEADER_VALUE},
            "bearer_token_file": str(token_file)}, [kube_target(deployment)], mode=0o644,
            listen=f"127.0.0.1:{port}")
        checked = cli(["check-config", str(config)], env, tmp_path)
        assert checked.startswith("exit 0"), checked
        for path in (config, token_file, kubeconfig):
            assert f"autoscaler: warning: {path}: " in checked, checked
        with daemon(config, env, tmp_path, port=port, label="open") as d:
            wait_until("a decision: it started anyway", lambda: d.decisions("k"), 90)
            warnings = [r["message"] for r in d.records() if r.get("level") == "WARNING"]
            for path in (config, token_file, kubeconfig):
                assert any(w.startswith(f"{path}: ") and "readable by group or others" in w
                           for w in warnings), warnings
            assert d.alive()
    assert_no_secret({"check-config": checked}, [TOKEN, HEADER_VALUE])


# --------------------------------------------------------------------------- TLS


@pytest.mark.parametrize(("tls", "exit_code", "says", "warned"), [
    ({}, 1, "TLS certificate verification failed", False),
    ({"ca_file": "CERT"}, 0, "", False),
    ({"verify_tls": False}, 0, "", True),
], ids=["verified-by-default", "ca-file", "verify-off-warns"])
def test_tls_to_prometheus(realenv: RealEnv, deployment: str, tmp_path: Path,
                           self_signed: tuple[Path, Path], tls: dict[str, Any],
                           exit_code: int, says: str, warned: bool) -> None:
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", realenv, realenv.kube_admin_token)
    env = daemon_env(KUBECONFIG=str(kubeconfig))
    token_file = secret_file(tmp_path / "token", TOKEN)
    with AuthProxy(realenv.prometheus_url, f"Bearer {TOKEN}", tls=context) as proxy:
        proxy.refused = 1  # no refusal here: this test is about the certificate
        prometheus = {"url": proxy.url, "headers": {HEADER: HEADER_VALUE},
                      "bearer_token_file": str(token_file),
                      **{k: (str(cert) if v == "CERT" else v) for k, v in tls.items()}}
        config = write_config(tmp_path / "tls.yaml", prometheus, [kube_target(deployment)])
        text = cli(["explain", "--config", str(config)], env, tmp_path)
        checked = cli(["check-config", str(config)], env, tmp_path)
        # `run` logs the warning the same way (one process is enough to prove it).
        once = cli(["run", "--config", str(config), "--once"], env, tmp_path) if warned else ""
    assert text.startswith(f"exit {exit_code}"), text
    assert not once or once.startswith(f"exit {exit_code}"), once
    assert says in text
    if exit_code == 0:
        assert proxy.forwarded >= 1
    else:
        assert proxy.forwarded == 0, "nothing was sent over an unverified connection"
    warning = "prometheus.verify_tls is false"
    assert (warning in text) is warned and (warning in checked) is warned
    assert (warning in once) is warned
    assert "InsecureRequestWarning" not in text + once, "one warning of ours, not urllib3's"
    assert_no_secret({"explain": text, "run --once": once, "check-config": checked},
                     [TOKEN, HEADER_VALUE])
