"""Reading a config file: YAML (with the line of every key, for messages) or TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from autoscaler.config.issues import ConfigError, ConfigIssue, Loc, format_key


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that also records the line of every key and list item."""


MAX_YAML_NODES = 100_000  # a real config has hundreds; aliases must not expand past this


class _TooLarge(Exception):
    """The document, with its aliases expanded, has more nodes than any config needs."""


class _DuplicateKeys(Exception):
    """Keys given twice in one mapping: YAML would silently keep the last one."""

    def __init__(self, found: list[tuple[Loc, int]]) -> None:
        super().__init__(found)
        self.found = found


def _yaml_with_lines(text: str) -> tuple[Any, dict[Loc, int]]:
    lines: dict[Loc, int] = {}
    node = yaml.compose(text, Loader=_LineLoader)
    if node is None:
        return None, lines
    visits = 0
    duplicates: dict[tuple[int, str], tuple[Loc, int]] = {}

    def walk(n: yaml.Node, loc: Loc) -> None:
        # Aliases share nodes: walking (and later validating) expands them, so a "billion
        # laughs" file of a few lines would take hours and gigabytes. Count every visit.
        nonlocal visits
        visits += 1
        if visits > MAX_YAML_NODES:
            raise _TooLarge
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                if key in seen and k.tag != "tag:yaml.org,2002:merge":
                    duplicates.setdefault((id(n), key), ((*loc, key), k.start_mark.line + 1))
                seen.add(key)
                lines[(*loc, key)] = k.start_mark.line + 1
                walk(v, (*loc, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*loc, i)] = item.start_mark.line + 1
                walk(item, (*loc, i))

    walk(node, ())
    if duplicates:
        raise _DuplicateKeys(sorted(duplicates.values(), key=lambda d: d[1]))
    data = yaml.load(text, Loader=yaml.SafeLoader)
    return data, lines


def read_config_file(path: Path) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The file's data and a key-path -> line map (empty for TOML)."""
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
        raise ConfigError([ConfigIssue(src, None, "", reason)]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(src, None, "", f"not UTF-8 text: {exc.reason}")]) from exc
    if path.suffix.lower() == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None)
            raise ConfigError([ConfigIssue(src, line, "", f"invalid TOML: {exc}")]) from exc
        except RecursionError as exc:
            reason = "invalid TOML: nested too deeply"
            raise ConfigError([ConfigIssue(src, None, "", reason)]) from exc
        lines: dict[Loc, int] = {}
    else:
        try:
            data, lines = _yaml_with_lines(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([ConfigIssue(src, line, "", f"invalid YAML: {problem}")]) from exc
        except RecursionError as exc:
            reason = "invalid YAML: nested too deeply"
            raise ConfigError([ConfigIssue(src, None, "", reason)]) from exc
        except _TooLarge as exc:
            reason = (f"invalid YAML: more than {MAX_YAML_NODES:,} values once its aliases "
                      "(*name) are expanded; a config file needs far fewer")
            raise ConfigError([ConfigIssue(src, None, "", reason)]) from exc
        except _DuplicateKeys as exc:
            raise ConfigError([
                ConfigIssue(src, line, format_key(loc), "this key is given twice in the same "
                            "mapping (YAML would silently keep the last one)")
                for loc, line in exc.found]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(src, 1, "", "the file must hold a mapping of keys")])
    return data, lines
