"""Validation of file plus environment into Settings, reporting EVERY problem at once.

Type errors, unknown keys and the cross-field rules (min <= max, ...) even when a sibling key
is also wrong — each with its key path and where the value came from (file and line, or the
environment variable).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from autoscaler.config.environment import deep_merge, env_keys, read_environment
from autoscaler.config.fields import PATTERN_HINTS
from autoscaler.config.files import read_config_file
from autoscaler.config.issues import ConfigError, ConfigIssue, Loc, format_key
from autoscaler.config.models import (
    ENV_PREFIX,
    GuardConfig,
    LeaderElectionConfig,
    PrometheusConfig,
    Settings,
    SimulationConfig,
    Strict,
    TargetConfig,
)
from autoscaler.registry import policy_types
from policies import Policy


def _strip_union_tags(loc: Sequence[str | int], raw: Any) -> Loc:
    """Drop the discriminator tags pydantic puts in error paths (`policies.0.threshold.x`),
    and its `[key]` mark of a mapping key in error."""
    out: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node \
                and node.get("type") == part:
            continue
        if part == "[key]":  # pydantic's mark for "the key itself" of a mapping: named already
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _lenient(model: type[Strict] | type[Settings] | type[Policy], raw: Any) -> Any:
    """Build `model` from the parts of `raw` that are valid on their own, or None.

    Lets the cross-field rules run even when a sibling key is wrong, so one run of
    check-config lists every problem.
    """
    if not isinstance(raw, dict):
        return None
    values: dict[str, Any] = {}
    invalid: list[str] = []
    for name, info in model.model_fields.items():
        key = info.alias if info.alias and info.alias in raw else name
        if key not in raw:
            continue
        if model is Settings and name == "targets" and isinstance(raw[key], list):
            values[name] = [t for t in (_lenient(TargetConfig, x) for x in raw[key]) if t]
            continue
        try:
            annotation: Any = info.annotation
            if info.metadata:  # keep validators such as Duration's parser and ge/le bounds
                annotation = Annotated[(annotation, *info.metadata)]
            values[name] = TypeAdapter(annotation).validate_python(
                raw[key], strict=model.model_config.get("strict"))
        except Exception:
            invalid.append(name)
    try:
        obj = model.model_construct(**values)
    except Exception:
        return None
    for name in invalid:  # an invalid key must not read as its default
        obj.__dict__.pop(name, None)
    return obj


def _cross_issues(obj: Any, loc: Loc) -> list[tuple[Loc, str, str]]:
    """(key path, message, rule name) per broken rule of one block; a rule whose keys are
    themselves invalid is skipped (their own errors are reported already)."""
    if isinstance(obj, Policy):  # a policy's own rules (plugins too): one method, one name
        rules = [(f"{obj.type}.cross_field_errors", obj.cross_field_errors)]
    else:
        rules = [(rule.__name__, rule) for rule in obj.cross_field_rules()]
    found: list[tuple[Loc, str, str]] = []
    for name, rule in rules:
        try:
            found.extend(((*loc, key), msg, name) for key, msg in rule())
        except Exception:
            continue
    return found


def cross_field_issues(raw: Mapping[str, Any]) -> list[tuple[Loc, str, str]]:
    """Every cross-field rule, run on whatever parts of the raw data are valid: (key path,
    message, rule name)."""
    found: list[tuple[Loc, str, str]] = []
    blocks: list[tuple[type[Any], Any, Loc]] = [
        (Settings, raw, ()),
        (PrometheusConfig, raw.get("prometheus"), ("prometheus",)),
        (LeaderElectionConfig, raw.get("leader_election"), ("leader_election",)),
        (SimulationConfig, raw.get("simulation"), ("simulation",)),
    ]
    targets = raw.get("targets")
    if isinstance(targets, list):
        for i, target in enumerate(targets):
            blocks.append((TargetConfig, target, ("targets", i)))
            if not isinstance(target, dict):
                continue
            for key, model in (("guards", GuardConfig), ("policies", None)):
                items = target.get(key)
                if not isinstance(items, list):
                    continue
                for j, item in enumerate(items):
                    cls: type[Any] | None = model
                    if cls is None and isinstance(item, dict):
                        cls = policy_types().get(str(item.get("type")))
                    if cls is not None:
                        blocks.append((cls, item, ("targets", i, key, j)))
    for model, data, loc in blocks:
        obj = _lenient(model, data)
        if obj is not None:
            found.extend(_cross_issues(obj, loc))
    return found


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:50] + f"... ({len(text)} characters)"


def _friendly(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        return f"unknown policy type; known: {', '.join(sorted(policy_types()))}"
    if kind == "union_tag_not_found":
        return f"a policy needs `type`; known: {', '.join(sorted(policy_types()))}"
    if kind == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(str(error.get("ctx", {}).get("pattern")))
        if hint:
            return f"{_shown(error['input'])} is not {hint}"
    bounds = {"greater_than": ("gt", "above"), "greater_than_equal": ("ge", "at least"),
              "less_than": ("lt", "below"), "less_than_equal": ("le", "at most")}
    if kind in bounds:
        name, words = bounds[kind]
        return f"must be {words} {error.get('ctx', {}).get(name)} (got {_shown(error['input'])})"
    if kind == "is_instance_of" and "Path" in str(error["msg"]):
        return "should be text: a file path"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def nul_characters(data: Any) -> list[Loc]:
    """Where a key or a text value holds a NUL character: no setting can (the schema says the
    same of every string). Walked without recursion: the data may be nested deeply."""
    found: list[Loc] = []
    stack: list[tuple[Loc, Any]] = [((), data)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, str) and "\x00" in node:
            found.append(loc)
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and "\x00" in key:
                    found.append((*loc, key))
                else:
                    stack.append(((*loc, key), value))
        elif isinstance(node, list):
            stack.extend(((*loc, i), item) for i, item in enumerate(node))
    return sorted(found, key=str)


def load_config_data(
    data: Mapping[str, Any],
    *,
    source: str = "config",
    lines: Mapping[Loc, int] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate already-parsed data (plus environment overrides) into Settings."""
    env = os.environ if environ is None else environ
    env_data, issues = read_environment(env)
    env_locs = set(env_keys(env_data))
    merged = deep_merge(dict(data), env_data)
    lines = lines or {}

    def where(loc: Loc) -> tuple[str, int | None]:
        def variable(env_loc: Loc) -> str:
            return "environment " + ENV_PREFIX + "__".join(str(p) for p in env_loc).upper()

        for n in range(len(loc), 0, -1):
            if loc[:n] in env_locs:
                return variable(loc[:n]), None
        # The variable set something below the key in error (e.g. AUTOSCALER_TARGETS__0__X
        # when `targets` itself is wrong): still the variable's doing.
        deeper = sorted(e for e in env_locs if e[:len(loc)] == loc and len(e) > len(loc))
        if loc and deeper:
            return variable(deeper[0][:len(loc)] if len(deeper) > 1 else deeper[0]), None
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                return source, lines[loc[:n]]
        return source, None

    seen: set[tuple[Loc, str]] = set()

    def add(loc: Loc, message: str, rule: str | None = None) -> None:
        if (loc, message) in seen:
            return
        seen.add((loc, message))
        src, line = where(loc)
        issues.append(ConfigIssue(src, line, format_key(loc), message, rule))

    for key in [k for k in merged if not isinstance(k, str)]:
        add((), f"top-level key {key!r} is not a name (keys are text such as `targets`)")
        del merged[key]
    for loc in nul_characters(merged):
        add(loc, "holds a NUL character, which no setting can")
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        for err in exc.errors():
            add(_strip_union_tags(err["loc"], merged), _friendly(err))
    for loc, message, rule in cross_field_issues(merged):
        add(loc, message, rule)
    if issues or settings is None:
        issues.sort(key=lambda i: (i.source != source, i.line or 0, i.key))
        raise ConfigError(issues)
    return settings


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate a YAML or TOML config file; ConfigError lists every problem."""
    p = Path(path)
    data, lines = read_config_file(p)
    return load_config_data(data, source=str(p), lines=lines, environ=environ)
