"""Namespaces of a test's own on the test environment's kube-apiserver, really deleted after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["delete_namespace", "fresh_namespace", "namespace_with_deployment"]


@contextmanager
def fresh_namespace(api: Any, prefix: str) -> Iterator[str]:
    """A namespace of a test's own (`prefix-<random>`), deleted for real afterwards."""
    import kubernetes.client as k

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    k.CoreV1Api(api).create_namespace(k.V1Namespace(metadata=k.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        delete_namespace(api, name)


@contextmanager
def namespace_with_deployment(api: Any, prefix: str, name: str = "smtp", replicas: int = 1,
                              annotations: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh namespace holding one busybox Deployment `name` (no controller runs here, so
    it never gets pods: only its spec counts); yields the namespace."""
    import kubernetes.client as k

    with fresh_namespace(api, prefix) as ns:
        k.AppsV1Api(api).create_namespaced_deployment(ns, {  # type: ignore[arg-type]
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "stalwart",
                                                           "image": "busybox:local"}]}}}})
        yield ns


def delete_namespace(api: Any, ns: str) -> None:
    """Delete what tests make in a namespace, then the namespace, clearing its `kubernetes`
    finalizer by hand: no namespace controller runs in the test environment, so without this
    the objects would stay in etcd and the namespace Terminating forever."""
    import kubernetes.client as k

    api_client = api.api_client if isinstance(api, k.CoreV1Api) else api
    core, apps = k.CoreV1Api(api_client), k.AppsV1Api(api_client)
    rbac = k.RbacAuthorizationV1Api(api_client)
    for delete in (apps.delete_collection_namespaced_deployment,
                   apps.delete_collection_namespaced_stateful_set,
                   core.delete_collection_namespaced_event,
                   core.delete_collection_namespaced_config_map,
                   core.delete_collection_namespaced_secret,
                   core.delete_collection_namespaced_service_account,
                   k.CoordinationV1Api(api_client).delete_collection_namespaced_lease,
                   k.AutoscalingV1Api(api_client)
                   .delete_collection_namespaced_horizontal_pod_autoscaler,
                   rbac.delete_collection_namespaced_role_binding,
                   rbac.delete_collection_namespaced_role):
        try:
            delete(ns)
        except k.ApiException as exc:
            if exc.status != 404:
                raise
    try:
        core.delete_namespace(ns)
        body = core.read_namespace(ns)
        body.spec = k.V1NamespaceSpec(finalizers=[])
        core.replace_namespace_finalize(ns, body)
    except k.ApiException as exc:
        if exc.status != 404:
            raise
