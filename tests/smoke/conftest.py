"""Smoke runs of the benchmarks that need no live stack: the full run only.

Every test here gets the `slow` marker, so `scripts/test --unit` (`-m "not realenv and not
slow"`) leaves them out; they run whole, nothing is shortened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.slow)
