"""Type stubs for ``pylon._engine``, the Rust engine (engine/src/py_api.rs).

Only :mod:`pylon.engine` and :mod:`pylon.runtime` import it directly.
"""

from collections.abc import Callable, Sequence

WASMTIME_VERSION: str

class ProviderSpec:
    """Everything needed to instantiate one provider; built after the trust gate."""

    name: str
    path: str
    digest: str
    memory_bytes: int
    timeout_ms: int
    max_payload_bytes: int
    wasi: bool
    def __init__(
        self,
        *,
        name: str,
        path: str,
        digest: str,
        memory_bytes: int,
        timeout_ms: int,
        max_payload_bytes: int,
        wasi: bool = False,
    ) -> None: ...

class Interrupt:
    """A run's stop flag: ``set()`` from any thread stops the run at its next epoch tick."""

    def __init__(self) -> None: ...
    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    def running_for(self) -> float | None:
        """Seconds the guest has run (after its code loaded), or None before it starts."""

class Provider:
    """A provider instantiated for host-side calls (no run budget applies)."""

    @property
    def name(self) -> str: ...
    @property
    def shim(self) -> str | None:
        """The cap's ``pylon:shim`` section, read from its verified bytes."""
    def invoke(self, method: str, payload: bytes) -> bytes:
        """Raises ``pylon.errors.CapError`` (``.kind`` = WIT error case)."""

class Engine:
    """A wasmtime engine with Pylon's linker, limits and compile cache."""

    def __init__(self, cache_dir: str | None = None) -> None: ...
    def run_guest(
        self,
        path: str,
        digest: str,
        *,
        argv: Sequence[str],
        env: Sequence[tuple[str, str]],
        cwd: str,
        preopens: Sequence[tuple[str, str, bool]] = ...,
        resolver: Callable[[str], ProviderSpec] | None = None,
        report: Callable[[str], None] | None = None,
        timeout_ms: int | None = None,
        memory_bytes: int | None = None,
        max_instances: int = 32,
        max_cap_memory_bytes: int = 1 << 30,
        interrupt: Interrupt | None = None,
    ) -> int:
        """Runs the guest once; returns its exit status.

        ``preopens`` are ``(host, guest, read_only)``. The blob at ``path`` is
        verified against ``digest`` before it is compiled. Raises
        ``GuestTimeout`` / ``GuestInterrupted`` when stopped, ``DigestMismatch``
        when the blob is not what ``digest`` names, ``EngineError`` otherwise.
        """
    def run_core_p1(
        self,
        path: str,
        *,
        argv: Sequence[str],
        env: Sequence[tuple[str, str]] = ...,
        preopens: Sequence[tuple[str, str, bool]] = ...,
        digest: str = "",
        timeout_ms: int | None = None,
        memory_bytes: int | None = None,
        interrupt: Interrupt | None = None,
    ) -> int: ...
    def load_provider(self, spec: ProviderSpec) -> Provider: ...
    def is_cached(self, digest: str, *, core: bool = False) -> bool: ...
    def precompile(self, path: str, digest: str = "", *, core: bool = False) -> str:
        """Returns "memory", "disk" or "compiled"."""
