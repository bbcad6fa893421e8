"""Pinned pure-Python packages, end to end: real wheels resolved by pip from the
package index, stored by digest, unpacked into the cache and imported by the
real guest through ``composectl run`` and ``pylon.Sandbox``; hostile wheels,
tampered blobs and tampered trees (docs/packages.md, docs/security.md #13)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import pylon
from pylon import paths
from pylon.blobstore import BlobStore
from pylon.packages import PackageError, check_wheel, is_pure_tag
from pylon.plan import PackagePin, Plan

#: Exact versions, so the test does not drift with the index. python-dateutil
#: brings a dependency (tzdata) that must be resolved and pinned too.
SPECS = ("attrs==26.1.0", "tabulate==0.10.0", "python-dateutil==4.0.0")

SCRIPT = textwrap.dedent("""\
    import sys, importlib.metadata
    import attr, tabulate, dateutil.parser

    @attr.define
    class Point:
        x: int
        y: int

    print(Point(1, 2))
    print(tabulate.tabulate([["a", 1], ["b", 22]], headers=["k", "v"], tablefmt="github"))
    print(dateutil.parser.parse("2024-02-29 13:45 +0100").isoformat())
    print(importlib.metadata.version("attrs"))
    print(tabulate.__file__)
    print(sys.path.index("/pylon/packages/attrs-26.1.0") > sys.path.index("/python/lib/python3.14"))
""")

EXPECTED = [
    "Point(x=1, y=2)",
    "| k   |   v |",
    "|-----|-----|",
    "| a   |   1 |",
    "| b   |  22 |",
    "2024-02-29T13:45:00+01:00",
    "26.1.0",
    "/pylon/packages/tabulate-0.10.0/tabulate/__init__.py",
    "True",
]


@pytest.fixture(scope="module")
def pkg_plan(pylon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan with SPECS (and their dependencies) pinned by ``composectl plan add-packages``."""
    plan = tmp_path_factory.mktemp("pkgs") / "plan.json"
    pylon.composectl("plan", "new", plan, check=True)
    pylon.composectl("plan", "add-packages", plan, *SPECS, check=True, timeout=300)
    return plan


@pytest.fixture(scope="module")
def store(pylon) -> BlobStore:
    return BlobStore(Path(pylon.env["PYLON_BLOB_DIR"]))


def _pins(plan: Path) -> dict[str, PackagePin]:
    return {p.name: p for p in Plan.load(plan).packages}


def _tree(pin: PackagePin) -> Path:
    return paths.packages_root() / pin.digest.split(":", 1)[1]


def _script(tmp_path: Path, text: str = SCRIPT) -> Path:
    script = tmp_path / "use_packages.py"
    script.write_text(text)
    return script


# -- adding -----------------------------------------------------------------------


def test_add_packages_pins_wheels_and_their_dependencies(pylon, pkg_plan, store):
    pins = _pins(pkg_plan)
    assert list(pins) == ["attrs", "tabulate", "python-dateutil", "tzdata"]
    assert (pins["attrs"].version, pins["tabulate"].version, pins["python-dateutil"].version) == \
        ("26.1.0", "0.10.0", "4.0.0")
    for pin in pins.values():
        data = store.read_bytes(pin.digest)  # stored, and its bytes hash to the digest
        assert pin.size == len(data)
        assert pin.sources and pin.sources[0].startswith("https://") and pin.sources[0].endswith(".whl")
        assert is_pure_tag(pin.sources[0].rsplit("/", 1)[1])
        assert not any(s.startswith("file://") for s in pin.sources)  # the store is no source
    verified = pylon.composectl("plan", "verify", pkg_plan)
    assert verified.returncode == 0 and "package tzdata" in verified.stdout, verified.stdout + verified.stderr


def test_add_packages_replaces_same_name_and_keeps_others(pylon, pkg_plan, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_bytes(pkg_plan.read_bytes())
    pylon.composectl("plan", "add-packages", plan, "tabulate==0.9.0", check=True, timeout=300)
    pins = _pins(plan)
    assert list(pins) == ["attrs", "tabulate", "python-dateutil", "tzdata"]
    assert pins["tabulate"].version == "0.9.0" and pins["attrs"] == _pins(pkg_plan)["attrs"]
    pylon.composectl("plan", "rm-package", plan, "Tabulate", check=True)
    assert list(_pins(plan)) == ["attrs", "python-dateutil", "tzdata"]
    missing = pylon.composectl("plan", "rm-package", plan, "nope")
    assert missing.returncode == 2 and "no package nope" in missing.stderr
    pylon.composectl("plan", "rm-package", plan, "--clear", check=True)
    assert "packages" not in json.loads(plan.read_text())


def test_requirements_file_is_read(pylon, tmp_path):
    plan = tmp_path / "plan.json"
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# pinned\ntabulate==0.10.0  # tables\n")
    pylon.composectl("plan", "new", plan, check=True)
    pylon.composectl("plan", "add-packages", plan, "-r", reqs, check=True, timeout=300)
    assert {n: p.version for n, p in _pins(plan).items()} == {"tabulate": "0.10.0"}


def test_a_platform_only_package_is_refused_by_name(pylon, tmp_path):
    plan = tmp_path / "plan.json"
    pylon.composectl("plan", "new", plan, check=True)
    before = plan.read_bytes()
    r = pylon.composectl("plan", "add-packages", plan, "zstandard", "attrs", timeout=300)
    assert r.returncode == 2, r.stderr
    assert "error: no pure-Python wheel of zstandard" in r.stderr
    assert "Traceback" not in r.stderr
    assert plan.read_bytes() == before  # nothing half-added


def test_a_wheel_whose_tag_is_not_pure_is_refused_by_name(tmp_path):
    wheel = _wheel(tmp_path, {"evil/__init__.py": b"x = 1\n"})
    data = wheel.read_bytes()
    assert check_wheel(data, "evil 1.0", "evil-1.0-py3-none-any.whl").files
    with pytest.raises(PackageError, match=r"evil-1\.0-cp314-cp314-linux_x86_64\.whl is not a pure-Python wheel"):
        check_wheel(data, "evil 1.0", "evil-1.0-cp314-cp314-linux_x86_64.whl")
    assert not is_pure_tag("evil-1.0-cp311-abi3-manylinux_2_17_x86_64.whl")
    assert is_pure_tag("six-1.17.0-py2.py3-none-any.whl") and is_pure_tag("x-1-py314-none-any.whl")
    assert not is_pure_tag("x-1-py315-none-any.whl")  # for a newer Python than the guest's


# -- using ------------------------------------------------------------------------


def test_guest_imports_pinned_packages(pylon, pkg_plan, tmp_path):
    r = pylon.run_script(_script(tmp_path), plan=pkg_plan)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == EXPECTED
    # The guest sees /pylon/packages/..., never where the host keeps them.
    assert str(paths.cache_root()) not in r.stdout + r.stderr


def test_sandbox_runs_and_sessions_see_packages(home, pkg_plan):
    sb = pylon.Sandbox(pkg_plan, timeout=60)
    r = sb.run("import tabulate, os; print(tabulate.tabulate([[1]], tablefmt='plain')); "
               "print('PYLON_PACKAGES' in os.environ)")
    assert (r.exit_code, r.stdout) == (0, b"1\nFalse\n"), r.stderr
    with sb.session() as s:
        assert s.run("import attr").ok
        r = s.run("print(attr.__version__ if hasattr(attr, '__version__') else attr.__name__)")
        assert r.ok and r.stdout.strip() in (b"26.1.0", b"attr")


def test_guest_cannot_write_into_package_folders(pylon, pkg_plan):
    code = textwrap.dedent("""\
        import os, attr
        folder = os.path.dirname(attr.__file__)
        for what, act in [("create", lambda: open(os.path.join(folder, "evil.py"), "w")),
                          ("append", lambda: open(attr.__file__, "a")),
                          ("remove", lambda: os.remove(attr.__file__)),
                          ("mkdir", lambda: os.mkdir(os.path.join(folder, "sub")))]:
            try:
                act()
                print(what, "ALLOWED")
            except OSError as exc:
                print(what, "refused", type(exc).__name__)
        """)
    r = pylon.run_code(code, plan=pkg_plan)
    assert r.returncode == 0, r.stderr
    assert "ALLOWED" not in r.stdout and r.stdout.count("refused") == 4, r.stdout
    assert not (_tree(_pins(pkg_plan)["attrs"]) / "attr" / "evil.py").exists()


def test_a_tampered_tree_in_the_cache_is_detected_and_unpacked_again(pylon, pkg_plan, tmp_path):
    pins = _pins(pkg_plan)
    tree = _tree(pins["tabulate"])
    assert pylon.run_code("import tabulate", plan=pkg_plan).returncode == 0
    module = tree / "tabulate" / "__init__.py"
    original = module.read_bytes()
    # Changed bytes, a planted module and a link out of the tree.
    module.write_bytes(original + b"\nprint('TAMPERED')\n")
    (tree / "tabulate" / "planted.py").write_text("print('PLANTED')\n")
    attrs_tree = _tree(pins["attrs"])
    (attrs_tree / "attr" / "evil_link.py").symlink_to("/etc/hostname")
    r = pylon.run_code("import tabulate, attr; print('ok')", plan=pkg_plan)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n" and "TAMPERED" not in r.stdout
    assert "package tabulate 0.10.0: its unpacked files in the cache were changed" in r.stderr
    assert "package attrs 26.1.0: its unpacked files in the cache were changed" in r.stderr
    assert module.read_bytes() == original
    assert not (tree / "tabulate" / "planted.py").exists()
    assert not (attrs_tree / "attr" / "evil_link.py").is_symlink()
    # Repaired: the next run has nothing to say.
    again = pylon.run_code("import tabulate", plan=pkg_plan)
    assert again.returncode == 0 and "changed" not in again.stderr


def test_a_sandbox_notices_a_tree_changed_between_its_runs(home, pkg_plan):
    sb = pylon.Sandbox(pkg_plan, timeout=60)
    assert sb.run("import tabulate").ok
    module = _tree(_pins(pkg_plan)["tabulate"]) / "tabulate" / "__init__.py"
    original = module.read_bytes()
    # Same size, so only the bytes (and the file's ctime) tell.
    module.write_bytes(original[:-1] + (b"#" if original[-1:] != b"#" else b" "))
    r = sb.run("import tabulate; print('ok')")
    assert r.ok and module.read_bytes() == original


def test_a_tampered_wheel_in_the_store_is_refused_by_name(pylon, pkg_plan, store, tmp_path):
    attrs = _pins(pkg_plan)["attrs"]
    good = store.read_bytes(attrs.digest)
    copy = tmp_path / "attrs.whl"
    copy.write_bytes(good)
    plan = tmp_path / "plan.json"
    Plan().with_packages([PackagePin(name=attrs.name, version=attrs.version, digest=attrs.digest,
                                     sources=(copy.as_uri(),), size=attrs.size)]).save(plan)
    blob = store.blob_path(attrs.digest)
    blob.chmod(stat.S_IRUSR | stat.S_IWUSR)
    blob.write_bytes(good[:-10] + b"0123456789")  # same size, other bytes
    copy.unlink()  # and no good source left
    r = pylon.run_code("import attr", plan=plan)
    assert r.returncode == 2
    assert "error: package attrs 26.1.0: its wheel" in r.stderr and "could not be fetched" in r.stderr
    assert "the stored wheel does not match its digest" in r.stderr
    # A source with the wrong bytes is refused by name too.
    copy.write_bytes(good.replace(b"attr", b"attx", 1))
    r = pylon.run_code("import attr", plan=plan)
    assert r.returncode == 2 and "package attrs 26.1.0" in r.stderr, r.stderr
    # With the right bytes at the source, the run fetches them again and works.
    copy.write_bytes(good)
    r = pylon.run_code("import attr; print(attr.__name__)", plan=plan)
    assert (r.returncode, r.stdout) == (0, "attr\n"), r.stderr
    assert store.read_bytes(attrs.digest) == good


def test_a_second_run_makes_no_network_access(pylon, pkg_plan, store, tmp_path, server):
    tab = _pins(pkg_plan)["tabulate"]
    data = store.read_bytes(tab.digest)
    server.serve("/tabulate.whl", data)
    plan = tmp_path / "plan.json"
    Plan().with_packages([PackagePin(name=tab.name, version=tab.version, digest=tab.digest,
                                     sources=(server.url("/tabulate.whl"),), size=tab.size)]).save(plan)
    store.blob_path(tab.digest).unlink()  # not stored: the first run must fetch it
    try:
        first = pylon.run_code("import tabulate; print('one')", plan=plan)
        assert (first.returncode, first.stdout) == (0, "one\n"), first.stderr
        assert server.requests == ["/tabulate.whl"]
        second = pylon.run_code("import tabulate; print('two')", plan=plan)
        assert (second.returncode, second.stdout) == (0, "two\n"), second.stderr
        assert server.requests == ["/tabulate.whl"]  # served from the store
    finally:
        store.put_bytes(data)


def test_a_run_without_packages_does_not_load_the_packages_module(pylon):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "pylon.cli", "run", "-c", "print(1)"],
                       env=pylon.env, text=True, capture_output=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "1\n", r.stderr
    assert "pylon.packages" not in r.stderr and "zipfile" not in r.stderr


# -- hostile wheels ---------------------------------------------------------------


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _wheel(folder: Path, files: dict[str, bytes], *, name: str = "evil", version: str = "1.0",
           unlisted: dict[str, bytes] | None = None, raw: list[tuple[zipfile.ZipInfo, bytes]] | None = None,
           lie: str | None = None) -> Path:
    """A wheel with ``files`` and a RECORD that lists them (``lie``: a file whose RECORD hash is wrong);
    ``unlisted`` files are in the zip but not the RECORD; ``raw`` members are added as given."""
    dist = f"{name}-{version}.dist-info"
    files = {**files, f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    lines = [_record_line(n, b"other" if n == lie else d) for n, d in files.items()]
    lines += [_record_line(i.filename, d) for i, d in raw or []]
    lines.append(f"{dist}/RECORD,,")
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in {**files, **(unlisted or {})}.items():
            zf.writestr(n, d)
        for info, d in raw or []:
            zf.writestr(info, d)
        zf.writestr(f"{dist}/RECORD", "\n".join(lines) + "\n")
    return path


def _member(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


HOSTILE = {
    "zip slip": ({"../evil.py": b"x"}, {}, "'../evil.py' has an empty, '.' or '..' part"),
    "absolute": ({"/tmp/evil.py": b"x"}, {}, "'/tmp/evil.py' is an absolute path"),
    "symlink": ({}, {"raw": [(_member("evil/link.py", stat.S_IFLNK | 0o777), b"/etc/passwd")]},
                "'evil/link.py' is a symbolic link"),
    "device": ({}, {"raw": [(_member("evil/dev", stat.S_IFCHR | 0o666), b"")]},
               "'evil/dev' is a device, FIFO or socket"),
    "unlisted": ({"evil/__init__.py": b""}, {"unlisted": {"evil/extra.py": b"x"}},
                 "'evil/extra.py' is in the wheel but not in its RECORD"),
    "lying record": ({"evil/__init__.py": b"x = 1"}, {"lie": "evil/__init__.py"},
                     "'evil/__init__.py' does not match its RECORD entry"),
    "purelib data": ({"evil-1.0.data/purelib/evil.py": b"x"}, {},
                     "installs modules from evil-1.0.data/purelib/"),
    "backslash": ({"evil\\..\\..\\x.py": b"x"}, {}, "has a control character, a backslash"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_wheel_is_refused_at_run_time_naming_the_package(pylon, store, tmp_path, case):
    files, options, reason = HOSTILE[case]
    wheel = _wheel(tmp_path, files, **options)  # type: ignore[arg-type]
    digest = store.put_file(wheel)
    plan = tmp_path / "plan.json"
    Plan().with_packages([PackagePin(name="evil", version="1.0", digest=digest, sources=(wheel.as_uri(),),
                                     size=wheel.stat().st_size)]).save(plan)
    r = pylon.run_code("print('ran')", plan=plan)
    assert r.returncode == 2 and "ran" not in r.stdout
    assert "error: package evil 1.0: refusing its wheel: " in r.stderr and reason in r.stderr, r.stderr
    assert not (paths.packages_root() / digest.split(":", 1)[1]).exists()
    assert not (paths.packages_root().parent / "evil.py").exists()
    assert not [p for p in paths.packages_root().iterdir() if p.name.startswith(".tmp-")
                and p.name.split(".")[-2].isdigit() and int(p.name.split(".")[-2]) == os.getpid()]
    with pytest.raises(PackageError, match="package evil 1.0: refusing its wheel"):
        check_wheel(wheel.read_bytes(), "evil 1.0", wheel.name)


def test_a_wheel_past_the_bounds_is_refused(tmp_path, monkeypatch):
    from pylon import packages

    wheel = _wheel(tmp_path, {f"evil/m{i}.py": b"x = 1\n" * 100 for i in range(5)})
    monkeypatch.setattr(packages, "MAX_FILES", 4)
    with pytest.raises(PackageError, match="it has 8 members; the limit is 4"):
        check_wheel(wheel.read_bytes(), "evil 1.0")
    monkeypatch.setattr(packages, "MAX_FILES", 100)
    monkeypatch.setattr(packages, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(PackageError, match="it unpacks to .* bytes; the limit is 1000"):
        check_wheel(wheel.read_bytes(), "evil 1.0")


def test_cache_clear_packages_empties_the_folder_and_runs_unpack_again(pylon, pkg_plan):
    assert pylon.composectl("cache", "clear", "--packages").returncode == 0
    assert not paths.packages_root().exists()
    info = json.loads(pylon.composectl("info", "--json", check=True).stdout)
    assert info["paths"]["unpacked packages"]["path"] == str(paths.packages_root())
    r = pylon.run_code("import tabulate; print('ok')", plan=pkg_plan)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert _tree(_pins(pkg_plan)["tabulate"]).is_dir()
