"""Decode timing of the bundled simulator, and how fast the simulator itself is.

1. ms/token, tokens/s, % of HBM peak and % of roofline for llama-3.1-8b and llama-3.1-70b at
   batch 1, context 4096, on 1, 8 and 16 sockets, with and without kernel looping, and the
   speedup (software-orchestrated launch; `--launch hardware` for the other mode).
2. Simulator speed: compile and timing simulation of one decode step of llama-3.1-70b on 16
   sockets (goal: simulation under 2 s).
3. Functional speed: decode steps of a tiny preset through the simulator vs the llm-level
   reference (goal: no slower than 5x).

Run: `python bench/decode_timing.py [--launch software|hardware]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.report import summarize
from rdu_compiler.simulator.timing import simulate

MODELS = ("llama-3.1-8b", "llama-3.1-70b")
SOCKETS = (1, 8, 16)
CONTEXT = 4096


def decode_table(launch: str) -> None:
    preset = get_preset("sn40l")
    print(f"decode, batch 1, context {CONTEXT}, {launch} launch, sn40l preset defaults")
    print(
        f"{'model':<15}{'sockets':>8}  {'looping':<9}{'ms/token':>10}{'tokens/s':>10}"
        f"{'% peak':>8}{'% roofline':>11}{'launches':>9}{'speedup':>9}"
    )
    for model in MODELS:
        for sockets in SOCKETS:
            rows = {}
            for looped in (False, True):
                program = compile_program(
                    model, sockets=sockets, kernel_looping=looped, context=CONTEXT, launch=launch
                )
                rows[looped] = summarize(program, preset, simulate(program, preset))
            speedup = rows[False]["ms_per_token"] / rows[True]["ms_per_token"]
            for looped, s in rows.items():
                print(
                    f"{model:<15}{sockets:>8}  {'looped' if looped else 'unlooped':<9}"
                    f"{s['ms_per_token']:>10.3f}{s['tokens_per_s']:>10.1f}"
                    f"{s['bandwidth_fraction_of_peak']:>8.1%}{s['roofline_fraction']:>11.1%}"
                    f"{s['launches_per_token']:>9}" + (f"{speedup:>8.2f}x" if looped else "")
                )


def simulator_speed() -> None:
    start = time.perf_counter()
    program = compile_program("llama-3.1-70b", sockets=16, context=CONTEXT)
    compiled = time.perf_counter() - start
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        timing = simulate(program, get_preset("sn40l"))
        runs.append(time.perf_counter() - start)
    print(
        f"\nsimulator speed, llama-3.1-70b on 16 sockets (looped): compile {compiled:.2f} s, "
        f"timing simulation {min(runs):.3f} s (best of 5, {timing.events} events; goal < 2 s)"
    )


def functional_speed(preset: str = "tiny-llama", steps: int = 32, batch: int = 1) -> None:
    from rdu_compiler.frontend.builder import build_decode_step
    from rdu_compiler.frontend.config import load_model_config
    from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine
    from rdu_compiler.simulator.functional import FunctionalSimulator
    from rdu_compiler.simulator.weights import RandomWeights

    config = load_model_config(preset)
    weights = RandomWeights(0)
    engine = ReferenceEngine(build_decode_step(config, batch=batch, context=steps), weights)
    caches = engine.new_caches()
    tokens, positions = np.ones(batch, np.int32), np.zeros(batch, np.int32)
    start = time.perf_counter()
    for p in range(steps):
        _, _, *caches = engine.step(tokens, positions + p, *caches)
    reference = time.perf_counter() - start
    print(
        f"\nfunctional speed, {preset}, batch {batch}, {steps} decode steps "
        f"(reference {reference:.3f} s):"
    )
    for sockets in (1, 2, 4):
        program = compile_program(preset, sockets=sockets, batch=batch, context=steps)
        sim = FunctionalSimulator(program, weights)
        start = time.perf_counter()
        for p in range(steps):
            sim.decode(tokens, positions + p)
        took = time.perf_counter() - start
        print(
            f"  simulator on {sockets} socket(s): {took:.3f} s = {took / reference:.2f}x the "
            f"reference (goal <= 5x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launch", choices=("software", "hardware"), default="software")
    args = parser.parse_args()
    decode_table(args.launch)
    simulator_speed()
    functional_speed()


if __name__ == "__main__":
    main()
