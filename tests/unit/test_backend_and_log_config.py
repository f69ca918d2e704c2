"""The metrics-backend keys: `query_offset` (VictoriaMetrics' delay), client certificates
(mTLS), and `log_level`: each value as it loads, each bad one as the error it gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import ConfigError, Settings, load_config_data, security_warnings
from tests.support.configs import minimal


def load(**prometheus: Any) -> Settings:
    return load_config_data(minimal(prometheus={"url": "https://m:9090", **prometheus}))


def issues(**prometheus: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load(**prometheus)
    return [(i.key, i.message) for i in caught.value.issues]


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param(None, "auto", id="default-learns-it"),
    pytest.param("auto", "auto", id="auto"),
    pytest.param(" Auto", "auto", id="auto-any-case"),
    pytest.param("30s", 30.0, id="victoria-metrics-default"),
    pytest.param(0, 0.0, id="none"),
    pytest.param("1m30s", 90.0, id="go-duration"),
])
def test_query_offset(value: object, expected: object) -> None:
    settings = load() if value is None else load(query_offset=value)
    assert settings.prometheus.query_offset == expected


@pytest.mark.parametrize("value", ["soon", -5, "automatic", True], ids=str)
def test_query_offset_rejects(value: object) -> None:
    assert [k for k, _ in issues(query_offset=value)] == ["prometheus.query_offset"]


@pytest.mark.parametrize(("given", "key"), [
    pytest.param({"cert_file": "/c.pem"}, "prometheus.key_file", id="cert-without-key"),
    pytest.param({"key_file": "/k.pem"}, "prometheus.cert_file", id="key-without-cert"),
])
def test_client_certificate_needs_its_key(given: dict[str, str], key: str) -> None:
    assert issues(**given) == [(key, "cert_file and key_file go together (mutual TLS)")]


def test_client_key_readable_by_others_is_a_warning(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("cert\n")
    key.write_text("key\n")
    key.chmod(0o644)
    settings = load(cert_file=str(cert), key_file=str(key))
    assert settings.prometheus.cert_file == cert
    (warning,) = [w for w in security_warnings(settings) if str(key) in w]
    assert "key_file" in warning and "chmod 600" in warning
    key.chmod(0o600)
    assert not [w for w in security_warnings(settings) if str(key) in w]


# --------------------------------------------------------------------------- log level


@pytest.mark.parametrize(("data", "environ", "expected"), [
    pytest.param({}, {}, "INFO", id="default"),
    pytest.param({"log_level": "warning"}, {}, "WARNING", id="file-any-case"),
    pytest.param({"log_level": "ERROR"}, {"AUTOSCALER_LOG_LEVEL": "debug"}, "DEBUG",
                 id="environment-wins"),
])
def test_log_level(data: dict[str, Any], environ: dict[str, str], expected: str) -> None:
    assert load_config_data(minimal(**data), environ=environ).log_level == expected


def test_log_level_rejects_an_unknown_level() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_data(minimal(log_level="loud"), environ={})
    assert [i.key for i in caught.value.issues] == ["log_level"]


UNREACHABLE = """\
prometheus: {url: "http://127.0.0.1:9", timeout: 1s}
targets:
  - {name: t, backend: swarm, service: s, min_replicas: 1, max_replicas: 2, dry_run: true,
     policies: [{type: capacity, query: "vector(1)"}]}
"""


@pytest.mark.parametrize(("argv", "environ", "start_warning_shown"), [
    pytest.param(["run", "--once"], {}, True, id="run-default-info"),
    pytest.param(["run", "--once"], {"AUTOSCALER_LOG_LEVEL": "error"}, False,
                 id="run-AUTOSCALER_LOG_LEVEL"),
    pytest.param(["run", "--once", "--log-level", "error"], {"AUTOSCALER_LOG_LEVEL": "debug"},
                 False, id="run-flag-wins"),
    pytest.param(["explain"], {}, True, id="explain-default-warning"),
    pytest.param(["explain", "--log-level", "CRITICAL"], {}, False, id="explain-flag"),
])
def test_log_level_decides_what_the_process_logs(
        tmp_path: Path, argv: list[str], environ: dict[str, str],
        start_warning_shown: bool) -> None:
    """A WARNING the daemon always logs here (Prometheus unreachable at start) shows or not."""
    config = tmp_path / "c.yaml"
    config.write_text(UNREACHABLE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    done = subprocess.run([sys.executable, "-m", "autoscaler.cli", *argv, "--config",
                           str(config), "--timeout", "1s"], capture_output=True, text=True,
                          env={**env, "DOCKER_HOST": f"unix://{tmp_path}/no.sock", **environ},
                          timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert ("at start:" in done.stderr) is start_warning_shown, done.stderr


def test_log_level_flag_rejects_an_unknown_level() -> None:
    done = subprocess.run([sys.executable, "-m", "autoscaler.cli", "run", "--config", "x",
                           "--log-level", "loud"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2 and "--log-level" in done.stderr
