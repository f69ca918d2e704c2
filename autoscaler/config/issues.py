"""A config problem as reported: where it came from, which key, what is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where (file and line, or env var), which key, what is wrong."""

    source: str
    line: int | None
    key: str
    message: str
    # The cross-field rule that found it (a rule of several keys, which the JSON Schema does
    # not carry); None for a key's own constraint.
    rule: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        rule = f" [cross-field rule {self.rule}]" if self.rule else ""
        return f"{where}: {self.key or '(top level)'}: {self.message}{rule}"


class ConfigError(Exception):
    """Every problem found in a config, ready to print one per line."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


Loc = tuple[str | int, ...]


def format_key(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
