"""Which test tier is running, and how many examples a property test draws in it.

`scripts/test --unit` sets AUTOSCALER_TEST_TIER=unit: the quick tier draws a tenth of each
property test's examples (at least 25); the full run (`scripts/test`, or plain pytest) draws
them all, so nothing is dropped, only moved to the run that has the time.
"""

from __future__ import annotations

import os

__all__ = ["QUICK", "examples"]

QUICK = os.environ.get("AUTOSCALER_TEST_TIER") == "unit"


def examples(full: int, env: str | None = None) -> int:
    """`full` examples in the full run, a tenth (at least 25) in the unit tier; an explicit
    count in the environment variable `env` wins in either."""
    if env and os.environ.get(env):
        return int(os.environ[env])
    return max(full // 10, min(full, 25)) if QUICK else full
