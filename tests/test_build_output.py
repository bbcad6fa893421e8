"""Writing a built module to the user's ``-o`` path (``composectl build``/``setup -o``).

:func:`pylon.build.toolchain.copy_output` is the one writer: a bad path is a
clear error (exit 2, no traceback) and never costs the user the file that was
there; a good one gets the whole module, in one rename.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import Pylon
from pylon.build.toolchain import copy_output
from pylon.errors import BuildError


@pytest.fixture
def built(tmp_path: Path) -> Path:
    path = tmp_path / "built" / "pylon.wasm"
    path.parent.mkdir()
    path.write_bytes(os.urandom(3 << 20))
    return path


def test_copies_whole_and_makes_missing_folders(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out.wasm"
    assert copy_output(built, out) == out
    assert out.read_bytes() == built.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["out.wasm"]  # no temporary file left


def test_replaces_an_existing_file(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.wasm"
    out.write_bytes(b"old")
    copy_output(built, out)
    assert out.read_bytes() == built.read_bytes()


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_a_path_that_cannot_be_written_is_a_clear_error(built: Path, tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"keep me")
    out = blocker / "out.wasm" if where == "under a file" else tmp_path
    with pytest.raises(BuildError, match=r"^cannot write .*: (.*blocker is not a folder|it is a folder; give a file)"):
        copy_output(built, out)
    assert blocker.read_bytes() == b"keep me"


def test_a_failed_copy_keeps_the_old_file(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.wasm"
    out.write_bytes(b"the user's file")

    def full_disk(src: object, dst: object, length: int = 0) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("shutil.copyfileobj", full_disk)
    with pytest.raises(BuildError, match=r"cannot write .*out.wasm: No space left on device"):
        copy_output(built, out)
    assert out.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built", "out.wasm"]  # no partial file


def test_cli_reports_an_unwritable_output_without_a_traceback(pylon: Pylon, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = pylon.composectl("build", "-o", blocker / "pylon.wasm", timeout=3600)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write {blocker / 'pylon.wasm'}: {blocker} is not a folder" in result.stderr
