"""A cap's interface, read from its WIT by wasm-tools, as a small typed model.

The WIT is parsed by ``wasm-tools component wit --json`` (the field's own
parser, the one the rest of the build already uses); this module only turns
that JSON into the subset docs/cap-interface.md supports, refusing the rest
with the type's name. Both generators (the cap's C dispatch and the guest's
Python proxy) work from this model, so they agree on names, order and shapes.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from pylon.build import toolchain
from pylon.errors import BuildError

__all__ = [
    "Case", "Enum", "Field", "Function", "Handle", "Interface", "ListT", "OptionT", "Param", "Prim",
    "Record", "Resource", "ResultT", "TupleT", "Type", "Variant", "load_interface", "parse_interface",
]

#: WIT primitive type names as the JSON spells them.
PRIMITIVES = frozenset({"bool", "s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64",
                        "f32", "f64", "char", "string"})
#: Integer ranges (inclusive), for decoders.
INT_RANGES = {
    "s8": (-(1 << 7), (1 << 7) - 1), "s16": (-(1 << 15), (1 << 15) - 1),
    "s32": (-(1 << 31), (1 << 31) - 1), "s64": (-(1 << 63), (1 << 63) - 1),
    "u8": (0, (1 << 8) - 1), "u16": (0, (1 << 16) - 1), "u32": (0, (1 << 32) - 1), "u64": (0, (1 << 64) - 1),
}


@dataclass(frozen=True)
class Prim:
    """``bool``, an integer, a float, ``char`` or ``string``."""

    name: str


@dataclass(frozen=True)
class ListT:
    element: Type

    @property
    def is_bytes(self) -> bool:
        """``list<u8>``: a CBOR byte string, Python ``bytes``."""
        return self.element == Prim("u8")


@dataclass(frozen=True)
class OptionT:
    inner: Type


@dataclass(frozen=True)
class ResultT:
    ok: Type | None
    err: Type | None


@dataclass(frozen=True)
class TupleT:
    items: tuple[Type, ...]


@dataclass(frozen=True)
class Field:
    name: str
    type: Type


@dataclass(frozen=True)
class Record:
    name: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Case:
    name: str
    type: Type | None


@dataclass(frozen=True)
class Variant:
    name: str
    cases: tuple[Case, ...]


@dataclass(frozen=True)
class Enum:
    name: str
    cases: tuple[str, ...]


@dataclass(frozen=True)
class Resource:
    """A resource type; ``index`` is its position among the interface's
    resources (the handle's type field, docs/cap-interface.md)."""

    name: str
    index: int


@dataclass(frozen=True)
class Handle:
    """``own<R>`` (``own=True``) or ``borrow<R>``."""

    resource: Resource
    own: bool


Type: TypeAlias = Prim | ListT | OptionT | ResultT | TupleT | Record | Variant | Enum | Handle


@dataclass(frozen=True)
class Param:
    name: str
    type: Type


@dataclass(frozen=True)
class Function:
    """One function of the interface.

    ``method`` is the dynlink method name (the canonical ABI name, e.g.
    ``[method]statement.step``); ``kind`` is ``"free"``, ``"constructor"``,
    ``"method"`` or ``"static"``; ``resource`` is set for the last three;
    ``short`` is the function's own name (``step``; ``open``; for a
    constructor, the resource's name). For a method, ``params[0]`` is
    ``self`` (a borrow handle).
    """

    method: str
    kind: str
    resource: Resource | None
    short: str
    params: tuple[Param, ...]
    result: Type | None
    docs: str = ""


@dataclass(frozen=True)
class Interface:
    """The cap's API: ``qualified`` is ``ns:pkg/name@version``."""

    qualified: str
    name: str
    types: dict[str, Type] = field(default_factory=dict)  # named types by WIT name, in order
    resources: tuple[Resource, ...] = ()
    functions: tuple[Function, ...] = ()

    def drop_method(self, resource: Resource) -> str:
        return f"[drop]{resource.name}"


class _Reader:
    """Turns wasm-tools' JSON (types referenced by index) into the model."""

    def __init__(self, doc: dict[str, Any], where: str):
        self.doc = doc
        self.where = where
        self.cache: dict[int, Type | Resource] = {}
        self.resources: list[Resource] = []

    def fail(self, what: str) -> BuildError:
        return BuildError(f"{self.where}: {what} (supported: docs/cap-interface.md, 'The WIT subset')")

    def ref(self, ref: Any, context: str) -> Type:
        if isinstance(ref, str):
            if ref not in PRIMITIVES:
                raise self.fail(f"{context}: type {ref!r} is not supported")
            return Prim(ref)
        t = self.node(int(ref), context)
        if isinstance(t, Resource):
            raise self.fail(f"{context}: a resource is used by value; use own<{t.name}> or borrow<{t.name}>")
        return t

    def node(self, index: int, context: str) -> Type | Resource:
        if index in self.cache:
            return self.cache[index]
        entry = self.doc["types"][index]
        name, kind = entry.get("name"), entry["kind"]
        shown = name or "an anonymous type"
        made: Type | Resource
        if kind == "resource":
            made = Resource(name, len(self.resources))
            self.resources.append(made)
        elif not isinstance(kind, dict) or len(kind) != 1:
            raise self.fail(f"{context}: {shown} has an unknown kind {kind!r}")
        else:
            (tag, body), = kind.items()
            here = f"{context} ({name})" if name else context
            if tag == "type":  # an alias: `type x = y`
                made = self.ref(body, here)
            elif tag == "list":
                made = ListT(self.ref(body, here))
            elif tag == "option":
                inner = self.ref(body, here)
                if isinstance(inner, OptionT):
                    raise self.fail(f"{here}: option<option<...>> is not supported")
                made = OptionT(inner)
            elif tag == "result":
                made = ResultT(self.opt(body.get("ok"), here), self.opt(body.get("err"), here))
            elif tag == "tuple":
                made = TupleT(tuple(self.ref(t, here) for t in body["types"]))
            elif tag == "record":
                made = Record(name, tuple(Field(f["name"], self.ref(f["type"], f"{here}.{f['name']}"))
                                          for f in body["fields"]))
            elif tag == "variant":
                made = Variant(name, tuple(Case(c["name"], self.opt(c.get("type"), f"{here}.{c['name']}"))
                                           for c in body["cases"]))
            elif tag == "enum":
                made = Enum(name, tuple(c["name"] for c in body["cases"]))
            elif tag == "handle":
                (how, target), = body.items()
                res = self.node(int(target), here)
                if not isinstance(res, Resource):
                    raise self.fail(f"{here}: a handle to something that is not a resource")
                made = Handle(res, how == "own")
            else:
                raise self.fail(f"{context}: {shown} is a {tag}, which is not supported")
        self.cache[index] = made
        return made

    def opt(self, ref: Any, context: str) -> Type | None:
        return None if ref is None else self.ref(ref, context)


def parse_interface(doc: dict[str, Any], export: str, where: str = "the cap's WIT") -> Interface:
    """The model of interface ``export`` (``ns:pkg/name@version``) in ``doc``,
    the JSON ``wasm-tools component wit --json`` prints."""
    packages = doc["packages"]
    found = None
    for iface in doc["interfaces"]:
        pkg = packages[iface["package"]]["name"]  # ns:pkg@version
        base, _, version = pkg.partition("@")
        qualified = f"{base}/{iface['name']}" + (f"@{version}" if version else "")
        if qualified == export:
            found = iface
            break
    if found is None:
        raise BuildError(f"{where}: no interface {export!r} in the WIT package")
    reader = _Reader(doc, where)
    types: dict[str, Type] = {}
    for tname, index in found["types"].items():
        t = reader.node(int(index), f"type {tname}")
        if not isinstance(t, Resource):
            types[tname] = t
    functions = []
    for fname, f in found["functions"].items():
        kind_doc = f["kind"]
        kind = kind_doc if isinstance(kind_doc, str) else next(iter(kind_doc))
        if kind in ("async-freestanding", "async-method", "async-static"):
            raise reader.fail(f"function {fname}: async functions are not supported")
        resource = None
        if isinstance(kind_doc, dict):
            res = reader.node(int(kind_doc[kind]), f"function {fname}")
            assert isinstance(res, Resource)
            resource = res
        kind = {"freestanding": "free"}.get(kind, kind)
        short = fname.split("]", 1)[-1].split(".", 1)[-1]
        params = tuple(Param(p["name"], reader.ref(p["type"], f"function {fname}, parameter {p['name']}"))
                       for p in f["params"])
        result = reader.opt(f.get("result"), f"function {fname}, result")
        functions.append(Function(fname, kind, resource, short, params, result,
                                  (f.get("docs") or {}).get("contents", "")))
    return Interface(export, found["name"], types, tuple(reader.resources), tuple(functions))


def load_interface(wit: Path, export: str) -> Interface:
    """Parses ``wit`` with wasm-tools and returns the model of ``export``."""
    # Not toolchain.run: it folds stderr into stdout, and we parse stdout.
    cmd = [toolchain.wasm_tools(), "component", "wit", str(wit), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"wasm-tools could not read {wit}:\n{done.stderr.strip()}")
    try:
        doc = json.loads(done.stdout)
    except ValueError as exc:
        raise BuildError(f"wasm-tools printed no JSON for {wit}: {exc}") from None
    return parse_interface(doc, export, where=str(wit))
