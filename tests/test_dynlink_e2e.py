"""Runtime dynlink end to end: scripts in the real pylon.wasm, real caps, real wasmtime."""

from __future__ import annotations

import itertools
import json
import random
import textwrap
from pathlib import Path

import crc32c as reference
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, Pylon

MIB = 1 << 20


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# -- the guest as a Python ----------------------------------------------------


def test_code_runs_and_prints(pylon: Pylon) -> None:
    result = pylon.run_code("print(6 * 7)")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42\n"


def test_argv_env_and_exit_status(pylon: Pylon, tmp_path: Path) -> None:
    script = write(tmp_path / "exit3.py", """
        import os, sys
        print(sys.argv)
        print(os.environ.get("GREETING"), "HOME" in os.environ)
        sys.exit(3)
    """)
    result = pylon.composectl("run", "--env", "GREETING=hi", str(script), "a", "--flag", "-c")
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == repr([str(script), "a", "--flag", "-c"])
    assert lines[1] == "hi False"


def test_uncaught_exception_prints_traceback(pylon: Pylon, tmp_path: Path) -> None:
    script = write(tmp_path / "boom.py", """
        def explode():
            raise ValueError("boom")
        explode()
    """)
    result = pylon.run_script(script)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert f'File "{script}", line 3, in explode' in result.stderr
    assert "ValueError: boom" in result.stderr
    assert "unreachable" not in result.stderr
    # Only the script's frames, as `python script.py` prints them.
    assert "_runner.py" not in result.stderr
    assert result.stderr.count('File "') == 2


def test_import_time_errors_show_no_machinery_frames(pylon: Pylon, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    doc = json.loads(pylon.default_plan.read_text())
    doc["caps"]["crc32c"]["digest"] = "sha256:" + "ef" * 32  # not trusted: the import raises
    plan.write_text(json.dumps(doc))
    result = pylon.run_code("import _crc32c_dynlink_cap", plan=plan)
    assert result.returncode == 1
    assert "CapDenied" in result.stderr and 'File "<string>", line 1, in <module>' in result.stderr
    for machinery in ("_runner.py", "_lazy.py", "<frozen importlib"):
        assert machinery not in result.stderr, result.stderr


def test_sys_exit_with_message_and_none(pylon: Pylon) -> None:
    assert pylon.run_code("import sys; sys.exit()").returncode == 0
    result = pylon.run_code("import sys; sys.exit('bad input')")
    assert result.returncode == 1 and "bad input" in result.stderr


def test_the_guest_package_is_pylon_guest_and_there_is_no_pylon_inside(pylon: Pylon) -> None:
    # `pylon` is the host's package alone: inside the guest it does not exist.
    result = pylon.run_code(textwrap.dedent("""
        import pylon_guest.caps, pylon_guest.dynlink, pylon_guest.sqlite, pylon_guest.zstd
        try:
            import pylon
        except ModuleNotFoundError as exc:
            print("absent:", exc.name)
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "absent: pylon\n"


@pytest.mark.parametrize("module", [
    "json", "decimal", "hashlib", "xml.etree.ElementTree", "xml.dom.minidom", "csv", "datetime",
    "uuid", "tomllib", "base64", "pickle", "struct", "zlib", "sqlite3", "statistics", "fractions",
    "textwrap", "difflib", "email.message", "urllib.parse", "collections.abc", "dataclasses",
    "typing", "re", "itertools", "functools", "pathlib", "argparse", "logging", "string", "heapq",
    "bisect", "array", "copy", "pprint", "enum", "html.parser", "unicodedata", "gzip", "zipfile",
    "tarfile", "io", "shlex", "fnmatch", "glob", "tempfile", "secrets", "random", "math", "cmath",
    "importlib.metadata", "inspect", "ast", "dis", "tokenize", "contextlib", "abc", "numbers",
])
def test_stdlib_module_imports(pylon: Pylon, module: str) -> None:
    result = pylon.run_code(f"import {module}; print('ok')")
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


def test_stdlib_works_for_real(pylon: Pylon) -> None:
    result = pylon.run_script(REPO / "examples" / "stdlib_tour.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == ['{"pi": "3.141592920353982300884955752"}',
                                              "4e6c51c33fc7e1d6", "xml"]


def test_random_is_not_frozen_by_the_snapshot(pylon: Pylon) -> None:
    code = "import random; print(random.random())"
    assert pylon.run_code(code).stdout != pylon.run_code(code).stdout


def test_script_imports_sibling_modules(pylon: Pylon, tmp_path: Path) -> None:
    write(tmp_path / "helper.py", "VALUE = 'from a sibling'\n")
    script = write(tmp_path / "main.py", "import helper\nprint(helper.VALUE)\n")
    result = pylon.run_script(script)
    assert result.stdout == "from a sibling\n", result.stderr
    assert not (tmp_path / "__pycache__").exists()


def test_script_reads_and_writes_its_folder(pylon: Pylon, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("data")
    script = write(tmp_path / "io.py", """
        text = open("in.txt").read()
        open("out.txt", "w").write(text.upper())
    """)
    # The script's folder is read-only unless the run makes it writable.
    assert pylon.run_script(script).returncode == 1
    assert not (tmp_path / "out.txt").exists()
    assert pylon.composectl("run", "--dir", f"{tmp_path}:rw", str(script)).returncode == 0
    assert (tmp_path / "out.txt").read_text() == "DATA"


def test_missing_script_is_a_clear_error(pylon: Pylon, tmp_path: Path) -> None:
    result = pylon.run_script(tmp_path / "nope.py")
    assert result.returncode == 2
    assert "script not found" in result.stderr


# -- crc32c by dynlink --------------------------------------------------------

CHECKSUMS = """
    import sys, _crc32c_dynlink_cap as crc
    for name in sys.argv[1:]:
        data = open(name, "rb").read()
        print(f"{crc.crc32c(data):08x}")
"""

_case_numbers = itertools.count()

sizes = st.one_of(
    st.integers(min_value=0, max_value=4096),
    st.integers(min_value=4097, max_value=MIB),
    st.sampled_from([64 * 1024, MIB + 3, 16 * MIB, 64 * MIB]),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(st.tuples(sizes, st.integers(0, 2**32)), min_size=1, max_size=12))
def test_crc32c_matches_reference(pylon: Pylon, tmp_path: Path, cases: list[tuple[int, int]]) -> None:
    folder = tmp_path / f"case{next(_case_numbers)}"
    folder.mkdir()
    script = write(folder / "sums.py", CHECKSUMS)
    names, expected = [], []
    budget = 96 * MIB  # keep one run's data bounded
    for i, (size, seed) in enumerate(cases):
        size = min(size, budget)
        budget -= size
        data = random.Random(seed).randbytes(size)
        (folder / f"d{i}").write_bytes(data)
        names.append(f"d{i}")
        expected.append(f"{reference.crc32c(data):08x}")
    result = pylon.composectl("run", str(script), *names, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_crc32c_rfc3720_vectors_and_update(pylon: Pylon) -> None:
    result = pylon.run_code(textwrap.dedent("""
        import _crc32c_dynlink_cap as crc
        print(hex(crc.crc32c(b"123456789")), hex(crc.crc32c(bytes(32))))
        print(hex(crc.crc32c(b"456789", crc=crc.crc32c(b"123"))))
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0xe3069283", "0x8a9136aa", "0xe3069283"]


def test_256_mib_payload_crosses_the_host(pylon: Pylon, tmp_path: Path) -> None:
    plan = tmp_path / "big.json"
    doc = json.loads(pylon.default_plan.read_text())
    doc["caps"]["crc32c"]["limits"] = {"memory-mb": 1024, "max-payload-mb": 300}
    plan.write_text(json.dumps(doc))
    block = bytes(range(256)) * 4096  # 1 MiB
    expected = reference.crc32c(block * 256)
    result = pylon.run_code(
        "import _crc32c_dynlink_cap as c; print(c.crc32c(bytes(range(256)) * 4096 * 256))", plan=plan)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == expected


# -- cbor cap and the generic path --------------------------------------------


def test_generic_load_and_cbor_round_trip(pylon: Pylon) -> None:
    result = pylon.run_code(textwrap.dedent("""
        from pylon_guest import dynlink
        calc = dynlink.load("cborcalc")
        value = {"text": "h\\u00e9llo", "neg": -2**40, "big": 2**63, "f": 1.5,
                 "list": [True, False, None, b"\\x00\\xff"], "nested": {"a": [1, {"b": "c"}]}}
        print(calc.call("echo", value) == value)
        print(calc.call("sum", [1, 2, 3.5]))
        print(calc.call("upper", "abc"))
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "6.5", "ABC"]


def test_shim_gives_a_typed_api_without_a_rebuild(pylon: Pylon) -> None:
    result = pylon.run_code("import pylon_guest.caps.crc32c as c; print(hex(c.crc32c(b'123456789')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0xe3069283"


# -- refusals and failures reach the guest as exceptions ----------------------


def guest_error(pylon: Pylon, code: str, plan: Path | None = None) -> str:
    """Runs code expected to raise; returns 'ExcType: message' printed by the guest."""
    wrapped = "from pylon_guest import dynlink\ntry:\n" + textwrap.indent(textwrap.dedent(code), "    ") + \
        "\nexcept dynlink.DynlinkError as e:\n    print(f'{type(e).__name__}: {e}')\nelse:\n    print('no error')\n"
    result = pylon.run_code(wrapped, plan=plan)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_unknown_cap_is_not_found(pylon: Pylon) -> None:
    out = guest_error(pylon, "dynlink.load('nosuchcap')")
    assert out.startswith("CapNotFound: ") and "'nosuchcap' is not in this run's plan" in out


def test_unknown_method(pylon: Pylon) -> None:
    out = guest_error(pylon, "dynlink.load('crc32c').invoke('frobnicate', b'')")
    assert out.startswith("BadMethod: ") and "frobnicate" in out


def test_malformed_cbor(pylon: Pylon) -> None:
    out = guest_error(pylon, "dynlink.load('crc32c').invoke('crc32c-update', b'\\xff\\x00garbage')")
    assert out.startswith("BadPayload: ")


def test_payload_over_the_plans_limit(pylon: Pylon, tmp_path: Path) -> None:
    plan = tmp_path / "small.json"
    doc = json.loads(pylon.default_plan.read_text())
    doc["caps"]["crc32c"]["limits"] = {"max-payload-mb": 1}
    plan.write_text(json.dumps(doc))
    out = guest_error(pylon, "dynlink.load('crc32c').invoke('crc32c', bytes(2 << 20))", plan=plan)
    assert out.startswith("CapLimitExceeded: ") and "payload" in out


def test_untrusted_cap_is_denied_and_never_instantiated(pylon: Pylon, tmp_path: Path) -> None:
    built = pylon.composectl("cap", "build", str(REPO / "tests" / "caps" / "misbehave"), check=True)
    digest, path = built.stdout.split()
    plan = tmp_path / "untrusted.json"
    pylon.composectl("plan", "new", str(plan), check=True)
    pylon.composectl("plan", "add", str(plan), "stranger", path, check=True)
    out = guest_error(pylon, "dynlink.load('stranger')", plan=plan)
    assert out.startswith("CapDenied: ")
    assert "'stranger'" in out and digest in out and f"composectl trust allow stranger {digest}" in out


@pytest.fixture(scope="module")
def misbehave_plan(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = pylon.composectl("cap", "build", str(REPO / "tests" / "caps" / "misbehave"), check=True)
    digest, path = built.stdout.split()
    plan = tmp_path_factory.mktemp("misbehave") / "plan.json"
    plan.write_text(pylon.default_plan.read_text())
    pylon.composectl("plan", "add", str(plan), "misbehave", path, "--timeout-ms", "300",
                     "--memory-mb", "64", check=True)
    pylon.composectl("trust", "allow", "misbehave", digest, check=True)
    return plan


@pytest.mark.parametrize("method, payload, error, words", [
    ("trap", b"", "CapTrapped", "trapped"),
    ("loop", b"", "CapLimitExceeded", "time limit"),
    # malloc gets NULL at the limit (the grow is refused, not trapped); a cap
    # that then traps is reported as over its memory limit.
    ("hog", b"trap", "CapLimitExceeded", "memory limit"),
])
def test_misbehaving_cap_raises_and_everything_else_goes_on(
        pylon: Pylon, misbehave_plan: Path, method: str, payload: bytes, error: str, words: str) -> None:
    code = textwrap.dedent(f"""
        from pylon_guest import dynlink
        import _crc32c_dynlink_cap as crc
        bad = dynlink.load("misbehave")
        print(bad.invoke("echo", b"alive").decode())
        try:
            bad.invoke("{method}", {payload!r})
        except dynlink.DynlinkError as e:
            print(type(e).__name__, "|", e)
        try:
            bad.invoke("echo", b"again")
        except dynlink.CapTrapped as e:
            print("dead:", e)
        print(hex(crc.crc32c(b"123456789")))
    """)
    result = pylon.run_code(code, plan=misbehave_plan)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "alive"
    assert lines[1].startswith(f"{error} |") and words in lines[1], lines[1]
    assert lines[2].startswith("dead:")
    assert lines[3] == "0xe3069283"


def test_bad_plan_json_is_a_clear_error(pylon: Pylon, tmp_path: Path) -> None:
    plan = tmp_path / "bad.json"
    plan.write_text('{"pylon-plan": 1, "caps": {"crc32c": {"digest": "sha256:1234", "sources": []}}}')
    result = pylon.run_code("print(1)", plan=plan)
    assert result.returncode == 2
    assert "$.caps.crc32c.digest" in result.stderr


def test_blob_with_wrong_bytes_is_refused(pylon: Pylon, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor.wasm"
    impostor.write_bytes(b"\0asm not the cap you are looking for")
    doc = json.loads(pylon.default_plan.read_text())
    wanted = "sha256:" + "ab" * 32
    doc["caps"]["ghost"] = {"digest": wanted, "sources": [impostor.as_uri()]}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    pylon.composectl("trust", "allow", "ghost", wanted, check=True)
    wrapped = ("from pylon_guest import dynlink\ntry:\n    dynlink.load('ghost')\n"
               "except dynlink.CapNotFound as e:\n    print(f'CapNotFound: {e}')")
    result = pylon.run_code(wrapped, plan=plan)
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out.startswith("CapNotFound: ") and wanted in out and "could not be fetched" in out
    # The cause (and the source's path) is the host's to hear, not the guest's.
    assert str(impostor) not in out
    assert "mismatch" in result.stderr and str(impostor) in result.stderr


def test_unimported_cap_is_never_fetched(pylon: Pylon, tmp_path: Path) -> None:
    doc = json.loads(pylon.default_plan.read_text())
    doc["caps"]["lazy"] = {"digest": "sha256:" + "cd" * 32, "sources": ["http://127.0.0.1:9/never"]}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    result = pylon.run_code("print('no caps used')", plan=plan)
    assert result.returncode == 0 and result.stdout == "no caps used\n", result.stderr


def test_dir_option_opens_another_folder(pylon: Pylon, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3")
    script_dir = tmp_path / "app"
    script_dir.mkdir()
    script = write(script_dir / "sum.py", f"""
        import sys
        total = sum(map(int, open({str(data / 'numbers.txt')!r}).read().split()))
        open({str(data / 'total.txt')!r}, "w").write(str(total))
    """)
    closed = pylon.run_script(script)
    assert closed.returncode == 1 and "numbers.txt" in closed.stderr  # not preopened: no access
    read_only = pylon.composectl("run", "--dir", str(data), str(script))
    assert read_only.returncode == 1 and "total.txt" in read_only.stderr  # --dir DIR is read-only
    opened = pylon.composectl("run", "--dir", f"{data}:rw", str(script))
    assert opened.returncode == 0, opened.stderr
    assert (data / "total.txt").read_text() == "6"


def test_cli_hands_the_script_every_argument(pylon: Pylon, tmp_path: Path) -> None:
    script = write(tmp_path / "args.py", """
        import os, sys
        print(sys.argv[1:], os.environ.get("B"), os.environ.get("C"))
        sys.exit(7)
    """)
    # Options after SCRIPT belong to the script, like `python script.py ...`.
    result = pylon.composectl("run", "--env", "B=x=y", str(script), "-v", "--flag", "-c", "notcode",
                              "--env", "C=3", "--", "--plan")
    assert result.returncode == 7, result.stderr
    assert result.stdout.strip() == "['-v', '--flag', '-c', 'notcode', '--env', 'C=3', '--', '--plan'] x=y None"
    code = pylon.composectl("run", "-c", "import sys; print(sys.argv)", "a", "-b")
    assert code.stdout.strip() == "['-c', 'a', '-b']", code.stderr
    dashed = pylon.composectl("run", "--", str(script), "-x")
    assert dashed.returncode == 7 and dashed.stdout.startswith("['-x']"), dashed.stderr
