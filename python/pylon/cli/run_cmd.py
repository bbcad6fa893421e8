"""``composectl run``: run a script (or ``-c`` code) in the guest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from pylon.errors import EngineError, GuestStopped

__all__ = ["parse_env", "register"]

# Everything after SCRIPT belongs to the script, as with `python script.py ...`:
# no interspersed options (so the script's own -c or --env reach it), and
# unknown options are passed on instead of rejected.
_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``["K=V", ...]`` -> ``{"K": "V"}``; the value may itself contain ``=``."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not K=V", param_hint="--env")
        env[key] = value
    return env


def run(
    plan: Annotated[Path | None, typer.Option(
        "--plan", metavar="PLAN", help="The plan naming the guest and caps. Default: the default plan "
        "`composectl setup` wrote (the stock guest and caps).",
        dir_okay=False)] = None,
    code: Annotated[str | None, typer.Option(
        "-c", metavar="CODE", help="Program passed in as a string (like python -c); SCRIPT and ARGS become its argv.")
    ] = None,
    env: Annotated[list[str] | None, typer.Option(
        "--env", metavar="K=V", help="Set an environment variable in the guest, K=V; repeatable. "
                      "The guest sees no host environment otherwise.")] = None,
    dirs: Annotated[list[str] | None, typer.Option(
        "--dir", metavar="DIR[:rw]", help="Let the guest see host folder DIR at the same path, read-only; "
        "DIR:rw makes it writable. Repeatable. The script's own folder is always open, read-only. "
        "Folders holding Pylon's own state are refused.")] = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", metavar="SECONDS", min=0.001, help="Stop the script after SECONDS of running "
        "(exit status 124). Default: the plan's guest.limits.timeout-ms, else no limit.",
        show_default=False)] = None,
    memory_mb: Annotated[int | None, typer.Option(
        "--memory-mb", metavar="N", min=16, max=4096, help="The guest's memory limit in MiB; past it "
        "the script gets MemoryError. Default: the plan's guest.limits.memory-mb, else 2048.",
        show_default=False)] = None,
    tmp_mb: Annotated[int | None, typer.Option(
        "--tmp-mb", metavar="N", min=1, max=65536, help="Size limit in MiB of the run's private temporary "
        "folder (the guest's /tmp, TMPDIR; empty at the start, deleted after the run); past it the script is "
        "stopped (exit status 153). Default: the plan's guest.limits.tmp-mb, else 64.",
        show_default=False)] = None,
    profile: Annotated[str, typer.Option(
        "--profile", metavar="PROFILE", help="cpython (pylon.wasm, default) or micropython-static (the flat "
        "wasi-p1 MicroPython module with caps folded in, built on first use).")] = "cpython",
    with_caps: Annotated[list[str] | None, typer.Option(
        "--with", metavar="CAP", help="micropython-static: the caps to fold in (default: every cap with a "
        "static face).")] = None,
    script: Annotated[str | None, typer.Argument(
        metavar="SCRIPT", help="The Python script to run in the guest.", show_default=False)] = None,
    args: Annotated[list[str] | None, typer.Argument(
        metavar="ARGS", help="Arguments for the script; everything after SCRIPT, options included, goes to it.",
        show_default=False)] = None,
) -> None:
    """Run SCRIPT (or -c CODE) in the Pylon guest; exits with the guest's exit status."""
    argv = list(args or [])
    if code is None and script is None:
        raise typer.BadParameter("give a SCRIPT or -c CODE", param_hint="SCRIPT")
    if code is not None and script is not None:
        # With -c, every positional is an argument (python -c CODE a b).
        argv.insert(0, script)
        script = None
    environment = parse_env(env or [])
    if profile == "micropython-static":
        try:
            status = _run_static(script, code, argv, environment, with_caps, dirs or [], timeout, memory_mb,
                                 tmp_mb)
        except GuestStopped as exc:
            _stopped(exc)
        raise typer.Exit(status)
    if profile != "cpython":
        raise typer.BadParameter(f"unknown profile {profile!r}: use cpython or micropython-static",
                                 param_hint="--profile")
    try:
        # Imported here: it loads the native engine, which no other command needs.
        from pylon import runtime
    except ImportError as exc:
        raise EngineError(f"the Pylon runtime is unavailable: {exc}") from exc
    from pylon.cli.progress import fetch_progress

    try:
        status = runtime.run(plan=plan, script=script, code=code, args=argv, env=environment,
                             dirs=list(dirs or []), timeout_s=timeout, memory_mb=memory_mb,
                             tmp_mb=tmp_mb, progress=fetch_progress)
    except GuestStopped as exc:
        _stopped(exc)
    raise typer.Exit(int(status or 0))


def _stopped(exc: GuestStopped) -> NoReturn:
    """Says why the guest stopped and exits as a shell would (124 timeout, 130 Ctrl-C, 153 /tmp full)."""
    from pylon.cli.console import print_error
    from pylon.cli.entry import stopped_status

    raise typer.Exit(stopped_status(exc, print_error))


def _run_static(script: str | None, code: str | None, argv: list[str], env: dict[str, str],
                with_caps: list[str] | None, dirs: list[str], timeout: float | None,
                memory_mb: int | None, tmp_mb: int | None) -> int:
    """Runs a script in the MicroPython static module on our engine (a core module, WASI p1)."""
    from pylon import paths
    from pylon.build.caps import find_caps
    from pylon.build.micropython import build_micropython
    from pylon.static_runner import run_script

    if code is not None or script is None:
        raise typer.BadParameter("the micropython-static profile runs a SCRIPT (no -c)", param_hint="SCRIPT")
    caps = list(with_caps) if with_caps else [d.name for d in find_caps(paths.SOURCE_ROOT / "caps", face="static")]
    module = build_micropython(caps, "exnref")
    return run_script(module, script, argv, sorted(env.items()), dirs=dirs, timeout_s=timeout,
                      memory_mb=memory_mb, tmp_mb=tmp_mb)


def register(app: typer.Typer) -> None:
    """Adds ``run`` to the top-level app."""
    app.command("run", context_settings=_CONTEXT)(run)
