"""rdu-tune's search (Pareto local search, multi-objective TPE, a closing climb) against random
search, equal budgets.

Cases: llama-3.1-8b on 8 sockets, llama-3.1-70b on 16, mixtral-8x7b on 8 (batch 1, context
4096), the default space and objectives (TPOT `ms_per_token`, `pcus`), several seeds; both
searches get the same space, budget and seeds. Per case and seed: the trials the tuner needs to
reach random search's final hypervolume (as a fraction of the budget; goal: median at most
1/4), each search's best TPOT, the rate of infeasible proposals; per case, the cost of one trial
(compiling and timing; goal for 70B on 16 sockets: at most 1.5 s).

A point proposed again is not compiled again (one evaluation cache per case: compiling and
timing are deterministic, so the searches see the same figures); the trial cost is measured on
the compiled trials only, as CPU time of this process and as wall time (the machine is shared).
`--cache DIR` keeps each case's evaluations in a file for the next run (screening sampler
designs without compiling random search's points again): the file is named by a hash of the
compiler's and simulator's sources, so a changed compiler starts a new one.

    python bench/tune.py                       # budget 60, seeds 0-4, all cases
    python bench/tune.py --budget 30 --seeds 3 --cases 8b --cache /tmp/tune-cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

from rdu_compiler.lowering.pipeline import RduPipeline
from rdu_compiler.tools import tuner

# Best TPOTs this close count as equal: pipelines that time the same (a knob without effect
# set differently) can differ in the last bits of the sum.
TPOT_TIE = 1e-9
CASES = {"8b": ("llama-3.1-8b", 8), "70b": ("llama-3.1-70b", 16), "mixtral": ("mixtral-8x7b", 8)}


# What a trial's figures depend on: a change to any of these sources starts a new cache file.
COMPILER_LAYERS = ("frontend", "rdu_dialect", "passes", "lowering", "simulator")


def compiler_version() -> str:
    """A hash of the compiler's and simulator's sources (and the model presets)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for layer in COMPILER_LAYERS:
        for path in sorted((root / layer).rglob("*")):
            if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class TimedEvaluator:
    """An evaluator that times each pipeline it compiles (not the ones it remembers or finds in
    the cache file `cache`, which it extends with every compiled one). What a trial's program
    resolved its automatic knobs to (`Evaluation.resolved`) is kept in a file beside it, so
    the cache file keeps its format; a feasible point cached without it is compiled again."""

    def __init__(self, problem: tuner.Problem, cache: Path | None = None):
        self.problem = problem
        self._inner = tuner.Evaluator(problem)
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self._cache = cache
        self._resolutions = cache.with_suffix(".resolved.json") if cache is not None else None
        self._known: dict[str, tuner.Evaluation] = {}
        self._loaded = (0.0, 0.0)  # the files' modification times when last read
        self._load()

    def _load(self) -> None:
        """Read the cache files if they changed since (another run may be filling them)."""
        if self._cache is None or self._resolutions is None or not self._cache.exists():
            return
        changed = tuple(
            p.stat().st_mtime if p.exists() else 0.0 for p in (self._cache, self._resolutions)
        )
        if changed != self._loaded:
            resolved = json.loads(self._resolutions.read_text()) if changed[1] else {}
            for spec, (objectives, reason) in json.loads(self._cache.read_text()).items():
                known = self._known.get(spec)
                if known is None or known.resolved is None and spec in resolved:
                    self._known[spec] = tuner.Evaluation(objectives, reason, resolved.get(spec))
            self._loaded = changed

    def _complete(self, spec: str, pipeline: RduPipeline, resolving: bool) -> bool:
        """Whether the evaluation known for `spec` is what a compile would give (`resolving`:
        with the resolution of its automatic knobs)."""
        known = self._known.get(spec)
        if known is None:
            return False
        auto = any(getattr(pipeline, name) == -1 for name in tuner.AUTO_UNITS)
        return known.objectives is None or known.resolved is not None or not (auto and resolving)

    def evaluate(self, pipeline: RduPipeline, resolving: bool = True) -> tuner.Evaluation:
        """The evaluation of `pipeline`; without `resolving`, a cached one may lack the
        resolution of its automatic knobs (random search reads none: no compile for it)."""
        spec = pipeline.spec()
        if not self._complete(spec, pipeline, resolving):
            self._load()
        if not self._complete(spec, pipeline, resolving):
            cpu, wall = time.process_time(), time.perf_counter()
            self._known[spec] = self._inner.evaluate(pipeline)
            self.cpu.append(time.process_time() - cpu)
            self.wall.append(time.perf_counter() - wall)
        return self._known[spec]

    def save(self) -> None:
        """Add every evaluation known to the cache files (with those another run wrote there
        meanwhile; atomically: a rename each)."""
        if self._cache is None or self._resolutions is None:
            return
        for path, entries in (
            (self._cache, {s: [e.objectives, e.reason] for s, e in self._known.items()}),
            (self._resolutions, {s: e.resolved for s, e in self._known.items() if e.resolved}),
        ):
            known = json.loads(path.read_text()) if path.exists() else {}
            known.update(entries)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(dict(sorted(known.items()))))
            partial.replace(path)


class _Unresolving:
    """A TimedEvaluator as random search uses it: no compile for a resolution it never reads."""

    def __init__(self, evaluator: TimedEvaluator):
        self._evaluator = evaluator

    def evaluate(self, pipeline: RduPipeline) -> tuner.Evaluation:
        return self._evaluator.evaluate(pipeline, resolving=False)


def search(problem, evaluator, sampler: str, seed: int, budget: int, phases: tuner.Phases):
    """One in-memory study of `budget` trials."""
    if sampler == "random":
        evaluator = _Unresolving(evaluator)
    study = tuner.open_study(
        problem,
        tuner.open_storage(None),
        f"{sampler}-{seed}",
        tuner.make_sampler(sampler, problem, seed, phases),
    )
    tuner.work(study, problem, evaluator, budget)  # type: ignore[arg-type]  (duck-typed)
    return study


def spread(values: list[float]) -> str:
    if not values:
        return "none compiled"
    return f"median {statistics.median(values):.2f}, max {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--cache", type=Path, help="folder of evaluation cache files")
    parser.add_argument(
        "--pareto", type=int, metavar="N", help="trials of the Pareto local search (screening)"
    )
    args = parser.parse_args()
    version = compiler_version()
    if args.cache is not None:
        args.cache.mkdir(parents=True, exist_ok=True)
    objectives = tuple(tuner.parse_objectives("ms_per_token,pcus", tuner.report_keys()))
    phases = tuner.phases(args.budget, pareto=args.pareto)
    print(
        f"budget {args.budget} trials per search, seeds 0-{args.seeds - 1}, Pareto local "
        f"search before trial {phases.pareto_until}, TPE startup {phases.startup}, climbing "
        f"from trial {phases.climb_from}"
    )
    summary = []
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
        cache = args.cache / f"{case}-{version}.json" if args.cache is not None else None
        evaluator = TimedEvaluator(problem, cache)
        default = evaluator.evaluate(problem.base)
        assert default.objectives is not None, default.reason
        first = "from the cache file"
        if evaluator.cpu:  # compiled: the first trial prepares the module too
            first = f"preparing the module too: {evaluator.cpu.pop():.2f} s CPU, "
            first += f"{evaluator.wall.pop():.2f} s wall"
        scale = [default.objectives[o.name] for o in objectives]
        print(
            f"\n{model}, {sockets} sockets: default {default.objectives['ms_per_token']:.3f} "
            f"ms/token, {default.objectives['pcus']:.0f} PCUs (first trial: {first})",
            flush=True,
        )
        print(
            "  seed  reach(TPE)/budget  HV tpe  HV random  best TPOT tpe  random  "
            "infeasible tpe  random",
            flush=True,
        )
        ratios, wins = [], []
        infeasible = {"tpe": 0, "random": 0}
        for seed in range(args.seeds):
            runs = {}
            for sampler in ("tpe", "random"):
                trials = search(problem, evaluator, sampler, seed, args.budget, phases).trials
                history = tuner.hypervolume_history(trials, objectives, scale)
                feasible = [t for t in trials if tuner.feasible(t)]
                best = min(t.user_attrs["objectives"]["ms_per_token"] for t in feasible)
                runs[sampler] = (history, best, len(trials) - len(feasible))
                infeasible[sampler] += len(trials) - len(feasible)
            evaluator.save()
            (hv_t, best_t, inf_t), (hv_r, best_r, inf_r) = runs["tpe"], runs["random"]
            reach = next((k + 1 for k, v in enumerate(hv_t) if v >= hv_r[-1] - 1e-12), None)
            ratio = reach / args.budget if reach else float("inf")
            ratios.append(ratio)
            wins.append(best_t <= best_r * (1 + TPOT_TIE))
            print(
                f"  {seed:>4}  {str(reach) if reach else 'never':>8} = {ratio:5.2f}  "
                f"{hv_t[-1]:6.3f}  {hv_r[-1]:9.3f}  {best_t:13.4f}  {best_r:6.4f}  "
                f"{inf_t / args.budget:14.0%}  {inf_r / args.budget:6.0%}",
                flush=True,
            )
        n = args.budget * args.seeds
        median = statistics.median(ratios)
        print(
            f"  median reach/budget {median:.2f} (goal <= 0.25); best TPOT TPE <= random in "
            f"{sum(wins)}/{len(wins)} seeds; infeasible proposals: TPE "
            f"{infeasible['tpe'] / n:.0%}, random {infeasible['random'] / n:.0%}"
        )
        cost = f"CPU {spread(evaluator.cpu)} s, wall {spread(evaluator.wall)} s"
        print(f"  cost of a trial ({len(evaluator.cpu)} compiled): {cost}", flush=True)
        summary.append(
            f"{case:>8}  {median:12.2f}  {sum(wins)}/{len(wins)} seeds  "
            f"{infeasible['tpe'] / n:5.0%} / {infeasible['random'] / n:.0%}  "
            f"{spread(evaluator.cpu)} s CPU"
        )
    print("\n    case  median reach  best TPOT TPE <= random  infeasible  trial cost")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
