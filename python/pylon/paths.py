"""Where Pylon keeps things on disk.

Every location has one default and one override, listed here so a user can
find (and delete) all of it:

=================  ==========================================  ======================
what               default                                     override
=================  ==========================================  ======================
cache root         ``$XDG_CACHE_HOME/pylon`` or ``~/.cache/pylon``  ``PYLON_CACHE_DIR``
blob store         ``<cache root>/blobs/sha256/<hex>``         ``PYLON_BLOB_DIR``
compiled modules   ``<cache root>/compiled``                   (follows the cache root)
build outputs      ``<cache root>/build/<what>-<source hash>``  (follows the cache root)
build tools        ``<cache root>/tools``                      (follows the cache root)
unpacked packages  ``<cache root>/packages/<hex>``             (follows the cache root)
config root        ``$XDG_CONFIG_HOME/pylon`` or ``~/.config/pylon``  ``PYLON_CONFIG_DIR``
trust policy       ``<config root>/trust.json``                (follows the config root)
signing keys       ``<config root>/keys/<name>.key``, ``.pub``  (follows the config root)
=================  ==========================================  ======================

Nothing here creates directories at import time; callers create what they
write into, with :func:`private_dir`.

Pylon's state is trusted by the code that reads it back (compiled artifacts,
the trust policy, the default plan), so two rules hold for every folder
above:

* it is created ``0700`` and refused when it is group- or world-writable or
  owned by another user (:func:`private_dir`);
* no guest may see it: a preopen that is, contains or is inside any of
  :func:`state_roots` is refused (``pylon.preopens``).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from pylon.errors import StateError


def _find_source_root() -> Path:
    """The Pylon checkout that build steps read ``wit/``, ``caps/`` and ``guest/`` from.

    ``PYLON_SOURCE_ROOT`` if set; else the checkout this file lives in (an
    editable install); else the nearest folder at or above the working
    directory that looks like one (the package is installed from a wheel, and
    commands run from the clone).
    """
    override = os.environ.get("PYLON_SOURCE_ROOT")
    if override:
        return Path(override)
    candidates = [Path(__file__).resolve().parents[2], *Path.cwd().resolve().parents]
    candidates.insert(1, Path.cwd().resolve())
    for candidate in candidates:
        if (candidate / "wit" / "guest" / "guest.wit").is_file():
            return candidate
    return Path.cwd()


#: The Pylon checkout (see :func:`_find_source_root`).
SOURCE_ROOT = _find_source_root()


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def cache_root() -> Path:
    """Root of everything Pylon caches (safe to delete: it is all rebuilt)."""
    override = os.environ.get("PYLON_CACHE_DIR")
    return Path(override) if override else _xdg("XDG_CACHE_HOME", ".cache") / "pylon"


def blob_root() -> Path:
    """Root of the content-addressed blob store."""
    override = os.environ.get("PYLON_BLOB_DIR")
    return Path(override) if override else cache_root() / "blobs"


def compiled_root() -> Path:
    """Where the engine keeps precompiled (serialized) modules."""
    return cache_root() / "compiled"


def build_root() -> Path:
    """Where build steps put their outputs, one folder per source hash."""
    return cache_root() / "build"


def packages_root() -> Path:
    """Where pinned packages' wheels are unpacked, one folder per wheel digest
    (checked against the wheel before every run: see :mod:`pylon.packages`)."""
    return cache_root() / "packages"


def tools_root() -> Path:
    """Where build tools installed on demand (``cargo install``) live."""
    return cache_root() / "tools"


def config_root() -> Path:
    """Root of user configuration (the trust policy)."""
    override = os.environ.get("PYLON_CONFIG_DIR")
    return Path(override) if override else _xdg("XDG_CONFIG_HOME", ".config") / "pylon"


def trust_file() -> Path:
    """The trust policy file."""
    return config_root() / "trust.json"


def keys_dir() -> Path:
    """Where ``composectl key new`` keeps signing key pairs (a private folder)."""
    return config_root() / "keys"


def state_roots() -> list[tuple[str, Path]]:
    """Every folder holding Pylon's own state, with a name for messages.

    The cache root (compiled artifacts, build outputs, tools, the artifact
    key), the blob store, the config root (trust policy, default plan,
    stock record) and, when Pylon runs from a virtualenv, that virtualenv
    (a guest that could write a ``.pth`` file there would run code in the
    host). A guest must never be able to reach any of them.
    """
    roots = [("Pylon's cache", cache_root()), ("Pylon's blob store", blob_root()),
             ("Pylon's configuration and trust policy", config_root())]
    if sys.prefix != sys.base_prefix:
        roots.append(("Pylon's virtualenv", Path(sys.prefix)))
    return roots


def code_roots() -> list[tuple[str, Path]]:
    """Folders Python loads the host's code from, with a name for messages.

    Pylon's own package and every site-packages folder this interpreter
    reads (a ``.pth`` file there runs at the next start). A guest may read
    them, but must never get them writable.
    """
    import site
    import sysconfig

    roots = [("Pylon's own code", Path(__file__).resolve().parent)]
    for key in ("purelib", "platlib"):
        roots.append(("the host's Python packages", Path(sysconfig.get_paths()[key])))
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site:
        roots.append(("the host's user Python packages", Path(user_site)))
    return roots


def private_dir(path: Path) -> Path:
    """Creates ``path`` (and missing parents) as ``0700``; checks it is safe to trust.

    A folder of Pylon's state that another user could write would let that
    user change what Pylon runs, so an existing folder must be owned by this
    user and not group- or world-writable.

    Raises:
        StateError: the folder cannot be created, is not a folder, or is
            unsafe (the message says why and how to fix it).
    """
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{path} is not a folder")
    check_private(path, st)
    return path


def check_private(path: Path, st: os.stat_result | None = None) -> None:
    """Raises :class:`StateError` unless ``path`` is owned by us and writable only by us."""
    if st is None:
        try:
            st = path.stat()
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    uid = os.geteuid()
    if st.st_uid != uid:
        raise StateError(f"refusing to use {path}: it is owned by uid {st.st_uid}, not by you "
                         f"(uid {uid}); Pylon trusts only state it owns")
    if st.st_mode & 0o022:
        raise StateError(f"refusing to use {path}: it is writable by other users "
                         f"(mode {stat.S_IMODE(st.st_mode):o}); fix it with: chmod go-w {path}")
