"""The config file's JSON Schema, for editors, and JSON output."""

from __future__ import annotations

import json
from typing import Any

from autoscaler.config.models import Settings


def config_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors."""
    schema = Settings.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Stalwart autoscaler configuration"
    return schema


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
