"""Issue 11's goal table: `roofline_fraction` (looped) of eleven decode workloads.

Each row is `rdu-run MODEL --sockets N [--batch B] [--context S] --json`, read at
`timing.looped.roofline_fraction`. Run: `python bench/goal_table.py` (about a minute a row on a
shared machine); it prints one line per row, then the table as Markdown.
"""

from __future__ import annotations

import json
import subprocess
import sys

# (model, sockets, extra rdu-run arguments)
ROWS = (
    ("llama-3.1-8b", 8, ()),
    ("llama-3.1-8b", 16, ()),
    ("llama-3.1-70b", 8, ()),
    ("llama-3.1-70b", 16, ()),
    ("llama-3.1-405b", 16, ()),
    ("llama-3.1-8b", 8, ("--batch", "8")),
    ("llama-3.1-70b", 8, ("--batch", "8")),
    ("llama-3.1-70b", 16, ("--batch", "80")),
    ("llama-3.1-8b", 16, ("--context", "65536")),
    ("mixtral-8x7b", 8, ()),
    ("llama-3.2-1b", 8, ()),
)


def roofline_fraction(model: str, sockets: int, extra: tuple[str, ...]) -> float:
    """One row's looped `roofline_fraction`, from `rdu-run --json`."""
    command = ["rdu-run", model, "--sockets", str(sockets), *extra, "--json"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["timing"]["looped"]["roofline_fraction"]


def main() -> None:
    results = []
    for model, sockets, extra in ROWS:
        label = f"{model} / {sockets}" + ("" if not extra else " " + " ".join(extra))
        fraction = roofline_fraction(model, sockets, extra)
        results.append((label, fraction))
        print(f"{label}: {fraction:.3f}", flush=True)
    print("\n| workload | roofline_fraction |\n|---|---|")
    for label, fraction in results:
        print(f"| {label} | {fraction:.3f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
