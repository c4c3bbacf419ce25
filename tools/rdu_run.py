"""`rdu-run MODEL`: run decode steps of a model.

The prompt's token ids are fed one per decode step (teacher forcing), then `--steps N` tokens
are generated greedily (like HF `max_new_tokens`: the last one is not fed back), so
`len(prompt) + N - 1` decode steps run, at positions 0, 1, ... Every batch entry gets the same
prompt for now (so all entries produce the same tokens).

Engines: `--engine sim` (the default) compiles the model with the default pipeline in process
(`lowering.pipeline.compile_program`: import, passes, lowering to a program) and runs the program
in the bundled simulator: without `--functional` it times one decode step with and without
kernel looping (`--no-kernel-looping`: without only) and prints them side by side with the
speedup (`--launch both`: for software- and hardware-orchestrated launch side by side); with
`--functional` it computes real numbers (tokens, logits). `--engine reference` is the llm-level
numpy semantics (the module from `frontend.builder`, sharded by `shard-tensor-parallel` when
`--sockets` > 1, handed in-process to `rdu_dialect.interpreter`, which runs every rank); it
refuses the options only the simulator has (`--no-kernel-looping`, `--functional`, `--launch`)
rather than ignoring them. A progress line is shown on stderr when it is a terminal.

`--json` prints `{"model", "engine", "sockets", "batch", "context", "tokens", ...}` with
`tokens` one list of generated ids per batch entry (null for timing runs, which compute no
numbers). Timing runs add `"launch"` and `"timing": {"looped": T, "unlooped": T, "speedup": x}`
(T with the keys of `TIMING_KEYS`; the speedup is kernel looping's); with `--launch both`,
`"launch": "both"`, `"timing"` with the software-launch figures (so the keys tools rely on stay)
and `"timing_by_launch": {"software": {...}, "hardware": {...}}`, each shaped like `"timing"`. `--logits-out FILE.npy` saves the last step's logits as
float32 `[batch, vocab]` (the bf16 values, exactly).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence

from rdu_compiler.tools.cli import (
    UserError,
    check_context,
    decode_loop,
    decode_steps,
    parse_prompt,
    print_generated,
    run_tool,
    write_atomically,
)

PROG = "rdu-run"
SIM_ONLY = "only the simulator engine (--engine sim) takes these options"
LAUNCHES = ("software", "hardware")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="preset name, HF config.json, or HF model folder")
    p.add_argument(
        "--engine",
        choices=("sim", "reference"),
        default="sim",
        help="sim: compile and simulate (default); reference: llm-level numpy semantics",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--weights", metavar="PATH", help="safetensors file or HF model folder (HF tensor names)"
    )
    source.add_argument("--seed", type=int, help="seeded random init (default: seed 0)")
    p.add_argument(
        "--prompt",
        default="1",
        metavar="IDS",
        help="comma-separated token ids fed one per step (default: 1)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=8,
        metavar="N",
        help="tokens to generate greedily after the prompt (default: 8)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="B",
        help="batch entries (all get the same prompt for now)",
    )
    p.add_argument(
        "--context",
        type=int,
        metavar="S",
        help="KV cache length (default: min(max positions, 4096))",
    )
    p.add_argument("--layers", type=int, metavar="N", help="use only the first N layers")
    p.add_argument(
        "--dtype",
        choices=("bf16", "f32"),
        default="bf16",
        help="data type of weights, activations and caches",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--logits-out", metavar="FILE.npy", help="save the last step's logits")
    p.add_argument(
        "--sockets",
        type=int,
        default=1,
        metavar="N",
        help="sockets (tensor parallel: 1, 2, 4, 8 or 16; default 1); the "
        "reference engine runs every rank",
    )
    sim = p.add_argument_group("simulator engine options")
    sim.add_argument(
        "--no-kernel-looping", action="store_true", help="compile without kernel looping"
    )
    sim.add_argument(
        "--functional",
        action="store_true",
        help="compute real numbers through the simulator instead of timing",
    )
    sim.add_argument(
        "--launch",
        choices=(*LAUNCHES, "both"),
        help="launch orchestration (default: software); both: time software- "
        "and hardware-orchestrated launch side by side (JSON: "
        '"timing_by_launch": {"software": ..., "hardware": ...} '
        'besides "timing", which holds the software figures)',
    )
    return p


def _refuse_sim_options(args: argparse.Namespace) -> None:
    used = [
        flag
        for flag, on in (
            ("--no-kernel-looping", args.no_kernel_looping),
            ("--functional", args.functional),
            (f"--launch {args.launch}", args.launch is not None),
        )
        if on
    ]
    if used:
        raise UserError(f"{', '.join(used)}: {SIM_ONLY}")


def _positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise UserError(f"{name} must be >= {minimum}, got {value}")


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.engine == "reference":
        _refuse_sim_options(args)
    for name, value in (
        ("--batch", args.batch),
        ("--context", args.context),
        ("--layers", args.layers),
        ("--sockets", args.sockets),
    ):
        _positive(name, value)
    _positive("--steps", args.steps, 0)

    from rdu_compiler.frontend.builder import default_context
    from rdu_compiler.frontend.config import load_model_config

    config = load_model_config(args.model, layers=args.layers)
    prompt = parse_prompt(args.prompt, config.vocab_size, config.name)
    context = default_context(config) if args.context is None else args.context
    check_context(context, config.max_position_embeddings)
    n_steps = decode_steps(prompt, args.steps)
    if context < n_steps:
        raise UserError(
            f"--context {context} is too small for a {len(prompt)}-token prompt and "
            f"{args.steps} generated tokens: {n_steps} decode steps need at least "
            f"{n_steps} cache rows"
        )
    report = {
        "model": config.name,
        "engine": args.engine,
        "sockets": args.sockets,
        "batch": args.batch,
        "context": context,
        "tokens": None,
        "prompt": prompt,
        "dtype": args.dtype,
    }
    if args.engine == "sim" and not args.functional:
        if args.logits_out:
            raise UserError(
                "--logits-out needs real numbers: add --functional (a timing run computes none)"
            )
        report.update(_timings(args, config, context))
        if args.json:
            print(json.dumps(report, allow_nan=False))
        else:
            _print_timing(report)
        return 0
    if args.launch == "both":
        raise UserError(
            "--launch both compares timings: drop --functional (real numbers do "
            "not depend on the launch mode)"
        )
    step, weights = (_sim_engine if args.engine == "sim" else _reference_engine)(
        args, config, context
    )
    with _Progress(n_steps) as progress:
        tokens, logits = decode_loop(progress.wrap(step), prompt, args.steps, args.batch)
    report.update(tokens=tokens, weights=weights.describe())
    if args.logits_out:
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(logits).astype(np.float32))
        write_atomically(args.logits_out, buffer.getvalue())
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{config.name}: {args.engine} engine, {weights.describe()}, batch {args.batch}, "
            f"context {context}, {args.dtype}, {args.sockets} socket(s)"
        )
        print(f"prompt: {', '.join(map(str, prompt))}")
        print_generated(tokens)
    return 0


def _reference_engine(args: argparse.Namespace, config, context: int):
    """The llm-level numpy semantics, every rank of the module sharded over ``--sockets``:
    ``(step, weights)``; the step keeps the KV caches."""
    from xdsl.context import Context

    from rdu_compiler.frontend.builder import build_decode_step
    from rdu_compiler.passes.shard_tensor_parallel import ShardTensorParallel
    from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine, ReferenceEngineError
    from rdu_compiler.simulator.weights import open_weights

    weights = open_weights(args.weights, args.seed)
    module = build_decode_step(config, batch=args.batch, context=context, dtype=args.dtype)
    ShardTensorParallel(sockets=args.sockets).apply(Context(), module)
    try:
        engine = ReferenceEngine(module, weights)
    except ReferenceEngineError as error:
        raise UserError(str(error)) from None
    caches = list(engine.new_caches())

    def step(tokens, positions):
        try:
            logits, next_tokens, *caches[:] = engine.step(tokens, positions, *caches)
        except ReferenceEngineError as error:
            raise UserError(str(error)) from None
        return logits, next_tokens

    return step, weights


def _compile(args: argparse.Namespace, config, context: int, looping: bool, launch: str):
    """The default pipeline, in process: import -> passes -> lowering -> program."""
    from rdu_compiler.frontend.builder import build_decode_step
    from rdu_compiler.lowering.pipeline import compile_program
    from rdu_compiler.simulator.program import ProgramError

    module = build_decode_step(config, batch=args.batch, context=context, dtype=args.dtype)
    try:
        return compile_program(module, sockets=args.sockets, kernel_looping=looping, launch=launch)
    except ProgramError as error:
        raise UserError(str(error)) from None


def _sim_engine(args: argparse.Namespace, config, context: int):
    """Real numbers through the simulator: ``(step, weights)``."""
    from rdu_compiler.simulator.functional import FunctionalError, FunctionalSimulator
    from rdu_compiler.simulator.weights import open_weights

    weights = open_weights(args.weights, args.seed)
    program = _compile(args, config, context, not args.no_kernel_looping, args.launch or "software")
    try:
        return FunctionalSimulator(program, weights).decode, weights
    except FunctionalError as error:
        raise UserError(str(error)) from None


TIMING_KEYS = (
    "ms_per_token",
    "tokens_per_s",
    "bandwidth_fraction_of_peak",
    "roofline_fraction",
    "launches_per_token",
    "launch_and_sync_ms_per_token",
    "roofline_ms",
    "memory_roofline_ms",
    "compute_roofline_ms",
    "time_breakdown",
)


def _timings(args: argparse.Namespace, config, context: int) -> dict:
    """The report's timing keys: ``timing`` for the launch mode asked for (software for
    ``--launch both``), and with ``--launch both`` also ``timing_by_launch``, one such
    ``timing`` per launch mode."""
    launches = LAUNCHES if args.launch == "both" else (args.launch or "software",)
    variants = ("unlooped",) if args.no_kernel_looping else ("looped", "unlooped")
    by_launch = {}
    with _Progress(2 * len(variants) * len(launches)) as progress:
        for launch in launches:
            by_launch[launch], roofline = _timing(args, config, context, launch, variants, progress)
    report = {"launch": args.launch or "software", "roofline_ms_per_token": roofline}
    report["timing"] = by_launch[launches[0]]
    if args.launch == "both":
        report["timing_by_launch"] = by_launch
    return report


def _timing(
    args: argparse.Namespace,
    config,
    context: int,
    launch: str,
    variants: Sequence[str],
    progress: _Progress,
) -> tuple[dict, float]:
    """``{"looped", "unlooped", "speedup"}`` of one launch mode (a variant not in `variants`
    and the speedup then null), and the roofline ms/token (the same for every variant)."""
    from rdu_compiler.simulator.hardware import get_preset
    from rdu_compiler.simulator.report import summarize
    from rdu_compiler.simulator.timing import SimulationError, simulate

    timing: dict = {"looped": None, "unlooped": None, "speedup": None}
    for variant in variants:
        what = f"{config.name} ({variant}, {launch} launch)"
        progress.show(f"compiling {what}")
        program = _compile(args, config, context, variant == "looped", launch)
        progress.show(f"simulating {what}")
        preset = get_preset(program.hardware)
        try:
            summary = summarize(program, preset, simulate(program, preset))
        except SimulationError as error:
            raise UserError(f"{what}: {error}") from None
        timing[variant] = {key: summary[key] for key in TIMING_KEYS}
    if timing["looped"] is not None and timing["looped"]["ms_per_token"] > 0:
        timing["speedup"] = timing["unlooped"]["ms_per_token"] / timing["looped"]["ms_per_token"]
    return timing, summary["roofline_ms"]


def _print_timing(report: dict) -> None:
    by_launch = report.get("timing_by_launch") or {report["launch"]: report["timing"]}
    columns = [
        (launch, variant, t[variant])
        for launch, t in by_launch.items()
        for variant in ("looped", "unlooped")
        if t[variant] is not None
    ]
    modes = " and ".join(by_launch)
    print(
        f"{report['model']}: sim engine (timing), {report['sockets']} socket(s), "
        f"{modes} launch, batch {report['batch']}, context {report['context']}, "
        f"roofline {report['roofline_ms_per_token']:.3f} ms/token"
    )
    rows = (
        ("ms/token", "ms_per_token", "{:.3f}"),
        ("tokens/s", "tokens_per_s", "{:.1f}"),
        ("% of HBM peak", "bandwidth_fraction_of_peak", "{:.1%}"),
        ("% of roofline", "roofline_fraction", "{:.1%}"),
        ("launches/token", "launches_per_token", "{}"),
        ("launch+sync ms/token", "launch_and_sync_ms_per_token", "{:.3f}"),
    )
    if len(by_launch) > 1:
        width = 14 * len(columns) // len(by_launch)
        print(f"  {'':<22}" + "".join(f"{launch:>{width}}" for launch in by_launch))
    print(f"  {'':<22}" + "".join(f"{variant:>14}" for _, variant, _ in columns))
    for name, key, fmt in rows:
        print(
            f"  {name:<22}"
            + "".join(f"{'n/a' if t[key] is None else fmt.format(t[key]):>14}" for *_, t in columns)
        )
    speedups = [
        (launch, t["speedup"]) for launch, t in by_launch.items() if t["speedup"] is not None
    ]
    if speedups:
        print(
            "  kernel looping speedup: "
            + ", ".join(
                f"{x:.2f}x" + (f" ({launch} launch)" if len(by_launch) > 1 else "")
                for launch, x in speedups
            )
        )


class _Progress:
    """``step i/n`` (or a phase) on stderr, rewritten in place; only when stderr is a terminal,
    so logs and pipes stay clean."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.on = sys.stderr.isatty()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def show(self, text: str) -> None:
        if self.on:
            sys.stderr.write(f"\r\033[K{text} ...")
            sys.stderr.flush()

    def wrap(self, step):
        def counted(tokens, positions):
            self.done += 1
            self.show(f"decode step {self.done}/{self.total}")
            return step(tokens, positions)

        return counted


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
