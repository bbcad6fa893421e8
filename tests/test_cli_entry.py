"""The fast path of ``composectl run``: same behaviour as the typer app, without its imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Pylon
from pylon.cli.entry import PlainRun, parse_plain_run


def test_plain_arguments_are_parsed_like_the_typer_command() -> None:
    run = parse_plain_run(["--plan", "p.json", "--env", "A=1=2", "--dir", "d:rw", "--timeout", "1.5",
                           "--memory-mb=64", "s.py", "-c", "--env", "x"])
    assert run == PlainRun(plan="p.json", env={"A": "1=2"}, dirs=["d:rw"], timeout=1.5, memory_mb=64,
                           script="s.py", args=["-c", "--env", "x"])
    # With -c every positional is an argument, as with python -c.
    assert parse_plain_run(["-c", "print(1)", "a", "b"]) == PlainRun(code="print(1)", args=["a", "b"])


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["-h"], ["--bogus", "s.py"], ["--env", "novalue", "s.py"], ["--env", "=v", "s.py"],
    ["--timeout", "0", "s.py"], ["--timeout", "nan", "s.py"], ["--timeout", "soon", "s.py"],
    ["--memory-mb", "8", "s.py"], ["--memory-mb", "-5", "s.py"], ["--profile", "micropython-static", "s.py"],
    ["--with", "crc32c", "s.py"], ["--plan"], ["-c=print(1)"], ["--plan", "."],
])
def test_anything_unusual_goes_to_the_full_cli(argv: list[str]) -> None:
    assert parse_plain_run(argv) is None


def test_fast_path_imports_neither_typer_nor_rich(pylon: Pylon) -> None:
    code = ("import sys, runpy\nsys.argv = ['composectl', 'run', '-c', 'print(42)']\n"
            "try:\n    runpy.run_module('pylon.cli', run_name='__main__')\n"
            "except SystemExit as e:\n    status = e.code\n"
            "print('status', status, 'typer' in sys.modules, 'rich' in sys.modules, 'jsonschema' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], env=pylon.env, capture_output=True, text=True)
    assert result.stdout.split() == ["42", "status", "0", "False", "False", "False"], result.stderr


@pytest.mark.parametrize("case", ["missing-script", "bad-plan", "untrusted-dir"])
def test_fast_path_errors_match_the_full_cli(pylon: Pylon, tmp_path: Path, case: str) -> None:
    bad_plan = tmp_path / "bad.json"
    bad_plan.write_text('{"pylon-plan": 1, "caps": {"x": {"digest": "nope", "sources": []}}}')
    args = {
        "missing-script": ["run", str(tmp_path / "nope.py")],
        "bad-plan": ["run", "--plan", str(bad_plan), "-c", "pass"],
        "untrusted-dir": ["run", "--dir", f"{pylon.home / 'config'}:rw", "-c", "pass"],
    }[case]
    fast = pylon.composectl(*args)
    # The same command through the typer app (what every other command uses).
    full = subprocess.run([sys.executable, "-c", "import sys; from pylon.cli.main import main; "
                           f"sys.argv = ['composectl', *{args!r}]; main()"],
                          env=pylon.env, capture_output=True, text=True)
    assert fast.returncode == full.returncode == 2
    assert fast.stderr.strip() == full.stderr.strip()
    assert fast.stderr.startswith("error: ")
