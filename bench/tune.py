"""rdu-tune's search (multi-objective TPE) against random search, equal budgets.

Cases: llama-3.1-8b on 8 sockets, llama-3.1-70b on 16, mixtral-8x7b on 8 (batch 1, context
4096), the default space and objectives (TPOT `ms_per_token`, `pcus`), several seeds. Per case
and seed: the trials TPE needs to reach random search's final hypervolume (as a fraction of the
budget; goal: median at most 1/4), each search's best TPOT, the rate of infeasible proposals,
and the wall time of one trial (goal for 70B on 16 sockets: at most 1.5 s).

    python bench/tune.py                       # budget 60, seeds 0-4, all cases (hours here)
    python bench/tune.py --budget 30 --seeds 3 --cases 8b
"""

from __future__ import annotations

import argparse
import statistics
import time

from rdu_compiler.lowering.pipeline import RduPipeline
from rdu_compiler.tools import tuner

CASES = {"8b": ("llama-3.1-8b", 8), "70b": ("llama-3.1-70b", 16), "mixtral": ("mixtral-8x7b", 8)}


def search(problem, evaluator, sampler: str, seed: int, budget: int, startup: int):
    """One in-memory study of `budget` trials; returns it and each trial's wall time."""
    study = tuner.open_study(
        problem,
        tuner.open_storage(None),
        f"{sampler}-{seed}",
        tuner.make_sampler(sampler, problem.space, seed, startup),
    )
    times: list[float] = []
    last = [time.perf_counter()]

    def timed(trial) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    tuner.work(study, problem, evaluator, budget, on_trial=timed)
    return study, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    objectives = tuple(tuner.parse_objectives("ms_per_token,pcus", tuner.report_keys()))
    startup = max(4, min(10, args.budget // 10))
    print(
        f"budget {args.budget} trials per search, seeds 0-{args.seeds - 1}, TPE startup {startup}"
    )
    for case in args.cases.split(","):
        model, sockets = CASES[case]
        problem = tuner.Problem(
            model,
            1,
            4096,
            None,
            RduPipeline(sockets=sockets),
            tuple(tuner.default_space()),
            objectives,
        )
        evaluator = tuner.Evaluator(problem, remember=False)  # every trial compiled and timed
        started = time.perf_counter()
        default = evaluator.evaluate(problem.base)
        first = time.perf_counter() - started
        scale = [default.objectives[o.name] for o in objectives]
        print(
            f"\n{model}, {sockets} sockets: default {default.objectives['ms_per_token']:.3f} "
            f"ms/token, {default.objectives['pcus']:.0f} PCUs (first trial, preparing the "
            f"module too: {first:.2f} s)"
        )
        print(
            "  seed  reach(TPE)/budget  HV tpe  HV random  best TPOT tpe  random  "
            "infeasible tpe  random"
        )
        ratios, wins, all_times = [], [], {"tpe": [], "random": []}
        infeasible = {"tpe": 0, "random": 0}
        for seed in range(args.seeds):
            runs = {}
            for sampler in ("tpe", "random"):
                study, times = search(problem, evaluator, sampler, seed, args.budget, startup)
                trials = study.get_trials(deepcopy=False)
                history = tuner.hypervolume_history(trials, objectives, scale)
                feasible = [t for t in trials if tuner.feasible(t)]
                best = min(t.user_attrs["objectives"]["ms_per_token"] for t in feasible)
                runs[sampler] = (history, best, len(trials) - len(feasible))
                infeasible[sampler] += len(trials) - len(feasible)
                all_times[sampler] += times
            (hv_t, best_t, inf_t), (hv_r, best_r, inf_r) = runs["tpe"], runs["random"]
            reach = next((k + 1 for k, v in enumerate(hv_t) if v >= hv_r[-1] - 1e-12), None)
            ratio = reach / args.budget if reach else float("inf")
            ratios.append(ratio)
            wins.append(best_t <= best_r)
            print(
                f"  {seed:>4}  {str(reach) if reach else 'never':>8} = {ratio:5.2f}  "
                f"{hv_t[-1]:6.3f}  {hv_r[-1]:9.3f}  {best_t:13.3f}  {best_r:6.3f}  "
                f"{inf_t / args.budget:14.0%}  {inf_r / args.budget:6.0%}"
            )
        n = args.budget * args.seeds
        print(
            f"  median reach/budget {statistics.median(ratios):.2f} (goal <= 0.25); best TPOT "
            f"TPE <= random in {sum(wins)}/{len(wins)} seeds; infeasible proposals: TPE "
            f"{infeasible['tpe'] / n:.0%}, random {infeasible['random'] / n:.0%}"
        )
        times = all_times["tpe"] + all_times["random"]
        print(
            f"  wall time per trial: median {statistics.median(times):.2f} s, mean "
            f"{statistics.mean(times):.2f} s, max {max(times):.2f} s (TPE's sampling included)"
        )


if __name__ == "__main__":
    main()
