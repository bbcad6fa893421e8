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
config root        ``$XDG_CONFIG_HOME/pylon`` or ``~/.config/pylon``  ``PYLON_CONFIG_DIR``
trust policy       ``<config root>/trust.json``                (follows the config root)
=================  ==========================================  ======================

Nothing here creates directories at import time; callers create what they
write into.
"""

from __future__ import annotations

import os
from pathlib import Path

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
