"""The one Kubernetes client layer: the actuator and the Lease elector both call through it.

Building a client (as kubectl would), one call with its own timeout, the JSON body read raw,
every failure turned into a typed error whose message names the verb and resource in RBAC's
words, and any credential scrubbed from that message: all here, once. Callers keep only what
is theirs (which fields they read, what a 404 or 409 means to them).

Bodies are read as raw JSON (`_preload_content=False`) rather than through the client's
generated models: only a handful of fields matter, and raw dicts cannot fail to deserialize on
an API server older or newer than the client. The kubernetes client has no type stubs: its
values are `Any` only inside this module and its callers' helpers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.config.incluster_config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from autoscaler.errors import ActuatorError, ConflictError, NotAllowed, TargetMissing

__all__ = ["COMPONENT", "FIELD_MANAGER", "KubeApi", "Ref", "kubernetes_api_client"]

COMPONENT = "stalwart-autoscaler"
"""Event source component and field manager: who changed an object, in its managedFields."""
FIELD_MANAGER = COMPONENT

DETAIL_LIMIT = 300  # characters of the API server's own words kept in a message


def kubernetes_api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """A client configured as kubectl would be, touching no global configuration.

    An explicit `kubeconfig` wins; in a pod (KUBERNETES_SERVICE_HOST set and the service-account
    token mounted) the in-cluster account; else KUBECONFIG or ~/.kube/config. Each actuator can
    thus talk to its own cluster, and tests can hold several clients at once.
    """
    config: Any = kubernetes.config  # its loaders are untyped
    in_cluster = kubeconfig is None and _in_cluster()
    # KUBECONFIG is read now: the client reads it once, when it is first imported.
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        if in_cluster:
            configuration = kubernetes.client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            client = kubernetes.client.ApiClient(configuration)
        else:
            client = config.new_client_from_config(config_file=where)
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError) as exc:
        source = "the in-cluster service account" if in_cluster else where
        raise ActuatorError(f"load the Kubernetes configuration from {source}: {exc}") from exc
    # One try per call: urllib3's default Retry(3) would turn one timeout into four and
    # overrun the tick; the loop (or the Lease's next round) tries again.
    no_retry = urllib3.util.Retry(total=0, redirect=0, raise_on_status=False)
    client.configuration.retries = no_retry
    client.rest_client.pool_manager.connection_pool_kw["retries"] = no_retry
    return client


def _in_cluster() -> bool:
    token: str = kubernetes.config.incluster_config.SERVICE_TOKEN_FILENAME
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.isfile(token)


@dataclass(frozen=True, slots=True)
class Ref:
    """What a call is about, as RBAC names it: one object (`name` set) or a namespace's
    collection (a list, a create of an event)."""

    resource: str  # deployments.apps, leases.coordination.k8s.io, events
    namespace: str
    name: str | None = None
    kind: str = ""  # Deployment, Lease: how a "not found" names the object

    def what(self, verb: str) -> str:
        if self.name is None:
            return f"{verb} {self.resource} in namespace {self.namespace}"
        return f"{verb} {self.resource} {self.namespace}/{self.name}"


class KubeApi:
    """Calls on one API client with one per-request timeout; thread-safe as the client is."""

    def __init__(self, api_client: Any, timeout: float) -> None:
        self.client = api_client
        self.timeout = timeout

    def call(self, verb: str, ref: Ref, fn: Callable[..., Any], *args: Any,
             **kwargs: Any) -> Any:
        """Run one API call and return its JSON body; a failure raises the error its HTTP
        status means (`api_error`), its message scrubbed of credentials.

        `verb` is RBAC's word (`get`, `patch`, `list`, `create`, `update`), so a 403 says
        exactly which rule the Role lacks.
        """
        what = ref.what(verb)
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout,
                          **kwargs)
            data = response.data
        except ApiException as exc:
            raise self.scrubbed(api_error(exc, verb, ref, self.host())) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.scrubbed(ActuatorError(self._transport_message(what, exc))) from exc
        try:
            return json.loads(data)
        except (TypeError, ValueError) as exc:  # a proxy's error page, a truncated answer
            raise self.scrubbed(
                ActuatorError(f"{what}: unexpected answer ({one_line(exc)})")) from exc

    def request(self, verb: str, ref: Ref, method: str, path: str,
                body: Any = None, content_type: str | None = None) -> Any:
        """`call` for a path the generated API classes do not cover (API discovery, any
        kind's object and /scale by its resource): the same timeout, errors and scrubbing."""
        client = self.client

        def send(*, _preload_content: bool, _request_timeout: float) -> Any:
            headers = {"Accept": "application/json"}
            if content_type is not None:
                headers["Content-Type"] = content_type
            request = client.param_serialize(method, path, header_params=headers, body=body,
                                             auth_settings=["BearerToken"])
            response = client.call_api(*request, _request_timeout=_request_timeout)
            response.read()
            if not 200 <= response.status <= 299:
                raise ApiException.from_response(http_resp=response, body=None, data=None)
            return response

        return self.call(verb, ref, send)

    def _transport_message(self, what: str, exc: BaseException) -> str:
        cause: BaseException = exc
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            cause = exc.reason  # the wrapper's text repeats the URL and the pool
        # NewConnectionError subclasses ConnectTimeoutError, yet it means "refused"
        timed_out = isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError) \
            and not isinstance(cause, urllib3.exceptions.NewConnectionError)
        if timed_out:
            return (f"{what}: the API server at {self.host()} did not answer within "
                    f"{self.timeout:g}s")
        return f"{what}: cannot reach the API server at {self.host()}: {one_line(cause)}"

    def host(self) -> str:
        return str(getattr(getattr(self.client, "configuration", None), "host", "?"))

    def scrub(self, message: str) -> str:
        """Never let a credential reach a message, whatever an error happened to echo."""
        configuration = getattr(self.client, "configuration", None)
        for value in (getattr(configuration, "api_key", None) or {}).values():
            token = str(value).removeprefix("Bearer ").strip()
            if len(token) >= 8:
                message = message.replace(token, "<redacted>")
        return message

    def scrubbed(self, error: ActuatorError) -> ActuatorError:
        error.args = (self.scrub(str(error.args[0])),)
        return error


def api_error(exc: ApiException, verb: str, ref: Ref, host: str) -> ActuatorError:
    """HTTP status → error type: 403 NotAllowed (naming the rule the Role lacks), 404 on a
    named object TargetMissing, 409 ConflictError, the rest ActuatorError with the server's
    own words (and its Retry-After, when it sends one)."""
    status = exc.status or 0
    detail = api_message(exc)
    what = ref.what(verb)
    if status == 403:
        return NotAllowed(f"forbidden: {verb} {ref.resource} in namespace {ref.namespace} — "
                          f"grant it in the Role ({detail})")
    if status == 401:
        return ActuatorError(f"{what}: unauthorized: the API server rejected the credentials "
                             f"(expired or revoked token?) ({detail})")
    if status == 404 and ref.name is not None:
        return TargetMissing(f"{what}: {ref.kind or ref.resource} {ref.namespace}/{ref.name} "
                             f"not found ({detail})")
    if status == 404:  # a collection: e.g. the namespace is gone
        return ActuatorError(f"{what}: not found ({detail})")
    if status == 409:
        return ConflictError(
            f"{what}: it changed since it was read; re-read and decide again ({detail})")
    if status == 0:  # the client's own failures (e.g. TLS) carry no HTTP status
        return ActuatorError(f"{what}: cannot reach the API server at {host}: "
                             f"{one_line(exc.reason)}")
    return ActuatorError(f"{what}: HTTP {status} {exc.reason or ''}: {detail}"
                         + retry_after(exc))


def api_message(exc: ApiException) -> str:
    """The API server's own message (a Status object's `message`), else the HTTP reason.

    Cut short: a 422 echoes the whole patched object, which belongs in no log line.
    """
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(exc.reason or f"HTTP {exc.status}")
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
            text = body
        if isinstance(parsed, dict) and parsed.get("message"):
            text = str(parsed["message"])
    text = one_line(text)
    return text if len(text) <= DETAIL_LIMIT else text[:DETAIL_LIMIT] + "…"


def retry_after(exc: ApiException) -> str:
    """The server's Retry-After (429, 503), said in the message: the loop tries again at
    its next tick, once, so an overloaded API server sees one request per interval."""
    value = (getattr(exc, "headers", None) or {}).get("Retry-After")
    return f" (Retry-After: {one_line(value)[:20]}s)" if value else ""


def one_line(value: object) -> str:
    text = str(value) or type(value).__name__
    return " ".join(text.split())
