"""Type stubs for ``pylon._engine``, the Rust engine (engine/src/py_api.rs).

Only :mod:`pylon.engine`, :mod:`pylon.runtime` and :mod:`pylon.sandbox`
import it directly.
"""

from collections.abc import Callable, Sequence
from typing import Literal, final

__all__ = [
    "Engine",
    "Guest",
    "Session",
    "Outcome",
    "Provider",
    "Interrupt",
    "ProviderSpec",
    "HostCapSpec",
    "WASMTIME_VERSION",
]

#: A guest stream: None captures, "inherit" is the host's, a callable gets each write.
_Sink = None | Literal["inherit"] | Callable[[bytes], object]


WASMTIME_VERSION: str

@final
class ProviderSpec:
    """Everything needed to instantiate one provider; built after the trust gate."""

    name: str
    path: str
    digest: str
    memory_bytes: int
    timeout_ms: int
    max_payload_bytes: int
    wasi: bool
    max_handles: int
    def __new__(
        cls,
        *,
        name: str,
        path: str,
        digest: str,
        memory_bytes: int,
        timeout_ms: int,
        max_payload_bytes: int,
        wasi: bool = False,
        max_handles: int = 4096,
    ) -> ProviderSpec:
        """Raises ``ValueError`` unless ``1 <= max_handles <= 1_000_000``."""

@final
class HostCapSpec:
    """A cap the embedding host serves: ``handler(method, payload) -> reply``."""

    @property
    def name(self) -> str: ...
    @property
    def max_payload_bytes(self) -> int: ...
    def __new__(
        cls, *, name: str, handler: Callable[[str, bytes], bytes], max_payload_bytes: int
    ) -> HostCapSpec: ...

@final
class Outcome:
    """What a guest call returned."""

    @property
    def status(self) -> int: ...
    @property
    def stopped(self) -> Literal["timeout", "interrupt", "fuel"] | None: ...
    @property
    def stopped_after(self) -> float | None: ...
    @property
    def stdout(self) -> bytes: ...
    @property
    def stderr(self) -> bytes: ...
    @property
    def dropped(self) -> int: ...
    @property
    def fuel_consumed(self) -> int | None: ...
    @property
    def handles_released(self) -> dict[str, int]:
        """Cap name -> handles its ``$pylon/release-all`` released when it was dropped."""

@final
class Session:
    """A live guest instance whose ``__main__`` persists between calls."""

    def run(self, code: str, *, timeout_ms: int | None = None, interrupt: Interrupt | None = None) -> Outcome: ...
    def close(self) -> None: ...
    @property
    def is_open(self) -> bool: ...

@final
class Guest:
    """The guest component, linked once; each ``run`` is a fresh instance."""

    # Runs and sessions that started from an instance made ahead of them.
    @property
    def spare_starts(self) -> int: ...
    # Whether instances of this guest can be made ahead of their runs.
    @property
    def makes_spares(self) -> bool: ...

    def run(
        self,
        argv: Sequence[str],
        env: Sequence[tuple[str, str]],
        cwd: str,
        *,
        preopens: Sequence[tuple[str, str, bool]] = ...,
        resolver: Callable[[str], ProviderSpec | HostCapSpec] | None = None,
        report: Callable[[str], None] | None = None,
        timeout_ms: int | None = None,
        memory_bytes: int | None = None,
        fuel: int | None = None,
        max_instances: int = 32,
        max_cap_memory_bytes: int = 1 << 30,
        interrupt: Interrupt | None = None,
        stdin: bytes | None = None,
        stdout: _Sink = None,
        stderr: _Sink = None,
        max_output_bytes: int = ...,
    ) -> Outcome: ...
    def session(
        self,
        env: Sequence[tuple[str, str]],
        cwd: str,
        *,
        preopens: Sequence[tuple[str, str, bool]] = ...,
        resolver: Callable[[str], ProviderSpec | HostCapSpec] | None = None,
        report: Callable[[str], None] | None = None,
        memory_bytes: int | None = None,
        fuel: int | None = None,
        max_instances: int = 32,
        max_cap_memory_bytes: int = 1 << 30,
        stdout: _Sink = None,
        stderr: _Sink = None,
        max_output_bytes: int = ...,
    ) -> Session: ...

@final
class Interrupt:
    """A run's stop flag: ``set()`` from any thread stops the run at its next epoch tick."""

    def __new__(cls) -> Interrupt: ...
    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    def running_for(self) -> float | None:
        """Seconds the guest has run (after its code loaded), or None before it starts."""

@final
class Provider:
    """A provider instantiated for host-side calls (no run budget applies)."""

    @property
    def name(self) -> str: ...
    @property
    def shim(self) -> str | None:
        """The cap's ``pylon:shim`` section, read from its verified bytes."""
    def invoke(self, method: str, payload: bytes) -> bytes:
        """Raises ``pylon.errors.CapError`` (``.kind`` = WIT error case)."""

@final
class Engine:
    """A wasmtime engine with Pylon's linker, limits and compile cache."""

    def __new__(cls, cache_dir: str | None = None, *, fuel: bool = False) -> Engine: ...
    @property
    def fuel(self) -> bool:
        """Whether this engine meters fuel."""
    def prepare_guest(self, path: str, digest: str) -> Guest:
        """Loads (verified or authenticated) and links the guest once."""
    def run_guest(
        self,
        path: str,
        digest: str,
        *,
        argv: Sequence[str],
        env: Sequence[tuple[str, str]],
        cwd: str,
        preopens: Sequence[tuple[str, str, bool]] = ...,
        resolver: Callable[[str], ProviderSpec | HostCapSpec] | None = None,
        report: Callable[[str], None] | None = None,
        timeout_ms: int | None = None,
        memory_bytes: int | None = None,
        max_instances: int = 32,
        max_cap_memory_bytes: int = 1 << 30,
        interrupt: Interrupt | None = None,
        stdio_fds: tuple[int, int, int] | None = None,
        ahead: bool = False,
    ) -> int:
        """Runs the guest once; returns its exit status.

        ``preopens`` are ``(host, guest, read_only)``. ``stdio_fds``: the
        guest's stdin, stdout and stderr are duplicates of these open
        descriptors instead of the process's own. ``ahead``: start from an
        instance made ahead and make the next one (for a process that runs
        again). The blob at ``path`` is
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
