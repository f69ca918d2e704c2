"""Write one section of docs/reliability.md (between its markers), leaving the others alone.

`RELIABILITY_DOC` names another file to write instead (the smoke tests use a temporary one, so
a test run never rewrites the recorded figures).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import report

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def doc_path() -> Path:
    other = os.environ.get("RELIABILITY_DOC")
    return Path(other) if other else DOC


def write_section(name: str, body: str) -> Path:
    """Replace the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` (or append)."""
    path = doc_path()
    report.write_section(name, body, doc=path, header="# Reliability and security\n")
    return path


def read_section(name: str, path: Path | None = None) -> str:
    """The text of one section ('' when absent)."""
    text = (path or doc_path()).read_text(encoding="utf-8")
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        return ""
    return text.split(begin, 1)[1].split(end, 1)[0].strip()
