"""The config file's JSON Schema, generated from the models' own constraints, for editors.

Nothing here is hand-kept: each key's type, bounds and pattern come from the field that the
validator enforces. Two rules apply to the whole file and are added where pydantic cannot
know them: no text holds a NUL character (`load.nul_characters` refuses one), and a policy's
`type` is required (it picks the policy's model).
"""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from autoscaler.config.fields import NO_NUL_PATTERN
from autoscaler.config.models import Settings


class _ConfigSchema(GenerateJsonSchema):
    def str_schema(self, schema: Any) -> JsonSchemaValue:
        """A string without a pattern of its own still refuses NUL, as the loader does."""
        generated = super().str_schema(schema)
        generated.setdefault("pattern", NO_NUL_PATTERN)
        return generated

    def float_schema(self, schema: Any) -> JsonSchemaValue:
        """A number without bounds of its own still has a float's: 10**400 is refused."""
        generated = super().float_schema(schema)
        if "minimum" not in generated and "exclusiveMinimum" not in generated:
            generated["minimum"] = -sys.float_info.max
        if "maximum" not in generated and "exclusiveMaximum" not in generated:
            generated["maximum"] = sys.float_info.max
        return generated

    def dict_schema(self, schema: Any) -> JsonSchemaValue:
        """Keys with a pattern: a key that does not match is refused, as the validator does."""
        generated = super().dict_schema(schema)
        if "patternProperties" in generated:
            generated.setdefault("additionalProperties", False)
        return generated


def _require_discriminators(node: Any, defs: dict[str, Any]) -> None:
    """The validator needs a tagged union's tag to pick the model: so does the schema."""
    if isinstance(node, dict):
        tag = node.get("discriminator")
        if isinstance(tag, dict):
            for ref in tag.get("mapping", {}).values():
                target = defs[ref.rsplit("/", 1)[1]]
                required = target.setdefault("required", [])
                if tag["propertyName"] not in required:
                    required.insert(0, tag["propertyName"])
                target["properties"][tag["propertyName"]].pop("default", None)
        for value in node.values():
            _require_discriminators(value, defs)
    elif isinstance(node, list):
        for value in node:
            _require_discriminators(value, defs)


@cache
def _schema_text() -> str:
    schema = Settings.model_json_schema(by_alias=True, schema_generator=_ConfigSchema)
    _require_discriminators(schema, schema.get("$defs", {}))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Stalwart autoscaler configuration"
    return json.dumps(schema)


def config_schema() -> dict[str, Any]:
    """JSON Schema of the config file (a fresh copy: callers may change it)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def dump_json(data: Any) -> str:
    """JSON text of config data; NaN or ±Inf (which JSON cannot carry) is an error, never
    printed as the non-JSON `NaN`."""
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
