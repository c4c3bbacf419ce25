"""`rdu-tune MODEL`: multi-objective search over the compiler's knobs (and, asked, hardware
figures) on Optuna, each trial compiled and timed in process (the engine: `tools/tuner.py`).

The default space is every option of `rdu-pipeline{...}` but the preset (read from its option
dataclass, so new lowering knobs are searched without an edit); `--space FILE` (JSON or YAML)
gives knobs, kinds, ranges, log scales and priors instead; `--hardware-space [FILE]` adds
hardware figures. Objectives are figures of the simulator's report (default: TPOT,
`ms_per_token`, and the PCUs of the largest kernel section). A point the compiler refuses is an
infeasible trial. The output is the Pareto front, each point as the exact `rdu-pipeline{...}`
that reproduces it (`rdu-run MODEL --pipeline '...'` replays it), beside the default
pipeline's own figures. `--storage` keeps the study (a journal file, `sqlite:///f.db`, or
`postgresql://...` shared by workers on many machines); `--study NAME` resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rdu_compiler.tools.cli import (
    ArgumentParser,
    UserError,
    integer,
    read_text_file,
    run_tool,
    write_atomically,
)

PROG = "rdu-tune"
SEEDS = 2**32
"""Seeds Optuna's samplers take (numpy's legacy seeding: 0 to 2**32 - 1)."""


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description=(__doc__ or "").split("\n\n")[0],
        epilog="example: rdu-tune llama-3.1-8b --sockets 8 --trials 60 --plot front.png",
    )
    p.add_argument("model", metavar="MODEL", help="preset name, HF config.json, or HF model folder")
    p.add_argument(
        "--sockets",
        default="1",
        metavar="N[,N...]",
        help="sockets (one value: fixed; several: a knob searched over them)",
    )
    p.add_argument(
        "--batch", type=integer(1), default=1, metavar="B", help="batch entries (default 1)"
    )
    p.add_argument(
        "--context",
        type=integer(1),
        metavar="S",
        help="KV cache length (default: min(max pos, 4096))",
    )
    p.add_argument("--layers", type=integer(1), metavar="N", help="use only the first N layers")
    p.add_argument(
        "--objectives",
        default="ms_per_token,pcus",
        metavar="A,B",
        help="figures of the simulator's report to optimize, or pcus, pmus, sram_bytes, "
        "socket_ms (prefix max: or min: to set the direction; default: ms_per_token,pcus)",
    )
    p.add_argument("--space", metavar="FILE", help="search space, JSON or YAML (docs/tuning.md)")
    p.add_argument(
        "--hardware-space",
        nargs="?",
        const="",
        metavar="FILE",
        help="search hardware figures too: pcus, pmus, sram_bytes, hbm_bandwidth, "
        "p2p_bandwidth from half to twice the preset's, or as FILE says",
    )
    p.add_argument("--hw", default="sn40l", metavar="PRESET", help="hardware preset (sn40l)")
    p.add_argument(
        "--hw-override",
        action="append",
        default=[],
        metavar="K=V",
        help="a fixed hardware figure (repeatable)",
    )
    p.add_argument("--trials", type=integer(1), default=50, metavar="N", help="trials in the study")
    p.add_argument(
        "--jobs", type=integer(1), default=1, metavar="J", help="parallel local worker processes"
    )
    p.add_argument(
        "--seed",
        type=integer(0, SEEDS - 1),
        default=0,
        metavar="S",
        help="sampler seed (default 0)",
    )
    p.add_argument(
        "--sampler",
        choices=("tpe", "nsga2", "random"),
        default="tpe",
        help="tpe: multi-objective TPE (default); nsga2; random: random search",
    )
    p.add_argument(
        "--startup",
        type=integer(1),
        metavar="N",
        help="trials that move a few knobs of the default (and priors) point before the model "
        "(default: trials/10, 4 to 10)",
    )
    p.add_argument(
        "--pareto",
        type=integer(0),
        metavar="N",
        help="the first N trials search the front's neighbourhood (Pareto local search; "
        "default: trials/2; 0: none)",
    )
    p.add_argument(
        "--climb",
        type=integer(0),
        metavar="N",
        help="the last N trials move one knob at a time from the best point (default: "
        "trials/6; 0: none)",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="keep the study: a journal file path, sqlite:///FILE, or postgresql://... "
        "(shared by many workers); default: in memory",
    )
    p.add_argument("--study", metavar="NAME", help="study name (resumes it if it exists)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="front and hypervolume vs trials against a random search of equal budget "
        "(runs that search too)",
    )
    return p


def worker_seed(seed: int, worker: int) -> int:
    """The sampler seed of local worker `worker` of `--jobs`: `seed + worker`, wrapped into
    the range samplers take."""
    return (seed + worker) % SEEDS


def _sockets(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--sockets must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
        raise UserError(f"--sockets needs distinct positive integers, got {text!r}")
    return values


def _load_space_file(path: str) -> Any:
    """JSON or YAML (by extension; YAML otherwise, which JSON is a subset of)."""
    import yaml

    text = read_text_file(path)
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{error.lineno}:{error.colno}: {error.msg}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise UserError(f"{where}: {getattr(error, 'problem', None) or 'bad YAML'}") from None


def _problem(args: argparse.Namespace, config) -> Any:
    from rdu_compiler.lowering.pipeline import RduPipeline
    from rdu_compiler.simulator.hardware import get_preset, list_presets
    from rdu_compiler.tools import tuner

    if args.hw not in list_presets():
        raise UserError(f"--hw: unknown preset {args.hw!r}; known: {', '.join(list_presets())}")
    sockets = _sockets(args.sockets)
    base = RduPipeline(sockets=sockets[0], hw=args.hw, hw_overrides=",".join(args.hw_override))
    preset = get_preset(base.hw).with_overrides(base.hw_overrides)
    if args.space:
        space, fixed = tuner.parse_space(_load_space_file(args.space), args.space)
    else:
        space, fixed = tuner.default_space(), {}
    if args.hardware_space is not None:
        if args.hardware_space:
            hardware, hardware_fixed = tuner.parse_space(
                _load_space_file(args.hardware_space), args.hardware_space, hardware=True
            )
        else:
            hardware, hardware_fixed = tuner.default_hardware_space(preset), {}
        space, fixed = space + hardware, {**fixed, **hardware_fixed}
    if len(sockets) > 1:
        space.append(tuner.Knob("sockets", "ordinal", values=tuple(sockets)))
    names = [k.name for k in space]
    twice = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(fixed)))
    if twice:
        raise UserError(f"knob {', '.join(twice)} is given twice (space files, --sockets)")
    if not space:
        raise UserError("the space has no knob to search")
    problem = tuner.Problem(
        model=args.model,
        batch=args.batch,
        context=args.context,
        layers=args.layers,
        base=base,
        space=tuple(space),
        objectives=tuple(tuner.parse_objectives(args.objectives, tuner.report_keys())),
    )
    if fixed:  # fixed knobs are part of the base pipeline
        problem = replace(problem, base=problem.pipeline(fixed))
    return problem


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    from rdu_compiler.frontend.builder import default_context
    from rdu_compiler.frontend.config import load_model_config
    from rdu_compiler.tools import tuner

    config = load_model_config(args.model, layers=args.layers)
    context = default_context(config) if args.context is None else args.context
    try:
        problem = _problem(args, config)
        phases = tuner.phases(args.trials, args.startup, args.climb, args.pareto)
        study_name = args.study or (
            f"{config.name}-{args.sockets.replace(',', '_')}s-b{args.batch}-c{context}"
        )
        evaluator = tuner.Evaluator(problem)
        default = evaluator.evaluate(problem.base)
        with _Progress(args.trials) as progress:
            study, ran = _optimize(args, problem, evaluator, study_name, phases, progress)
            baseline = None
            if args.plot:
                progress.phase = "random search"
                baseline = _random_baseline(problem, evaluator, args, phases, progress)
    except tuner.TuneError as error:
        raise UserError(str(error)) from None
    report = _report(args, config, context, problem, study, default)
    report["ran_here"] = ran
    if args.plot:
        _plot(args.plot, problem, study, baseline, default, report)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    return 0


def _optimize(args, problem, evaluator, study_name: str, phases, progress) -> Any:
    """Open or resume the study and run trials until it holds --trials: here with --jobs 1,
    else in --jobs worker processes sharing the storage (a temporary journal file when none
    is given)."""
    from rdu_compiler.tools import tuner

    if args.jobs == 1:
        storage = tuner.open_storage(args.storage)
        sampler = tuner.make_sampler(args.sampler, problem, args.seed, phases)
        study = tuner.open_study(problem, storage, study_name, sampler)
        progress.count(study)
        ran = tuner.work(study, problem, evaluator, args.trials, on_trial=progress.add)
        return study, ran
    with tempfile.TemporaryDirectory(prefix="rdu-tune-") as scratch:
        url = args.storage or os.path.join(scratch, "study.journal")
        storage = tuner.open_storage(url)
        sampler = tuner.make_sampler(args.sampler, problem, args.seed, phases)
        study = tuner.open_study(problem, storage, study_name, sampler)
        progress.count(study)
        remaining = max(0, args.trials - tuner.counted(study))
        shares = [remaining // args.jobs + (i < remaining % args.jobs) for i in range(args.jobs)]
        ran = _run_workers(url, study_name, problem, args, phases, shares, study, progress)
        if args.storage is None:  # the scratch journal goes away: keep the trials in memory
            kept = tuner.open_storage(None)
            optuna = _optuna()
            optuna.copy_study(from_study_name=study_name, from_storage=storage, to_storage=kept)
            study = optuna.load_study(study_name=study_name, storage=kept, sampler=sampler)
        return study, ran


def _optuna():
    import optuna

    return optuna


def _run_workers(url, study_name, problem, args, phases, shares, study, progress) -> int:
    """Worker processes (spawned: no storage connection crosses a fork), each running its
    share; progress is read from the storage meanwhile; a worker's error stops the rest.
    Returns the trials they ran."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(shares), mp_context=context) as pool:
        futures = [
            pool.submit(
                _worker,
                url,
                study_name,
                problem,
                args.sampler,
                worker_seed(args.seed, i),
                phases,
                args.trials,
                share,
            )
            for i, share in enumerate(shares)
            if share > 0
        ]
        try:
            while True:
                done, pending = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
                progress.count(study)
                if not pending or any(f.exception() for f in done):
                    break
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return sum(f.result() for f in futures)  # re-raises a worker's error here


def _worker(url, study_name, problem, sampler_name, seed, phases, total, share) -> int:
    """One worker process: load the study and run `share` trials of it."""
    from rdu_compiler.tools import tuner

    storage = tuner.open_storage(url)
    sampler = tuner.make_sampler(sampler_name, problem, seed, phases)
    study = _optuna().load_study(study_name=study_name, storage=storage, sampler=sampler)
    return tuner.work(study, problem, tuner.Evaluator(problem), total, share)


def _random_baseline(problem, evaluator, args, phases, progress) -> Any:
    """Random search over the same space with the same budget (in memory, this process)."""
    from rdu_compiler.tools import tuner

    sampler = tuner.make_sampler("random", problem, args.seed, phases)
    study = tuner.open_study(problem, tuner.open_storage(None), "random-search", sampler)
    progress.done = 0
    tuner.work(study, problem, evaluator, args.trials, on_trial=progress.add)
    return study


def _scale(problem, study, default) -> list[float]:
    """The hypervolume's units: the default's figures, or (default infeasible) the worst
    feasible figure of each objective."""
    from rdu_compiler.tools import tuner

    if default.objectives is not None:
        values = [default.objectives[o.name] for o in problem.objectives]
    else:
        feasible = [t.values for t in study.get_trials(deepcopy=False) if tuner.feasible(t)]
        values = [
            max(abs(v[i]) for v in feasible) if feasible else 1.0
            for i in range(len(problem.objectives))
        ]
    return [abs(v) if v else 1.0 for v in values]


def _report(args, config, context, problem, study, default) -> dict:
    from optuna.trial import TrialState

    from rdu_compiler.tools import tuner

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    infeasible = [t for t in trials if not tuner.feasible(t)]
    reasons = Counter(t.user_attrs.get("infeasible", "") for t in infeasible)
    scale = _scale(problem, study, default)
    history = tuner.hypervolume_history(trials, problem.objectives, scale)
    return {
        "model": config.name,
        "batch": args.batch,
        "context": context,
        "sockets": _sockets(args.sockets),
        "hardware": args.hw,
        "study": study.study_name,
        "sampler": args.sampler,
        "seed": args.seed,
        "objectives": [{"name": o.name, "direction": o.direction} for o in problem.objectives],
        "space": {k.name: k.describe() for k in problem.space},
        "trials": len(trials),
        "infeasible": len(infeasible),
        "infeasible_reasons": [{"reason": r, "trials": n} for r, n in reasons.most_common()],
        "default": {
            "pipeline": problem.base.spec(),
            "objectives": default.objectives,
            "infeasible": default.reason,
        },
        "front": [
            {
                "trial": t.number,
                "pipeline": t.user_attrs["pipeline"],
                "objectives": t.user_attrs["objectives"],
            }
            for t in tuner.front(study)
        ],
        "hypervolume": history[-1] if history else 0.0,
        "hypervolume_reference": "each objective in units of the default's; reference point 2",
    }


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4g}"


def _print_report(report: dict) -> None:
    names = [o["name"] for o in report["objectives"]]
    print(
        f"{report['model']}: {', '.join(map(str, report['sockets']))} socket(s), batch "
        f"{report['batch']}, context {report['context']}, {report['hardware']}; study "
        f"{report['study']}: {report['trials']} trials ({report['sampler']}), "
        f"{report['infeasible']} infeasible"
    )
    for reason in report["infeasible_reasons"][:3]:
        print(f"  infeasible x{reason['trials']}: {reason['reason']}")
    widths = [max(12, len(n)) for n in names]
    header = "  ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))
    default = report["default"]
    print(f"\n{'':8}{header}  pipeline")
    if default["objectives"] is None:
        print(f"{'default':8}{'infeasible':>{len(header)}}  {default['pipeline']}")
        print(f"{'':8}({default['infeasible']})")
    else:
        cells = "  ".join(
            f"{_number(default['objectives'][n]):>{w}}" for n, w in zip(names, widths, strict=True)
        )
        print(f"{'default':8}{cells}  {default['pipeline']}")
    print(
        f"Pareto front ({len(report['front'])} point(s), hypervolume {report['hypervolume']:.4f}):"
    )
    for point in report["front"]:
        cells = "  ".join(
            f"{_number(point['objectives'][n]):>{w}}" for n, w in zip(names, widths, strict=True)
        )
        print(f"{'#' + str(point['trial']):8}{cells}  {point['pipeline']}")


def _plot(path: str, problem, study, baseline, default, report: dict) -> None:
    """Left: the first two objectives of every feasible trial, tuner and random search, with
    their fronts and the default; right: hypervolume vs trials, tuner vs random search."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    from rdu_compiler.tools import tuner

    scale = _scale(problem, study, default)
    fig, (ax, hv) = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    names = [o.name for o in problem.objectives]
    for label, s, color in (
        (f"{report['sampler']}", study, "tab:blue"),
        ("random search", baseline, "tab:gray"),
    ):
        trials = s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        points = [t.values for t in trials if tuner.feasible(t)]
        if len(names) > 1 and points:
            ax.scatter(
                [p[0] for p in points],
                [p[1] for p in points],
                s=12,
                alpha=0.4,
                color=color,
                label=f"{label} trials",
            )
            best = sorted(t.values for t in tuner.front(s))
            ax.plot(
                [p[0] for p in best],
                [p[1] for p in best],
                "o-",
                color=color,
                drawstyle="steps-post",
                label=f"{label} front",
            )
        history = tuner.hypervolume_history(trials, problem.objectives, scale)
        hv.plot(range(1, len(history) + 1), history, color=color, label=label)
    if len(names) > 1 and default.objectives is not None:
        ax.scatter(
            [default.objectives[names[0]]],
            [default.objectives[names[1]]],
            marker="*",
            s=200,
            color="tab:red",
            label="default",
            zorder=5,
        )
    if len(names) > 1:
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_title(
            f"{report['model']}, {'/'.join(map(str, report['sockets']))} socket(s): Pareto front"
        )
        ax.legend(fontsize=8)
    else:
        ax.set_axis_off()
    hv.set_xlabel("trials")
    hv.set_ylabel("hypervolume (objectives in units of the default; reference 2)")
    hv.set_title("hypervolume vs trials")
    hv.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_atomically(path, buffer.getvalue())


class _Progress:
    """`trial i/n, k infeasible` on stderr, rewritten in place, only on a terminal."""

    def __init__(self, total: int):
        self.total, self.done, self.infeasible = total, 0, 0
        self.phase = "tuning"
        self.on = sys.stderr.isatty()
        self._shown = 0.0

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def add(self, trial) -> None:
        from rdu_compiler.tools import tuner

        self.done += 1
        self.infeasible += not tuner.feasible(trial)
        self._show()

    def count(self, study) -> None:
        """Progress read from the storage (worker processes run the trials)."""
        from optuna.trial import TrialState

        from rdu_compiler.tools import tuner

        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self.done = len(finished)
        self.infeasible = sum(not tuner.feasible(t) for t in finished)
        self._show()

    def _show(self) -> None:
        if not self.on or time.monotonic() - self._shown < 0.1:
            return
        self._shown = time.monotonic()
        width = 30
        filled = min(width, width * self.done // max(1, self.total))
        sys.stderr.write(
            f"\r\033[K{self.phase} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} trials, {self.infeasible} infeasible"
        )
        sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
