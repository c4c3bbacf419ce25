"""How the headline kernel-looping speedups move with each hardware figure no source gives.

For every parameter of the sn40l preset (`preset.parameters()`: launch, Argument Load, Program
Load and sync costs, stage latency, P2P bandwidth, links, topology and latency, HBM / DDR
efficiency, clock and PCU geometry, AGCU count), the speedup of kernel looping (unlooped /
looped decode time, batch 1, context 4096) is recomputed with that one parameter scaled over
six orders of magnitude (x1e-3 .. x1e3; costs also at 0; efficiencies from 1e-6 to 1; integers
rounded, at least 1; the topology both ways), the others at their defaults. Every point must
finish (the engine makes progress for every value validation accepts): a point the engine
refuses (a simulated time past its horizon) prints `refused`. Programs are compiled once: these
figures only enter the time model (the lowering sizes kernels from the sourced PCU / PMU / SRAM
counts), so each point is two simulations.

None of these defaults was fitted to the published speedups (2.2x on one socket, 2.5x on
several), so the speedups are predictions; the last lines say how large the per-call costs
would have to be to reach the published figures - a statement about the parameters, not a
calibration. Run: `python bench/sensitivity.py` (`--plot FILE.png`: also as a chart, one
panel per parameter).
"""

from __future__ import annotations

import argparse
import time

from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.hardware import TOPOLOGIES, get_preset
from rdu_compiler.simulator.timing import SimulationError, simulate

CASES = (("llama-3.1-8b", 1), ("llama-3.1-8b", 8), ("llama-3.1-70b", 16))
SCALES = (1e-3, 1e-2, 0.1, 1, 10, 100, 1e3)
FRACTIONS = (1e-6, 1e-4, 1e-2, 0.5, 0.95, 1.0)
PER_CALL = ("launch_software_s", "argument_load_s", "program_load_s", "sync_software_s")
PUBLISHED = {1: 2.2, 8: 2.5, 16: 2.5}  # ANCHORS.md: up to 2.2x on one socket, 2.5x on several


def speedup(programs, preset) -> float:
    unlooped, looped = (simulate(p, preset, what_if=True).step_s for p in programs)
    return unlooped / looped


def points(preset, name: str) -> list[tuple[str, dict]]:
    value = getattr(preset, name)
    if name == "p2p_topology":
        return [(t, {name: t}) for t in TOPOLOGIES]
    if name.endswith("_efficiency"):
        return [(f"{f:g}", {name: f}) for f in FRACTIONS]
    if isinstance(value, int):  # labelled by value: small scales round to the same 1
        return [
            (f"{v}", {name: v}) for v in dict.fromkeys(max(1, round(value * s)) for s in SCALES)
        ]
    scales = (0, *SCALES) if name.endswith("_s") else SCALES  # rates cannot be 0
    return [(f"x{s:g}", {name: value * s}) for s in scales]


def refusable_speedup(programs, preset) -> float | None:
    """The speedup, or None where the engine refuses the point."""
    try:
        return speedup(programs, preset)
    except SimulationError:
        return None


def cell(value: float | None) -> str:
    return f"{'refused':>9}" if value is None else f"{value:>8.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the sweep as a chart")
    args = parser.parse_args()
    preset = get_preset("sn40l")
    programs = {
        case: [
            compile_program(case[0], sockets=case[1], kernel_looping=looped, context=4096)
            for looped in (False, True)
        ]
        for case in CASES
    }
    heads = [f"{m.removeprefix('llama-3.1-')}/{s}" for m, s in CASES]
    print("kernel-looping speedup (unlooped / looped), batch 1, context 4096, software launch")
    print(f"{'parameter':<20}{'default':>10}  {'value':<8}" + "".join(f"{h:>9}" for h in heads))
    baseline = {
        h: refusable_speedup(programs[c], preset) for h, c in zip(heads, CASES, strict=True)
    }
    print(f"{'(all defaults)':<20}{'':>10}  {'':<8}" + "".join(map(cell, baseline.values())))
    table: dict[str, list[tuple[str, dict[str, float | None]]]] = {}
    start = time.perf_counter()
    for name in preset.parameters():
        default = getattr(preset, name)
        shown = default if isinstance(default, str) else f"{default:.3g}"
        for i, (label, change) in enumerate(points(preset, name)):
            varied = preset.replace(**change)
            row = {
                h: refusable_speedup(programs[c], varied) for h, c in zip(heads, CASES, strict=True)
            }
            table.setdefault(name, []).append((label, row))
            print(
                f"{name if i == 0 else '':<20}{shown if i == 0 else '':>10}  {label:<8}"
                + "".join(map(cell, row.values()))
            )
    print(f"(sweep: {time.perf_counter() - start:.1f} s, every point finished or refused)")
    if args.plot:
        from rdu_compiler.simulator.plots import plot_sensitivity
        from rdu_compiler.tools.cli import write_atomically

        write_atomically(args.plot, plot_sensitivity(table, baseline))
    print(
        "\nper-call costs (launch + Argument Load + Program Load + sync, scaled together) "
        "needed for the published speedups:"
    )
    for case in CASES:
        target = PUBLISHED[case[1]]
        lo, hi = 1.0, 1.0
        while speedup(programs[case], scaled(preset, hi)) < target and hi < 1e4:
            lo, hi = hi, hi * 2
        if speedup(programs[case], scaled(preset, hi)) < target:
            print(f"  {case[0]} on {case[1]} socket(s): {target}x not reached at x{hi:g}")
            continue
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (
                (mid, hi) if speedup(programs[case], scaled(preset, mid)) < target else (lo, mid)
            )
        per_call = sum(getattr(preset, k) for k in PER_CALL) * hi
        print(
            f"  {case[0]} on {case[1]} socket(s): {target}x needs x{hi:.1f} the defaults, "
            f"{per_call * 1e6:.0f} us per call (defaults: "
            f"{sum(getattr(preset, k) for k in PER_CALL) * 1e6:.0f} us)"
        )


def scaled(preset, factor: float):
    return preset.replace(**{k: getattr(preset, k) * factor for k in PER_CALL})


if __name__ == "__main__":
    main()
