"""The cost of one rdu-tune trial (compile in process + timing simulation), per knob setting.

A trial is what `rdu-tune` runs for each proposed point (tools/tuner.py's Evaluator): lower a
clone of the prepared module (the passes before the lowering run once per options of theirs,
`RduPipeline.prepare_options`, and are timed apart), emit and validate the program, simulate its
timing, summarize.
The settings: the default point, rdu-tune's slow corners (sections split by a wide matmul, small
tiles, deep buffers, no kernel looping, the hardware launch mode) and `--random N` points drawn
uniformly from the default space (`--seed`). Prints the CPU time of each trial (this process:
the machine is shared, wall time is not a measure) and the min / median / max over all.
Goal (issue 14): a trial of llama-3.1-70b on 16 sockets at most 1.5 s.

    python bench/trial_cost.py                              # 70B/16, corners + 12 random points
    python bench/trial_cost.py --random 30 --repeat 3       # each point's best of 3
    python bench/trial_cost.py --profile /tmp/trials.prof   # cProfile of the timed trials
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import time
from dataclasses import replace
from typing import Any

import numpy as np

from rdu_compiler.lowering.pipeline import RduPipeline
from rdu_compiler.tools import tuner

# rdu-tune's slow corners of the default space (found with --random: these cost the most)
CORNERS: dict[str, dict[str, Any]] = {
    "default": {},
    "matmul-par=256": {"matmul_par": 256},
    "matmul-par=1024": {"matmul_par": 1024},
    "tile-bytes=8192 buffer-depth=16": {"tile_bytes": 8192, "buffer_depth": 16},
    "attention-par=1024 simd-par=64": {"attention_par": 1024, "simd_par": 64},
    "kernel-looping=false": {"kernel_looping": False},
    "single-launch=false launch=hardware": {"single_launch": False, "launch": "hardware"},
    "kernel-looping=false matmul-par=512": {"kernel_looping": False, "matmul_par": 512},
}


def random_points(count: int, seed: int) -> dict[str, dict[str, Any]]:
    """`count` points drawn uniformly from rdu-tune's default space."""
    rng = np.random.RandomState(seed)
    points = {}
    for i in range(count):
        values = {}
        for knob in tuner.default_space():
            param = knob.draw(rng, use_prior=False)
            values[knob.name] = knob.values[param] if knob.kind == "ordinal" else param
        points[f"random {i}"] = values
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama-3.1-70b")
    parser.add_argument("--sockets", type=int, default=16)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--random", type=int, default=12, help="random points of the space")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="trials per point (its minimum)")
    parser.add_argument("--only", help="only the settings whose name contains this text")
    parser.add_argument("--profile", help="write a cProfile of the timed trials to this file")
    args = parser.parse_args()
    objectives = tuple(tuner.parse_objectives("ms_per_token,pcus", tuner.report_keys()))
    base = RduPipeline(sockets=args.sockets)
    problem = tuner.Problem(
        args.model, 1, args.context, None, base, tuple(tuner.default_space()), objectives
    )
    evaluator = tuner.Evaluator(problem, remember=False)
    settings = {**CORNERS, **random_points(args.random, args.seed)}
    if args.only:
        settings = {k: v for k, v in settings.items() if args.only in k}
    pipelines = {name: problem.pipeline(values) for name, values in settings.items()}
    # prepares each module the trials lower (once per options of the passes before the
    # lowering, as rdu-tune does), timed apart from the trials
    front = {tuple(p.prepare_options().items()): p.prepare_options() for p in pipelines.values()}
    print(
        f"{args.model}, {args.sockets} sockets, context {args.context}: {len(front)} prepared"
        " modules; CPU s of each preparation with its first trial (the options that differ"
        " from the default pipeline's)"
    )
    preparing = []
    for options in front.values():
        start = time.process_time()
        evaluator.evaluate(replace(base, **options))
        preparing.append(time.process_time() - start)
        changed = " ".join(
            f"{k.replace('_', '-')}={str(v).lower()}"
            for k, v in options.items()
            if getattr(base, k) != v
        )
        print(f"  {preparing[-1]:6.3f}  {changed or 'default'}", flush=True)
    print(f"max {max(preparing):.3f} s CPU; CPU s per trial")
    profile = cProfile.Profile() if args.profile else None
    costs = []
    for name, pipeline in pipelines.items():
        times = []
        for _ in range(args.repeat):
            start = time.process_time()
            if profile:
                profile.enable()
            outcome = evaluator.evaluate(pipeline)
            if profile:
                profile.disable()
            times.append(time.process_time() - start)
        costs.append(min(times))
        status = (
            f"{outcome.objectives['ms_per_token']:.3f} ms/token"
            if outcome.objectives
            else f"infeasible: {outcome.reason}"
        )
        print(f"  {min(times):6.3f}  {name:<38} {status[:70]}", flush=True)
        if name.startswith("random"):
            print(f"          {pipeline.spec()}")
    print(
        f"{len(costs)} settings: min {min(costs):.3f} s, median {statistics.median(costs):.3f} s,"
        f" max {max(costs):.3f} s CPU"
    )
    if profile:
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
