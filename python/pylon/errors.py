"""Every error Pylon raises on the host side derives from :class:`PylonError`.

The tree::

    PylonError
    ├── PlanError            a plan file is unreadable, not JSON, or breaks the schema
    ├── BlobError            the blob store or a blob source failed
    │   ├── DigestMismatch   bytes whose sha256 is not the digest they claim
    │   ├── BlobNotFound     no blob of that digest in the store and no source for it
    │   └── FetchError       a source (file://, http(s)://) could not deliver
    ├── TrustError           the trust policy refuses a cap's name or digest
    │   └── SignatureError   a cap's signature does not vouch for its digest under its name
    ├── CapError             a cap is unknown, misbehaved or failed a call
    ├── EngineError          wasmtime could not compile, instantiate or run something
    ├── GuestStopped         the guest was stopped from outside (``exit_status``, ``seconds``)
    │   ├── GuestTimeout     its time limit ran out (exit status 124)
    │   ├── GuestOutOfFuel   its fuel (CPU budget) ran out (exit status 124)
    │   └── GuestInterrupted Ctrl-C or the embedding host stopped it (exit status 130)
    ├── StateError           a folder or file of Pylon's own state is missing, unsafe or unwritable
    └── BuildError           a build tool (zig, componentize-py, wasm-tools...) failed

The CLI renders any ``PylonError`` as one clear message and a non-zero exit;
anything else reaching it is a bug in Pylon.

Errors inside the guest (a denied resolve, a trapping cap) are Python
exceptions of the guest's own ``pylon_guest.dynlink`` module, not these.
"""

from __future__ import annotations


class PylonError(Exception):
    """Root of every error Pylon raises on purpose."""

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross processes (pylon.dask sends a worker's error to the
        # client). The default pickling calls ``cls(*args)`` again, which fails
        # for errors whose constructor takes other arguments than the message
        # (DigestMismatch, SignatureError); rebuild from the state instead.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[PylonError], args: tuple[object, ...], state: dict[str, object]) -> PylonError:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class PlanError(PylonError):
    """A plan is malformed. ``path`` is the JSON path of the offending value."""

    def __init__(self, message: str, *, path: str | None = None, file: str | None = None):
        self.path = path
        self.file = file
        self.detail = message
        where = ""
        if file:
            where += f"{file}: "
        if path:
            where += f"at {path}: "
        super().__init__(where + message)


class BlobError(PylonError):
    """The blob store or a blob source failed."""


class DigestMismatch(BlobError):
    """Bytes do not hash to the digest they are supposed to have."""

    def __init__(self, expected: str, found: str, where: str):
        self.expected = expected
        self.found = found
        self.where = where
        super().__init__(f"digest mismatch for {where}: expected {expected}, found {found}")


class BlobNotFound(BlobError):
    """No blob of that digest is stored and none could be fetched."""


class FetchError(BlobError):
    """A blob source could not deliver the bytes."""


class TrustError(PylonError):
    """The trust policy refuses a cap."""


class SignatureError(TrustError):
    """A cap's detached signature does not vouch for the plan's digest under the cap's name.

    A :class:`TrustError`, so code that handles a refused cap handles this
    too. The message (for the host's stderr) names the cap, the digest and
    the key ids involved; a guest is told only what
    :meth:`pylon.trust.TrustPolicy.guest_message` says.

    Attributes:
        cap: the cap's name.
        digest: the digest the plan gives for it.
        keyids: the key ids the refusal is about (signers or trusted keys).
    """

    def __init__(self, message: str, *, cap: str = "", digest: str = "", keyids: tuple[str, ...] = ()):
        super().__init__(message)
        self.cap = cap
        self.digest = digest
        self.keyids = keyids


class CapError(PylonError):
    """A cap is unknown, misbehaved, or a call to it failed."""


class EngineError(PylonError):
    """The engine could not compile, instantiate or run a module."""


class GuestStopped(PylonError):
    """The guest was stopped before it finished.

    Attributes:
        exit_status: what ``composectl run`` exits with (as a shell would).
        seconds: how long the guest had run, when known.
        abandoned: the guest was blocked in a host call (a sleep, a read)
            and could not be unwound; its thread is left behind, and a
            process that wants it gone must exit.
    """

    exit_status = 1

    def __init__(self, message: str, *, seconds: float | None = None, abandoned: bool = False):
        super().__init__(message)
        self.seconds = seconds
        self.abandoned = abandoned


class GuestTimeout(GuestStopped):
    """The guest ran past its time limit."""

    exit_status = 124


class GuestOutOfFuel(GuestStopped):
    """The guest used up its fuel (the deterministic CPU budget of an embedding)."""

    exit_status = 124


class GuestInterrupted(GuestStopped):
    """The guest was interrupted (Ctrl-C, or the embedding host asked)."""

    exit_status = 130


class StateError(PylonError):
    """A folder or file of Pylon's own state (cache, blobs, config) is unsafe or unusable."""


class BuildError(PylonError):
    """A build step failed; the message carries the tool's own output."""
