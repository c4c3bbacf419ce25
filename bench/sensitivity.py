"""How the headline kernel-looping speedups move with each hardware figure no source gives.

For every parameter of the sn40l preset (`preset.parameters()`: launch, Argument Load, Program
Load and sync costs, stage latency, P2P bandwidth and latency, HBM / DDR efficiency, clock and
PCU geometry, AGCU count), the speedup of kernel looping (unlooped / looped decode time, batch 1,
context 4096) is recomputed with that one parameter scaled over a range, the others at their
defaults. Programs are compiled once: these figures only enter the time model (the lowering
sizes kernels from the sourced PCU / PMU / SRAM counts), so each point is two simulations.

None of these defaults was fitted to the published speedups (2.2x on one socket, 2.5x on
several), so the speedups are predictions; the last lines say how large the per-call costs
would have to be to reach the published figures - a statement about the parameters, not a
calibration. Run: `python bench/sensitivity.py`.
"""

from __future__ import annotations

from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.timing import simulate

CASES = (("llama-3.1-8b", 1), ("llama-3.1-8b", 8), ("llama-3.1-70b", 16))
SCALES = (0, 0.25, 0.5, 1, 2, 4, 8)
FRACTIONS = (0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
INTEGER_SCALES = (0.25, 0.5, 1, 2, 4)
PER_CALL = ("launch_software_s", "argument_load_s", "program_load_s", "sync_software_s")
PUBLISHED = {1: 2.2, 8: 2.5, 16: 2.5}  # ANCHORS.md: up to 2.2x on one socket, 2.5x on several


def speedup(programs, preset) -> float:
    unlooped, looped = (simulate(p, preset).step_s for p in programs)
    return unlooped / looped


def points(preset, name: str) -> list[tuple[str, dict]]:
    value = getattr(preset, name)
    if name.endswith("_efficiency"):
        return [(f"{f:g}", {name: f}) for f in FRACTIONS]
    if isinstance(value, int):
        return [(f"x{s:g}", {name: max(1, round(value * s))}) for s in INTEGER_SCALES]
    scales = SCALES if name.endswith("_s") else SCALES[1:]  # rates cannot be 0
    return [(f"x{s:g}", {name: value * s}) for s in scales]


def main() -> None:
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
    print(
        f"{'(all defaults)':<20}{'':>10}  {'':<8}"
        + "".join(f"{speedup(programs[c], preset):>8.2f}x" for c in CASES)
    )
    for name in preset.parameters():
        default = getattr(preset, name)
        for i, (label, change) in enumerate(points(preset, name)):
            varied = preset.replace(**change)
            print(
                f"{name if i == 0 else '':<20}{default if i == 0 else '':>10}  {label:<8}"
                + "".join(f"{speedup(programs[c], varied):>8.2f}x" for c in CASES)
            )
    print(
        "\nper-call costs (launch + Argument Load + Program Load + sync, scaled together) "
        "needed for the published speedups:"
    )
    for case in CASES:
        target = PUBLISHED[case[1]]
        lo, hi = 1.0, 1.0
        while speedup(programs[case], scaled(preset, hi)) < target and hi < 1e4:
            lo, hi = hi, hi * 2
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
