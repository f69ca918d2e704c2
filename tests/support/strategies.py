"""Hypothesis strategies for hostile input: config documents (mutations of valid ones, any
shape, any file format, environment overrides) and Prometheus answers."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.support.configs import example_data, minimal

# --------------------------------------------------------------------------- config documents

PLAUSIBLE_KEYS = [
    "evaluation_interval", "dry_run", "prometheus", "url", "timeout", "headers",
    "bearer_token_file", "basic_auth", "username", "password_file", "verify_tls", "ca_file",
    "listen", "leader_election", "mode", "lease_name", "lease_namespace", "lease_duration",
    "renew_deadline", "retry_period", "targets", "name", "backend", "service", "namespace",
    "deployment", "statefulset", "min_replicas", "max_replicas", "cooldown", "up", "down",
    "behavior", "scaleUp", "scaleDown", "stabilizationWindowSeconds", "selectPolicy",
    "policies", "periodSeconds", "value", "on_metric_error", "fallback_replicas", "preset",
    "prefix", "preset_options", "edition", "cpu_query", "per_instance", "headroom", "guards",
    "query", "block", "above", "below", "type", "scale_up_above", "scale_down_below", "for",
    "step", "window", "signal", "target", "tolerance", "simulate_as", "simulation",
    "capacity_per_instance", "startup_delay", "scrape_interval", "initial_replicas",
]
PLAUSIBLE_VALUES = [
    "15s", "5m", "1h30m", "0s", "-1s", "5x", "", "swarm", "kubernetes", "nomad", "threshold",
    "queue_trend", "capacity", "target_value", "stalwart-smtp", "stalwart-all", "hold",
    "fallback", "scale_down", "scale_up", "community", "enterprise", "Pods", "Percent", "Max",
    "Disabled", "http://127.0.0.1:9090", "ftp://x", "0.0.0.0:9464", "stalwart_", "cpu", "queue",
    0, 1, 2, 3, 20, -1, 0.5, 1e300, True, False, None, math.inf, math.nan,
]

scalars = st.one_of(
    st.sampled_from(PLAUSIBLE_VALUES),
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(), st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(PLAUSIBLE_KEYS), st.text(min_size=1, max_size=10))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)

RICH = minimal(
    prometheus={"url": "https://prom:9090", "timeout": "5s", "headers": {"X-Org": "a"},
                "basic_auth": {"username": "u", "password_file": "/pw"}},
    leader_election={"mode": "kubernetes", "lease_duration": "15s", "renew_deadline": "10s"},
    targets=[
        {"name": "k8s", "backend": "kubernetes", "namespace": "mail", "statefulset": "stalwart",
         "min_replicas": 2, "max_replicas": 9, "on_metric_error": "fallback",
         "fallback_replicas": 4, "cooldown": {"up": "1m", "down": "5m"},
         "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 2,
                                                "periodSeconds": 60}]}},
         "guards": [{"query": "g", "below": 1, "block": "scale_up"}],
         "policies": [
             {"type": "threshold", "query": "cpu", "scale_up_above": 70,
              "scale_down_below": 30, "for": "1m"},
             {"type": "queue_trend", "query": "queue", "window": "10m"},
             {"type": "capacity", "query": "arrival_rate", "headroom": 1.5},
             {"type": "target_value", "query": "cpu", "name": "tv", "target": 70},
         ]},
        {"name": "smtp", "backend": "swarm", "service": "s", "max_replicas": 5,
         "preset": "stalwart-all", "prefix": "stalwart_",
         "preset_options": {"edition": "enterprise", "per_instance": 5000}},
    ],
    simulation={"capacity_per_instance": 10000, "startup_delay": "1m",
                "initial_replicas": 2},
)


def paths_in(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [here]
    if isinstance(node, dict):
        for k, v in node.items():
            found += paths_in(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += paths_in(v, (*here, i))
    return found


def node_at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(draw(st.sampled_from([example_data(), RICH])))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(paths_in(doc)))
        if not path:
            continue
        parent = node_at(doc, path[:-1])
        action = draw(st.sampled_from(["delete", "replace", "add-key"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(values)
        else:
            target = node_at(doc, path)
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
            else:
                parent[path[-1]] = {draw(keys): draw(values)}
    return doc


def toml_value(value: Any) -> str | None:
    """An inline TOML spelling of `value`; None for what TOML cannot hold (null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        items = [t for t in (toml_value(v) for v in value) if t is not None]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        pairs = [f"{json.dumps(str(k), ensure_ascii=False)} = {t}"
                 for k, v in value.items() if (t := toml_value(v)) is not None]
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(type(value))


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(str(k), ensure_ascii=False)} = {t}\n"
                   for k, v in doc.items() if (t := toml_value(v)) is not None)


documents = st.one_of(
    mutated_documents(),
    st.dictionaries(keys, values, max_size=8),
    st.dictionaries(st.sampled_from(PLAUSIBLE_KEYS), values, max_size=8),
)
file_contents = st.one_of(
    st.tuples(st.just(".yaml"), documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True))),
    st.tuples(st.just(".json"), documents.map(json.dumps)),
    st.tuples(st.just(".toml"), documents.map(to_toml)),
    st.tuples(st.sampled_from([".yaml", ".toml"]), st.text(max_size=200)),
    st.tuples(st.sampled_from([".yaml", ".toml"]), st.binary(max_size=200)),
)
env_names = st.sampled_from([
    "AUTOSCALER_DRY_RUN", "AUTOSCALER_TARGETS", "AUTOSCALER_PROMETHEUS__URL",
    "AUTOSCALER_PROMETHEUS__TIMEOUT", "AUTOSCALER_PROMETHEUS", "AUTOSCALER_EVALUATION_INTERVAL",
    "AUTOSCALER_LEADER_ELECTION__RENEW_DEADLINE", "AUTOSCALER_TARGETS__0__NAME",
    "AUTOSCALER_PROMETHEUS__HEADERS", "AUTOSCALER_SIMULATION__STARTUP_DELAY",
])
environments = st.dictionaries(
    env_names, st.one_of(st.text(max_size=20), values.map(json.dumps)), max_size=3)


# --------------------------------------------------------------------------- Prometheus answers

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["NaN", "+Inf", "-Inf", "1.5", "vector", "matrix",
                                           "scalar", "success", "error"]),
)
json_like = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["status", "data", "resultType", "result", "value",
                                       "values", "metric", "error", "errorType"])
                      | st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
# Mostly well-shaped answers with hostile parts, so the deep branches are reached too.
shaped = st.builds(
    lambda status, rtype, result: {"status": status,
                                   "data": {"resultType": rtype, "result": result}},
    st.sampled_from(["success", "error"]) | json_leaves,
    st.sampled_from(["vector", "matrix", "scalar"]) | json_leaves,
    json_like,
)
