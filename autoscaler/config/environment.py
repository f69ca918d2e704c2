"""`AUTOSCALER_`-prefixed environment variables (`__` for nesting) that override the file."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from autoscaler.config.issues import ConfigIssue, Loc, format_key
from autoscaler.config.models import ENV_PREFIX, Settings
from autoscaler.config.schema import config_schema

_INTEGER = re.compile(r"[+-]?[0-9]+")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _env_loc(variable: str) -> Loc:
    """AUTOSCALER_PROMETHEUS__TIMEOUT -> ("prometheus", "timeout")."""
    return tuple(variable[len(ENV_PREFIX):].lower().split("__"))


def read_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """The overrides in AUTOSCALER_* variables, parsed by pydantic-settings one variable at
    a time, so a variable that cannot be parsed is named and the others still count."""
    merged: dict[str, Any] = {}
    issues: list[ConfigIssue] = []
    for variable, value in sorted(environ.items()):
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        source = EnvSettingsSource(Settings, case_sensitive=False, env_prefix=ENV_PREFIX,
                                   env_nested_delimiter="__")
        source.env_vars = {variable.lower(): value}
        try:
            merged = deep_merge(merged, coerce(dict(source()), config_schema()))
        except SettingsError as exc:
            cause = exc.__cause__
            why = f"{cause}" if cause else str(exc)
            key = format_key(_env_loc(variable.upper()))
            issues.append(ConfigIssue(f"environment {variable.upper()}", None, key,
                                      f"cannot parse the value for {key}: {why}"))
    return merged, issues


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` wins; mappings merge key by key, everything else is replaced whole."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def env_keys(env_data: Mapping[str, Any], loc: Loc = ()) -> Iterator[Loc]:
    for key, value in env_data.items():
        if isinstance(value, Mapping):
            yield from env_keys(value, (*loc, key))
        else:
            yield (*loc, key)


def schema_types(node: Any, defs: Mapping[str, Any]) -> set[str]:
    """The JSON types a schema node allows (through $ref and anyOf/oneOf)."""
    if not isinstance(node, dict):
        return set()
    if "$ref" in node:
        return schema_types(defs.get(str(node["$ref"]).rsplit("/", 1)[1]), defs)
    found = {node["type"]} if isinstance(node.get("type"), str) else set()
    for key in ("anyOf", "oneOf"):
        for option in node.get(key, []):
            found |= schema_types(option, defs)
    return found


def schema_child(node: Any, key: str, defs: Mapping[str, Any]) -> Any:
    """The schema of `key` inside the object (or list) that `node` describes, or None."""
    if not isinstance(node, dict):
        return None
    if "$ref" in node:
        return schema_child(defs.get(str(node["$ref"]).rsplit("/", 1)[1]), key, defs)
    for option in [node, *node.get("anyOf", []), *node.get("oneOf", [])]:
        if option is node:
            found = node.get("properties", {}).get(key)
            if found is None:
                found = next((sub for pattern, sub in node.get("patternProperties", {}).items()
                              if re.search(pattern, key)), None)
            if found is None and isinstance(node.get("additionalProperties"), dict):
                found = node["additionalProperties"]
            if found is None and isinstance(node.get("items"), dict):
                found = node["items"]
        else:
            found = schema_child(option, key, defs)
        if found is not None:
            return found
    return None


def _from_text(value: str, types: set[str]) -> Any:
    """Environment values are text: one that names a number or a boolean becomes one where
    the schema wants it (and no text is allowed there), as the file would have it."""
    if not types or "string" in types:
        return value
    text = value.strip()
    if "integer" in types and _INTEGER.fullmatch(text) and len(text) < 20:
        return int(text)
    if "number" in types:
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    if "boolean" in types and text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    return value


def coerce(data: Any, schema: Mapping[str, Any], node: Any = None) -> Any:
    """`data` (parsed from environment variables) with its text leaves turned into the
    numbers and booleans that `schema` asks for at their place."""
    defs = schema.get("$defs", {})
    node = schema if node is None else node
    if isinstance(data, dict):
        return {k: coerce(v, schema, schema_child(node, str(k), defs)) for k, v in data.items()}
    if isinstance(data, list):
        return [coerce(v, schema, schema_child(node, "0", defs)) for v in data]
    if isinstance(data, str):
        return _from_text(data, schema_types(node, defs))
    return data
