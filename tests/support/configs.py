"""Config documents the tests start from: the shipped example and a minimal valid one."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from autoscaler.behavior import Behavior

__all__ = ["EXAMPLE", "FREE", "TARGET", "example_data", "minimal"]

EXAMPLE = Path(str(files("autoscaler") / "data" / "stalwart-example.yaml"))

# One valid target, for documents that test something else.
TARGET = """\
targets:
  - name: smtp
    backend: swarm
    service: stalwart_smtp
    max_replicas: 5
    preset: stalwart-smtp
"""


def example_data() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def minimal(**top: Any) -> dict[str, Any]:
    """A valid document (one preset target) with `top` merged in at the top level."""
    data: dict[str, Any] = yaml.safe_load(TARGET)
    data.update(top)
    return data


# No stabilization, no rate limit: isolates the rule under test.
FREE = Behavior.model_validate({
    "scaleUp": {"stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 1000, "periodSeconds": 1}]},
    "scaleDown": {"stabilizationWindowSeconds": 0,
                  "policies": [{"type": "Pods", "value": 1000, "periodSeconds": 1}]},
})
