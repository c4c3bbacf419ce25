"""Mixture of experts across sockets: `moe=tensor` (every expert split over the sockets) vs
`moe=expert` (the experts dealt over them), looped, software launch, preset defaults.

Prints, per model, socket count and batch: TPOT (the step time, ms), tokens/s, the roofline
fraction (`roofline_fraction`: the larger roofline over the step time; the memory roofline
counts a socket's share of the unsharded step's bytes in both modes, so the two modes are
measured against the same roofline), and the time above the memory roofline by cause, ms per
step (compute / collect: HBM idle behind compute-bound units / collectives; filldr: pipeline
fill and drain).

Routing assumption of `moe=expert` (docs/tensor_parallelism.md): every socket is costed as
the busiest one, holding the routed experts of all the batch's tokens as far as it holds them
(`min(E/N, B*top_k)` experts read, `B*min(top_k, E/N)` expert products). With Mixtral's 8
experts on 8 sockets (one expert each) this is exact at batch 1 (each socket holding a routed
expert reads it whole, and the all-reduce waits for it) and at batch 8 and above all but
certain under uniform routing (an expert escapes 8 tokens' top-2 with probability
(6/8)^8 = 0.10, so nearly every socket reads its expert).

Run: `python bench/moe_expert_parallel.py [--model mixtral-8x7b] [--sockets 8] [--batches 1,8,64]`.
"""

from __future__ import annotations

import argparse

from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.report import summarize
from rdu_compiler.simulator.timing import simulate

# time_breakdown causes as columns: (heading, cause)
CAUSES = (
    ("compute", "memory_idle_compute"),
    ("collect", "memory_idle_collectives"),
    ("filldr", "fill_drain"),
    ("other", "other"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mixtral-8x7b")
    parser.add_argument("--sockets", type=int, default=8)
    parser.add_argument("--batches", default="1,8,64")
    args = parser.parse_args()
    preset = get_preset("sn40l")
    print(
        f"{'model':<14}{'sock':>5}{'batch':>6}  {'moe':<7}{'TPOT ms':>9}{'tok/s':>10}"
        f"{'%roof':>7}{'roofl ms':>9}" + "".join(f"{h:>9}" for h, _ in CAUSES)
    )
    for batch in map(int, args.batches.split(",")):
        for moe in ("tensor", "expert"):
            head = f"{args.model:<14}{args.sockets:>5}{batch:>6}  {moe:<7}"
            try:
                program = compile_program(args.model, sockets=args.sockets, batch=batch, moe=moe)
            except PassFailedException as error:
                print(f"{head}refused: {error}")
                continue
            s = summarize(program, preset, simulate(program, preset))
            causes = "".join(f"{s['time_breakdown'][c]:>9.3f}" for _, c in CAUSES)
            print(
                f"{head}{s['ms_per_token']:>9.3f}{s['tokens_per_s']:>10.1f}"
                f"{s['roofline_fraction']:>7.1%}{s['roofline_ms']:>9.3f}{causes}"
            )


if __name__ == "__main__":
    main()
