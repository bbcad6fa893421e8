"""What ``composectl bench`` shows: the seed's "choosing between them" table with
measured figures beside each answer, the throughput table, the plot.

Everything here reads the dict :func:`pylon.bench.measure.bench_cap` returns
(also what ``--json`` writes), so a saved result renders the same later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pylon.bench.measure import MODES

__all__ = ["MODE_TITLES", "QUESTIONS", "answers", "markdown", "plot", "throughput_rows"]

MODE_TITLES = {"dynlink": "Runtime dynlink", "embedded": "Embedded via wac plug", "static": "Static-C in-cap"}

#: The seed's table (docs/choosing.md; linkage-modes spec, "Choosing between them"): key, question, answers.
QUESTIONS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("swap", "Swap providers without rebuilding pylon?", {"dynlink": "Yes", "embedded": "No", "static": "No"}),
    ("hot", "Hot path — invoke every microsecond?", {"dynlink": "Avoid", "embedded": "Yes", "static": "Yes"}),
    ("handles", "Holds C handles across calls (prepared stmt, etc.)?",
     {"dynlink": "No*", "embedded": "Yes", "static": "Yes"}),
    ("vendor", "Vendor library > ~1 MB?", {"dynlink": "Avoid", "embedded": "Yes", "static": "Avoid"}),
    ("runtime", "Target runtime supports the component model?",
     {"dynlink": "Required", "embedded": "Required", "static": "N/A"}),
)

_RUNTIME = {"dynlink": "required (a component, linked by the host at run time)",
            "embedded": "required (composed into the pylon.wasm component)",
            "static": "not needed (one wasi-p1 core module)"}
_SWAP = {"embedded": "rebuild pylon.wasm (wac plug)", "static": "rebuild the static module"}


def _num(x: float) -> str:
    """Three significant digits, no exponent for the ranges seen here."""
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _measured(key: str, mode: str, r: dict[str, Any]) -> str:
    if key == "runtime":
        return _RUNTIME[mode]
    if not r["available"] and str(r.get("why", "")).startswith("n/a (no ["):
        return str(r["why"])  # the cap has no such face: nothing to answer
    if key == "handles":
        return str(r.get("handles") or "")
    if key == "vendor" and r.get("artifact_bytes") is not None:
        return f"{r['artifact_bytes']:,} bytes ({r['artifact']})"  # known even when the calls failed
    if not r["available"]:
        return str(r["why"])
    if key == "swap":
        fr = r.get("first_resolve")
        if mode != "dynlink" or not fr:
            return _SWAP.get(mode, "")
        return (f"first resolve {_num(fr['cold']['median_ms'])} ms cold, {_num(fr['warm']['median_ms'])} ms warm "
                f"(best {_num(fr['cold']['best_ms'])} / {_num(fr['warm']['best_ms'])})")
    if key == "hot":
        t = r.get("tiny")
        if not t:
            return "not measured"
        return f"{_num(t['median_us'])} µs per call (best {_num(t['best_us'])})"
    if key == "vendor":
        if r.get("artifact_bytes") is None:
            return "size unknown"
        return f"{r['artifact_bytes']:,} bytes ({r['artifact']})"
    return ""


def _answer(key: str, mode: str, seed: str, r: dict[str, Any]) -> str:
    """The seed's answer, except where this cap changes it: a dynlink face
    generated from a WIT interface holds handles (the seed's footnote, "handles
    need app-level session tokens", no longer applies; docs/cap-interface.md)."""
    if key == "handles" and mode == "dynlink" and str(r.get("handles") or "").startswith("yes"):
        return "Yes"
    return seed


def answers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The five questions: the seed's answer, the answer for this cap, and the
    measured figure per mode."""
    modes = result["modes"]
    return [{"key": key, "question": q, "seed": dict(seed),
             "answer": {m: _answer(key, m, seed[m], modes[m]) for m in MODES},
             "measured": {m: _measured(key, m, modes[m]) for m in MODES}} for key, q, seed in QUESTIONS]


def throughput_rows(result: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(size, mode -> figures or None) for every measured size."""
    modes = result["modes"]
    sizes = sorted({int(s) for m in MODES for s in modes[m].get("bulk", {})})
    return [(size, {m: modes[m]["bulk"].get(str(size)) for m in MODES}) for size in sizes]


def size_label(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1 << 10 else f"{n} B"


def _header(mode: str, r: dict[str, Any]) -> str:
    return MODE_TITLES[mode] if r["available"] else f"{MODE_TITLES[mode]}\n{r['why']}"


def render(result: dict[str, Any]) -> None:
    """Prints the tables on stdout (rich)."""
    from rich.markup import escape
    from rich.table import Table

    from pylon.cli.console import out

    modes = result["modes"]
    title = f"{result['cap']} {result['version']}: choosing between the linkage modes"
    if result.get("quick"):
        title += " (--quick)"
    table = Table(title=title, show_lines=True, title_justify="left")
    table.add_column("Question", ratio=2)
    for m in MODES:
        table.add_column(escape(_header(m, modes[m])), ratio=3)
    for row in answers(result):
        table.add_row(escape(row["question"]), *(escape(f"{row['answer'][m]}: {row['measured'][m]}") for m in MODES))
    out.print(table)
    # Figures and messages carry "[static]" and the like: never rich markup.
    if result.get("note"):
        out.print(f"note: {result['note']}", markup=False)
    for m in MODES:
        for note in modes[m].get("notes", []):
            out.print(f"{m}: {note}", markup=False)
    rows = throughput_rows(result)
    if rows:
        shown = [m for m in MODES if modes[m].get("bulk")]
        t = Table(title=f"{result['cap']}: bulk throughput, MB/s, median (best)", title_justify="left")
        t.add_column("payload", justify="right")
        for m in shown:
            t.add_column(MODE_TITLES[m], justify="right")
        for size, per in rows:
            t.add_row(size_label(size), *(f"{_num(per[m]['median_mbs'])} ({_num(per[m]['best_mbs'])})"
                                          if per[m] else "—" for m in shown))
        out.print(t)
    elif not result.get("bulk"):
        out.print("bulk: not measured (the cap's [bench] has no bulk call)", markup=False)
    out.print(f"method: {result['method']}", style="dim", markup=False)


def markdown(result: dict[str, Any], command: str) -> str:
    """The same tables as Markdown (docs/choosing.md)."""
    modes = result["modes"]
    lines = [f"Measured with `{command}`"
             f" ({result['machine']['cpus']} CPUs, {result['machine']['machine']}, "
             f"wasmtime {result['machine']['wasmtime']}):", ""]
    lines.append("| Question | " + " | ".join(MODE_TITLES[m] for m in MODES) + " |")
    lines.append("|---|" + "---|" * len(MODES))
    for row in answers(result):
        cells = [f"{row['answer'][m]}: {row['measured'][m]}".replace("|", "\\|") for m in MODES]
        lines.append(f"| {row['question']} | " + " | ".join(cells) + " |")
    unavailable = [f"{MODE_TITLES[m]}: {modes[m]['why']}" for m in MODES if not modes[m]["available"]]
    if unavailable:
        lines += ["", "Not measured: " + "; ".join(unavailable) + "."]
    rows = throughput_rows(result)
    if rows:
        shown = [m for m in MODES if modes[m].get("bulk")]
        lines += ["", "Bulk throughput, MB/s, median (best):", "",
                  "| payload | " + " | ".join(MODE_TITLES[m] for m in shown) + " |",
                  "|---:|" + "---:|" * len(shown)]
        for size, per in rows:
            lines.append(f"| {size_label(size)} | " + " | ".join(
                f"{_num(per[m]['median_mbs'])} ({_num(per[m]['best_mbs'])})" if per[m] else "—" for m in shown) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], dest: Path) -> None:
    """Throughput by payload size per mode, log-log, to a PNG.

    Raises:
        PylonError: matplotlib is missing, or the cap has no bulk figures.
    """
    from pylon.errors import PylonError

    rows = throughput_rows(result)
    if not rows:
        raise PylonError(f"nothing to plot: cap {result['cap']!r} has no bulk call in its [bench] table")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display, no GUI toolkit
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PylonError("--plot needs matplotlib (pip install 'pylon[bench]')") from exc
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for m in MODES:
        pts = [(size, per[m]) for size, per in rows if per[m]]
        if not pts:
            continue
        xs = [s for s, _ in pts]
        line = ax.plot(xs, [p["median_mbs"] for _, p in pts], marker="o", label=f"{MODE_TITLES[m]} (median)")[0]
        ax.plot(xs, [p["best_mbs"] for _, p in pts], linestyle=":", color=line.get_color(), alpha=0.7,
                label=f"{MODE_TITLES[m]} (best)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([s for s, _ in rows], [size_label(s) for s, _ in rows], rotation=30)
    ax.set_xlabel("payload per call")
    ax.set_ylabel("throughput, MB/s")
    ax.set_title(f"{result['cap']}: throughput by payload size" + (" (--quick)" if result.get("quick") else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    plt.close(fig)
