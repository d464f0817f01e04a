"""JSON Schemas of the YAML files, generated from the same pydantic models that validate them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from scanner.catalog import ControlSpec
from scanner.config import Config
from scanner.controltest import CaseFile
from scanner.inventory import InventoryFile
from scanner.waivers import WaiverFile


def _control_file_schema() -> dict[str, Any]:
    control = ControlSpec.model_json_schema(by_alias=True)
    defs = control.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "hcscan control file",
        "type": "object",
        "additionalProperties": False,
        "required": ["controls"],
        "properties": {"controls": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Control"}}},
        "$defs": {**defs, "Control": control},
    }


_MODELS: dict[str, type[BaseModel]] = {
    "inventory": InventoryFile,
    "waivers": WaiverFile,
    "control-tests": CaseFile,
}


def json_schema(kind: str) -> dict[str, Any]:
    if kind == "controls":
        return _control_file_schema()
    if kind == "config":
        schema = Config.model_json_schema(by_alias=True)
        for internal in ("base_dir", "source"):
            schema.get("properties", {}).pop(internal, None)
    else:
        schema = _MODELS[kind].model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
