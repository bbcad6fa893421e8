"""Which host folders a guest may see, and how.

A guest sees only the folders preopened for it, at the same absolute path as
on the host. The rules, in one place:

* The script's own folder is preopened **read-only**, so the script can read
  its data files and import its sibling modules, and can write nothing.
* ``--dir DIR`` adds a folder read-only; ``--dir DIR:rw`` adds it writable.
  (``DIR:ro`` is accepted too. A folder whose name really ends in ``:rw``
  or ``:ro`` is written with a trailing ``/``: ``--dir 'odd:rw/'``.) The
  same folder named twice is opened once, writable if either asked for it.
* A folder that is, contains, or is inside Pylon's own state (the cache with
  its compiled artifacts, the blob store, the config folder with the trust
  policy, the virtualenv Pylon runs from) is refused, after resolving
  symlinks: a guest that could write there could change what the host runs
  later, and could read the keys that authenticate it (see docs/security.md).
* A folder that is, contains or is inside the host's Python code (Pylon's
  package, site-packages, the user's site-packages) is never writable: a
  ``.pth`` file there runs at the host's next start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pylon import paths
from pylon.errors import PylonError

__all__ = ["Preopen", "PreopenError", "parse_dir_spec", "plan_preopens"]


class PreopenError(PylonError):
    """A folder cannot be given to the guest (missing, or Pylon's own state)."""


@dataclass(frozen=True)
class Preopen:
    """A host folder the guest sees at the same path."""

    path: Path
    writable: bool = False

    def as_engine_tuple(self) -> tuple[str, str, bool]:
        """``(host path, guest path, read_only)`` as the engine takes it."""
        return (str(self.path), str(self.path), not self.writable)


def parse_dir_spec(spec: str) -> Preopen:
    """``DIR``, ``DIR:ro`` or ``DIR:rw`` -> a (not yet checked) :class:`Preopen`."""
    folder, sep, mode = spec.rpartition(":")
    if sep and mode in ("ro", "rw") and folder:
        return Preopen(Path(folder), writable=mode == "rw")
    return Preopen(Path(spec))


def _overlap(folder: Path, state: Path) -> str | None:
    """How ``folder`` overlaps ``state``, in words, or None."""
    if folder == state:
        return "is"
    if folder in state.parents:
        return "contains"
    if state in folder.parents:
        return "is inside"
    return None


def _first_overlap(folder: Path, roots: Sequence[tuple[str, Path]]) -> str | None:
    """How ``folder`` overlaps the first of ``roots`` it touches, in words, or None."""
    for what, root in roots:
        how = _overlap(folder, root)
        if how is not None:
            return f"it {how} {what} ({root})"
    return None


def _check(folder: Path, writable: bool, state_roots: Sequence[tuple[str, Path]],
           code_roots: Sequence[tuple[str, Path]]) -> None:
    overlap = _first_overlap(folder, state_roots)
    if overlap is not None:
        raise PreopenError(
            f"refusing to let the guest see {folder}: {overlap}, and a guest that could reach "
            "Pylon's state could change what runs on the host. Put the script and its files in a "
            "folder of their own, or move Pylon's state elsewhere (PYLON_CACHE_DIR, PYLON_BLOB_DIR, "
            "PYLON_CONFIG_DIR).")
    overlap = _first_overlap(folder, code_roots) if writable else None
    if overlap is not None:
        raise PreopenError(
            f"refusing to let the guest write {folder}: {overlap}, and code written there would run "
            "on the host. Give it read-only (--dir without :rw), or a folder of its own.")


def plan_preopens(script: Path | None, dirs: Iterable[Preopen | str]) -> list[Preopen]:
    """The checked preopens of a run: the script's folder (read-only) and ``dirs``.

    Raises:
        PreopenError: a folder does not exist, is not a folder, or overlaps
            Pylon's own state.
    """
    wanted: list[Preopen] = []
    if script is not None:
        wanted.append(Preopen(script.parent))
    wanted += [parse_dir_spec(d) if isinstance(d, str) else d for d in dirs]
    # Resolve the roots once; a root that does not exist yet resolves as far as it can.
    state_roots = [(what, root.resolve()) for what, root in paths.state_roots()]
    code_roots = [(what, root.resolve()) for what, root in paths.code_roots()]
    merged: dict[Path, Preopen] = {}
    for want in wanted:
        try:
            folder = want.path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise PreopenError(f"cannot give the guest {want.path}: it does not exist") from exc
        if not folder.is_dir():
            raise PreopenError(f"cannot give the guest {want.path}: it is not a folder")
        previous = merged.get(folder)
        writable = want.writable or bool(previous and previous.writable)
        _check(folder, writable, state_roots, code_roots)
        merged[folder] = Preopen(folder, writable=writable)
    return list(merged.values())
