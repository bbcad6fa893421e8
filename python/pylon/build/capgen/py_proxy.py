"""The guest side of a cap's generated dynlink face: a Python proxy module.

``generate_proxy(iface)`` returns the source of a module that runs inside the
guest (CPython 3.14; host CPython 3.11+ for the unit tests), exec'd by
``pylon_guest.dynlink.Cap.api`` with ``cap`` bound to the resolved cap. It
follows componentize-py's binding style (docs/cap-interface.md, "The guest
proxy"), so code written against a cap's embedded import runs unchanged
against its dynlink face.

Speed is the point of generating rather than interpreting the WIT at run
time: the guest's cbor2 is pure Python, so every signature gets its own
encoder (array headers and handle prefixes as constants, one tiny helper per
scalar) and the common reply shapes (null, bool, int, float, text, bytes,
handle, and ``result`` of those) are decoded inline; everything else goes
through a small positional CBOR reader in the module's prelude (cbor2 only
for what that reader refuses: tags, indefinite lengths) and a generated
converter to the typed values.
"""

from __future__ import annotations

import keyword

from pylon.build.capgen.wit_model import (
    Enum,
    Function,
    Handle,
    Interface,
    ListT,
    OptionT,
    Prim,
    Record,
    Resource,
    ResultT,
    TupleT,
    Type,
    Variant,
)

__all__ = ["generate_proxy", "py_class", "py_name"]

_INTS = frozenset({"s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64"})


def py_name(wit: str) -> str:
    """componentize-py's snake_case for a WIT identifier (``last-insert-rowid``
    -> ``last_insert_rowid``; a keyword gets a trailing ``_``)."""
    name = wit.replace("-", "_").lower()
    return name + "_" if keyword.iskeyword(name) else name


def py_class(wit: str) -> str:
    """componentize-py's PascalCase for a WIT identifier (``big-box`` ->
    ``BigBox``; ``none`` -> ``None_``)."""
    name = "".join(part.capitalize() for part in wit.split("-"))
    return name + "_" if keyword.iskeyword(name) else name


def _enum_case(wit: str) -> str:
    name = wit.replace("-", "_").upper()
    return name + "_" if keyword.iskeyword(name) else name


def _bytes_lit(data: bytes) -> str:
    return "b'" + "".join(f"\\x{b:02x}" for b in data) + "'"


def _array_header(n: int) -> bytes:
    if n < 24:
        return bytes([0x80 | n])
    if n < 256:
        return bytes([0x98, n])
    return bytes([0x99]) + n.to_bytes(2, "big")


def _docstring(text: str, indent: str) -> list[str]:
    text = text.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if not text:
        return []
    lines = text.splitlines()
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}'] + [f"{indent}{ln}".rstrip() for ln in lines[1:]] + [f'{indent}"""']


# The prelude every proxy starts with: the module's run-time helpers. Names
# start with "_" so no WIT name (PascalCase or snake_case, never a leading
# underscore) can shadow them.
_PRELUDE = r'''
import struct as _struct
import typing as _t
import weakref as _weakref
from dataclasses import dataclass as _dataclass
from enum import Enum as _Enum
from operator import index as _index

try:
    from componentize_py_types import Err as _Err, Ok as _Ok
except ImportError:  # outside a componentize-py guest (the host's unit tests)
    _E = _t.TypeVar("_E")
    _T = _t.TypeVar("_T")

    @_dataclass
    class _Ok(_t.Generic[_T]):  # type: ignore[no-redef]
        value: _T

    @_dataclass(frozen=True)
    class _Err(_t.Generic[_E], Exception):  # type: ignore[no-redef]
        value: _E

_cap = cap  # noqa: F821 - bound by pylon_guest.dynlink.Cap.api before exec
try:
    # The guest's Cap: call the linker's import directly and translate its
    # error here, one Python frame less per call than Cap.invoke.
    from pylon_guest.dynlink import BadPayload as _BadPayload, DynlinkError as _DynlinkError
    from pylon_guest.dynlink import _translate as _tr
    _raw = _cap._invoke
    _RawErr = _Err
except (ImportError, AttributeError):
    _raw = _cap.invoke
    _tr = None

    class _RawErr(Exception):  # type: ignore[no-redef]
        """Never raised: cap.invoke raises its errors itself."""

    try:
        from pylon_guest.dynlink import BadPayload as _BadPayload, DynlinkError as _DynlinkError
    except ImportError:
        _DynlinkError = Exception  # type: ignore[misc,assignment]
        _BadPayload = ValueError  # type: ignore[misc,assignment]

_new = object.__new__
_pack_d = _struct.Struct(">d").pack
_unpack_d = _struct.Struct(">d").unpack_from
_unpack_f = _struct.Struct(">f").unpack_from
_unpack_e = _struct.Struct(">e").unpack_from
_utf8 = str.encode
_SMALL = [bytes((i,)) for i in range(24)]
_TEXT = [bytes((0x60 | i,)) for i in range(24)]
_BYTES = [bytes((0x40 | i,)) for i in range(24)]
_view = memoryview


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major | n,))
    if n < 0x100:
        return bytes((major | 24, n))
    if n < 0x10000:
        return bytes((major | 25, n >> 8, n & 0xFF))
    if n < 0x100000000:
        return bytes((major | 26,)) + n.to_bytes(4, "big")
    if n < 0x10000000000000000:
        return bytes((major | 27,)) + n.to_bytes(8, "big")
    raise OverflowError(f"{n} does not fit in 64 bits")


def _e_int(v: int) -> bytes:
    if v.__class__ is not int:
        v = _index(v)
    if 0 <= v < 24:
        return _SMALL[v]
    if v >= 0:
        return _head(0x00, v)
    return _head(0x20, -1 - v)


def _e_bool(v: bool) -> bytes:
    return b"\xf5" if v else b"\xf4"


def _e_float(v: float) -> bytes:
    return b"\xfb" + _pack_d(v)


def _e_str(v: str) -> bytes:
    b = _utf8(v)
    n = len(b)
    return (_TEXT[n] if n < 24 else _head(0x60, n)) + b


def _e_char(v: str) -> bytes:
    if len(v) != 1:
        raise ValueError(f"a char is one code point, not {v!r}")
    return _e_str(v)


def _e_bytes(v: bytes) -> bytes:
    n = len(v)
    if v.__class__ is not bytes:
        v = bytes(v)
    return (_BYTES[n] if n < 24 else _head(0x40, n)) + v


# Heads for 0..255 (an unsigned int; a text / byte string's length): the
# generated signatures index these inline instead of calling an encoder.
_U8 = [_head(0x00, i) for i in range(256)]
_T8 = [_head(0x60, i) for i in range(256)]
_B8 = [_head(0x40, i) for i in range(256)]


def _e_list(v: _t.Any, enc: _t.Any) -> bytes:
    return _head(0x80, len(v)) + b"".join([enc(x) for x in v])


class _Fallback(Exception):
    """CBOR the fast reader does not take (tags, indefinite lengths)."""


def _load(b: bytes, i: int) -> tuple[_t.Any, int]:
    """One CBOR item of ``b`` at ``i``: (plain value, next offset)."""
    c = b[i]
    i += 1
    m = c >> 5
    n = c & 31
    if m == 7:
        if n == 22 or n == 23:
            return None, i
        if n == 21:
            return True, i
        if n == 20:
            return False, i
        if n == 27:
            return _unpack_d(b, i)[0], i + 8
        if n == 26:
            return _unpack_f(b, i)[0], i + 4
        if n == 25:
            return _unpack_e(b, i)[0], i + 2
        raise _Fallback
    if n >= 24:
        if n == 24:
            n = b[i]
            i += 1
        elif n == 25:
            n = (b[i] << 8) | b[i + 1]
            i += 2
        elif n == 26 or n == 27:
            w = 4 if n == 26 else 8
            if i + w > len(b):
                raise _Fallback
            n = int.from_bytes(b[i:i + w], "big")
            i += w
        else:
            raise _Fallback
    if m == 0:
        return n, i
    if m == 4:
        out = []
        append = out.append
        for _ in range(n):
            x, i = _load(b, i)
            append(x)
        return out, i
    if m == 3 or m == 2:
        j = i + n
        if j > len(b):
            raise _Fallback
        return (b[i:j].decode() if m == 3 else b[i:j]), j
    if m == 1:
        return -1 - n, i
    if m == 5:
        d = {}
        for _ in range(n):
            k, i = _load(b, i)
            d[k], i = _load(b, i)
        return d, i
    raise _Fallback


def _decode(r: bytes, method: str, conv: _t.Any) -> _t.Any:
    """The reply ``r`` of ``method``, decoded and converted by ``conv``."""
    try:
        v, i = _load(r, 0)
        if i != len(r):
            raise _Fallback
    except Exception:
        try:
            import cbor2 as _cbor2

            v = _cbor2.loads(r)
        except Exception:
            raise _BadPayload(f"the reply of {method} is not CBOR") from None
    if conv is None:
        return v
    try:
        return conv(v)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise _BadPayload(f"the reply of {method} does not have the shape its WIT says: {exc}") from None


def _start(r: bytes, at: int, major: int) -> int:
    """Where the text or byte string (``major`` 0x60 or 0x40) that is the
    rest of ``r`` from ``at`` starts, or -1 when it is not one."""
    c = r[at] - major
    if c < 24:
        n, s = c, at + 1
    elif c == 24:
        n, s = r[at + 1], at + 2
    elif c == 25:
        n, s = (r[at + 1] << 8) | r[at + 2], at + 3
    elif c == 26:
        n, s = int.from_bytes(r[at + 1:at + 5], "big"), at + 5
    else:
        return -1
    return s if c >= 0 and s + n == len(r) else -1


def _f(v: _t.Any) -> float:
    return float(v)


def _tuple(v: _t.Any) -> tuple[_t.Any, ...]:
    return tuple(v)


def _closed(what: str) -> _t.NoReturn:
    raise _BadPayload(f"this {what} handle is closed")


def _handle(v: _t.Any, cls: type, what: str) -> bytes:
    """The encoded handle (b"\x50" + token) of ``v``, a live ``cls``."""
    if not isinstance(v, cls):
        raise TypeError(f"expected a {cls.__name__} ({what} handle), not {type(v).__name__}")
    h = v._h
    if h is None:
        _closed(what)
    return h


def _consume(v: _t.Any) -> None:
    """After ``v`` went to the cap as an own<R> argument: it is the cap's now."""
    v._h = v._a = None
    v._f.detach()


def _a1(o: _t.Any) -> bytes | None:
    """The request of a method without arguments (``[handle]``) for a handle
    object ``_adopt`` did not make, or None when it is closed."""
    h = o._h
    return None if h is None else b"\x81" + h


def _gc_drop(method: str, h: bytes) -> None:
    # Runs when a handle object is collected: the cap may be dead or gone
    # (its run ending), which is no one's error.
    try:
        _raw(method, b"\x81" + h)
    except Exception:
        pass


def _adopt(o: _t.Any, h: bytes, drop: str) -> _t.Any:
    o._h = h
    # A method without arguments sends exactly this: built once, not per call.
    o._a = b"\x81" + h
    f = o._f = _weakref.finalize(o, _gc_drop, drop, h)
    # Not at interpreter exit: the host's $pylon/release-all frees what is left.
    f.atexit = False
    return o


def _h_reply(r: bytes, method: str) -> bytes:
    if len(r) == 17 and r[0] == 0x50:
        return r
    raise _BadPayload(f"the reply of {method} is not a handle")


def _h_plain(v: _t.Any) -> bytes:
    if v.__class__ is bytes and len(v) == 16:
        return b"\x50" + v
    raise ValueError("not a 16-byte handle")


class _Handle:
    """What every resource class shares: the token, close, ``with``."""

    __slots__ = ("_h", "_a", "_f", "__weakref__")
    _h: bytes | None
    _a: bytes | None
    _drop: str = ""

    def _close(self) -> None:
        h = self._h
        if h is not None:
            self._h = self._a = None
            self._f.detach()
            try:
                _raw(self._drop, b"\x81" + h)
            except _RawErr as x:
                raise _tr(x) from None

    def __enter__(self) -> _t.Any:
        return self

    def __exit__(self, *exc: _t.Any) -> None:
        self._close()

    @property
    def closed(self) -> bool:
        """True once the handle was dropped (closed, or given away as an own argument)."""
        return self._h is None

    def __repr__(self) -> str:
        state = "closed" if self._h is None else self._h[1:].hex()
        return f"<{type(self).__name__} handle {state}>"
'''


class _Gen:
    def __init__(self, iface: Interface) -> None:
        self.iface = iface
        self.out: list[str] = []       # type definitions and API, in order
        self.helpers: list[str] = []   # generated encoders / converters
        self.enc_names: dict[Type, str] = {}
        self.conv_names: dict[Type, str | None] = {}
        self.classes: dict[str, str] = {}  # WIT name -> Python class, for records/variants/enums/resources
        self.counter = 0
        self.methods: dict[str, str] = {}  # method -> its module constant

    def method_const(self, method: str) -> str:
        """A module constant holding the name ``method`` is sent as, so a call
        does not build it."""
        name = self.methods.get(method)
        if name is None:
            name = self.methods[method] = self.fresh("_M")
            self.helpers.append(f"{name} = {method!r}")
        return name

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # --- annotations --------------------------------------------------------

    def ann(self, t: Type | None) -> str:
        if t is None:
            return "None"
        if isinstance(t, Prim):
            return {"bool": "bool", "f32": "float", "f64": "float", "char": "str", "string": "str"}.get(t.name, "int")
        if isinstance(t, ListT):
            return "bytes" if t.is_bytes else f"list[{self.ann(t.element)}]"
        if isinstance(t, OptionT):
            return f"{self.ann(t.inner)} | None"
        if isinstance(t, ResultT):
            return f"_Ok[{self.ann(t.ok)}] | _Err[{self.ann(t.err)}]"
        if isinstance(t, TupleT):
            return f"tuple[{', '.join(self.ann(i) for i in t.items)}]"
        if isinstance(t, (Record, Variant, Enum)):
            return py_class(t.name)
        return py_class(t.resource.name)

    # --- encoders: value -> CBOR bytes --------------------------------------

    def enc(self, t: Type, x: str) -> str:
        """An expression encoding the value of the expression ``x`` (evaluated once)."""
        if isinstance(t, Prim):
            if t.name in _INTS:
                return f"_e_int({x})"
            return {"bool": f"_e_bool({x})", "f32": f"_e_float({x})", "f64": f"_e_float({x})",
                    "char": f"_e_char({x})", "string": f"_e_str({x})"}[t.name]
        if isinstance(t, ListT) and t.is_bytes:
            return f"_e_bytes({x})"
        if isinstance(t, Handle):
            cls = py_class(t.resource.name)
            return f"_handle({x}, {cls}, {t.resource.name!r})"
        return f"{self.encoder(t)}({x})"

    def encoder(self, t: Type) -> str:
        """The name of a function encoding a value of ``t``."""
        name = self.enc_names.get(t)
        if name is not None:
            return name
        if isinstance(t, Prim) or (isinstance(t, ListT) and t.is_bytes):
            return self.enc(t, "").rstrip("()")
        if isinstance(t, Record):
            name = f"_e_{py_class(t.name)}"
        elif isinstance(t, (Variant, Enum)):
            name = f"_e_{py_class(t.name)}"
        else:
            name = self.fresh("_e")
        self.enc_names[t] = name
        body: list[str]
        if isinstance(t, ListT):
            el = self.encoder(t.element)
            body = [f"    return _e_list(v, {el})"]
        elif isinstance(t, OptionT):
            body = [f"    return b'\\xf6' if v is None else {self.enc(t.inner, 'v')}"]
        elif isinstance(t, ResultT):
            ok = self.enc(t.ok, "v.value") if t.ok is not None else "b'\\xf6'"
            err = self.enc(t.err, "v.value") if t.err is not None else "b'\\xf6'"
            body = ["    if isinstance(v, _Ok):", f"        return b'\\x82\\x00' + {ok}",
                    "    if isinstance(v, _Err):", f"        return b'\\x82\\x01' + {err}",
                    "    raise TypeError(f'expected Ok(...) or Err(...), not {type(v).__name__}')"]
        elif isinstance(t, TupleT):
            parts = " + ".join([_bytes_lit(_array_header(len(t.items)))]
                               + [self.enc(item, f"v[{i}]") for i, item in enumerate(t.items)])
            body = [f"    if len(v) != {len(t.items)}:",
                    f"        raise ValueError(f'expected a tuple of {len(t.items)}, not {{len(v)}} items')",
                    f"    return {parts}"]
        elif isinstance(t, Record):
            parts = " + ".join([_bytes_lit(_array_header(len(t.fields)))]
                               + [self.enc(f.type, f"v.{py_name(f.name)}") for f in t.fields])
            body = [f"    return {parts}"]
        elif isinstance(t, Variant):
            cls = py_class(t.name)
            body = ["    t = v.__class__"]
            for i, case in enumerate(t.cases):
                head = b"\x82" + _int_bytes(i)
                made = (f"{_bytes_lit(head)} + {self.enc(case.type, 'v.value')}" if case.type is not None
                        else _bytes_lit(head + b"\xf6"))
                body += [f"    if t is {cls}_{py_class(case.name)}:", f"        return {made}"]
            body.append(f"    raise TypeError(f'expected a {cls} case, not {{type(v).__name__}}')")
        elif isinstance(t, Enum):
            cls = py_class(t.name)
            body = [f"    return _e_int({cls}(v).value)"]
        elif isinstance(t, Handle):  # nested own<R>/borrow<R>: an own one is given away here
            cls = py_class(t.resource.name)
            body = [f"    h = _handle(v, {cls}, {t.resource.name!r})"]
            if t.own:
                body.append("    _consume(v)")
            body.append("    return h")
        else:
            raise AssertionError(t)
        self.helpers.append("\n".join([f"def {name}(v: _t.Any) -> bytes:"] + body))
        return name

    # --- converters: plain decoded CBOR -> typed value (None: identity) ------

    def conv(self, t: Type | None) -> str | None:
        if t is None:
            return None
        if t in self.conv_names:
            return self.conv_names[t]
        if isinstance(t, Prim):
            name = "_f" if t.name in ("f32", "f64") else None
            self.conv_names[t] = name
            return name
        if isinstance(t, ListT):
            inner = None if t.is_bytes else self.conv(t.element)
            if inner is None:
                self.conv_names[t] = None
                return None
            name = self.fresh("_c")
            self.conv_names[t] = name
            self.helpers.append(f"def {name}(v: _t.Any) -> _t.Any:\n    return [{inner}(x) for x in v]")
            return name
        if isinstance(t, OptionT):
            inner = self.conv(t.inner)
            if inner is None:
                self.conv_names[t] = None
                return None
            name = self.fresh("_c")
            self.conv_names[t] = name
            self.helpers.append(f"def {name}(v: _t.Any) -> _t.Any:\n    return None if v is None else {inner}(v)")
            return name
        if isinstance(t, (Record, Variant, Enum)):
            name = f"_c_{py_class(t.name)}"
        else:
            name = self.fresh("_c")
        self.conv_names[t] = name
        if isinstance(t, ResultT):
            ok, err = self.call(self.conv(t.ok), "v[1]"), self.call(self.conv(t.err), "v[1]")
            if t.ok is None:
                ok = "None"
            if t.err is None:
                err = "None"
            body = ["    if v[0] == 0:", f"        return _Ok({ok})", "    if v[0] == 1:",
                    f"        return _Err({err})", "    raise ValueError(f'result tag {v[0]!r}')"]
        elif isinstance(t, TupleT):
            items = [self.call(self.conv(item), f"v[{i}]") for i, item in enumerate(t.items)]
            body = [f"    if len(v) != {len(items)}:", "        raise ValueError('tuple length')",
                    f"    return ({', '.join(items)}{',' if len(items) == 1 else ''})"]
        elif isinstance(t, Record):
            fields = [self.call(self.conv(f.type), f"v[{i}]") for i, f in enumerate(t.fields)]
            body = [f"    if len(v) != {len(fields)}:", "        raise ValueError('record length')",
                    f"    return {py_class(t.name)}({', '.join(fields)})"]
        elif isinstance(t, Variant):
            cls = py_class(t.name)
            body = ["    k, p = v"]
            for i, case in enumerate(t.cases):
                made = f"{cls}_{py_class(case.name)}(" + (self.call(self.conv(case.type), "p")
                                                           if case.type is not None else "") + ")"
                body += [f"    if k == {i}:", f"        return {made}"]
            body.append("    raise ValueError(f'case {k!r}')")
        elif isinstance(t, Enum):
            body = [f"    return _CASES_{py_class(t.name)}[v]"]
        elif isinstance(t, Handle):
            cls = py_class(t.resource.name)
            body = [f"    return _adopt(_new({cls}), _h_plain(v), {cls}._drop)"]
        else:
            raise AssertionError(t)
        self.helpers.append("\n".join([f"def {name}(v: _t.Any) -> _t.Any:"] + body))
        return name

    @staticmethod
    def call(conv: str | None, x: str) -> str:
        return x if conv is None else f"{conv}({x})"

    # --- types ---------------------------------------------------------------

    def named_types(self) -> list[Record | Variant | Enum]:
        """Records, variants and enums: the interface's own, then any only
        reachable from a signature, each once, dependencies first."""
        seen: list[Record | Variant | Enum] = []

        def walk(t: Type | None) -> None:
            if t is None or t in seen:
                return
            if isinstance(t, ListT):
                walk(t.element)
            elif isinstance(t, OptionT):
                walk(t.inner)
            elif isinstance(t, ResultT):
                walk(t.ok)
                walk(t.err)
            elif isinstance(t, TupleT):
                for item in t.items:
                    walk(item)
            elif isinstance(t, Record):
                for f in t.fields:
                    walk(f.type)
                seen.append(t)
            elif isinstance(t, Variant):
                for c in t.cases:
                    walk(c.type)
                seen.append(t)
            elif isinstance(t, Enum):
                seen.append(t)

        for t in self.iface.types.values():
            walk(t)
        for f in self.iface.functions:
            for p in f.params:
                walk(p.type)
            walk(f.result)
        return seen

    def emit_type(self, t: Type) -> None:
        if isinstance(t, Record):
            cls = py_class(t.name)
            lines = ["@_dataclass", f"class {cls}:", f'    """Record ``{t.name}``."""']
            # Real annotations, not strings: dataclass resolves string ones
            # through sys.modules, where an exec'd proxy is not (yet).
            lines += [f"    {py_name(f.name)}: {self.ann(f.type)}" for f in t.fields]
            self.out.append("\n".join(lines))
        elif isinstance(t, Variant):
            cls = py_class(t.name)
            names = []
            for case in t.cases:
                cname = f"{cls}_{py_class(case.name)}"
                names.append(cname)
                body = f"    value: {self.ann(case.type)}" if case.type is not None else "    pass"
                self.out.append(f"@_dataclass\nclass {cname}:\n{body}")
            self.out.append(f"{cls} = _t.Union[{', '.join(names)}]")
        elif isinstance(t, Enum):
            cls = py_class(t.name)
            lines = [f"class {cls}(_Enum):"] + [f"    {_enum_case(c)} = {i}" for i, c in enumerate(t.cases)]
            self.out.append("\n".join(lines) + f"\n\n\n_CASES_{cls} = list({cls})")

    # --- functions -------------------------------------------------------------

    def function(self, f: Function, indent: str) -> list[str]:
        """A ``def`` calling ``f`` through the cap."""
        params = list(f.params)
        is_method = f.kind == "method"
        is_ctor = f.kind == "constructor"
        if is_method:
            params = params[1:]
        names = [py_name(p.name) for p in params]
        sig = ", ".join(f"{n}: {self.ann(p.type)!r}" for n, p in zip(names, params, strict=True))
        if is_ctor:
            name = "__init__"
            ret = "None"
        else:
            name = py_name(f.short)
            ret = repr(self.ann(f.result.ok if isinstance(f.result, ResultT) else f.result))
        head = f"def {name}(" + ", ".join((["self"] if is_method or is_ctor else []) + ([sig] if sig else [])) \
            + f") -> {ret}:"
        lines = [indent + head] if f.kind != "static" else [indent + "@staticmethod", indent + head]
        inner = indent + "    "
        doc = f.docs.strip()
        if isinstance(f.result, ResultT):
            err = self.ann(f.result.err)
            doc = (doc + "\n\n" if doc else "") + f"Raises: `componentize_py_types.Err({err})`"
        lines += _docstring(doc, inner)
        # The request: a definite-length array, the handle first for a method.
        n = len(params) + (1 if is_method else 0)
        what = f.resource.name if f.resource is not None else ""
        if is_method and not params:
            # The whole request is prebuilt per handle (_adopt).
            lines += [f"{inner}try:", f"{inner}    _p = self._a", f"{inner}except AttributeError:",
                      f"{inner}    _p = _a1(self)", f"{inner}if _p is None:", f"{inner}    _closed({what!r})"]
        else:
            parts = [_bytes_lit(_array_header(n))]
            if is_method:
                lines += [f"{inner}_h = self._h", f"{inner}if _h is None:", f"{inner}    _closed({what!r})"]
                parts.append("_h")
            for i, (n_, p) in enumerate(zip(names, params, strict=True)):
                parts += self.inline_enc(p.type, n_, i, lines, inner)
            # One join beats a chain of concatenations (each a new bytes) past three parts.
            joined = f"b''.join(({', '.join(parts)}))" if len(parts) > 3 else " + ".join(parts)
            lines.append(f"{inner}_p = {joined}")
        for n_, p in zip(names, params, strict=True):
            if isinstance(p.type, Handle) and p.type.own:
                lines.append(f"{inner}_consume({n_})")
        lines += [f"{inner}try:", f"{inner}    _r = _raw({self.method_const(f.method)}, _p)",
                  f"{inner}except _RawErr as _x:", f"{inner}    raise _tr(_x) from None"]
        if is_ctor:
            cls = py_class(f.resource.name)  # type: ignore[union-attr]
            res = f.result
            if isinstance(res, ResultT):
                lines += [f"{inner}if _r[:3] == b'\\x82\\x00\\x50' and len(_r) == 19:",
                          f"{inner}    _adopt(self, _r[2:], {cls}._drop)", f"{inner}    return",
                          f"{inner}_v = _decode(_r, {f.method!r}, {self.conv(res)})",
                          f"{inner}if _v.__class__ is _Ok:",
                          # An odd encoding of the ok handle: move it from the
                          # object the converter made to this one.
                          f"{inner}    _o = _v.value", f"{inner}    _hh = _o._h", f"{inner}    _consume(_o)",
                          f"{inner}    _adopt(self, _hh, {cls}._drop)", f"{inner}    return",
                          f"{inner}raise _v"]
            else:
                lines.append(f"{inner}_adopt(self, _h_reply(_r, {f.method!r}), {cls}._drop)")
            return lines
        lines += self.reply(f.result, f.method, inner)
        return lines

    def inline_enc(self, t: Type, x: str, i: int, lines: list[str], inner: str) -> list[str]:
        """The parts (expressions) encoding argument ``x``, the ``i``-th,
        appending any statements they need to ``lines``: the scalars and
        strings without a function call, the rest through ``enc``."""
        if isinstance(t, Prim) and t.name in _INTS:
            return [f"(_U8[{x}] if {x}.__class__ is int and 0 <= {x} < 256 else _e_int({x}))"]
        if isinstance(t, Prim) and t.name == "bool":
            return [f"(b'\\xf5' if {x} else b'\\xf4')"]
        if isinstance(t, Prim) and t.name == "string":
            lines += [f"{inner}_s{i} = _utf8({x})", f"{inner}_n{i} = len(_s{i})"]
            return [f"(_T8[_n{i}] if _n{i} < 256 else _head(0x60, _n{i}))", f"_s{i}"]
        if isinstance(t, ListT) and t.is_bytes:
            # bytes as is; another buffer (bytearray, memoryview) copied to bytes.
            lines += [f"{inner}_s{i} = {x} if {x}.__class__ is bytes else bytes(_view({x}))",
                      f"{inner}_n{i} = len(_s{i})"]
            return [f"(_B8[_n{i}] if _n{i} < 256 else _head(0x40, _n{i}))", f"_s{i}"]
        return [self.enc(t, x)]

    def reply(self, t: Type | None, method: str, inner: str) -> list[str]:
        """Lines decoding the reply ``_r`` and returning (or raising) the value."""
        m = repr(method)
        if t is None:
            return [f"{inner}return None"]
        if isinstance(t, ResultT):
            fast = self.fast(t.ok, 2, inner + "    ")
            lines = []
            if fast is not None:
                lines += [f"{inner}if _r[:2] == b'\\x82\\x00':"] + fast
            lines += [f"{inner}_v = _decode(_r, {m}, {self.conv(t)})",
                      f"{inner}if _v.__class__ is _Ok:", f"{inner}    return _v.value", f"{inner}raise _v"]
            return lines
        fast = self.fast(t, 0, inner)
        conv = self.conv(t)
        return (fast or []) + [f"{inner}return _decode(_r, {m}, {conv})"]

    def fast(self, t: Type | None, at: int, inner: str) -> list[str] | None:
        """Lines returning the value at offset ``at`` of ``_r`` when it has the
        common encoding of ``t`` (falling through otherwise), or None."""
        if t is None:
            return [f"{inner}return None"] if at else None
        end = "" if at == 0 else f"[{at}:]"
        if isinstance(t, Prim):
            if t.name == "bool":
                lit = {0: "", 2: "\\x82\\x00"}[at]
                return [f"{inner}if _r == b'{lit}\\xf5':", f"{inner}    return True",
                        f"{inner}if _r == b'{lit}\\xf4':", f"{inner}    return False"]
            if t.name in _INTS:
                return [f"{inner}if len(_r) == {at + 1}:", f"{inner}    _c = _r[{at}]",
                        f"{inner}    if _c < 24:", f"{inner}        return _c"]
            if t.name in ("f32", "f64"):
                return [f"{inner}if len(_r) == {at + 9} and _r[{at}] == 0xfb:",
                        f"{inner}    return _unpack_d(_r, {at + 1})[0]"]
            return self.string(at, "0x60", ".decode()", inner)
        if isinstance(t, ListT) and t.is_bytes:
            return self.string(at, "0x40", "", inner)
        if isinstance(t, Handle):
            cls = py_class(t.resource.name)
            return [f"{inner}if len(_r) == {at + 17} and _r[{at}] == 0x50:",
                    f"{inner}    return _adopt(_new({cls}), _r{end}, {cls}._drop)"]
        return None

    @staticmethod
    def string(at: int, major: str, then: str, inner: str) -> list[str]:
        """Fast path for a text (``major`` 0x60) or byte (0x40) string: short
        ones inline, any other length through ``_start``."""
        return [f"{inner}if len(_r) > {at}:", f"{inner}    _c = _r[{at}] - {major}",
                f"{inner}    if 0 <= _c < 24 and len(_r) == {at + 1} + _c:",
                f"{inner}        return _r[{at + 1}:]{then}",
                # A length in one byte (24 to 255): a typical packed row.
                f"{inner}    if _c == 24 and len(_r) > {at + 1} and len(_r) == {at + 2} + _r[{at + 1}]:",
                f"{inner}        return _r[{at + 2}:]{then}",
                f"{inner}    _c = _start(_r, {at}, {major})", f"{inner}    if _c > 0:",
                f"{inner}        return _r[_c:]{then}"]

    def resource(self, r: Resource) -> None:
        cls = py_class(r.name)
        funcs = [f for f in self.iface.functions if f.resource == r]
        lines = [f"class {cls}(_Handle):",
                 f'    """Resource ``{r.name}``: an instance is a handle (docs/cap-interface.md, "Handles").',
                 "",
                 "    ``close()`` (unless the WIT has its own ``close``) and ``with`` drop it;",
                 '    so does garbage collection."""', "",
                 "    __slots__ = ()", f"    _drop = {('[drop]' + r.name)!r}", ""]
        if not any(f.kind == "constructor" for f in funcs):
            lines += ["    def __init__(self) -> None:",
                      f"        raise TypeError('{r.name} has no constructor')", ""]
        if not any(f.kind == "method" and py_name(f.short) == "close" for f in funcs):
            lines += ["    def close(self) -> None:",
                      f'        """Drops the handle (``[drop]{r.name}``); closing twice does nothing."""',
                      "        self._close()", ""]
        for f in funcs:
            lines += self.function(f, "    ") + [""]
        self.out.append("\n".join(lines).rstrip())

    def module(self) -> str:
        iface = self.iface
        # Resources first: a record's field annotation may name one.
        for r in iface.resources:
            self.resource(r)
        for t in self.named_types():
            self.emit_type(t)
        for f in iface.functions:
            if f.kind == "free":
                self.out.append("\n".join(self.function(f, "")))
        public = ({py_class(t.name) for t in self.named_types()}
                        | {f"{py_class(t.name)}_{py_class(c.name)}" for t in self.named_types()
                           if isinstance(t, Variant) for c in t.cases}
                        | {py_class(r.name) for r in iface.resources}
                        | {py_name(f.short) for f in iface.functions if f.kind == "free"})
        exports = "Err", "Ok"
        aliases = [f"{e} = _{e}" for e in exports if e not in public]
        head = [f'"""The dynlink proxy of {iface.qualified}: generated by pylon.build.capgen.py_proxy',
                '(docs/cap-interface.md, "The guest proxy"). Do not edit."""', _PRELUDE.strip(), "",
                *aliases, f"__all__ = {sorted(public | {a.split(' ')[0] for a in aliases})!r}"]
        return "\n\n\n".join(["\n".join(head)] + self.out + self.helpers) + "\n"


def _int_bytes(n: int) -> bytes:
    if n < 24:
        return bytes([n])
    if n < 256:
        return bytes([24, n])
    return bytes([25]) + n.to_bytes(2, "big")


def generate_proxy(iface: Interface) -> str:
    """Python source of the proxy module for ``iface`` (docs/cap-interface.md, 'The guest proxy')."""
    return _Gen(iface).module()
