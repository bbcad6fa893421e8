"""The plan: Pylon's lock file, naming the guest and every cap by content digest.

A plan is JSON (schema: ``schemas/plan.schema.json``; prose: ``docs/plan.md``)::

    {"pylon-plan": 1,
     "guest": {"digest": "sha256:<hex>", "sources": ["file:///abs/pylon.wasm"]},
     "caps": {"crc32c": {"digest": "sha256:<hex>", "sources": [...],
                         "limits": {"memory-mb": 256}, "wasi": false}}}

How the types relate: a :class:`Plan` holds an optional :class:`GuestRef` and
a name -> :class:`CapEntry` mapping; each entry holds its :class:`CapLimits`.
All four are frozen, keyword-only dataclasses; "changing" a plan makes a new
one (:meth:`Plan.with_cap`, :meth:`Plan.without_cap`).

Invariants:

* Every ``Plan`` that exists is valid: construction runs the same checks as
  loading, so a plan built in code can always be saved and loaded back.
* Output is canonical: sorted keys, 2-space indent, one trailing newline,
  ``limits`` holding only the limits that were set, ``wasi`` always written.
  Loading canonical text and dumping it gives the same bytes.
* Unset limits stay unset (``None``) in the plan; :meth:`CapLimits.effective`
  fills them from :data:`DEFAULT_LIMITS`, the one place defaults live.

Every problem with a plan is a :class:`~pylon.errors.PlanError` that names
the file and the JSON path (``$.caps.crc32c.digest``) of the offending value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pylon import paths
from pylon.blobstore import write_atomic
from pylon.errors import PlanError

__all__ = [
    "DEFAULT_LIMITS",
    "PLAN_VERSION",
    "SCHEMA_PATH",
    "CapEntry",
    "CapLimits",
    "GuestRef",
    "Plan",
    "load",
    "loads",
    "schema",
]

#: The plan format version this code reads and writes (``"pylon-plan": 1``).
PLAN_VERSION = 1
#: The JSON Schema (draft 2020-12) every plan is checked against.
SCHEMA_PATH = Path(__file__).parent / "schemas" / "plan.schema.json"

#: Cap names: lowercase letters, digits, ``_`` and ``-``; at most 64 characters.
CAP_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_CAP_NAME_RE = re.compile(CAP_NAME_PATTERN)


@dataclass(frozen=True, kw_only=True)
class CapLimits:
    """Resource limits of one cap; ``None`` means "the default" (see :data:`DEFAULT_LIMITS`).

    Attributes:
        memory_mb: largest linear memory the cap's instance may grow to, MiB.
        timeout_ms: wall-clock budget of one ``invoke``, milliseconds.
        max_payload_mb: largest request or reply payload of one ``invoke``, MiB.

    These limit one cap instance's memory, the time of a call and the size of
    what crosses the boundary. They do not limit the guest, the number of caps,
    or the host memory the engine spends copying payloads.
    """

    memory_mb: int | None = None
    timeout_ms: int | None = None
    max_payload_mb: int | None = None

    def effective(self) -> CapLimits:
        """These limits with every unset one taken from :data:`DEFAULT_LIMITS`."""
        return CapLimits(
            memory_mb=self.memory_mb if self.memory_mb is not None else DEFAULT_LIMITS.memory_mb,
            timeout_ms=self.timeout_ms if self.timeout_ms is not None else DEFAULT_LIMITS.timeout_ms,
            max_payload_mb=(self.max_payload_mb if self.max_payload_mb is not None
                            else DEFAULT_LIMITS.max_payload_mb),
        )


#: The limits a cap gets for every key its plan entry leaves out. The one place
#: defaults are defined; docs/plan.md lists the same numbers.
#:
#: * memory-mb 256: room for a native library's heap plus a few payloads.
#: * timeout-ms 10000: a call that runs ten seconds is stuck more often than busy.
#: * max-payload-mb 64: a payload is copied into the cap's memory, so it must
#:   fit well inside memory-mb, twice (request and reply).
DEFAULT_LIMITS = CapLimits(memory_mb=256, timeout_ms=10_000, max_payload_mb=64)

# JSON key <-> attribute, in one table so the two spellings cannot drift.
_LIMIT_KEYS = {"memory-mb": "memory_mb", "timeout-ms": "timeout_ms", "max-payload-mb": "max_payload_mb"}


@dataclass(frozen=True, kw_only=True)
class GuestRef:
    """The guest component: its digest and where to fetch it, tried in order."""

    digest: str
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _as_sources(self.sources))


@dataclass(frozen=True, kw_only=True)
class CapEntry:
    """One cap of a plan.

    Attributes:
        digest: ``sha256:<hex>`` of the cap's component.
        sources: URLs to fetch it from, tried in order.
        limits: its resource limits.
        wasi: whether it may import WASI (default: it imports nothing).
    """

    digest: str
    sources: tuple[str, ...] = ()
    limits: CapLimits = field(default_factory=CapLimits)
    wasi: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _as_sources(self.sources))


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A whole plan. Construct directly, or with :func:`load` / :func:`loads`.

    Attributes:
        guest: the guest component; ``None`` means the stock guest the install built.
        caps: cap name -> entry, read-only, sorted by name.

    Raises:
        PlanError: (on construction) any value breaks the schema.
    """

    guest: GuestRef | None = None
    caps: Mapping[str, CapEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "caps", MappingProxyType(dict(sorted(self.caps.items()))))
        _validate(self.to_json(), file=None)

    # -- reading and writing -------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Reads a plan file.

        Raises:
            PlanError: the file is unreadable, not JSON, or breaks the schema.
        """
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise PlanError(f"cannot read plan: {exc.strerror or exc}", file=str(path)) from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PlanError(f"not UTF-8 text (byte {exc.start})", file=str(path)) from exc
        return cls.loads(text, file=str(path))

    @classmethod
    def loads(cls, text: str, *, file: str | None = None) -> Plan:
        """Parses plan text; ``file`` names it in error messages.

        Raises:
            PlanError: the text is not JSON or breaks the schema.
        """
        doc = _parse_json(text, file=file)
        _validate(doc, file=file)
        return _from_json(doc)

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data, in canonical form."""
        doc: dict[str, Any] = {"pylon-plan": PLAN_VERSION, "caps": {}}
        if self.guest is not None:
            doc["guest"] = {"digest": self.guest.digest, "sources": list(self.guest.sources)}
        for name, cap in self.caps.items():
            limits = {key: getattr(cap.limits, attr) for key, attr in _LIMIT_KEYS.items()
                      if getattr(cap.limits, attr) is not None}
            doc["caps"][name] = {"digest": cap.digest, "sources": list(cap.sources),
                                 "limits": limits, "wasi": cap.wasi}
        return doc

    def dumps(self) -> str:
        """Canonical plan text: sorted keys, 2-space indent, trailing newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Writes the plan atomically (temp file in the same folder, fsync, rename)."""
        write_atomic(Path(path), self.dumps().encode("utf-8"))

    # -- changing --------------------------------------------------------------

    def with_cap(self, name: str, *, digest: str, sources: Iterable[str] = (),
                 limits: CapLimits | None = None, wasi: bool = False) -> Plan:
        """A copy with cap ``name`` added, or replaced if already present.

        Raises:
            PlanError: the name, digest, a source or a limit is invalid.
        """
        entry = CapEntry(digest=digest, sources=tuple(sources), limits=limits or CapLimits(), wasi=wasi)
        return replace(self, caps={**self.caps, name: entry})

    def without_cap(self, name: str) -> Plan:
        """A copy without cap ``name``.

        Raises:
            PlanError: the plan has no cap of that name.
        """
        if name not in self.caps:
            known = ", ".join(self.caps) or "none"
            raise PlanError(f"no cap named {name!r} (caps: {known})", path=f"$.caps{_key(name)}")
        return replace(self, caps={k: v for k, v in self.caps.items() if k != name})

    def with_guest(self, guest: GuestRef | None) -> Plan:
        """A copy with another guest (``None``: the stock guest)."""
        return replace(self, guest=guest)

    def digests(self) -> set[str]:
        """Every digest the plan refers to (guest and caps), e.g. to keep in a gc."""
        found = {cap.digest for cap in self.caps.values()}
        if self.guest is not None:
            found.add(self.guest.digest)
        return found


def _as_sources(sources: Iterable[str]) -> tuple[str, ...]:
    # tuple("file:///x") would silently become a tuple of characters.
    if isinstance(sources, str):
        raise PlanError(f"sources must be a list of URLs, not the string {sources!r}")
    return tuple(sources)


def load(path: str | Path) -> Plan:
    """Reads a plan file; see :meth:`Plan.load`."""
    return Plan.load(path)


def loads(text: str, *, file: str | None = None) -> Plan:
    """Parses plan text; see :meth:`Plan.loads`."""
    return Plan.loads(text, file=file)


@cache
def schema() -> dict[str, Any]:
    """The plan JSON Schema, parsed."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# -- internals -----------------------------------------------------------------

def _parse_json(text: str, *, file: str | None) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # A lock file with a key twice is ambiguous; json would keep the last silently.
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise PlanError(f"duplicate key {key!r}", file=file)
            seen[key] = value
        return seen

    def no_constants(name: str) -> Any:
        raise PlanError(f"invalid JSON: {name} is not a JSON number", file=file)

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise PlanError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                        file=file) from exc


def _validate(doc: Any, *, file: str | None) -> None:
    """Raises PlanError for the first (shallowest) problem in ``doc``."""
    # The version first: a newer plan would otherwise fail on its new keys,
    # which hides the real reason.
    if isinstance(doc, dict) and "pylon-plan" in doc and doc["pylon-plan"] != PLAN_VERSION:
        version = doc["pylon-plan"]
        raise PlanError(
            f"unsupported plan version {json.dumps(version)}: this Pylon reads version {PLAN_VERSION}",
            path="$.pylon-plan", file=file)
    memo = _validated_marker(doc)
    if memo is not None and memo.exists():
        return
    validator = _validator()
    errors = list(validator.iter_errors(doc))
    if not errors:
        if memo is not None:
            try:
                memo.parent.mkdir(parents=True, exist_ok=True)
                memo.touch()
            except OSError:
                pass  # only a cache
        return
    first = min(errors, key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path],
                                       str(e.validator)))
    path, message = _explain(first)
    raise PlanError(message, path=path, file=file)


def _validated_marker(doc: Any) -> Path | None:
    """Where a document that passed the schema is remembered, by content.

    jsonschema costs ~150 ms to import, paid by every ``composectl run``
    for a plan that has not changed since it was last checked. The marker's
    name is the sha256 of the canonical document and of the schema itself,
    so the same bytes under the same schema give the same answer; anything
    else is validated in full.
    """
    try:
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    digest = hashlib.sha256(_schema_bytes() + b"\0" + canonical.encode("utf-8")).hexdigest()
    return paths.cache_root() / "validated-plans" / digest


@cache
def _schema_bytes() -> bytes:
    return SCHEMA_PATH.read_bytes()


@cache
def _validator() -> Any:
    import jsonschema  # imported on first use: see _validated_marker
    # JSON Schema counts 1.0 as an integer; a lock file must not (it would not
    # round-trip), so integers here are Python ints and never bools.
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    strict = jsonschema.validators.extend(base, type_checker=checker)
    return strict(schema())


_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string",
               "integer": "an integer", "boolean": "true or false", "number": "a number"}


def _explain(error: Any) -> tuple[str, str]:
    """A JSON path and a human message for one schema violation."""
    path = "$" + "".join(_key(p) for p in error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)[0]
        return path + _key(extra), f"unknown key {extra!r} (allowed: {', '.join(allowed)})"
    if kind == "required" and isinstance(instance, dict):
        missing = [k for k in value if k not in instance][0]
        return path, f"missing required key {missing!r}"
    if kind == "type":
        return path, f"expected {_TYPE_NAMES.get(value, value)}, got {_describe(instance)}"
    if kind == "pattern":
        if value == CAP_NAME_PATTERN:
            # Reported by propertyNames: the path is the caps object, the instance the name.
            return path + _key(instance), (
                f"bad cap name {instance!r}: use lowercase letters, digits, '_' and '-', "
                "starting with a letter or digit, at most 64 characters")
        if value.startswith("^sha256"):
            return path, f"bad digest {instance!r}: expected 'sha256:' followed by 64 lowercase hex digits"
        return path, f"bad source {instance!r}: use file:/// with an absolute path, http:// or https://"
    if kind == "minimum":
        return path, f"must be at least {value}, got {_describe(instance)}"
    if kind == "maximum":
        return path, f"must be at most {value}, got {_describe(instance)}"
    if kind == "uniqueItems":
        return path, "lists the same source twice"
    return path, error.message


def _describe(value: Any) -> str:
    text = json.dumps(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, bool) or value is None:
        return text
    kind = {str: "the string", int: "", float: "the number", list: "a list", dict: "an object"}
    prefix = kind.get(type(value), "")
    return f"{prefix} {text}".strip()


def _key(part: object) -> str:
    """One JSON-path step: ``[3]``, ``.crc32c``, or ``["odd key"]``."""
    if isinstance(part, int):
        return f"[{part}]"
    text = str(part)
    if re.fullmatch(r"[A-Za-z0-9_-]+", text):
        return f".{text}"
    return f"[{json.dumps(text)}]"


def _from_json(doc: dict[str, Any]) -> Plan:
    guest = None
    if "guest" in doc:
        guest = GuestRef(digest=doc["guest"]["digest"], sources=tuple(doc["guest"]["sources"]))
    caps = {}
    for name, raw in doc["caps"].items():
        limits = CapLimits(**{attr: raw.get("limits", {}).get(key) for key, attr in _LIMIT_KEYS.items()})
        caps[name] = CapEntry(digest=raw["digest"], sources=tuple(raw["sources"]),
                              limits=limits, wasi=raw.get("wasi", False))
    return Plan(guest=guest, caps=caps)
