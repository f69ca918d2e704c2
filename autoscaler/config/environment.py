"""`AUTOSCALER_`-prefixed environment variables (`__` for nesting) that override the file."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from autoscaler.config.issues import ConfigIssue, Loc, format_key
from autoscaler.config.models import ENV_PREFIX, Settings


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
            merged = deep_merge(merged, dict(source()))
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
