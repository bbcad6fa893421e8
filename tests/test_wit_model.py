"""pylon.build.capgen.wit_model: a cap's WIT, through wasm-tools, as the supported subset."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylon.build.capgen.wit_model import (
    Enum,
    Handle,
    ListT,
    OptionT,
    Prim,
    Record,
    ResultT,
    TupleT,
    Variant,
    load_interface,
)
from pylon.errors import BuildError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, body: str) -> Path:
    wit = tmp_path / "api.wit"
    wit.write_text(f"package t:probe@0.1.0;\ninterface api {{\n{body}\n}}\nworld w {{ export api; }}\n")
    return wit


def test_sqlite_interface_is_read_in_declaration_order() -> None:
    iface = load_interface(ROOT / "wit/caps/sqlite.wit", "pylon:sqlite/sqlite@0.1.0")
    assert [r.name for r in iface.resources] == ["connection", "statement"]
    assert [r.index for r in iface.resources] == [0, 1]
    by_method = {f.method: f for f in iface.functions}
    open_ = by_method["[static]connection.open"]
    assert (open_.kind, open_.short, open_.resource) == ("static", "open", iface.resources[0])
    assert isinstance(open_.result, ResultT) and open_.result.ok == Handle(iface.resources[0], own=True)
    step = by_method["[method]statement.step"]
    assert step.params[0].type == Handle(iface.resources[1], own=False)
    value = iface.types["value"]
    assert isinstance(value, Variant) and [c.name for c in value.cases][:2] == ["null", "integer"]
    blob = value.cases[-1].type
    assert isinstance(blob, ListT) and blob.is_bytes
    assert isinstance(iface.types["error"], Record)


def test_every_supported_shape(tmp_path: Path) -> None:
    wit = write(tmp_path, """
        enum color { red, green }
        type alias = list<tuple<u8, string>>;
        resource thing { constructor(n: u32); consume: static func(t: thing) -> s64; }
        f: func(a: alias, b: option<color>, c: result<_, string>) -> result<f64>;
    """)
    iface = load_interface(wit, "t:probe/api@0.1.0")
    f = next(f for f in iface.functions if f.method == "f")
    a, b, c = (p.type for p in f.params)
    assert a == ListT(TupleT((Prim("u8"), Prim("string"))))
    assert b == OptionT(Enum("color", ("red", "green")))
    assert c == ResultT(None, Prim("string"))
    assert f.result == ResultT(Prim("f64"), None)
    ctor = next(f for f in iface.functions if f.kind == "constructor")
    assert (ctor.method, ctor.short) == ("[constructor]thing", "thing")
    consume = next(f for f in iface.functions if f.short == "consume")
    assert consume.params[0].type == Handle(iface.resources[0], own=True)


@pytest.mark.parametrize(("body", "named"), [
    ("flags perms { read, write }\nf: func(p: perms);", "flags"),
    ("f: func(x: option<option<u8>>);", "option<option"),
])
def test_unsupported_types_are_refused_by_name(tmp_path: Path, body: str, named: str) -> None:
    with pytest.raises(BuildError, match=named) as err:
        load_interface(write(tmp_path, body), "t:probe/api@0.1.0")
    assert "docs/cap-interface.md" in str(err.value)


def test_unknown_interface_and_bad_wit_are_clear(tmp_path: Path) -> None:
    wit = write(tmp_path, "f: func();")
    with pytest.raises(BuildError, match="no interface 't:probe/nope@0.1.0'"):
        load_interface(wit, "t:probe/nope@0.1.0")
    wit.write_text("package t:probe@0.1.0;\ninterface api { f: func(x: nosuch); }\n")
    with pytest.raises(BuildError, match="could not read"):
        load_interface(wit, "t:probe/api@0.1.0")
