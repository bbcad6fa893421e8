"""Checks a document against one of Pylon's JSON Schemas and explains the first problem.

The plan's machinery (:mod:`pylon.plan`), for the other files Pylon reads: a
cap's manifest (``schemas/cap.schema.json``) and the trust policy
(``schemas/trust.schema.json``). Both draw shared rules (the cap name, digests)
from ``schemas/common.schema.json`` by ``$ref``, so each rule is written once.

* fastjsonschema answers a valid document in microseconds; only when it
  rejects one (or when the document holds a float, which it would count as an
  integer) does jsonschema run, to find the shallowest problem.
* Integers are Python ints and never bools; a pattern's ``$`` matches only at
  the very end (``"crc32c\\n"`` is not a cap name), as in the plan.
* The message comes from the schema: a string definition with a ``pattern``,
  a ``title`` and a ``description`` explains a bad value as
  ``bad <title> <value>: <description>``.

A :class:`Problem` is a path (a tuple of keys and indexes) and a message; the
caller renders the path in its file's syntax (:func:`json_path` for JSON,
:func:`toml_path` for TOML) and raises its own error class.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pylon.plan import _describe, _find_float, _one_line, _quote, strict_validator

__all__ = ["COMMON_ID", "Problem", "Schema", "json_path", "schema_file", "toml_path"]

SCHEMA_DIR = Path(__file__).parent / "schemas"
#: The ``$id`` of the shared definitions; ``$ref`` to it are inlined on load.
COMMON_ID = "urn:pylon:schema:common:1"


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with a document: where (keys and indexes) and what."""

    path: tuple[str | int, ...]
    message: str


def schema_file(name: str) -> Path:
    """``schemas/<name>.schema.json``."""
    return SCHEMA_DIR / f"{name}.schema.json"


@cache
def _common_defs() -> dict[str, Any]:
    defs: dict[str, Any] = json.loads(schema_file("common").read_text(encoding="utf-8"))["$defs"]
    return defs


def _inline_common(node: Any) -> Any:
    """``node`` with every ``$ref`` into the common schema replaced by a copy of
    the definition (keywords beside the ``$ref``, such as a more precise
    ``title``, win). One self-contained schema is what both validators want."""
    if isinstance(node, list):
        return [_inline_common(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inline_common(v) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith(COMMON_ID + "#/$defs/"):
        name = ref.removeprefix(COMMON_ID + "#/$defs/")
        if name not in _common_defs():
            raise KeyError(f"{ref}: no such definition in {schema_file('common')}")
        del out["$ref"]
        out = {**copy.deepcopy(_common_defs()[name]), **out}
    return out


_TYPE_NAMES = {
    "json": {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
             "boolean": "true or false", "number": "a number"},
    "toml": {"object": "a table", "array": "an array", "string": "a string", "integer": "an integer",
             "boolean": "true or false", "number": "a number"},
}


class Schema:
    """One of Pylon's schemas, ready to check documents (compiled on first use).

    Args:
        name: the file ``schemas/<name>.schema.json``.
        dialect: ``"json"`` or ``"toml"``: the words messages use for the
            document's containers (an object or a table, a list or an array).
        type_names: overrides for those words (``{"object": "a JSON object"}``).
    """

    def __init__(self, name: str, *, dialect: str = "json", type_names: dict[str, str] | None = None):
        self.name = name
        self.dialect = dialect
        self.type_names = {**_TYPE_NAMES[dialect], **(type_names or {})}

    @property
    def path(self) -> Path:
        return schema_file(self.name)

    @property
    def document(self) -> dict[str, Any]:
        """The schema with the common definitions inlined (what both validators read)."""
        return _bundled(self.name)

    def first_problem(self, doc: Any, *, definition: str | None = None) -> Problem | None:
        """``None`` if ``doc`` is valid, else its shallowest problem.

        ``definition``: check ``doc`` against ``$defs/<definition>`` instead
        of the whole schema (one table of a manifest, read by the one builder
        that needs it)."""
        if _fast_validator(self.name, definition)(doc) and _find_float(doc) is None:
            return None
        errors = list(_strict_validator(self.name, definition).iter_errors(doc))
        if not errors:
            if _find_float(doc) is None:
                # The validators disagree: never accept what either refuses.
                return Problem((), f"does not match {self.path.name}")
            return None  # a float where the schema allows numbers: strict says fine
        # Shallowest first; at one place, a wrong type, then an unknown key (a
        # typo is also why a required key looks missing), then a missing one.
        rank = {"type": 0, "additionalProperties": 1, "required": 2}
        first = min(errors, key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path],
                                           rank.get(e.validator, 3), str(e.validator)))
        path, message = self._explain(first)
        return Problem(path, _one_line(message))

    def _explain(self, error: Any) -> tuple[tuple[str | int, ...], str]:
        path = tuple(error.absolute_path)
        kind, value, instance, schema = error.validator, error.validator_value, error.instance, error.schema
        toml = self.dialect == "toml"
        if kind == "additionalProperties" and isinstance(instance, dict):
            allowed = sorted(schema.get("properties", {}))
            extra = sorted(k for k in instance if k not in allowed)
            if toml:
                if not path:  # the top level holds tables
                    return path, (f"unknown table(s) {', '.join(toml_path((k,)) for k in extra)} "
                                  f"(known: {', '.join(toml_path((k,)) for k in allowed)})")
                return path, f"unknown key(s) {', '.join(extra)} (known: {', '.join(allowed)})"
            return path + (extra[0],), f"unknown key {_quote(extra[0])} (allowed: {', '.join(allowed)})"
        if kind == "required" and isinstance(instance, dict):
            missing = [k for k in value if k not in instance][0]
            if toml:
                sub = schema.get("properties", {}).get(missing, {})
                if not path and (sub.get("type") == "object" or "$ref" in sub):
                    return (), f"missing {toml_path((missing,))} table"
                return path + (missing,), "required, but missing"
            return path, f"missing required key {missing!r}"
        # A named kind of string (a cap name, a digest) explains itself.
        title, rule = schema.get("title"), schema.get("description")
        if kind in ("type", "pattern") and title and rule and "pattern" in schema:
            if kind == "pattern" and "propertyNames" in error.schema_path:
                # Reported by propertyNames: the path is the object, the instance the key.
                path = path + (instance,)
            shown = _quote(instance) if isinstance(instance, str) else _describe(instance)
            return path, f"bad {title} {shown}: {rule}"
        if kind == "type":
            return path, f"expected {self.type_names.get(value, value)}, got {_describe(instance)}"
        if kind == "pattern":
            return path, f"{_quote(instance)} does not match {value!r}"
        if kind in ("minLength", "minItems"):
            return path, "must not be empty" if value == 1 else f"needs at least {value}"
        if kind == "const":
            return path, f"must be {json.dumps(value)}, got {_describe(instance)}"
        if kind == "minimum":
            return path, f"must be at least {value}, got {_describe(instance)}"
        if kind == "maximum":
            return path, f"must be at most {value}, got {_describe(instance)}"
        if kind == "uniqueItems":
            return path, "lists the same item twice"
        return path, error.message


def json_path(parts: tuple[str | int, ...]) -> str:
    """``$.caps.crc32c``, ``$.guests[2]``, ``$["odd key"]``: the plan's path style."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _toml_key(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)


def toml_path(parts: tuple[str | int, ...]) -> str:
    """The same path as a TOML reader sees it: ``[cap].name``, ``[vendor.zstd].sha256``,
    ``[dynlink].sources[2]``. The first key is a table, and so is the second under
    ``[vendor]`` (``[vendor.<name>]``)."""
    if not parts:
        return "the top level"
    depth = 2 if parts[0] == "vendor" and len(parts) > 1 else 1
    out = "[" + ".".join(_toml_key(str(p)) for p in parts[:depth]) + "]"
    for part in parts[depth:]:
        out += f"[{part}]" if isinstance(part, int) else f".{_toml_key(part)}"
    return out


# -- the validators (one of each per schema and definition, compiled on first use) --

@cache
def _bundled(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = _inline_common(json.loads(schema_file(name).read_text(encoding="utf-8")))
    return doc


def _rooted(name: str, definition: str | None) -> dict[str, Any]:
    """The schema, or one of its definitions as a schema of its own."""
    doc = _bundled(name)
    if definition is None:
        return doc
    if definition not in doc.get("$defs", {}):
        raise KeyError(f"{schema_file(name)} has no definition {definition!r}")
    return {"$schema": doc["$schema"], "$id": doc.get("$id", ""), "$ref": f"#/$defs/{definition}",
            "$defs": doc["$defs"]}


def _draft7(node: Any) -> Any:
    """The schema as fastjsonschema (drafts 4 to 7) reads it: ``dependentRequired``
    is draft 7's ``dependencies``, and keywords beside a ``$ref`` (which draft 7
    ignores, so ``minItems`` would be lost) go beside it in an ``allOf``."""
    if isinstance(node, list):
        return [_draft7(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {("dependencies" if k == "dependentRequired" else k): _draft7(v) for k, v in node.items()}
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out = {**out, "allOf": [{"$ref": ref}, *out.get("allOf", [])]}
    return out


@cache
def _fast_validator(name: str, definition: str | None) -> Any:
    import fastjsonschema

    schema = _draft7(_rooted(name, definition))
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    compiled = fastjsonschema.compile(schema, use_default=False, use_formats=False)

    def valid(doc: Any) -> bool:
        try:
            compiled(doc)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return valid


@cache
def _strict_validator(name: str, definition: str | None) -> Any:
    return strict_validator(_rooted(name, definition))
