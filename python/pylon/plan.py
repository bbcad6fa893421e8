"""The plan: Pylon's lock file, naming the guest and every cap by content digest.

A plan is JSON (schema: ``schemas/plan.schema.json``; prose: ``docs/plan.md``)::

    {"pylon-plan": 1,
     "guest": {"digest": "sha256:<hex>", "sources": ["file:///abs/pylon.wasm"],
               "size": 36000000, "limits": {"timeout-ms": 60000}},
     "caps": {"crc32c": {"digest": "sha256:<hex>", "sources": [...], "size": 20480,
                         "limits": {"memory-mb": 256}, "wasi": false}},
     "limits": {"max-instances": 8}}

How the types relate: a :class:`Plan` holds an optional :class:`GuestRef`
(with its :class:`GuestLimits`), a name -> :class:`CapEntry` mapping (each
entry holds its :class:`CapLimits`) and the run's :class:`RunLimits`. All are
frozen, keyword-only dataclasses; "changing" a plan makes a new one
(:meth:`Plan.with_cap`, :meth:`Plan.without_cap`, :meth:`Plan.with_guest`).

Invariants:

* Every ``Plan`` that exists is valid: construction runs the same checks as
  loading, so a plan built in code can always be saved and loaded back.
* Output is canonical: sorted keys, 2-space indent, one trailing newline,
  ``limits`` holding only the limits that were set, ``wasi`` always written.
  Loading canonical text and dumping it gives the same bytes.
* Unset limits stay unset (``None``) in the plan; ``effective()`` fills them
  from :data:`DEFAULT_LIMITS`, :data:`DEFAULT_GUEST_LIMITS` and
  :data:`DEFAULT_RUN_LIMITS`, the one place defaults live.
* Loading never crashes: every problem with a plan, however malformed (deep
  nesting, huge numbers, lone surrogates...), is a
  :class:`~pylon.errors.PlanError` that names the file and, for anything past
  JSON syntax, the JSON path (``$.caps.crc32c.digest``) of the offending value.
* Every plan is checked against the schema on every load; nothing is cached.
"""

from __future__ import annotations

import contextvars
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

from pylon.blobstore import write_atomic
from pylon.errors import PlanError

__all__ = [
    "DEFAULT_GUEST_LIMITS",
    "DEFAULT_LIMITS",
    "DEFAULT_RUN_LIMITS",
    "MAX_DEPTH",
    "PLAN_VERSION",
    "SCHEMA_PATH",
    "BlobRef",
    "CapEntry",
    "CapLimits",
    "GuestLimits",
    "GuestRef",
    "PackagePin",
    "Plan",
    "RunLimits",
    "load",
    "loads",
    "schema",
]

#: The plan format version this code reads and writes (``"pylon-plan": 1``).
PLAN_VERSION = 1
#: The JSON Schema (draft 2020-12) every plan is checked against.
SCHEMA_PATH = Path(__file__).parent / "schemas" / "plan.schema.json"

#: Cap names: lowercase letters, digits, ``_`` and ``-``; at most 64 characters.
#: The one rule, kept in schemas/common.schema.json (see pylon.names).
from pylon.names import CAP_NAME_PATTERN  # noqa: E402, I001
_CAP_NAME_RE = re.compile(CAP_NAME_PATTERN)

#: How deeply a plan's JSON may nest. A valid plan is at most 4 deep
#: (``$.caps.<name>.limits``); anything past this is refused before parsing,
#: so a hostile ``[[[[...`` cannot exhaust the parser's recursion.
MAX_DEPTH = 32


@dataclass(frozen=True, kw_only=True)
class CapLimits:
    """Resource limits of one cap; ``None`` means "the default" (see :data:`DEFAULT_LIMITS`).

    Attributes:
        memory_mb: largest memory the cap's instance may grow to, MiB.
        timeout_ms: wall-clock budget of one ``invoke``, milliseconds.
        max_payload_mb: largest request or reply payload of one ``invoke``, MiB.
        max_handles: live handles the cap instance's handle table may hold
            (docs/cap-interface.md, "Handles"); told to the cap at ``$pylon/init``.

    These limit one cap instance's memory, the time of a call, the size of
    what crosses the boundary and the resources a run may hold open in it.
    The guest has :class:`GuestLimits`; all the cap instances of one run
    together have :class:`RunLimits`.
    """

    memory_mb: int | None = None
    timeout_ms: int | None = None
    max_payload_mb: int | None = None
    max_handles: int | None = None

    def effective(self) -> CapLimits:
        """These limits with every unset one taken from :data:`DEFAULT_LIMITS`."""
        return _fill(self, DEFAULT_LIMITS)


#: The limits a cap gets for every key its plan entry leaves out. The one place
#: defaults are defined; docs/plan.md lists the same numbers.
#:
#: * memory-mb 256: room for a native library's heap plus a few payloads.
#: * timeout-ms 10000: a call that runs ten seconds is stuck more often than busy.
#: * max-payload-mb 64: a payload is copied into the cap's memory, so it must
#:   fit well inside memory-mb, twice (request and reply).
#: * max-handles 4096: far more open statements or connections than a program
#:   keeps on purpose, few enough that a leak in a loop is stopped early.
DEFAULT_LIMITS = CapLimits(memory_mb=256, timeout_ms=10_000, max_payload_mb=64, max_handles=4096)


@dataclass(frozen=True, kw_only=True)
class GuestLimits:
    """Limits of the guest (pylon.wasm) itself; ``None`` means "the default".

    Attributes:
        timeout_ms: wall-clock time of the whole run, milliseconds; when it
            passes the guest is stopped. The default is no limit (see
            :data:`DEFAULT_GUEST_LIMITS`).
        memory_mb: largest memory the guest may grow to, MiB; past it an
            allocation fails (``MemoryError`` where CPython can raise it).
        tmp_mb: largest size of the run's private temporary folder (the
            guest's ``/tmp``), MiB; past it the run is stopped
            (:mod:`pylon.scratch` says how it is measured and by how much a
            guest can overshoot it).
    """

    timeout_ms: int | None = None
    memory_mb: int | None = None
    tmp_mb: int | None = None

    def effective(self) -> GuestLimits:
        """These limits with every unset one taken from :data:`DEFAULT_GUEST_LIMITS`.

        ``timeout_ms`` stays ``None`` (no time limit) unless the plan sets it.
        """
        return _fill(self, DEFAULT_GUEST_LIMITS)


#: The guest's limits for every key a plan leaves out; docs/plan.md lists them.
#:
#: * memory-mb 2048: half of what wasm32 can address; ample for CPython and a
#:   real workload, while a runaway allocation ends as a ``MemoryError`` in the
#:   guest instead of taking the host's memory.
#: * timeout-ms ``None``, no time limit: ``composectl run script.py`` behaves
#:   like ``python script.py``. A long job is legitimate, and the user stops
#:   one with Ctrl-C (SIGINT stops the guest). A plan's ``guest.limits`` or
#:   ``composectl run --timeout`` sets a deadline where one is wanted
#:   (services, CI, untrusted scripts).
#: * tmp-mb 64: room for the scratch files of a test suite or a build step,
#:   small enough that a runaway writer cannot fill the host's disk.
DEFAULT_GUEST_LIMITS = GuestLimits(timeout_ms=None, memory_mb=2048, tmp_mb=64)


@dataclass(frozen=True, kw_only=True)
class RunLimits:
    """The budget of one run over all its cap instances; ``None`` means "the default".

    Attributes:
        max_instances: cap instances alive at the same time.
        max_memory_mb: total memory of all live cap instances, MiB.
    """

    max_instances: int | None = None
    max_memory_mb: int | None = None

    def effective(self) -> RunLimits:
        """These limits with every unset one taken from :data:`DEFAULT_RUN_LIMITS`."""
        return _fill(self, DEFAULT_RUN_LIMITS)


#: A run's budget for every key a plan leaves out; docs/plan.md lists them.
#:
#: * max-instances 32: far more caps than a program resolves on purpose, few
#:   enough that a resolve loop is stopped long before it exhausts the host.
#: * max-memory-mb 1024: four caps at the default memory-mb of 256 each.
DEFAULT_RUN_LIMITS = RunLimits(max_instances=32, max_memory_mb=1024)

# JSON key <-> attribute, in one table per object so the two spellings cannot drift.
_LIMIT_KEYS = {"memory-mb": "memory_mb", "timeout-ms": "timeout_ms", "max-payload-mb": "max_payload_mb",
               "max-handles": "max_handles"}
_GUEST_LIMIT_KEYS = {"timeout-ms": "timeout_ms", "memory-mb": "memory_mb", "tmp-mb": "tmp_mb"}
_RUN_LIMIT_KEYS = {"max-instances": "max_instances", "max-memory-mb": "max_memory_mb"}
_KEYS_OF: dict[type, dict[str, str]] = {CapLimits: _LIMIT_KEYS, GuestLimits: _GUEST_LIMIT_KEYS,
                                        RunLimits: _RUN_LIMIT_KEYS}


#: One of the three limits classes; :func:`_fill` returns the class it was given.
_Limits = TypeVar("_Limits", CapLimits, GuestLimits, RunLimits)


def _fill(limits: _Limits, defaults: _Limits) -> _Limits:
    values = {attr: getattr(limits, attr) if getattr(limits, attr) is not None else getattr(defaults, attr)
              for attr in _KEYS_OF[type(limits)].values()}
    return type(limits)(**values)


def _limits_json(limits: Any) -> dict[str, Any]:
    """The limits that were set, under their JSON keys."""
    return {key: getattr(limits, attr) for key, attr in _KEYS_OF[type(limits)].items()
            if getattr(limits, attr) is not None}


def _limits_from_json(cls: type, raw: Mapping[str, Any]) -> Any:
    return cls(**{attr: raw.get(key) for key, attr in _KEYS_OF[cls].items()})


@dataclass(frozen=True, kw_only=True)
class GuestRef:
    """The guest: which component, where to fetch it, and its limits.

    Attributes:
        digest: ``sha256:<hex>`` of the guest component; ``None`` means the
            stock guest the install built (then ``sources`` and ``size`` must
            be empty, and only ``limits`` says anything).
        sources: URLs to fetch it from, tried in order.
        size: the component's exact size in bytes, if the plan records it.
        limits: the guest's limits.
    """

    digest: str | None = None
    sources: tuple[str, ...] = ()
    size: int | None = None
    limits: GuestLimits = field(default_factory=GuestLimits)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _as_sources(self.sources))


@dataclass(frozen=True, kw_only=True)
class BlobRef:
    """A blob the plan names besides the guest and caps (a cap's signature).

    Attributes:
        digest: ``sha256:<hex>`` of its bytes.
        sources: URLs to fetch it from, tried in order.
        size: its exact size in bytes, if the plan records it.
    """

    digest: str
    sources: tuple[str, ...] = ()
    size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _as_sources(self.sources))


@dataclass(frozen=True, kw_only=True)
class CapEntry:
    """One cap of a plan.

    Attributes:
        digest: ``sha256:<hex>`` of the cap's component.
        sources: URLs to fetch it from, tried in order.
        size: the component's exact size in bytes, if the plan records it.
        limits: its resource limits.
        wasi: whether it may import WASI (default: it imports nothing).
        signature: a detached signature of the cap (docs/signing.md), if any:
            with it, a key the trust policy trusts for this name can vouch
            for the digest instead of a pinned digest.
    """

    digest: str
    sources: tuple[str, ...] = ()
    size: int | None = None
    limits: CapLimits = field(default_factory=CapLimits)
    wasi: bool = False
    signature: BlobRef | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _as_sources(self.sources))


@dataclass(frozen=True, kw_only=True)
class PackagePin:
    """One pure-Python package (a wheel) the guest sees on ``sys.path``.

    Attributes:
        name: the project's name, normalized as PEP 503 says (``typing-extensions``).
        version: its version.
        digest: ``sha256:<hex>`` of the wheel file.
        sources: URLs to fetch the wheel from, tried in order.
        size: the wheel's exact size in bytes, if the plan records it.
    """

    name: str
    version: str
    digest: str
    sources: tuple[str, ...] = ()
    size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _as_sources(self.sources))


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A whole plan. Construct directly, or with :func:`load` / :func:`loads`.

    Attributes:
        guest: the guest component and its limits; ``None`` means the stock
            guest the install built, with default limits.
        caps: cap name -> entry, read-only, sorted by name.
        limits: the run's budget over all its cap instances.
        packages: pure-Python wheels on the guest's ``sys.path``, in order.

    Raises:
        PlanError: (on construction) any value breaks the schema.
    """

    guest: GuestRef | None = None
    caps: Mapping[str, CapEntry] = field(default_factory=dict)
    limits: RunLimits = field(default_factory=RunLimits)
    packages: tuple[PackagePin, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "caps", MappingProxyType(dict(sorted(self.caps.items()))))
        object.__setattr__(self, "packages", tuple(self.packages))
        seen: set[str] = set()
        for i, pin in enumerate(self.packages):
            if pin.name in seen:
                raise PlanError(f"package {pin.name!r} is listed twice", path=f"$.packages[{i}].name")
            seen.add(pin.name)
        if not _FROM_VALIDATED_DOC.get():
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
            PlanError: the text is not JSON or breaks the schema. Nothing else:
                any text at all gives a plan or a PlanError.
        """
        doc = _parse_json(text, file=file)
        _validate(doc, file=file)
        try:
            return _from_json(doc)
        except PlanError as exc:
            # A rule past the schema (a package listed twice): name the file too.
            if exc.file is not None or file is None:
                raise
            raise PlanError(exc.detail, path=exc.path, file=file) from None

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data, in canonical form."""
        doc: dict[str, Any] = {"pylon-plan": PLAN_VERSION, "caps": {}}
        if self.guest is not None:
            doc["guest"] = _guest_json(self.guest)
        for name, cap in self.caps.items():
            entry: dict[str, Any] = {"digest": cap.digest, "sources": list(cap.sources)}
            if cap.size is not None:
                entry["size"] = cap.size
            entry["limits"] = _limits_json(cap.limits)
            entry["wasi"] = cap.wasi
            if cap.signature is not None:
                entry["signature"] = _blob_json(cap.signature)
            doc["caps"][name] = entry
        run_limits = _limits_json(self.limits)
        if run_limits:
            doc["limits"] = run_limits
        if self.packages:
            doc["packages"] = [{"name": p.name, "version": p.version, **_blob_json(p)} for p in self.packages]
        return doc

    def dumps(self) -> str:
        """Canonical plan text: sorted keys, 2-space indent, trailing newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Writes the plan atomically (temp file in the same folder, fsync, rename)."""
        write_atomic(Path(path), self.dumps().encode("utf-8"))

    # -- changing --------------------------------------------------------------

    def with_cap(self, name: str, *, digest: str, sources: Iterable[str] = (),
                 limits: CapLimits | None = None, wasi: bool = False, size: int | None = None,
                 signature: BlobRef | None = None) -> Plan:
        """A copy with cap ``name`` added, or replaced if already present.

        Raises:
            PlanError: the name, digest, a source, the size or a limit is invalid.
        """
        entry = CapEntry(digest=digest, sources=tuple(sources), size=size,
                         limits=limits or CapLimits(), wasi=wasi, signature=signature)
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
        """A copy with another guest (``None``: the stock guest, default limits)."""
        return replace(self, guest=guest)

    def with_limits(self, limits: RunLimits) -> Plan:
        """A copy with another run budget."""
        return replace(self, limits=limits)

    def with_packages(self, packages: Iterable[PackagePin]) -> Plan:
        """A copy with these packages (replacing the plan's list).

        Raises:
            PlanError: a name, version, digest or source is invalid, or a
                name is listed twice.
        """
        return replace(self, packages=tuple(packages))

    # -- questions -------------------------------------------------------------

    def digests(self) -> set[str]:
        """Every digest the plan names (guest and caps), e.g. to keep in a gc.

        The stock guest (a plan without ``guest.digest``) is not named here.
        """
        found = {cap.digest for cap in self.caps.values()}
        found |= {cap.signature.digest for cap in self.caps.values() if cap.signature is not None}
        found |= {pin.digest for pin in self.packages}
        if self.guest is not None and self.guest.digest is not None:
            found.add(self.guest.digest)
        return found

    def guest_limits(self) -> GuestLimits:
        """The guest's effective limits, whether or not the plan has a ``guest`` entry."""
        return (self.guest.limits if self.guest is not None else GuestLimits()).effective()

    def run_limits(self) -> RunLimits:
        """The run's effective budget (defaults filled in)."""
        return self.limits.effective()


def _guest_json(guest: GuestRef) -> dict[str, Any]:
    # Canonical: a pinned guest writes digest, sources, size (when known) and
    # limits only when some are set, so plans from before guest limits keep
    # their bytes; the stock guest writes limits (it has nothing else to say).
    out: dict[str, Any] = {}
    if guest.digest is not None:
        out["digest"] = guest.digest
    if guest.digest is not None or guest.sources:
        out["sources"] = list(guest.sources)
    if guest.size is not None:
        out["size"] = guest.size
    limits = _limits_json(guest.limits)
    if limits or guest.digest is None:
        out["limits"] = limits
    return out


def _blob_json(blob: BlobRef | PackagePin) -> dict[str, Any]:
    out: dict[str, Any] = {"digest": blob.digest, "sources": list(blob.sources)}
    if blob.size is not None:
        out["size"] = blob.size
    return out


def _blob_from_json(raw: Mapping[str, Any]) -> BlobRef:
    return BlobRef(digest=raw["digest"], sources=tuple(raw["sources"]), size=raw.get("size"))


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
    # The schema file is Pylon's own, and a JSON Schema document is an object.
    return cast("dict[str, Any]", json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


# -- parsing -------------------------------------------------------------------

# One JSON token that matters for nesting: a string (an unterminated one runs
# to the end of the text), a bracket, a comma or a colon.
_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\[\s\S])*"?|[\[\]{},:]')


def _check_depth(text: str, *, file: str | None) -> None:
    """Raises PlanError if ``text`` nests deeper than :data:`MAX_DEPTH`.

    Runs before ``json.loads``, whose recursion a hostile ``[[[[...`` would
    exhaust (a ``RecursionError`` traceback). One pass over the tokens that
    matter, tracking the JSON path, up to the first container past the limit.
    A syntax error before that point is left for ``json.loads`` to report: it
    stops there, no deeper than the limit.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # cannot nest that deep
    # One entry per open container: [is_object, key token or array index, after colon]
    stack: list[list[Any]] = []
    for match in _TOKEN_RE.finditer(text):
        token = match.group()
        char = token[0]
        if char == '"':
            if stack and stack[-1][0] and not stack[-1][2]:
                stack[-1][1] = token
        elif char in "[{":
            if len(stack) >= MAX_DEPTH:
                _raise_too_deep(text, match.start(), stack, file=file)
                return
            stack.append([char == "{", None if char == "{" else 0, False])
        elif char in "]}":
            if stack:
                stack.pop()
        elif stack:
            top = stack[-1]
            if char == ":":
                top[2] = True
            elif top[0]:  # a comma in an object: a new key follows
                top[1], top[2] = None, False
            else:  # a comma in a list: the next item
                top[1] += 1


def _raise_too_deep(text: str, pos: int, stack: list[list[Any]], *, file: str | None) -> None:
    """Raises the depth error for the container opening at ``pos``, if the text is JSON up to there."""
    try:
        json.loads(text[:pos])
    except json.JSONDecodeError as exc:
        if exc.msg != "Expecting value" or exc.pos != pos:
            return  # a syntax error first: json.loads reports it (it never gets deeper)
    except Exception:  # noqa: BLE001 - e.g. an over-long number: json.loads reports it
        return
    steps = []
    for is_object, where, _colon in stack:
        if is_object:
            try:
                key = json.loads(where)
            except (TypeError, ValueError):
                return
            steps.append(_key(key))
        else:
            steps.append(f"[{where}]")
    raise PlanError(f"nested more than {MAX_DEPTH} levels deep (a plan needs at most 4)",
                    path="$" + "".join(steps), file=file)


def _parse_json(text: str, *, file: str | None) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # A lock file with a key twice is ambiguous; json would keep the last silently.
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise PlanError(f"duplicate key {_quote(key)}", file=file)
            seen[key] = value
        return seen

    def no_constants(name: str) -> Any:
        raise PlanError(f"invalid JSON: {name} is not a JSON number", file=file)

    _check_depth(text, file=file)
    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise PlanError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                        file=file) from exc
    except ValueError as exc:
        # int() refuses numbers past sys.get_int_max_str_digits() digits.
        raise PlanError(_long_number(text), file=file) from exc
    except RecursionError as exc:  # _check_depth should make this unreachable
        raise PlanError(f"invalid JSON: nested too deep (limit {MAX_DEPTH})", file=file) from exc


def _long_number(text: str) -> str:
    """Where the number is that ``int()`` refused (past ``sys.get_int_max_str_digits()`` digits)."""
    limit = sys.get_int_max_str_digits()
    # Strings are matched (and skipped) so digits inside one are not taken for the number.
    numbers = re.compile(rf'"(?:[^"\\]|\\[\s\S])*"?|(-?[0-9]{{{limit + 1},}})') if limit else None
    found = next((m for m in numbers.finditer(text) if m.group(1)), None) if numbers else None
    if found is None:
        return "invalid JSON: a number is too long"
    start = found.start(1)
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return f"invalid JSON at line {line}, column {column}: a number with more than {limit} digits"


# -- validation ------------------------------------------------------------------

def _validate(doc: Any, *, file: str | None) -> None:
    """Raises PlanError for the first (shallowest) problem in ``doc``.

    A document this install validated before is recognised by an
    authenticated record (:mod:`pylon.validated`: an HMAC under a
    per-install key, which writing to the cache cannot forge); any other is
    checked in full. The compiled validator (fastjsonschema) answers valid
    documents in microseconds; only when it rejects one does jsonschema run,
    to explain the shallowest problem.

    Costs (first Plan.load of a 5-cap plan in a fresh process): a known plan
    ~1 ms (reading the key, one HMAC); an unknown valid one 8-13 ms
    (importing fastjsonschema ~3 ms, compiling the schema ~5 ms); a plan
    that fails adds jsonschema's ~60 ms to explain itself.
    """
    # The version first: a newer plan would otherwise fail on its new keys,
    # which hides the real reason.
    if isinstance(doc, dict) and "pylon-plan" in doc and doc["pylon-plan"] != PLAN_VERSION:
        version = doc["pylon-plan"]
        raise PlanError(
            f"unsupported plan version {_json_text(version)}: this Pylon reads version {PLAN_VERSION}",
            path="$.pylon-plan", file=file)
    memo = _memo()
    if memo.knows(doc):
        return
    rejected = _fast_check(doc)
    if rejected is None:
        memo.remember(doc)
        return
    errors = list(_validator().iter_errors(doc))
    if not errors:
        # The validators disagree. Never accept what either refuses.
        raise PlanError(_one_line(rejected[1]), path=rejected[0], file=file)
    # Shallowest first; at one path, a wrong type before what the value breaks.
    first = min(errors, key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path],
                                       e.validator != "type", str(e.validator)))
    path, message = _explain(first)
    raise PlanError(_one_line(message), path=path, file=file)


def _fast_check(doc: Any) -> tuple[str, str] | None:
    """``None`` if ``doc`` is valid, else a (path, message) saying roughly why.

    fastjsonschema counts ``1.0`` as an integer (as JSON Schema does); a lock
    file must not (it would not round-trip). The schema has no field where a
    non-integer number is allowed, so any float anywhere makes the document
    invalid; bools it already refuses where integers are required.
    """
    import fastjsonschema

    try:
        _fast_validator()(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        # Compiled without detailed exceptions (3x faster to compile), so no
        # path: jsonschema finds it, this is only the fallback.
        return "$", "does not match the plan schema: " + str(exc.message).removeprefix("data")
    float_path = _find_float(doc)
    if float_path is not None:
        return float_path, "expected an integer, got a number with a fraction or exponent"
    return None


def _find_float(doc: Any) -> str | None:
    """The JSON path of a float in ``doc`` (iteratively: no recursion), or None."""
    todo: list[tuple[Any, str]] = [(doc, "$")]
    while todo:
        value, path = todo.pop()
        if isinstance(value, float):
            return path
        if isinstance(value, dict):
            todo.extend((v, path + _key(k)) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return None


def _fast_schema() -> dict[str, Any]:
    """The schema as fastjsonschema reads it.

    * fastjsonschema implements drafts 4 to 7 and ignores keywords it does not
      know (which would accept too much); the one later keyword the schema
      uses, ``dependentRequired``, is draft 7's ``dependencies`` with lists.
    * ``pylon-plan``'s ``const`` goes: :func:`_validate` checks the version
      first, and fastjsonschema cannot compile ``const`` without detailed
      exceptions, which would triple its compile time.
    """
    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            return {("dependencies" if k == "dependentRequired" else k): convert(v) for k, v in node.items()}
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    converted = cast("dict[str, Any]", convert(schema()))  # convert() makes a dict of a dict
    converted["$schema"] = "http://json-schema.org/draft-07/schema#"
    del converted["properties"]["pylon-plan"]["const"]
    return converted


@cache
def _memo() -> Any:
    from pylon.validated import Memo

    return Memo(SCHEMA_PATH.read_bytes())


@cache
def _fast_validator() -> Any:
    import fastjsonschema

    return fastjsonschema.compile(_fast_schema(), use_default=False, use_formats=False,
                                  detailed_exceptions=False)


@cache
def _validator() -> Any:
    return strict_validator(schema())


def strict_validator(document: dict[str, Any]) -> Any:
    """A jsonschema validator for ``document`` with the rules every Pylon
    schema means (plan, cap manifest, trust file): integers are never bools
    or floats, and a pattern's ``$`` is ECMA-262's."""
    import jsonschema  # ~60 ms to import: only when a document is invalid

    base = jsonschema.Draft202012Validator
    # JSON Schema counts 1.0 as an integer; a lock file must not (it would not
    # round-trip), so integers here are Python ints and never bools.
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))

    # ECMA-262 (JSON Schema's regex dialect) '$' matches only at the very end;
    # Python's also before a final newline, which would let "crc32c\n" pass
    # as a cap name. fastjsonschema makes the same change.
    def pattern(validator: Any, patrn: str, instance: Any, _schema: Any) -> Any:
        if validator.is_type(instance, "string") and not _ecma_regex(patrn).search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    strict = jsonschema.validators.extend(base, validators={"pattern": pattern}, type_checker=checker)
    return strict(document)


@cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string",
               "integer": "an integer", "boolean": "true or false", "number": "a number"}
# Sources: the scheme part; past it a URL must be printable ASCII.
_SOURCE_SCHEME_RE = re.compile(r"^(file:///|(https?|oci)://[^/]+)")


def _explain(error: Any) -> tuple[str, str]:
    """A JSON path and a human message for one schema violation."""
    path = "$" + "".join(_key(p) for p in error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)[0]
        return path + _key(extra), f"unknown key {_quote(extra)} (allowed: {', '.join(allowed)})"
    if kind == "required" and isinstance(instance, dict):
        missing = [k for k in value if k not in instance][0]
        return path, f"missing required key {missing!r}"
    if kind == "dependentRequired" and isinstance(instance, dict):
        key, missing = next((k, [d for d in deps if d not in instance][0]) for k, deps in sorted(value.items())
                            if k in instance and any(d not in instance for d in deps))
        if missing == "digest":
            return path + _key(key), (f"{key!r} needs 'digest': without a digest the guest is the stock "
                                      "guest, which takes only 'limits'")
        return path, f"missing required key {missing!r} (required with {key!r})"
    if kind == "type":
        return path, f"expected {_TYPE_NAMES.get(value, value)}, got {_describe(instance)}"
    if kind == "pattern":
        if value == CAP_NAME_PATTERN:
            # Reported by propertyNames: the path is the caps object, the instance the name.
            return path + _key(instance), (
                f"bad cap name {_quote(instance)}: use lowercase letters, digits, '_' and '-', "
                "starting with a letter or digit, at most 64 characters")
        if value.startswith("^sha256"):
            return path, (f"bad digest {_quote(instance)}: expected 'sha256:' followed by 64 lowercase "
                          "hex digits")
        if _SOURCE_SCHEME_RE.match(instance):
            return path, (f"bad source {_quote(instance)}: a URL is printable ASCII without spaces "
                          "(percent-encode anything else)")
        if "packages" in path and instance and ("name" in path or "version" in path):
            what = "name" if path.endswith(".name") else "version"
            return path, f"bad package {what} {_quote(instance)}"
        return path, (f"bad source {_quote(instance)}: use file:/// with an absolute path, http://, https:// "
                      "or oci://")
    if kind == "const":
        return path, f"must be {_json_text(value)}, got {_describe(instance)}"
    if kind == "minimum":
        return path, f"must be at least {value}, got {_describe(instance)}"
    if kind == "maximum":
        return path, f"must be at most {value}, got {_describe(instance)}"
    if kind == "uniqueItems":
        return path, "lists the same source twice"
    return path, error.message


def _one_line(message: str) -> str:
    """A message as one printable line, however odd the values it quotes."""
    if message.isprintable():
        return message
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in message)


def _quote(value: Any, limit: int = 100) -> str:
    """``repr(value)``, shortened to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def _json_text(value: Any, limit: int = 60) -> str:
    """``value`` as JSON, shortened to ``limit`` characters; never raises."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        # json.dumps (str) refuses ints of more than 4300 digits; say how big instead.
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = _quote(value, limit)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(value: Any) -> str:
    text = _json_text(value)
    if isinstance(value, bool) or value is None or text.startswith("an integer of about"):
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


#: Set while :func:`_from_json` builds a plan from a document that was just
#: validated: validating the same content again would double every load's cost.
_FROM_VALIDATED_DOC: contextvars.ContextVar[bool] = contextvars.ContextVar("_FROM_VALIDATED_DOC", default=False)


def _from_json(doc: dict[str, Any]) -> Plan:
    """The plan of ``doc``, which must have passed :func:`_validate`."""
    token = _FROM_VALIDATED_DOC.set(True)
    try:
        return _build(doc)
    finally:
        _FROM_VALIDATED_DOC.reset(token)


def _build(doc: dict[str, Any]) -> Plan:
    guest = None
    if "guest" in doc:
        raw_guest = doc["guest"]
        guest = GuestRef(digest=raw_guest.get("digest"), sources=tuple(raw_guest.get("sources", ())),
                         size=raw_guest.get("size"),
                         limits=_limits_from_json(GuestLimits, raw_guest.get("limits", {})))
    caps = {}
    for name, raw in doc["caps"].items():
        caps[name] = CapEntry(digest=raw["digest"], sources=tuple(raw["sources"]), size=raw.get("size"),
                              limits=_limits_from_json(CapLimits, raw.get("limits", {})),
                              wasi=raw.get("wasi", False),
                              signature=_blob_from_json(raw["signature"]) if "signature" in raw else None)
    packages = tuple(PackagePin(name=raw["name"], version=raw["version"], digest=raw["digest"],
                                sources=tuple(raw["sources"]), size=raw.get("size"))
                     for raw in doc.get("packages", ()))
    return Plan(guest=guest, caps=caps, limits=_limits_from_json(RunLimits, doc.get("limits", {})),
                packages=packages)
