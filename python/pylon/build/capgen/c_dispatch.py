"""The cap's side of a generated dynlink face: C that serves
``compose:dynlink/provider.invoke`` by calling the C export functions
wit-bindgen declares for the cap's interface (docs/cap-interface.md).

Per call: decode the CBOR request with zcbor (the reader in
caps/_sdk/pylon_face.h) into wit-bindgen's C types (malloc'd strings and
lists the callee owns and frees, exactly as wit-bindgen's lifting hands them
over), call ``exports_<iface>_<function>``, encode what it returned with
zcbor's encoder (definite lengths) and free it as the post-return would.
Resources live in the SDK's handle table (caps/_sdk/pylon_handles.c): the
generated C defines the ``[resource-new]/[resource-rep]/[resource-drop]``
functions wit-bindgen's bindings.c would import from the component model,
over that table.

C type names are not re-derived from wit-bindgen's naming rules: the
prototypes in the generated ``bindings.h`` give the types of parameters and
results, and every nested type is reached from those with ``__typeof__``
(``__typeof__(*((T *)0)->ptr)`` is a list's element type), so the generated
C follows whatever wit-bindgen emitted.
"""

from __future__ import annotations

import re

from pylon.build.capgen.wit_model import (
    INT_RANGES,
    Enum,
    Function,
    Handle,
    Interface,
    ListT,
    OptionT,
    Prim,
    Record,
    ResultT,
    TupleT,
    Type,
    Variant,
)
from pylon.errors import BuildError

__all__ = ["GENERATOR_VERSION", "c_prefix", "face_depth", "function_c_name", "generate_dispatch"]

#: Bump when the generated C changes; part of the cap build's cache key.
GENERATOR_VERSION = "4"

_C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern float for goto
if inline int long register restrict return short signed sizeof static struct switch typedef union unsigned void
volatile while bool _Bool _Complex _Imaginary true false""".split())

_PRIM_C = {"bool": "bool", "s8": "int8_t", "s16": "int16_t", "s32": "int32_t", "s64": "int64_t",
           "u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t", "u64": "uint64_t",
           "f32": "float", "f64": "double", "char": "uint32_t"}


def _snake(name: str) -> str:
    return name.replace("-", "_")


def _ident(name: str) -> str:
    """A WIT name as wit-bindgen's C spells a field or case."""
    s = _snake(name)
    return s + "_" if s in _C_KEYWORDS else s


def c_prefix(iface: Interface) -> str:
    """``exports_pylon_sqlite_sqlite`` for ``pylon:sqlite/sqlite@0.1.0``."""
    pkg, _, rest = iface.qualified.partition("/")
    ns, _, pname = pkg.partition(":")
    return "exports_" + "_".join(_snake(p) for p in (ns, pname, rest.partition("@")[0]))


def function_c_name(iface: Interface, f: Function) -> str:
    base = c_prefix(iface)
    res = _snake(f.resource.name) if f.resource else ""
    if f.kind == "constructor":
        return f"{base}_constructor_{res}"
    if f.kind in ("method", "static"):
        return f"{base}_{f.kind}_{res}_{_snake(f.short)}"
    return f"{base}_{_snake(f.short)}"


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PROTO = re.compile(r"^(?P<ret>[^\n;(]+?)\s*\b(?P<name>\w+)\((?P<params>[^)]*)\);$", re.M)


def _prototypes(header: str) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """name -> (return type, [(type, name)]) of every prototype in the header."""
    out = {}
    for m in _PROTO.finditer(header):
        params: list[tuple[str, str]] = []
        raw = m["params"].strip()
        if raw and raw != "void":
            for p in raw.split(","):
                p = p.strip()
                cut = max(p.rfind(" "), p.rfind("*"))
                params.append((p[: cut + 1].strip(), p[cut + 1:].strip()))
        out[m["name"]] = (m["ret"].replace("extern ", "").strip(), params)
    return out


def _strip_ptr(ctype: str) -> str:
    if not ctype.endswith("*"):
        raise BuildError(f"generated bindings: expected a pointer type, got {ctype!r}")
    return ctype[:-1].strip()


def _members(t: TupleT | Record) -> list[tuple[str, Type]]:
    """(C member, WIT type) of a tuple (wit-bindgen's f0, f1...) or a record
    (its fields): what the decoder, encoder, size bound and free all walk."""
    if isinstance(t, TupleT):
        return [(f"f{i}", x) for i, x in enumerate(t.items)]
    return [(_ident(f.name), f.type) for f in t.fields]


def _needs_free(t: Type) -> bool:
    if isinstance(t, Prim):
        return t.name == "string"
    if isinstance(t, ListT):
        return True
    if isinstance(t, OptionT):
        return _needs_free(t.inner)
    if isinstance(t, ResultT):
        return any(x is not None and _needs_free(x) for x in (t.ok, t.err))
    if isinstance(t, TupleT):
        return any(_needs_free(x) for x in t.items)
    if isinstance(t, Record):
        return any(_needs_free(f.type) for f in t.fields)
    if isinstance(t, Variant):
        return any(c.type is not None and _needs_free(c.type) for c in t.cases)
    return False


def _depth(t: Type | None) -> int:
    """How many CBOR arrays a value of ``t`` opens inside one another: zcbor
    keeps a backup state per open array (pylon_face.h, PYLON_FACE_DEPTH).
    WIT types are not recursive, so this is finite."""
    if t is None or isinstance(t, (Prim, Enum, Handle)) or (isinstance(t, ListT) and t.is_bytes):
        return 0
    if isinstance(t, ListT):
        return 1 + _depth(t.element)
    if isinstance(t, OptionT):
        return _depth(t.inner)
    if isinstance(t, ResultT):
        return 1 + max(_depth(t.ok), _depth(t.err))
    if isinstance(t, TupleT):
        return 1 + max((_depth(x) for x in t.items), default=0)
    if isinstance(t, Record):
        return 1 + max((_depth(f.type) for f in t.fields), default=0)
    if isinstance(t, Variant):
        return 1 + max((_depth(c.type) for c in t.cases), default=0)
    raise BuildError(f"no nesting depth for {t!r}")


def face_depth(iface: Interface) -> int:
    """The deepest array nesting of any request (an array of the arguments)
    or reply of the interface; 1 at least ($pylon/init, [drop]r)."""
    requests = (1 + max((_depth(p.type) for p in f.params), default=0) for f in iface.functions)
    replies = (_depth(f.result) for f in iface.functions)
    return max(1, *requests, *replies)


class _Gen:
    def __init__(self, iface: Interface, header: str):
        self.iface = iface
        self.protos = _prototypes(header)
        self.ids: dict[Type, int] = {}
        self.typedefs: list[str] = []
        self.funcs: list[str] = []

    # -- types --------------------------------------------------------------

    def reg(self, t: Type, expr: str) -> str:
        """Registers ``t`` with C type expression ``expr`` (first one wins)."""
        if t in self.ids:
            return f"pylon_t{self.ids[t]}"
        n = self.ids[t] = len(self.ids)
        me = f"pylon_t{n}"
        self.typedefs.append(f"typedef {expr} {me};")

        def sub(member: str) -> str:
            return f"__typeof__((({me} *)0)->{member})"

        if isinstance(t, ListT) and not t.is_bytes:
            self.reg(t.element, f"__typeof__(*(({me} *)0)->ptr)")
        elif isinstance(t, OptionT):
            self.reg(t.inner, sub("val"))
        elif isinstance(t, ResultT):
            if t.ok is not None:
                self.reg(t.ok, sub("val.ok"))
            if t.err is not None:
                self.reg(t.err, sub("val.err"))
        elif isinstance(t, TupleT):
            for i, item in enumerate(t.items):
                self.reg(item, sub(f"f{i}"))
        elif isinstance(t, Record):
            for f in t.fields:
                self.reg(f.type, sub(_ident(f.name)))
        elif isinstance(t, Variant):
            for c in t.cases:
                if c.type is not None:
                    self.reg(c.type, sub(f"val.{_ident(c.name)}"))
        return me

    def name(self, t: Type) -> str:
        return f"pylon_t{self.ids[t]}"

    # -- per-type decode / encode / free ---------------------------------------

    def end(self, t: Type) -> str:
        """Closes the array a decoder opened. zcbor then checks no item is
        left; with the count checked up front it cannot fail, but if it did
        the value is freed (everything in it was decoded)."""
        undo = f" free_{self.ids[t]}(out);" if _needs_free(t) else ""
        return f"    if (!pylon_rd_end(r)) {{{undo} return false; }}\n"

    def emit_type_funcs(self) -> None:
        # Declared first: a type's functions call its parts' in any order.
        for n in self.ids.values():
            self.funcs.append(f"static bool dec_{n}(pylon_rd_t *, pylon_t{n} *);\n"
                              f"static void enc_{n}(pylon_wr_t *, const pylon_t{n} *);\n"
                              f"static size_t sz_{n}(const pylon_t{n} *);\n"
                              f"static void free_{n}(pylon_t{n} *);")
        for t, n in list(self.ids.items()):
            me = f"pylon_t{n}"
            # `(void)` on every parameter: some bodies (an empty record, a
            # type with nothing to free) use none, and a cap built with
            # -Wall -Wextra should not hear about generated code.
            self.funcs.append(f"PYLON_UNUSED static bool dec_{n}(pylon_rd_t *r, {me} *out) {{\n"
                              f"    (void)r; (void)out;\n{self.dec_body(t)}}}\n")
            self.funcs.append(f"PYLON_UNUSED static void enc_{n}(pylon_wr_t *o, const {me} *v) {{\n"
                              f"    (void)o; (void)v;\n{self.enc_body(t)}}}\n")
            self.funcs.append(f"PYLON_UNUSED static size_t sz_{n}(const {me} *v) {{\n    (void)v;\n"
                              f"{self.size_body(t)}}}\n")
            self.funcs.append(f"PYLON_UNUSED static void free_{n}({me} *v) {{\n    (void)v;\n"
                              f"{self.free_body(t)}}}\n")

    def free_call(self, t: Type, expr: str) -> str:
        return f"free_{self.ids[t]}(&{expr});" if _needs_free(t) else ""

    def dec_body(self, t: Type) -> str:
        if isinstance(t, Prim):
            if t.name == "bool":
                return "    return pylon_rd_bool(r, out);\n"
            if t.name in ("f32", "f64"):
                return f"    double d;\n    if (!pylon_rd_float(r, &d)) return false;\n    *out = ({_PRIM_C[t.name]})d;\n    return true;\n"  # noqa: E501
            if t.name == "char":
                return "    return pylon_rd_char(r, out);\n"
            if t.name == "string":
                return "    return pylon_rd_str(r, PYLON_CBOR_TEXT, &out->ptr, &out->len);\n"
            lo, hi = INT_RANGES[t.name]
            why = _c_string(f"expected an integer in {t.name}'s range {lo}..{hi}")
            if t.name.startswith("u"):
                return (f"    uint64_t x;\n    if (!pylon_rd_uint(r, {hi}ULL, &x, {why})) return false;\n"
                        f"    *out = ({_PRIM_C[t.name]})x;\n    return true;\n")
            lo_c = f"({lo + 1}LL - 1)"  # INT64_MIN cannot be written as a literal
            return (f"    int64_t x;\n    if (!pylon_rd_sint(r, {lo_c}, {hi}LL, &x, {why})) return false;\n"
                    f"    *out = ({_PRIM_C[t.name]})x;\n    return true;\n")
        if isinstance(t, ListT):
            if t.is_bytes:
                return "    return pylon_rd_str(r, PYLON_CBOR_BYTES, &out->ptr, &out->len);\n"
            e = self.ids[t.element]
            free_e = f"            for (size_t j = 0; j < i; j++) free_{e}(&out->ptr[j]);\n" if _needs_free(t.element) else ""  # noqa: E501
            return (f"    size_t n;\n    if (!pylon_rd_array(r, &n)) return false;\n"
                    f"    if (n == 0) {{ out->ptr = PYLON_EMPTY; out->len = 0; return pylon_rd_end(r); }}\n"
                    f"    out->ptr = calloc(n, sizeof *out->ptr);\n"
                    f"    if (!out->ptr) return pylon_rd_fail(r, \"out of memory\");\n"
                    f"    for (size_t i = 0; i < n; i++) {{\n"
                    f"        if (!dec_{e}(r, &out->ptr[i])) {{\n{free_e}"
                    f"            free(out->ptr);\n            return false;\n        }}\n    }}\n"
                    f"    out->len = n;\n{self.end(t)}    return true;\n")
        if isinstance(t, OptionT):
            return (f"    if (pylon_rd_take_null(r)) {{ out->is_some = false; return true; }}\n"
                    f"    out->is_some = true;\n    return dec_{self.ids[t.inner]}(r, &out->val);\n")
        if isinstance(t, ResultT):
            def side(x: Type | None, member: str) -> str:
                return "pylon_rd_null(r)" if x is None else f"dec_{self.ids[x]}(r, &out->val.{member})"
            return ("    uint64_t which;\n"
                    "    if (!pylon_rd_array_n(r, 2, \"expected a result: [0, ok] or [1, err]\")) return false;\n"
                    "    if (!pylon_rd_uint(r, 1, &which, \"expected a result: [0, ok] or [1, err]\")) return false;\n"
                    "    out->is_err = which == 1;\n"
                    f"    if (!(which ? {side(t.err, 'err')} : {side(t.ok, 'ok')})) return false;\n"
                    f"{self.end(t)}    return true;\n")
        if isinstance(t, (TupleT, Record)):
            items = _members(t)
            what = "a tuple" if isinstance(t, TupleT) else f"a {t.name} record"
            lines = [f"    if (!pylon_rd_array_n(r, {len(items)}, {_c_string(f'expected {what}: an array of {len(items)}')})) return false;\n"]  # noqa: E501
            for k, (member, x) in enumerate(items):
                undo = "".join(self.free_call(y, f"out->{m}") for m, y in items[:k])
                lines.append(f"    if (!dec_{self.ids[x]}(r, &out->{member})) {{ {undo} return false; }}\n")
            lines.append(f"{self.end(t)}    return true;\n")
            return "".join(lines)
        if isinstance(t, Variant):
            why = _c_string(f"expected a {t.name} variant: [case index 0..{len(t.cases) - 1}, payload]")
            lines = ["    uint64_t tag;\n",
                     f"    if (!pylon_rd_array_n(r, 2, {why})) return false;\n",
                     f"    if (!pylon_rd_uint(r, {len(t.cases) - 1}, &tag, {why})) return false;\n",
                     "    out->tag = (uint8_t)tag;\n    switch (tag) {\n"]
            for i, c in enumerate(t.cases):
                body = "pylon_rd_null(r)" if c.type is None else f"dec_{self.ids[c.type]}(r, &out->val.{_ident(c.name)})"  # noqa: E501
                lines.append(f"    case {i}: if (!{body}) return false; break;\n")
            lines.append(f"    default: return false;\n    }}\n{self.end(t)}    return true;\n")
            return "".join(lines)
        if isinstance(t, Enum):
            why = _c_string(f"expected a {t.name} enum case: an integer 0..{len(t.cases) - 1}")
            return (f"    uint64_t x;\n    if (!pylon_rd_uint(r, {len(t.cases) - 1}, &x, {why})) return false;\n"
                    f"    *out = ({self.name(t)})x;\n    return true;\n")
        if isinstance(t, Handle):
            res = t.resource
            own = "true" if t.own else "false"
            get = ("    out->__handle = h;\n" if t.own
                   else f"    *out = ({self.name(t)})pylon_handle_rep(h, {res.index});\n")
            return (f"    int32_t h = pylon_rd_handle(r, {res.index}, {_c_string(res.name)}, {own});\n"
                    f"    if (!h) return false;\n{get}    return true;\n")
        raise BuildError(f"no C decoder for {t!r}")

    def enc_body(self, t: Type) -> str:
        if isinstance(t, Prim):
            if t.name == "bool":
                return "    pylon_wr_bool(o, *v);\n"
            if t.name in ("f32", "f64"):
                return "    pylon_wr_float64(o, (double)*v);\n"
            if t.name == "char":
                return "    pylon_wr_char(o, *v);\n"
            if t.name == "string":
                return "    pylon_wr_text(o, v->ptr, v->len);\n"
            if t.name.startswith("u"):
                return "    pylon_wr_uint(o, (uint64_t)*v);\n"
            return "    pylon_wr_int(o, (int64_t)*v);\n"
        if isinstance(t, ListT):
            if t.is_bytes:
                return "    pylon_wr_bytes(o, v->ptr, v->len);\n"
            return (f"    pylon_wr_array_start(o, v->len);\n"
                    f"    for (size_t i = 0; i < v->len; i++) enc_{self.ids[t.element]}(o, &v->ptr[i]);\n"
                    f"    pylon_wr_array_end(o, v->len);\n")
        if isinstance(t, OptionT):
            return f"    if (v->is_some) enc_{self.ids[t.inner]}(o, &v->val); else pylon_wr_null(o);\n"
        if isinstance(t, ResultT):
            def side(x: Type | None, member: str) -> str:
                return "pylon_wr_null(o);" if x is None else f"enc_{self.ids[x]}(o, &v->val.{member});"
            return (f"    pylon_wr_array_start(o, 2);\n    pylon_wr_uint(o, v->is_err ? 1 : 0);\n"
                    f"    if (v->is_err) {{ {side(t.err, 'err')} }} else {{ {side(t.ok, 'ok')} }}\n"
                    f"    pylon_wr_array_end(o, 2);\n")
        if isinstance(t, (TupleT, Record)):
            items = _members(t)
            return (f"    pylon_wr_array_start(o, {len(items)});\n"
                    + "".join(f"    enc_{self.ids[x]}(o, &v->{m});\n" for m, x in items)
                    + f"    pylon_wr_array_end(o, {len(items)});\n")
        if isinstance(t, Variant):
            lines = ["    pylon_wr_array_start(o, 2);\n    pylon_wr_uint(o, v->tag);\n    switch (v->tag) {\n"]
            for i, c in enumerate(t.cases):
                body = "pylon_wr_null(o);" if c.type is None else f"enc_{self.ids[c.type]}(o, &v->val.{_ident(c.name)});"  # noqa: E501
                lines.append(f"    case {i}: {body} break;\n")
            lines.append("    default: pylon_wr_null(o);\n    }\n    pylon_wr_array_end(o, 2);\n")
            return "".join(lines)
        if isinstance(t, Enum):
            return "    pylon_wr_uint(o, (uint64_t)*v);\n"
        if isinstance(t, Handle):
            if not t.own:
                return "    (void)v;\n    abort(); /* WIT returns no borrows */\n"
            return ("    uint8_t tok[PYLON_TOKEN_BYTES];\n    pylon_handle_token(v->__handle, tok);\n"
                    "    pylon_wr_bytes(o, tok, sizeof tok);\n")
        raise BuildError(f"no C encoder for {t!r}")

    def size_body(self, t: Type) -> str:
        """An upper bound of the bytes enc_ writes for the value: CBOR heads
        are at most 9 bytes, text and bytes add their length. The reply
        buffer is allocated at that size once, so a large reply costs its
        own size again, not the doublings of a grow-and-retry."""
        head = "PYLON_WR_HEAD"
        if isinstance(t, Prim):
            if t.name in ("string",):
                return f"    return {head} + v->len;\n"
            return f"    return {head};\n"
        if isinstance(t, ListT):
            if t.is_bytes:
                return f"    return {head} + v->len;\n"
            return (f"    size_t n = {head};\n"
                    f"    for (size_t i = 0; i < v->len; i++) n += sz_{self.ids[t.element]}(&v->ptr[i]);\n"
                    f"    return n;\n")
        if isinstance(t, OptionT):
            return f"    return v->is_some ? sz_{self.ids[t.inner]}(&v->val) : 1;\n"
        if isinstance(t, ResultT):
            def side(x: Type | None, member: str) -> str:
                return "1" if x is None else f"sz_{self.ids[x]}(&v->val.{member})"
            return f"    return 2 + (v->is_err ? {side(t.err, 'err')} : {side(t.ok, 'ok')});\n"
        if isinstance(t, (TupleT, Record)):
            items = _members(t)
            return (f"    return {head}" + "".join(f" + sz_{self.ids[x]}(&v->{m})" for m, x in items) + ";\n")
        if isinstance(t, Variant):
            lines = ["    switch (v->tag) {\n"]
            for i, c in enumerate(t.cases):
                if c.type is not None:
                    member = f"&v->val.{_ident(c.name)}"
                    lines.append(f"    case {i}: return 1 + {head} + sz_{self.ids[c.type]}({member});\n")
            lines.append(f"    default: return 1 + {head} + 1;\n    }}\n")
            return "".join(lines)
        if isinstance(t, Enum):
            return f"    return {head};\n"
        if isinstance(t, Handle):
            return f"    return {head} + PYLON_TOKEN_BYTES;\n"
        raise BuildError(f"no C size bound for {t!r}")

    def free_body(self, t: Type) -> str:
        if not _needs_free(t):
            return "    (void)v;\n"
        if isinstance(t, Prim) or (isinstance(t, ListT) and t.is_bytes):
            return "    if (v->len) free(v->ptr);\n"
        if isinstance(t, ListT):
            inner = (f"    for (size_t i = 0; i < v->len; i++) free_{self.ids[t.element]}(&v->ptr[i]);\n"
                     if _needs_free(t.element) else "")
            return f"{inner}    if (v->len) free(v->ptr);\n"
        if isinstance(t, OptionT):
            return f"    if (v->is_some) free_{self.ids[t.inner]}(&v->val);\n"
        if isinstance(t, ResultT):
            err = self.free_call(t.err, "v->val.err") if t.err is not None else ""
            ok = self.free_call(t.ok, "v->val.ok") if t.ok is not None else ""
            return f"    if (v->is_err) {{ {err} }} else {{ {ok} }}\n"
        if isinstance(t, (TupleT, Record)):
            items = _members(t)
            return "".join(f"    {self.free_call(x, f'v->{m}')}\n" for m, x in items if _needs_free(x))
        if isinstance(t, Variant):
            lines = ["    switch (v->tag) {\n"]
            for i, c in enumerate(t.cases):
                if c.type is not None and _needs_free(c.type):
                    lines.append(f"    case {i}: {self.free_call(c.type, f'v->val.{_ident(c.name)}')} break;\n")
            lines.append("    default: break;\n    }\n")
            return "".join(lines)
        raise BuildError(f"no C free for {t!r}")

    # -- functions ------------------------------------------------------------

    def plan(self, f: Function) -> dict[str, object]:
        """How the C prototype passes f's parameters and result."""
        cname = function_c_name(self.iface, f)
        if cname not in self.protos:
            raise BuildError(f"generated bindings.h has no {cname} for {f.method} (wit-bindgen's C naming changed?)")
        ret, cparams = self.protos[cname]
        if len(cparams) < len(f.params):
            raise BuildError(f"{cname}: {len(cparams)} C parameters for {len(f.params)} WIT parameters")
        passing = []
        for p, (ctype, cpname) in zip(f.params, cparams, strict=False):
            if isinstance(p.type, OptionT):
                if not cpname.startswith("maybe_"):
                    raise BuildError(f"{cname}: option parameter {p.name} is not passed as maybe_{p.name}")
                self.reg(p.type.inner, _strip_ptr(ctype))
                passing.append("maybe")
            elif ctype.endswith("*"):
                self.reg(p.type, _strip_ptr(ctype))
                passing.append("ptr")
            else:
                self.reg(p.type, ctype)
                passing.append("value")
        extra = {name: ctype for ctype, name in cparams[len(f.params):]}
        r = f.result
        if r is None:
            style = "void"
        elif isinstance(r, ResultT):
            style = "result"
            if r.ok is not None:
                self.reg(r.ok, _strip_ptr(extra["ret"]))
            if r.err is not None:
                self.reg(r.err, _strip_ptr(extra["err"]))
        elif isinstance(r, OptionT):
            style = "option"
            self.reg(r.inner, _strip_ptr(extra["ret"]))
        elif ret != "void":
            style = "direct"
            self.reg(r, ret)
        else:
            style = "retptr"
            self.reg(r, _strip_ptr(extra["ret"]))
        return {"cname": cname, "passing": passing, "style": style}

    def wrapper(self, k: int, f: Function, plan: dict[str, object]) -> str:
        m = _c_string(f.method)
        n = len(f.params)
        passing = plan["passing"]
        assert isinstance(passing, list)
        out = [f"/* {f.method} */\nstatic bool call_{k}(pylon_rd_t *r, pylon_wr_t *o, pylon_err_t *err) {{\n"]
        plural = "" if n == 1 else "s"
        out.append(f"    if (!pylon_rd_array_n(r, {n}, NULL))\n"
                   f"        return pylon_errorf(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD, "
                   f"\"%s takes %d argument{plural}: the request must be a CBOR array of %d\", {m}, {n}, {n});\n")
        args = []
        for i, (p, how) in enumerate(zip(f.params, passing, strict=True)):
            inner = p.type.inner if how == "maybe" and isinstance(p.type, OptionT) else p.type
            tn = self.ids[inner]
            out.append(f"    pylon_t{tn} a{i};\n")
            undo = "".join(self.arg_free(j, f.params[j].type, passing[j]) for j in range(i))
            fail = f"{{ {undo}return pylon_arg_error(err, r, {m}, {i}, {_c_string(p.name)}); }}"
            if how == "maybe":
                out.append(f"    bool has{i} = !pylon_rd_take_null(r);\n"
                           f"    if (has{i} && !dec_{tn}(r, &a{i})) {fail}\n")
                args.append(f"has{i} ? &a{i} : NULL")
            else:
                out.append(f"    if (!dec_{tn}(r, &a{i})) {fail}\n")
                args.append(f"&a{i}" if how == "ptr" else f"a{i}")
        undo_all = "".join(self.arg_free(j, f.params[j].type, passing[j]) for j in range(n))
        out.append(f"    if (!pylon_rd_end(r) || pylon_rd_left(r)) {{ {undo_all}\n"
                   f"        return pylon_errorf(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD, "
                   f"\"%s: %d bytes after the last argument\", {m}, (int)pylon_rd_left(r)); }}\n")
        out.append("    pylon_rd_commit_owned(r);\n    uint64_t mark = pylon_handles_mark();\n")
        call = f"{plan['cname']}({', '.join(args)}"
        style = plan["style"]
        res = f.result
        free_res = ""
        enc = ""
        need = "1"
        if style == "void":
            out.append(f"    {call});\n")
            enc = "pylon_wr_null(o);"
        elif style in ("direct", "retptr"):
            assert res is not None
            tn = self.ids[res]
            if style == "direct":
                out.append(f"    pylon_t{tn} res = {call});\n")
            else:
                out.append(f"    pylon_t{tn} res;\n    {call}{', ' if args else ''}&res);\n")
            free_res = self.free_call(res, "res")
            enc = f"enc_{tn}(o, &res);"
            need = f"sz_{tn}(&res)"
        elif style == "option":
            assert isinstance(res, OptionT)
            tn = self.ids[res.inner]
            out.append(f"    pylon_t{tn} res;\n    bool some = {call}{', ' if args else ''}&res);\n")
            fr = self.free_call(res.inner, "res")
            free_res = f"if (some) {{ {fr} }}" if fr else ""
            enc = f"if (some) enc_{tn}(o, &res); else pylon_wr_null(o);"
            need = f"(some ? sz_{tn}(&res) : 1)"
        else:
            assert isinstance(res, ResultT)
            outs = []
            if res.ok is not None:
                out.append(f"    pylon_t{self.ids[res.ok]} ok;\n")
                outs.append("&ok")
            if res.err is not None:
                out.append(f"    pylon_t{self.ids[res.err]} bad;\n")
                outs.append("&bad")
            sep = ", " if args and outs else ""
            out.append(f"    bool good = {call}{sep}{', '.join(outs)});\n")
            fo = self.free_call(res.ok, "ok") if res.ok is not None else ""
            fe = self.free_call(res.err, "bad") if res.err is not None else ""
            free_res = f"if (good) {{ {fo} }} else {{ {fe} }}"
            eo = f"enc_{self.ids[res.ok]}(o, &ok);" if res.ok is not None else "pylon_wr_null(o);"
            ee = f"enc_{self.ids[res.err]}(o, &bad);" if res.err is not None else "pylon_wr_null(o);"
            enc = (f"pylon_wr_array_start(o, 2); pylon_wr_uint(o, good ? 0 : 1);\n"
                   f"        if (good) {{ {eo} }} else {{ {ee} }}\n        pylon_wr_array_end(o, 2);")
            so = f"sz_{self.ids[res.ok]}(&ok)" if res.ok is not None else "1"
            se = f"sz_{self.ids[res.err]}(&bad)" if res.err is not None else "1"
            need = f"(2 + (good ? {so} : {se}))"
        # A call that made handles past max-handles: destroy what it made
        # (newest first) and say so; nothing leaks, the instance lives on.
        out.append(f"    if (pylon_handles_over_limit()) {{\n        {free_res}\n"
                   f"        pylon_handles_destroy_since(mark);\n"
                   f"        return pylon_errorf(err, COMPOSE_DYNLINK_TYPES_ERROR_LIMIT_EXCEEDED, "
                   f"\"%s: the handle table is full (max-handles = %u); the handles this call made were destroyed\", "
                   f"{m}, (unsigned)pylon_handles_max());\n    }}\n")
        # zcbor writes into a fixed buffer: a reply that does not fit is
        # written again into a bigger one (pylon_face.h), then freed.
        out.append(f"    pylon_wr_reserve(o, {need});\n"
                   f"    do {{\n        pylon_wr_start(o);\n        {enc}\n    }} while (pylon_wr_retry(o));\n")
        if free_res:
            out.append(f"    {free_res}\n")
        out.append("    return true;\n}\n")
        return "".join(out)

    def arg_free(self, i: int, t: Type, how: str) -> str:
        if how == "maybe" and isinstance(t, OptionT):
            fc = self.free_call(t.inner, f"a{i}")
            return f"if (has{i}) {{ {fc} }} " if fc else ""
        fc = self.free_call(t, f"a{i}")
        return f"{fc} " if fc else ""


def generate_dispatch(iface: Interface, header: str) -> str:
    """The C source of the face's dispatch for ``iface``, written against
    ``header`` (wit-bindgen's bindings.h for the interface's world, made with
    ``--rename-world bindings``)."""
    g = _Gen(iface, header)
    plans = [g.plan(f) for f in iface.functions]
    g.emit_type_funcs()
    wrappers = [g.wrapper(k, f, p) for k, (f, p) in enumerate(zip(iface.functions, plans, strict=True))]
    prefix = c_prefix(iface)
    has_res = bool(iface.resources)

    entries: list[tuple[str, str]] = [(f.method, f"call_{k}") for k, f in enumerate(iface.functions)]
    res_c: list[str] = []
    for res in iface.resources:
        r = f"{prefix}_{_snake(res.name)}"
        k = res.index
        res_c.append(
            f"/* {res.name}: wit-bindgen's bindings.c would import these from the component model */\n"
            f"int32_t __wasm_import_{r}_new(int32_t rep) {{ return pylon_handle_new({k}, (void *)(uintptr_t)rep); }}\n"
            f"int32_t __wasm_import_{r}_rep(int32_t h) {{ return (int32_t)(uintptr_t)pylon_handle_rep(h, {k}); }}\n"
            f"void __wasm_import_{r}_drop(int32_t h) {{ pylon_handle_drop(h, {k}); }}\n"
            f"static void destroy_{k}(void *rep) {{ {r}_destructor(({r}_t *)rep); }}\n"
            f"/* {iface.drop_method(res)} */\n"
            f"static bool drop_{k}(pylon_rd_t *r, pylon_wr_t *o, pylon_err_t *err) {{\n"
            f"    if (!pylon_rd_array_n(r, 1, NULL))\n"
            f"        return pylon_errorf(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD, "
            f"\"%s takes 1 argument: the request must be a CBOR array of 1\", {_c_string(iface.drop_method(res))});\n"
            f"    int32_t h = pylon_rd_handle(r, {k}, {_c_string(res.name)}, false);\n"
            f"    if (!h || !pylon_rd_end(r) || pylon_rd_left(r)) return pylon_arg_error(err, r, {_c_string(iface.drop_method(res))}, 0, \"self\");\n"  # noqa: E501
            f"    pylon_handle_drop(h, {k});\n    pylon_wr_start(o);\n    pylon_wr_null(o);\n    return true;\n}}\n")
        entries.append((iface.drop_method(res), f"drop_{k}"))
    if has_res:
        entries += [("$pylon/init", "pylon_init_"), ("$pylon/release-all", "pylon_release_all_")]
    entries.sort(key=lambda e: e[0].encode())
    guest = {name: not name.startswith("$pylon/") for name, _ in entries}
    table = "".join(f"    {{{_c_string(name)}, {len(name.encode())}, {fn}, {'true' if guest[name] else 'false'}}},\n"
                    for name, fn in entries)
    types = "".join(f"    {{{_c_string(r.name)}, destroy_{r.index}}},\n" for r in iface.resources)

    parts = [
        f"/* Generated by pylon.build.capgen.c_dispatch {GENERATOR_VERSION} for {iface.qualified}. DO NOT EDIT.\n"
        " * The dynlink face: compose:dynlink/provider.invoke over wit-bindgen's C exports\n"
        " * (docs/cap-interface.md). */\n",
        '#include "cap.h"\n#include "bindings.h"\n\n'
        "/* zcbor keeps a backup state per open array; this interface opens at most this many. */\n"
        f"#define PYLON_FACE_DEPTH {face_depth(iface)}\n"
        '#include "pylon_face.h"\n\n',
        "#define PYLON_UNUSED __attribute__((unused))\n\n",
        "\n".join(g.typedefs) + "\n\n",
        "\n".join(g.funcs),
        "\n".join(res_c),
        "\n".join(wrappers),
    ]
    if has_res:
        parts.append(
            "/* $pylon/init: [key: bytes(32), max-handles: uint], from the host only. */\n"
            "static bool pylon_init_(pylon_rd_t *r, pylon_wr_t *o, pylon_err_t *err) {\n"
            "    uint8_t *key; size_t len; uint64_t max;\n"
            "    if (!pylon_rd_array_n(r, 2, \"\") || !pylon_rd_str(r, PYLON_CBOR_BYTES, &key, &len))\n"
            "        return pylon_bad_payload(err, \"$pylon/init: expected [key: bytes(32), max-handles: uint]\");\n"
            "    bool ok = len == PYLON_KEY_BYTES && pylon_rd_uint(r, UINT64_MAX, &max, \"\") && pylon_rd_end(r)\n"
            "              && !pylon_rd_left(r);\n"
            "    if (ok) ok = pylon_handles_init(key, max) || (pylon_bad_payload(err, \"$pylon/init: already initialised\"), false);\n"  # noqa: E501
            "    else pylon_bad_payload(err, \"$pylon/init: expected [key: bytes(32), max-handles: uint]\");\n"
            "    if (len) free(key);\n"
            "    if (ok) { pylon_wr_start(o); pylon_wr_null(o); }\n    return ok;\n}\n\n"
            "/* $pylon/release-all: null -> the number of handles released. */\n"
            "static bool pylon_release_all_(pylon_rd_t *r, pylon_wr_t *o, pylon_err_t *err) {\n"
            "    (void)r; (void)err;\n    uint64_t n = pylon_handles_release_all();\n"
            "    pylon_wr_start(o);\n    pylon_wr_uint(o, n);\n    return true;\n}\n\n")
        parts.append(f"static const pylon_resource_type_t RESOURCE_TYPES[] = {{\n{types}}};\n\n")
    parts.append(
        "typedef bool (*method_fn)(pylon_rd_t *, pylon_wr_t *, pylon_err_t *);\n"
        "static const struct { const char *name; size_t len; method_fn fn; bool guest; } METHODS[] = {\n"
        f"{table}}};\n\n"
        "static int find_method(const cap_string_t *m) {\n"
        "    size_t lo = 0, hi = sizeof METHODS / sizeof METHODS[0];\n"
        "    while (lo < hi) {\n"
        "        size_t mid = (lo + hi) / 2, n = METHODS[mid].len < m->len ? METHODS[mid].len : m->len;\n"
        "        int c = memcmp(METHODS[mid].name, m->ptr, n);\n"
        "        if (c == 0) c = METHODS[mid].len < m->len ? -1 : METHODS[mid].len > m->len ? 1 : 0;\n"
        "        if (c == 0) return (int)mid;\n"
        "        if (c < 0) lo = mid + 1; else hi = mid;\n"
        "    }\n    return -1;\n}\n\n"
        "bool exports_compose_dynlink_provider_invoke(cap_string_t *method, cap_list_u8_t *payload,\n"
        "                                             cap_list_u8_t *ret, pylon_err_t *err) {\n"
        + ("    pylon_handles_types(RESOURCE_TYPES, sizeof RESOURCE_TYPES / sizeof RESOURCE_TYPES[0]);\n"
           if has_res else "")
        + "    int at = find_method(method);\n    bool ok;\n"
        "    if (at < 0) {\n        ok = pylon_bad_method(err, method);\n"
        + ("    } else if (METHODS[at].guest && !pylon_handles_ready()) {\n"
           "        /* Tokens are keyed by $pylon/init; without it they would be guessable. */\n"
           "        ok = pylon_error(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_METHOD, \"this cap keeps a handle table and "
           "the host has not initialised it ($pylon/init); the host is too old for this cap\");\n"
           if has_res else "")
        + "    } else {\n"
        "        pylon_rd_t r;\n        pylon_rd_begin(&r, payload->ptr, payload->len);\n"
        "        pylon_wr_t o = {0};\n"
        "        ok = METHODS[at].fn(&r, &o, err);\n"
        "        if (ok) ok = pylon_ok_wr(ret, err, &o); else pylon_wr_discard(&o);\n"
        "    }\n"
        "    cap_list_u8_free(payload);\n    cap_string_free(method);\n    return ok;\n}\n")
    return "\n".join(parts)
