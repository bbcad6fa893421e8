"""``composectl setup`` and ``composectl build``: build the stock install."""

from __future__ import annotations

from pathlib import Path

import typer

from pylon.cli.console import say

__all__ = ["register"]


def setup() -> None:
    """Build pylon.wasm and the stock caps, store and trust them, write the default plan.

    Afterwards `composectl run script.py` works with no --plan. Builds are
    cached by source hash, so a second setup takes seconds.
    """
    from pylon import stock

    result = stock.setup(log=lambda message: say(f"setup: {message}"))
    say(f"default plan: {result.plan_path}")
    typer.echo(result.guest_digest)


PROFILES = ("cpython", "micropython-static")


def build_module(*, out: Path | None, profile: str, with_caps: list[str] | None,
                 without_caps: list[str] | None, eh: str) -> None:
    """Builds pylon.wasm (lean, fat or stock) or the MicroPython static module; prints digest and path.

    The body of ``composectl build`` (its options live in :mod:`pylon.cli.build_cmd`)."""
    import hashlib

    from pylon.errors import BuildError

    if profile not in PROFILES:
        raise BuildError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    if profile == "micropython-static":
        from pylon.build.micropython import build_micropython

        if without_caps:
            raise BuildError("--without applies to the cpython profile; list the caps to fold in with --with")
        if not with_caps:
            raise BuildError("the micropython-static profile needs at least one --with CAP")
        path = build_micropython(list(with_caps), eh, out)
    else:
        from pylon.build.guest import build_guest, choose_embedded

        embed = choose_embedded(with_caps, without_caps)
        path = build_guest(embed=embed).path
        if out is not None:
            from pylon.build.toolchain import copy_output

            path = copy_output(path, out)
        say(f"embedded caps: {', '.join(embed) or 'none (every cap by dynlink)'}")
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    say(f"built {path.name} ({path.stat().st_size / 2**20:.2f} MiB)")
    typer.echo(f"{digest} {path}")


def register(app: typer.Typer) -> None:
    """Adds ``setup`` to the top-level app (``build`` is :mod:`pylon.cli.build_cmd`'s)."""
    app.command("setup")(setup)
