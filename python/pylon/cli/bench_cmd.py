"""``composectl bench CAP``: measure a cap in each linkage mode it has."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    cap: Annotated[str, typer.Argument(metavar="CAP", help="A cap folder, or the name of a cap under caps/.")],
    json_out: Annotated[Path | None, typer.Option(
        "--json", metavar="OUT", help="Also write every figure here, as JSON.", dir_okay=False)] = None,
    plot_out: Annotated[Path | None, typer.Option(
        "--plot", metavar="OUT.png", help="Also plot throughput by payload size (needs matplotlib).",
        dir_okay=False)] = None,
    markdown_out: Annotated[Path | None, typer.Option(
        "--markdown", metavar="OUT.md", help="Also write the tables as Markdown.", dir_okay=False)] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Fewer sizes, repeats and resolves: seconds, not minutes.")] = False,
) -> None:
    """Measure CAP in each mode it has (dynlink, embedded, static) and print the
    "choosing between them" table with the figures beside each answer.

    What to call comes from the bench table of the cap's cap.toml
    (docs/caps.md, "Benchmarks"); progress goes to stderr, the tables to stdout.
    """
    # Imported here: the measurement pulls in the build tooling and the engine,
    # which no other command needs.
    from pylon.bench.measure import Settings, bench_cap
    from pylon.bench.report import answers, markdown, plot, render

    result = _with_progress(lambda say: bench_cap(cap, Settings.make(quick), say))
    result["questions"] = answers(result)
    render(result)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1) + "\n")
    if markdown_out is not None:
        markdown_out.write_text(markdown(result, f"composectl bench {cap}" + (" --quick" if quick else "")))
    if plot_out is not None:
        plot(result, plot_out)


def _with_progress(work: Any) -> Any:
    """Runs ``work(say)`` under a rich status line on stderr; each ``say`` is a step."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from pylon.cli.console import err

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task("bench", total=None)
        done: list[str] = []

        def say(message: str) -> None:
            if done:
                # A finished step stays on screen (with the final table, what took the time).
                progress.console.print(f"  .. {done[-1]}", style="dim")
            done.append(message)
            progress.update(task, description=message)

        return work(say)
