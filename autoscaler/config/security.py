"""What must not be shown (redaction) and what weakens the secrets (warnings, not errors)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoscaler.config.models import Settings

REDACTED = "<redacted>"


def url_without_password(url: str) -> str:
    """`https://user:secret@host/` -> `https://user:<redacted>@host/` (unchanged without one)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{REDACTED}@{host}{slash}{path}"


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, with header values and a password in the URL
    hidden (they carry tokens). Secret FILES appear as their paths, never their content."""
    dumped = settings.model_dump(mode="json", by_alias=True, exclude_none=True)
    prometheus = dumped.get("prometheus", {})
    headers = prometheus.get("headers", {})
    for key in headers:
        headers[key] = REDACTED
    if "url" in prometheus:
        prometheus["url"] = url_without_password(prometheus["url"])
    return dumped


def _open_to_others(path: Path) -> int | None:
    """The file's permission bits when group or others may read it, else None (or missing)."""
    try:
        mode = path.stat().st_mode & 0o777
    except (OSError, ValueError):  # ValueError: a NUL in the path (the loader refuses one)
        return None
    return mode if mode & 0o044 else None


def kubeconfig_path(environ: Mapping[str, str]) -> Path | None:
    """The kubeconfig the Kubernetes client would read outside a pod, if any."""
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return None  # in a pod: the service account's token, mounted by the kubelet
    first = environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = Path(first) if first else Path(environ.get("HOME", "~")).expanduser() / ".kube" / \
        "config"
    return path if path.is_file() else None


def security_warnings(settings: Settings, config_path: str | Path | None = None,
                      environ: Mapping[str, str] | None = None) -> list[str]:
    """What weakens the daemon's secrets, to warn about without refusing to start: secrets
    readable by group/others (the config file when it holds some, each secret file, the
    kubeconfig), TLS verification turned off, credentials sent over plain HTTP."""
    env = os.environ if environ is None else environ
    prom = settings.prometheus
    found: list[str] = []
    inline = [key for key, present in (("prometheus.headers", bool(prom.headers)),
                                       ("prometheus.url (password)",
                                        url_without_password(prom.url) != prom.url))
              if present]
    files: list[tuple[str, Path]] = []
    if config_path is not None and inline:
        files.append((f"config file (holds {', '.join(inline)})", Path(config_path)))
    if prom.bearer_token_file is not None:
        files.append(("prometheus.bearer_token_file", prom.bearer_token_file))
    if prom.basic_auth is not None:
        files.append(("prometheus.basic_auth.password_file", prom.basic_auth.password_file))
    if prom.key_file is not None:
        files.append(("prometheus.key_file (the client certificate's key)", prom.key_file))
    if settings.leader_election.mode == "kubernetes" or any(
            t.backend == "kubernetes" for t in settings.targets):
        kubeconfig = kubeconfig_path(env)
        if kubeconfig is not None:
            files.append(("kubeconfig (holds the Kubernetes credentials)", kubeconfig))
    for what, path in files:
        mode = _open_to_others(path)
        if mode is not None:
            found.append(f"{path}: {what} is readable by group or others (mode {mode:04o}); "
                         f"chmod 600 {path}")
    if prom.url.startswith("https://") and not prom.verify_tls and prom.ca_file is None:
        found.append("prometheus.verify_tls is false: the certificate of "
                     f"{url_without_password(prom.url)} is not checked, so anyone on the path "
                     "can pose as Prometheus and read the credentials sent to it")
    credentials = inline or prom.bearer_token_file is not None or prom.basic_auth is not None
    host = prom.url.partition("://")[2].rpartition("@")[2].split("/")[0].rsplit(":", 1)[0]
    if prom.url.startswith("http://") and credentials and host not in (
            "127.0.0.1", "localhost", "[::1]"):
        found.append(f"prometheus credentials are sent in clear text to {host} (http://); "
                     "use https://")
    return found
