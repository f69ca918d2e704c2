"""`autoscaler import`: a HorizontalPodAutoscaler or a KEDA ScaledObject as a target config.

Operators arrive with an HPA (autoscaling/v2 or v2beta2; v1's one CPU number too) or a KEDA
ScaledObject. What has an equivalent here is converted, the rest is listed, never dropped
silently:
- `scaleTargetRef` → a kubernetes target in the object's namespace: `deployment`/`statefulset`
  for apps/v1 Deployments and StatefulSets, `scale_target_ref` for any other kind (Argo
  Rollouts, a custom resource with a scale subresource), which needs its apiVersion;
- min/max replicas as they are (KEDA's scale to zero has no equivalent: min 1);
- `behavior` (HPA `spec.behavior`, KEDA `advanced.horizontalPodAutoscalerConfig.behavior`)
  copied as written: the engine applies it as the HPA does;
- Resource `Utilization` (cpu, memory; KEDA `cpu`/`memory` triggers) → `target_value` on the
  cAdvisor usage relative to the pods' requests (kube-state-metrics'
  `kube_pod_container_resource_requests`), which is what the HPA computes;
- KEDA `prometheus` triggers → a policy on the same query: `AverageValue` (KEDA's default)
  is `capacity` with `per_instance` = threshold and no headroom (ceil(value / threshold), the
  HPA's rule for an average value), `Value` is `target_value`;
- KEDA `cron` triggers → `schedule` windows (start, the span to end, desiredReplicas, zone);
- KEDA `fallback` → `on_metric_error: fallback` with its replicas;
- KEDA's `autoscaling.keda.sh/paused-replicas` / `paused` annotations → a note naming the
  equivalent annotation to put on the workload (the pause lives on the target here).

Pure: documents in, a config mapping and the notes out (the CLI reads and prints).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Imported", "ManifestError", "import_documents"]

HPA_KINDS = {"HorizontalPodAutoscaler"}
HPA_VERSIONS = {"autoscaling/v1", "autoscaling/v2", "autoscaling/v2beta2", "autoscaling/v2beta1"}
KEDA_VERSIONS = {"keda.sh/v1alpha1"}
WORKLOAD_KEYS = {"Deployment": "deployment", "StatefulSet": "statefulset"}
KEDA_DEFAULT_MAX = 100  # KEDA's maxReplicaCount when omitted
# A crontab field that is one number.
_NUMBER = re.compile(r"\d+")


class ManifestError(ValueError):
    """The file holds nothing this command can convert (named in the message)."""


@dataclass
class Imported:
    """The converted config (a mapping `check-config` accepts) and what was not converted."""

    config: dict[str, Any]
    sources: list[str] = field(default_factory=list)
    not_converted: list[str] = field(default_factory=list)


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is an object, else an empty one (a manifest may hold anything)."""
    return value if isinstance(value, Mapping) else {}


def pod_selector(namespace: str, kind: str, name: str) -> str:
    """The PromQL matchers for a workload's pods: a Deployment's pods are
    <name>-<replicaset hash>-<5 chars>, a StatefulSet's <name>-<ordinal>, any other kind's
    <name>-<anything>."""
    if kind == "StatefulSet":
        pods = f"{name}-[0-9]+"
    elif kind == "Deployment":
        pods = f"{name}-[a-z0-9]+-[a-z0-9]{{5}}"
    else:
        pods = f"{name}-.+"
    return f'namespace="{namespace}",pod=~"{pods}"'


def utilization_query(resource: str, selector: str) -> str:
    """The HPA's utilization: the pods' usage as % of their requests (summed, as the HPA
    averages over pods weighted by request)."""
    containers = f'{selector},container!="",container!="POD"'
    requests = f'kube_pod_container_resource_requests{{{selector},resource="{resource}"}}'
    if resource == "cpu":
        usage = f"sum(rate(container_cpu_usage_seconds_total{{{containers}}}[1m]))"
    else:
        usage = f"sum(container_memory_working_set_bytes{{{containers}}})"
    return f"{usage} / sum({requests}) * 100"


def import_documents(documents: Iterable[Any]) -> Imported:
    """Every HPA and ScaledObject among `documents` as one config; raises ManifestError when
    there is none."""
    out = Imported({"dry_run": True, "targets": []})
    intervals: list[float] = []
    servers: list[str] = []
    for n, doc in enumerate(documents, 1):
        if not isinstance(doc, Mapping):
            if doc is not None:
                out.not_converted.append(f"document {n}: not an object")
            continue
        kind, version = doc.get("kind"), doc.get("apiVersion")
        meta = _mapping(doc.get("metadata"))
        name = str(meta.get("name") or f"document-{n}")
        namespace = str(meta.get("namespace") or "default")
        where = f"{kind} {namespace}/{name}"
        spec = _mapping(doc.get("spec"))
        if kind in HPA_KINDS and version in HPA_VERSIONS:
            target = _hpa(spec, name, namespace, where, out.not_converted)
            intervals.append(15.0)  # the HPA controller's sync period
        elif kind == "ScaledObject" and version in KEDA_VERSIONS:
            target = _scaled_object(spec, name, namespace, where, out.not_converted,
                                    intervals, servers)
        else:
            out.not_converted.append(f"document {n}: {kind or 'no kind'} "
                                     f"({version or 'no apiVersion'}) is not an HPA or a "
                                     "KEDA ScaledObject")
            continue
        if target is not None and kind == "ScaledObject":
            _keda_pause(meta, target, where, out.not_converted)
        if target is not None:
            out.config["targets"].append(target)
            out.sources.append(where)
    if not out.config["targets"]:
        raise ManifestError("no HorizontalPodAutoscaler (autoscaling/v1, v2, v2beta2) or KEDA "
                           "ScaledObject (keda.sh/v1alpha1) with a scaleTargetRef to convert"
                           + "".join(f"; {n}" for n in out.not_converted))
    out.config["evaluation_interval"] = f"{min(intervals):g}s"
    if servers:
        out.config["prometheus"] = {"url": servers[0]}
        for other in sorted(set(servers) - {servers[0]}):
            out.not_converted.append(f"serverAddress {other}: one Prometheus per config "
                                     f"(all queries go to {servers[0]})")
    return out


def _workload(spec: Mapping[str, Any], name: str, namespace: str, where: str,
              notes: list[str]) -> tuple[dict[str, Any], str] | None:
    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, Mapping) or not ref.get("name"):
        notes.append(f"{where}: no scaleTargetRef.name: skipped")
        return None
    kind = str(ref.get("kind") or "Deployment")
    api_version = str(ref.get("apiVersion") or "")
    key = WORKLOAD_KEYS.get(kind)
    target: dict[str, Any] = {"name": name, "backend": "kubernetes", "namespace": namespace}
    if key is not None and (not api_version or api_version.startswith("apps/")):
        target[key] = str(ref["name"])
    elif not api_version:
        notes.append(f"{where}: scaleTargetRef kind {kind} without an apiVersion: skipped "
                     "(write it as scale_target_ref: {api_version, kind, name})")
        return None
    else:  # any kind with a scale subresource, named as the HPA names it
        target["scale_target_ref"] = {"api_version": api_version, "kind": kind,
                                      "name": str(ref["name"])}
    return target, pod_selector(namespace, kind, str(ref["name"]))


def _hpa(spec: Mapping[str, Any], name: str, namespace: str, where: str,
         notes: list[str]) -> dict[str, Any] | None:
    found = _workload(spec, name, namespace, where, notes)
    if found is None:
        return None
    target, selector = found
    target["min_replicas"] = int(spec.get("minReplicas") or 1)
    target["max_replicas"] = int(spec.get("maxReplicas") or target["min_replicas"])
    if isinstance(spec.get("behavior"), Mapping):
        target["behavior"] = dict(spec["behavior"])
    policies: list[dict[str, Any]] = []
    if "targetCPUUtilizationPercentage" in spec:  # autoscaling/v1
        policies.append(_utilization("cpu", spec["targetCPUUtilizationPercentage"], selector))
    for place, metric in _objects(spec.get("metrics"), f"{where} metrics", notes):
        policy = _hpa_metric(metric, selector, place, notes)
        if policy is not None:
            policies.append(policy)
    if not policies and "metrics" not in spec and "targetCPUUtilizationPercentage" not in spec:
        policies.append(_utilization("cpu", 80, selector))  # the HPA's default: 80 % CPU
        notes.append(f"{where}: no metrics: the HPA's default, CPU at 80 % of requests")
    if not policies:
        notes.append(f"{where}: no metric could be converted: skipped")
        return None
    target["policies"] = policies
    return target


def _utilization(resource: str, percent: Any, selector: str) -> dict[str, Any]:
    return {"type": "target_value", "name": f"{resource}-utilization",
            "query": utilization_query(resource, selector), "target": float(percent)}


def _objects(items: Any, where: str,
             notes: list[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each object of a manifest's list, with its place (`where[i]`, counted from 1); an item
    that is not an object is noted and passed over."""
    for i, item in enumerate(items or [], 1):
        if isinstance(item, Mapping):
            yield f"{where}[{i}]", item
        else:
            notes.append(f"{where}[{i}]: not an object")


def _hpa_metric(metric: Mapping[str, Any], selector: str, where: str,
                notes: list[str]) -> dict[str, Any] | None:
    kind = metric.get("type")
    resource = _mapping(metric.get("resource"))
    name = resource.get("name")
    goal = _mapping(resource.get("target"))
    if kind == "Resource" and name in ("cpu", "memory"):
        percent = goal.get("averageUtilization", resource.get("targetAverageUtilization"))
        if percent is not None and goal.get("type", "Utilization") == "Utilization":
            return _utilization(str(name), percent, selector)
        notes.append(f"{where}: {name} as an average value "
                     f"({goal.get('averageValue') or resource.get('targetAverageValue')}): "
                     "only Utilization is converted")
        return None
    notes.append(f"{where}: a {kind} metric ({_metric_name(metric)}) needs its query written "
                 "by hand (a policy on the Prometheus series behind it)")
    return None


def _metric_name(metric: Mapping[str, Any]) -> str:
    for key in ("pods", "object", "external", "containerResource", "resource"):
        part = metric.get(key)
        if isinstance(part, Mapping):
            inner = part.get("metric")
            if isinstance(inner, Mapping) and inner.get("name"):
                return str(inner["name"])
            if part.get("name"):
                return str(part["name"])
            if part.get("metricName"):
                return str(part["metricName"])
    return "unnamed"


def _keda_pause(meta: Mapping[str, Any], target: Mapping[str, Any], where: str,
                notes: list[str]) -> None:
    """KEDA's pause annotations, on the ScaledObject there: the equivalent goes on the
    workload here, as a note (the output is a config, the workload is the operator's)."""
    annotations = _mapping(meta.get("annotations"))
    ref = _mapping(target.get("scale_target_ref"))
    workload = next((f"{kind} {target[key]}" for kind, key in WORKLOAD_KEYS.items()
                     if key in target), f"{ref.get('kind')} {ref.get('name')}" if ref
                    else "the workload")
    replicas = annotations.get("autoscaling.keda.sh/paused-replicas")
    if replicas is not None:
        notes.append(f"{where}: paused at {replicas} in KEDA (autoscaling.keda.sh/"
                     f"paused-replicas): to keep it, annotate the {workload} "
                     f"autoscaler.stalwart.io/paused-replicas: \"{replicas}\"")
    elif str(annotations.get("autoscaling.keda.sh/paused", "")).lower() == "true":
        notes.append(f"{where}: paused in KEDA (autoscaling.keda.sh/paused): to keep it, "
                     f"annotate the {workload} autoscaler.stalwart.io/paused: \"true\"")


def _scaled_object(spec: Mapping[str, Any], name: str, namespace: str, where: str,
                   notes: list[str], intervals: list[float],
                   servers: list[str]) -> dict[str, Any] | None:
    found = _workload(spec, name, namespace, where, notes)
    if found is None:
        return None
    target, selector = found
    lowest = int(spec.get("minReplicaCount") or 0)
    if lowest < 1:
        notes.append(f"{where}: minReplicaCount {lowest}: scaling to zero has no equivalent; "
                     "min_replicas 1")
    target["min_replicas"] = max(1, lowest)
    target["max_replicas"] = max(target["min_replicas"],
                                 int(spec.get("maxReplicaCount") or KEDA_DEFAULT_MAX))
    intervals.append(float(spec.get("pollingInterval") or 30))
    if "cooldownPeriod" in spec:
        notes.append(f"{where}: cooldownPeriod {spec['cooldownPeriod']}s applies only to "
                     "scaling to zero in KEDA: not converted")
    advanced = _mapping(spec.get("advanced"))
    hpa_config = advanced.get("horizontalPodAutoscalerConfig")
    if isinstance(hpa_config, Mapping) and isinstance(hpa_config.get("behavior"), Mapping):
        target["behavior"] = dict(hpa_config["behavior"])
    for key in ("restoreToOriginalReplicaCount", "scalingModifiers"):
        if key in advanced:
            notes.append(f"{where}: advanced.{key}: not converted")
    fallback = spec.get("fallback")
    if isinstance(fallback, Mapping) and "replicas" in fallback:
        replicas = int(fallback["replicas"])
        target["on_metric_error"] = "fallback"
        target["fallback_replicas"] = min(max(replicas, target["min_replicas"]),
                                          target["max_replicas"])
        notes.append(f"{where}: fallback after {fallback.get('failureThreshold', '?')} failed "
                     "reads in KEDA; here from the first read that is not ok")
    policies: list[dict[str, Any]] = []
    for place, trigger in _objects(spec.get("triggers"), f"{where} triggers", notes):
        policy = _trigger(trigger, selector, place, notes, servers)
        if policy is not None:
            policies.append(policy)
    if not policies:
        notes.append(f"{where}: no trigger could be converted: skipped")
        return None
    names = [p.get("name") for p in policies]
    for i, policy in enumerate(policies):
        if names.count(policy.get("name")) > 1:
            policy["name"] = f"{policy['name']}-{i + 1}"
    target["policies"] = policies
    return target


def _trigger(trigger: Mapping[str, Any], selector: str, where: str, notes: list[str],
             servers: list[str]) -> dict[str, Any] | None:
    kind = trigger.get("type")
    meta = _mapping(trigger.get("metadata"))
    label = str(trigger.get("name") or kind)
    for key in ("authenticationRef",):
        if key in trigger:
            notes.append(f"{where}: {key} (set the credentials under prometheus:)")
    if kind == "prometheus":
        return _prometheus_trigger(trigger, meta, label, where, notes, servers)
    if kind in ("cpu", "memory"):
        value = meta.get("value")
        if trigger.get("metricType", meta.get("type", "Utilization")) != "Utilization" \
                or value is None:
            notes.append(f"{where}: {kind} as an average value: only Utilization is converted")
            return None
        return _utilization(str(kind), value, selector)
    if kind == "cron":
        return _cron(meta, label, where, notes)
    notes.append(f"{where}: a {kind} trigger has no equivalent: write a policy on its "
                 "Prometheus series")
    return None


def _prometheus_trigger(trigger: Mapping[str, Any], meta: Mapping[str, Any], label: str,
                        where: str, notes: list[str],
                        servers: list[str]) -> dict[str, Any] | None:
    """KEDA's prometheus scaler: AverageValue (its default) is the HPA's ceil(value /
    threshold), so `capacity` without headroom; Value is `target_value`."""
    query, threshold = meta.get("query"), meta.get("threshold")
    if not query or threshold is None:
        notes.append(f"{where}: prometheus trigger without query or threshold")
        return None
    if meta.get("serverAddress"):
        servers.append(str(meta["serverAddress"]).rstrip("/"))
    for key in ("activationThreshold", "namespace", "customHeaders", "ignoreNullValues",
                "unsafeSsl"):
        if key in meta:
            notes.append(f"{where}: metadata.{key}: not converted")
    metric_type = trigger.get("metricType", "AverageValue")
    if metric_type == "Value":
        return {"type": "target_value", "name": label, "query": str(query),
                "target": float(threshold)}
    if metric_type != "AverageValue":
        notes.append(f"{where}: metricType {metric_type}: not converted")
        return None
    return {"type": "capacity", "name": label, "query": str(query),
            "per_instance": float(threshold), "headroom": 1.0}


def _cron(meta: Mapping[str, Any], label: str, where: str,
          notes: list[str]) -> dict[str, Any] | None:
    start, end = str(meta.get("start", "")).split(), str(meta.get("end", "")).split()
    replicas = meta.get("desiredReplicas")
    if len(start) != 5 or len(end) != 5 or replicas is None:
        notes.append(f"{where}: cron trigger needs start, end (5 fields) and desiredReplicas")
        return None
    if start[2:] != end[2:] or not all(_NUMBER.fullmatch(f) for f in start[:2] + end[:2]):
        notes.append(f"{where}: cron start {' '.join(start)!r} and end {' '.join(end)!r}: "
                     "a window is converted when both name one minute and hour on the same "
                     "days")
        return None
    minutes = (int(end[1]) * 60 + int(end[0]) - int(start[1]) * 60 - int(start[0])) % 1440
    window = {"cron": " ".join(start), "duration": f"{minutes or 1440}m",
              "replicas": int(replicas), "timezone": str(meta.get("timezone") or "UTC")}
    return {"type": "schedule", "name": label, "windows": [window]}
