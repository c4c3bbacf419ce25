"""Decode timing of the bundled simulator, and how fast the simulator itself is.

1. TPOT (the step time), tokens/s (all sequences), % of roofline and where the time above the
   memory roofline goes (the report's `time_breakdown`, ms per step) for llama-3.1-8b and
   llama-3.1-70b at batch 1, 8 and 80, context 4096 and 65536, on 8 and 16 sockets, with and
   without kernel looping, and the speedup (software-orchestrated launch; `--launch hardware`
   for the other mode). A case the chip's memory cannot hold prints the lowering's refusal.
2. Simulator speed: timing simulation of one decode step of llama-3.1-70b at batch 80 on 16
   sockets (goal: under 1 s).
3. Functional speed: decode steps of a tiny preset through the simulator vs the llm-level
   reference (goal: no slower than 5x).

Run: `python bench/decode_timing.py [--launch software|hardware] [--quick]` (`--quick`: batch 1
and context 4096 only).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.report import summarize
from rdu_compiler.simulator.timing import simulate

MODELS = ("llama-3.1-8b", "llama-3.1-70b")
SOCKETS = (1, 8, 16)
BATCHES = (1, 8, 80)
CONTEXTS = (4096, 65536)
# time_breakdown causes as columns: (heading, causes summed)
COLUMNS = (
    ("launch", ("launch", "argument_load", "program_load", "sync")),
    ("compute", ("memory_idle_compute",)),
    ("collect", ("memory_idle_collectives",)),
    ("filldr", ("fill_drain",)),
    ("bw<nom", ("bandwidth_below_nominal",)),
    ("replic", ("replicated_traffic",)),
    ("other", ("other",)),
)


def decode_table(launch: str, batches, contexts) -> None:
    preset = get_preset("sn40l")
    print(f"decode, {launch} launch, sn40l preset defaults; the time above the memory roofline")
    print(
        "by cause, ms per step (launch = launch + argument / program load + sync; compute /"
        " collect = memory idle behind compute-bound units / collectives)"
    )
    print(
        f"{'model':<14}{'batch':>6}{'context':>8}{'sock':>5}  {'looping':<9}{'TPOT ms':>9}"
        f"{'tok/s':>9}{'%roof':>7}{'roofl ms':>9}"
        + "".join(f"{h:>8}" for h, _ in COLUMNS)
        + f"{'speedup':>9}"
    )
    for model in MODELS:
        for batch in batches:
            for context in contexts:
                for sockets in SOCKETS:
                    case = (
                        f"{model.removeprefix('llama-3.1-'):<14}{batch:>6}{context:>8}{sockets:>5}"
                    )
                    rows = {}
                    for looped in (False, True):
                        try:
                            program = compile_program(
                                model,
                                sockets=sockets,
                                kernel_looping=looped,
                                batch=batch,
                                context=context,
                                launch=launch,
                            )
                        except PassFailedException as error:
                            print(f"{case}  refused: {str(error).splitlines()[0]}")
                            break
                        rows[looped] = summarize(program, preset, simulate(program, preset))
                    if len(rows) < 2:
                        continue
                    speedup = rows[False]["ms_per_token"] / rows[True]["ms_per_token"]
                    for looped, s in rows.items():
                        causes = s["time_breakdown"]
                        print(
                            f"{case}  {'looped' if looped else 'unlooped':<9}"
                            f"{s['ms_per_token']:>9.3f}{s['tokens_per_s']:>9.1f}"
                            f"{s['roofline_fraction']:>7.1%}{s['roofline_ms']:>9.3f}"
                            + "".join(
                                f"{sum(causes[c] for c in group):>8.3f}" for _, group in COLUMNS
                            )
                            + (f"{speedup:>8.2f}x" if looped else "")
                        )


def simulator_speed() -> None:
    start = time.perf_counter()
    program = compile_program("llama-3.1-70b", sockets=16, batch=80, context=4096)
    compiled = time.perf_counter() - start
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        timing = simulate(program, get_preset("sn40l"))
        runs.append(time.perf_counter() - start)
    print(
        f"\nsimulator speed, llama-3.1-70b batch 80 on 16 sockets (looped): compile "
        f"{compiled:.2f} s, timing simulation {min(runs):.3f} s (best of 3, {timing.events} "
        "events; goal < 1 s)"
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
    parser.add_argument("--quick", action="store_true", help="batch 1, context 4096 only")
    args = parser.parse_args()
    if args.quick:
        decode_table(args.launch, (1,), (4096,))
    else:
        decode_table(args.launch, BATCHES, CONTEXTS)
    simulator_speed()
    functional_speed()


if __name__ == "__main__":
    main()
