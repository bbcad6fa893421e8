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
    shim: str | None
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
        shim: str | None = None,
    ) -> None: ...

class Provider:
    """A provider instantiated for host-side calls."""

    @property
    def name(self) -> str: ...
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
    ) -> int:
        """Runs the guest once; returns its exit status. Raises ``EngineError``."""
    def run_core_p1(
        self,
        path: str,
        *,
        argv: Sequence[str],
        env: Sequence[tuple[str, str]] = ...,
        preopens: Sequence[tuple[str, str, bool]] = ...,
        digest: str = "",
    ) -> int: ...
    def load_provider(self, spec: ProviderSpec) -> Provider: ...
    def is_cached(self, digest: str, *, core: bool = False) -> bool: ...
    def precompile(self, path: str, digest: str = "", *, core: bool = False) -> str:
        """Returns "memory", "disk" or "compiled"."""
