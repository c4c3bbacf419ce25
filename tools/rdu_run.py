"""`rdu-run MODEL`: run decode steps of a model, or time them.

MODEL is a preset name, an HF config.json or model folder, or an `.mlir` decode step at any
stage from `llm` down (`tools.ir_file`: llm IR as rdu-import prints it, outlined, looped or
sharded), which fixes batch, context, dtype and sockets; a looped file is timed looped only.

Vocabulary (every table, JSON key and chart): a *step* is one decode step of every batch entry;
*TPOT* (time per output token of one sequence) is the step time; *tokens/s* counts every
sequence (batch / step time); *per token* means per step / batch. The JSON keys named
`..._per_token` in `timing` (`ms_per_token`, `launches_per_token`,
`launch_and_sync_ms_per_token`) are per step (each sequence gets one token per step): they keep
their names, which tools rely on.

Timing (`--engine sim`, the default, without `--functional`): the model is compiled in process
with the default pipeline (`lowering.pipeline.compile_program`) and ONE steady-state decode step
at the full `--context` (every cache row attended) is simulated, with and without kernel
looping side by side (`--no-kernel-looping`: without only; `--launch both`: software- and
hardware-orchestrated launch side by side), with a per-kernel and a per-op breakdown. No numbers
are computed, so weights, prompt and `--steps` do not apply (refused). `--generate N` times N
decode steps instead, the KV cache growing from the prompt's length. Lists of `--batch`,
`--context`, `--sockets` sweep their product (one row per case and variant; `--csv`, `--json`,
`--plot`). `--pipeline 'rdu-pipeline{...}'` compiles with those options (a point of
`rdu-tune`'s front, replayed: its sockets, launch, looping and hardware become the run's).

Numbers (`--functional`, or `--engine reference`): the prompt (token ids, or text with a
tokenizer) is fed one token per step (teacher forcing), then `--steps N` tokens are generated
greedily (like HF `max_new_tokens`: the last one is not fed back), at positions 0, 1, ...;
every batch entry gets the same prompt. Weights: `--weights PATH`, else the model folder's
checkpoint, else `--seed N` random init. `--engine reference` is the llm-level numpy semantics
(sharded by `shard-tensor-parallel` when `--sockets` > 1, every rank run); it refuses the
options only the simulator has.

`--json` prints `{"model", "engine", "sockets", "batch", "context", "tokens", ...}` (`tokens`:
one list of generated ids per batch entry; null for timing runs, which compute no numbers).
Timing runs add `"launch"`, `"roofline_ms_per_token"` (per step), `"timing": {"looped": T,
"unlooped": T, "speedup": x}` (T with the keys of `TIMING_KEYS`), and `"breakdown"`
(per variant: `kernels` and `ops`, see `simulator/breakdown.py`); with `--launch both`,
`"launch": "both"`, `"timing"` with the software figures and `"timing_by_launch":
{"software": {...}, "hardware": {...}}`; with `--gpu NODE[,NODE]`, `"gpu": {NODE: {...}}`, the
same step on a GPU node (`tools/gpu_baseline.py`, docs/gpu_baseline.md). A sweep prints a JSON
list of rows instead (`tools/timing_runs.py`).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

from rdu_compiler import __version__
from rdu_compiler.tools.cli import (
    ArgumentParser,
    Progress,
    UserError,
    check_context,
    decode_loop,
    decode_steps,
    integer,
    integers,
    print_generated,
    run_tool,
    write_atomically,
)
from rdu_compiler.tools.timing_runs import LAUNCHES, VARIANTS

PROG = "rdu-run"
SIM_ONLY = "only the simulator engine (--engine sim) takes these options"

EXAMPLES = """\
what the timing means:
  a timing run simulates ONE steady-state decode step at the full --context (every KV-cache
  row attended), looped and unlooped; TPOT (time per output token of a sequence) is that step's
  time, tokens/s = batch / step time, "per token" = per step / batch. --generate N times N
  steps with the cache growing from the prompt's length instead.

examples:
  rdu-run llama-3.1-8b                                   # one step timed, looped vs unlooped
  rdu-run llama-3.1-70b --sockets 8,16 --batch 1,8,32 --csv sweep.csv --plot sweep.png
  rdu-run llama-3.1-8b --trace step.json --plot layers.png  # Perfetto trace, per-layer chart
  rdu-run llama-3.1-8b --hw-override hbm_bandwidth=2.4e12 --launch both
  rdu-run llama-3.1-8b --generate 8 --prompt 1,2,3,4     # TPOT p50/p99 as the cache grows
  rdu-run llama-3.1-8b --sockets 8 --gpu dgx-h100,dgx-a100  # the step on GPU nodes, beside
  rdu-run tiny-mistral --functional --prompt 5,6,7 --steps 8   # real numbers
  rdu-run ./my-model --functional --prompt 'Hello world'  # folder: checkpoint + tokenizer.json
  rdu-run --list-models; rdu-run --print-hardware"""


def _gpu_nodes(text: str) -> list[str]:
    from rdu_compiler.tools.gpu_baseline import parse_gpu_nodes

    return parse_gpu_nodes(text)


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description=(__doc__ or "").split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="preset name (--list-models), HF config.json, HF model folder, or an .mlir "
        "decode step (llm IR as rdu-import prints it, or after outline-kernels, "
        "kernel-looping, sharding)",
    )
    p.add_argument("--version", action="version", version=f"{PROG} (rdu-compiler {__version__})")
    p.add_argument("--list-models", action="store_true", help="list the bundled presets and exit")
    p.add_argument(
        "--engine",
        choices=("sim", "reference"),
        default="sim",
        help="sim: compile and simulate (default); reference: llm-level numpy semantics",
    )
    shape = p.add_argument_group("shape of the step (lists sweep their product in timing runs)")
    shape.add_argument(
        "--batch", type=integers(1), default=[1], metavar="B[,B...]", help="batch entries"
    )
    shape.add_argument(
        "--context",
        type=integers(1),
        metavar="S[,S...]",
        help="KV-cache length (default: min(max positions, 4096))",
    )
    shape.add_argument(
        "--sockets",
        type=integers(1),
        default=[1],
        metavar="N[,N...]",
        help="sockets, tensor parallel: 1, 2, 4, 8 or 16 (default 1)",
    )
    shape.add_argument("--layers", type=integer(1), metavar="N", help="use only the first N layers")
    shape.add_argument(
        "--dtype",
        choices=("bf16", "f32"),
        default="bf16",
        help="data type of weights, activations and caches",
    )
    numbers = p.add_argument_group("numbers (--functional, --engine reference)")
    source = numbers.add_mutually_exclusive_group()
    source.add_argument(
        "--weights",
        metavar="PATH",
        help="safetensors file or HF model folder (default: MODEL's checkpoint if it is a "
        "folder holding one, else --seed 0)",
    )
    source.add_argument("--seed", type=integer(0), help="seeded random init")
    numbers.add_argument(
        "--prompt",
        metavar="IDS|TEXT",
        help="comma-separated token ids, or text with a tokenizer (default: 1)",
    )
    numbers.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="tokenizer.json (default: MODEL folder's); text prompts, decoded output",
    )
    numbers.add_argument(
        "--steps", type=integer(0), metavar="N", help="tokens to generate greedily (default: 8)"
    )
    numbers.add_argument("--logits-out", metavar="FILE.npy", help="save the last step's logits")
    sim = p.add_argument_group("simulator engine")
    sim.add_argument(
        "--pipeline",
        metavar="'rdu-pipeline{...}'",
        help="compile with these pipeline options (as rdu-tune prints them: its sockets, "
        "launch, looping and hardware become this run's)",
    )
    sim.add_argument(
        "--no-kernel-looping", action="store_true", help="compile without kernel looping only"
    )
    sim.add_argument(
        "--functional", action="store_true", help="compute real numbers instead of timing"
    )
    sim.add_argument(
        "--launch",
        choices=(*LAUNCHES, "both"),
        help="launch orchestration (default: software); both: side by side",
    )
    sim.add_argument(
        "--generate",
        type=integer(1),
        metavar="N",
        help="time N decode steps as the KV cache grows from the prompt's length "
        "(TPOT p50/p99, total); compiles one program per cache length",
    )
    hw = p.add_argument_group("hardware")
    hw.add_argument(
        "--hardware", default="sn40l", metavar="NAME|FILE", help="preset or hardware file"
    )
    hw.add_argument(
        "--hw-override",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="change hardware figures (names: --print-hardware)",
    )
    hw.add_argument(
        "--print-hardware",
        action="store_true",
        help="print the hardware figures with their provenance and exit (--json: a hardware "
        "file for --hardware)",
    )
    gpu = p.add_argument_group("GPU baseline (one timing case)")
    gpu.add_argument(
        "--gpu",
        type=_gpu_nodes,
        metavar="NODE[,NODE]",
        help="time the same step on a GPU node beside the RDU: dgx-h100, dgx-a100",
    )
    gpu.add_argument(
        "--gpu-tp",
        type=integer(1),
        metavar="N",
        help="GPUs the step is tensor-parallel over (default: all of the node's)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="machine-readable output")
    out.add_argument("--csv", metavar="FILE", help="timing rows as CSV (one per case and variant)")
    out.add_argument(
        "--plot",
        metavar="FILE.png",
        help="chart: a sweep's achieved vs roofline; one run's per-layer times",
    )
    out.add_argument("--trace", metavar="FILE", help="Chrome / Perfetto trace of the timed step")
    return p


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_models:
        print(_list_models())
        return 0
    if args.engine == "reference" and args.pipeline is not None:
        raise UserError(f"--pipeline: {SIM_ONLY}")
    args.compile_options = _apply_pipeline(args)
    preset = _hardware(args)
    if args.print_hardware:
        from rdu_compiler.simulator.hardware import describe_hardware, encode_hardware

        if args.json:
            sys.stdout.write(encode_hardware(preset).decode())
        else:
            print(describe_hardware(preset))
        return 0
    if args.model is None:
        raise UserError("give a MODEL (--list-models shows the presets)")
    timing = args.engine == "sim" and not args.functional
    _check_options(args, timing)

    from rdu_compiler.frontend.builder import default_context

    config = _model(args)
    contexts = args.context or [default_context(config)]
    for context in contexts:
        check_context(context, config.max_position_embeddings)
    if timing:
        return _timing_run(args, config, contexts, preset)
    return _numbers_run(args, config, contexts[0])


def _model(args: argparse.Namespace):
    """MODEL: a frontend ModelConfig (preset, HF config) or an `.mlir` decode step
    (`tools.ir_file.IrModel`, which fixes batch, context, dtype and sockets in `args`)."""
    from rdu_compiler.tools.cli import is_ir_file

    if not is_ir_file(args.model):
        from rdu_compiler.frontend.config import load_model_config

        return load_model_config(args.model, layers=args.layers)
    from rdu_compiler.tools.ir_file import load_ir_model

    model = load_ir_model(args.model)
    model.fix_options(args)
    if args.no_kernel_looping and model.stage == "looped":
        raise UserError(f"--no-kernel-looping: {args.model} is kernel-looped already")
    return model


def _apply_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """--pipeline: rdu-tune's options replayed. Its sockets, launch, looping and hardware
    become the run's (a flag that contradicts them is refused); returns the rest (fusion, the
    lowering's knobs, kv-seq-split, moe) for `compile_program`."""
    if args.pipeline is None:
        return {}
    from rdu_compiler.lowering.pipeline import RduPipeline

    pipeline = RduPipeline.parse(args.pipeline)
    contradicting = [
        flag
        for flag, given in (
            ("--sockets", args.sockets not in ([1], [pipeline.sockets])),
            ("--launch", args.launch not in (None, pipeline.launch)),
            ("--hardware", args.hardware not in ("sn40l", pipeline.hw)),
            ("--hw-override", bool(args.hw_override)),
        )
        if given
    ]
    if contradicting:
        raise UserError(f"{', '.join(contradicting)}: --pipeline sets these already")
    args.sockets, args.launch, args.hardware = [pipeline.sockets], pipeline.launch, pipeline.hw
    args.hw_override = [pipeline.hw_overrides] if pipeline.hw_overrides else []
    args.no_kernel_looping = args.no_kernel_looping or not pipeline.kernel_looping
    return {
        "fusion": pipeline.fusion,
        "mapping": pipeline.mapping(),
        "kv_seq_split": pipeline.kv_seq_split,
        "moe": pipeline.moe,
        "single_launch": pipeline.single_launch,
    }


def _hardware(args: argparse.Namespace):
    from rdu_compiler.simulator.hardware import load_hardware

    preset = load_hardware(args.hardware)
    return preset.with_overrides(",".join(args.hw_override)) if args.hw_override else preset


def _list_models() -> str:
    from rdu_compiler.frontend.config import list_presets, load_model_config

    lines = [
        f"{'model':<18} {'architecture':<22} {'layers':>6} {'params':>8} {'max positions':>14}"
    ]
    for name in list_presets():
        c = load_model_config(name)
        params = c.num_parameters
        size = f"{params / 1e9:.1f}B" if params >= 1e8 else f"{params / 1e3:.0f}k"
        lines.append(
            f"{name:<18} {c.architecture:<22} {c.num_layers:>6} {size:>8} "
            f"{c.max_position_embeddings:>14}"
        )
    return "\n".join(lines)


def _check_options(args: argparse.Namespace, timing: bool) -> None:
    """Refuse what the chosen mode would ignore, with the way to use it."""
    if args.gpu_tp is not None and args.gpu is None:
        raise UserError("--gpu-tp: give --gpu NODE too")
    if args.engine == "reference":
        used = _given(
            ("--no-kernel-looping", args.no_kernel_looping),
            ("--functional", args.functional),
            (f"--launch {args.launch}", args.launch is not None),
            ("--generate", args.generate is not None),
            ("--gpu", args.gpu is not None),
            ("--hardware", args.hardware != "sn40l"),
            ("--hw-override", bool(args.hw_override)),
        )
        if used:
            raise UserError(f"{', '.join(used)}: {SIM_ONLY}")
    sweep = len(args.batch) * len(args.context or [0]) * len(args.sockets) > 1
    if timing:
        generating = args.generate is not None
        if args.logits_out:
            raise UserError(
                "--logits-out needs real numbers: add --functional (a timing run computes none)"
            )
        ignored = _given(
            ("--weights", args.weights is not None),
            ("--seed", args.seed is not None),
            ("--steps", args.steps is not None),
            ("--prompt", args.prompt is not None and not generating),
            ("--tokenizer", args.tokenizer is not None and not generating),
        )
        if ignored:
            hint = " (--generate N times N generated tokens)" if "--steps" in ignored else ""
            raise UserError(
                f"{', '.join(ignored)}: a timing run computes no numbers, so these do not "
                f"apply; add --functional (or --engine reference) to run them{hint}"
            )
        one_case = _given(
            ("--trace", args.trace is not None),
            ("--generate", generating),
            ("--gpu", args.gpu is not None),
        )
        if sweep and one_case:
            raise UserError(
                f"{one_case[0]} times one case: give one --batch, --context and --sockets "
                "(lists make a sweep)"
            )
        if generating and args.gpu is not None:
            raise UserError("--gpu times one steady-state step: drop --generate")
        return
    if args.launch == "both":
        raise UserError(
            "--launch both compares timings: drop --functional (real numbers do "
            "not depend on the launch mode)"
        )
    timing_only = _given(
        ("--gpu", args.gpu is not None),
        ("--generate", args.generate is not None),
        ("--trace", args.trace is not None),
        ("--plot", args.plot is not None),
        ("--csv", args.csv is not None),
        ("--hardware", args.hardware != "sn40l"),
        ("--hw-override", bool(args.hw_override)),
    )
    if timing_only:
        raise UserError(
            f"{', '.join(timing_only)}: only timing runs take these (drop --functional)"
        )
    if sweep:
        raise UserError(
            "lists of --batch, --context or --sockets sweep timing runs: a run that computes "
            "numbers takes one value of each"
        )


def _given(*options: tuple[str, bool]) -> list[str]:
    """The flags of ``(flag, given)`` pairs that were given."""
    return [flag for flag, on in options if on]


# -- runs that compute numbers ---------------------------------------------------------------


def _numbers_run(args: argparse.Namespace, config, context: int) -> int:
    from rdu_compiler.tools.model_inputs import open_model_weights, open_tokenizer, read_prompt

    batch, sockets = args.batch[0], args.sockets[0]
    steps = 8 if args.steps is None else args.steps
    tokenizer = open_tokenizer(args.model, args.tokenizer)
    prompt = read_prompt(args.prompt or "1", tokenizer, config.vocab_size, config.name)
    n_steps = decode_steps(prompt, steps)
    if context < n_steps:
        raise UserError(
            f"--context {context} is too small for a {len(prompt)}-token prompt and "
            f"{steps} generated tokens: {n_steps} decode steps need at least "
            f"{n_steps} cache rows"
        )
    weights = open_model_weights(args.model, args.weights, args.seed, config)
    engine = _sim_engine if args.engine == "sim" else _reference_engine
    step = engine(args, config, context, weights)
    with Progress(n_steps) as progress:
        tokens, logits = decode_loop(progress.wrap(step), prompt, steps, batch)
    report: dict[str, Any] = {
        "model": config.name,
        "engine": args.engine,
        "sockets": sockets,
        "batch": batch,
        "context": context,
        "tokens": tokens,
        "prompt": prompt,
        "dtype": args.dtype,
        "weights": weights.describe(),
    }
    if tokenizer is not None:
        report.update(tokenizer=tokenizer.path, text=[tokenizer.decode(row) for row in tokens])
    if args.logits_out:
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(logits).astype(np.float32))
        write_atomically(args.logits_out, buffer.getvalue())
    if args.json:
        print(json.dumps(report, allow_nan=False))
        return 0
    print(
        f"{config.name}: {args.engine} engine, {weights.describe()}, batch {batch}, "
        f"context {context}, {args.dtype}, {sockets} socket(s)"
    )
    print(f"prompt: {', '.join(map(str, prompt))}")
    print_generated(tokens)
    for b, text in enumerate(report.get("text", ())):
        print(f"{'text' if len(tokens) == 1 else f'text {b}'}: {text!s}")
    return 0


def _reference_engine(args: argparse.Namespace, config, context: int, weights):
    """The llm-level numpy semantics, every rank of the module sharded over ``--sockets``;
    the returned step keeps the KV caches."""
    from xdsl.context import Context

    from rdu_compiler.passes.shard_tensor_parallel import ShardTensorParallel
    from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine, ReferenceEngineError
    from rdu_compiler.tools.ir_file import decode_step_module

    module = decode_step_module(config, batch=args.batch[0], context=context, dtype=args.dtype)
    ShardTensorParallel(sockets=args.sockets[0]).apply(Context(), module)
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

    return step


def _sim_engine(args: argparse.Namespace, config, context: int, weights):
    """Real numbers through the simulator's functional mode."""
    from rdu_compiler.simulator.functional import FunctionalError, FunctionalSimulator
    from rdu_compiler.simulator.hardware import get_preset
    from rdu_compiler.tools.timing_runs import Case, Timer

    case = Case(
        args.sockets[0],
        args.batch[0],
        context,
        args.launch or "software",
        "unlooped" if args.no_kernel_looping else "looped",
    )
    program = Timer(config, args.dtype, get_preset("sn40l"), args.compile_options).compile(case)
    try:
        return FunctionalSimulator(program, weights).decode
    except FunctionalError as error:
        raise UserError(str(error)) from None


# -- timing runs -------------------------------------------------------------------------------

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


def _timing_run(args: argparse.Namespace, config, contexts: list[int], preset) -> int:
    from rdu_compiler.tools import timing_runs as T

    launches = LAUNCHES if args.launch == "both" else (args.launch or "software",)
    variants = ("unlooped",) if args.no_kernel_looping else VARIANTS
    if getattr(config, "stage", None) == "looped":  # an .mlir MODEL looped already
        variants = ("looped",)
    sweep = len(args.batch) * len(contexts) * len(args.sockets) > 1
    timer = T.Timer(config, args.dtype, preset, args.compile_options)
    if args.generate is not None:
        return _generation_run(args, config, contexts[0], timer, launches, variants)
    todo = T.cases(args.sockets, args.batch, contexts, launches, variants)
    results = list(T.run_cases(timer, todo, config.name))
    if sweep:
        rows = [T.row(config.name, r) for r in results]
        if args.csv:
            write_atomically(args.csv, T.to_csv(rows))
        if args.plot:
            from rdu_compiler.simulator.plots import plot_sweep

            write_atomically(args.plot, plot_sweep(rows))
        print(json.dumps(rows, allow_nan=False) if args.json else T.format_rows(rows))
        return 0
    report = _single_report(args, config, results)
    if args.gpu:
        report["gpu"] = _gpu_baseline(args, config, report)
    if args.csv:
        write_atomically(args.csv, T.to_csv([T.row(config.name, r) for r in results]))
    if args.trace:
        write_atomically(args.trace, json.dumps(_merged_trace(results), allow_nan=False))
    if args.plot:
        from rdu_compiler.simulator.breakdown import trip_times
        from rdu_compiler.simulator.plots import plot_trips

        first = [r for r in results if r.case.launch == launches[0]]
        trips = {r.case.looping: trip_times(r.program, r.timing) for r in first}
        title = (
            f"{config.name}: {first[0].case.sockets} socket(s), batch {first[0].case.batch}, "
            f"context {first[0].case.context}, {launches[0]} launch: one decode step"
        )
        write_atomically(args.plot, plot_trips(trips, title))
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        _print_timing(report)
    return 0


def _single_report(args: argparse.Namespace, config, results) -> dict[str, Any]:
    """The JSON report of one case: ``timing`` (per launch mode with ``--launch both``) and the
    per-kernel / per-op ``breakdown`` of each variant (first launch mode)."""
    from rdu_compiler.simulator.breakdown import kernel_breakdown, op_breakdown

    case = results[0].case
    by_launch: dict[str, dict[str, Any]] = {}
    for r in results:
        timing = by_launch.setdefault(
            r.case.launch, dict.fromkeys(("looped", "unlooped", "speedup"))
        )
        timing[r.case.looping] = {key: r.summary[key] for key in TIMING_KEYS}
    for timing in by_launch.values():
        if None not in (timing["looped"], timing["unlooped"]) and (
            timing["looped"]["ms_per_token"] > 0
        ):
            timing["speedup"] = (
                timing["unlooped"]["ms_per_token"] / timing["looped"]["ms_per_token"]
            )
    first = [r for r in results if r.case.launch == results[0].case.launch]
    report: dict[str, Any] = {
        "model": config.name,
        "engine": "sim",
        "sockets": case.sockets,
        "batch": case.batch,
        "context": case.context,
        "tokens": None,
        "dtype": args.dtype,
        "hardware": results[0].preset.name,
        "launch": args.launch or "software",
        "roofline_ms_per_token": results[0].summary["roofline_ms"],
        "timing": by_launch[case.launch],
        "breakdown": {
            r.case.looping: {
                "memory_roofline_ms": r.summary["memory_roofline_ms"],
                "time_breakdown": r.summary["time_breakdown"],
                "kernels": kernel_breakdown(r.program, r.timing),
                "ops": op_breakdown(r.program, r.timing),
            }
            for r in first
        },
    }
    if args.launch == "both":
        report["timing_by_launch"] = by_launch
    if results[0].summary["overrides"]:
        report["overrides"] = results[0].summary["overrides"]
    return report


def _gpu_baseline(args: argparse.Namespace, config, report: dict[str, Any]) -> dict[str, Any]:
    """``--gpu``: each node's figures for the step just timed, against the RDU's looped step
    (unlooped when only that was timed)."""
    from rdu_compiler.simulator.gpu_node import get_gpu_node
    from rdu_compiler.tools.gpu_baseline import decode_workload, gpu_figures

    variant = "looped" if report["timing"]["looped"] is not None else "unlooped"
    rdu = {
        "variant": variant,
        "sockets": report["sockets"],
        "ms_per_token": report["timing"][variant]["ms_per_token"],
    }
    workloads: dict[int, Any] = {}
    figures = {}
    for name in args.gpu:
        node = get_gpu_node(name)
        tp = args.gpu_tp or node.gpus
        if tp > node.gpus:
            raise UserError(f"--gpu-tp {tp}: {name} has {node.gpus} GPUs")
        if tp not in workloads:
            workloads[tp] = decode_workload(
                config,
                batch=report["batch"],
                context=report["context"],
                dtype=args.dtype,
                tensor_parallel=tp,
            )
        figures[name] = gpu_figures(name, workloads[tp], rdu)
    return figures


def _merged_trace(results) -> dict[str, Any]:
    """One trace of every timed variant, each its own process (``looped, software launch``,
    ...), so Perfetto shows them one above the other on the same time axis."""
    from rdu_compiler.simulator.report import chrome_trace

    events: list[dict[str, Any]] = []
    ids = 0  # async span ids are global in the trace format: each variant's shifted past the last
    for pid, r in enumerate(results, 1):
        first_id = ids
        for event in chrome_trace(r.program, r.preset, r.timing)["traceEvents"]:
            event = {**event, "pid": pid}
            if "id" in event:
                event["id"] += first_id
                ids = max(ids, event["id"])
            if event["name"] == "process_name":
                event["args"] = {
                    "name": f"{r.case.looping}, {r.case.launch} launch: {event['args']['name']}"
                }
            events.append(event)
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def _generation_run(args, config, context: int, timer, launches, variants) -> int:
    from rdu_compiler.tools import timing_runs as T
    from rdu_compiler.tools.model_inputs import open_tokenizer, read_prompt

    tokenizer = open_tokenizer(args.model, args.tokenizer)
    prompt = read_prompt(args.prompt or "1", tokenizer, config.vocab_size, config.name)
    if len(prompt) + args.generate > config.max_position_embeddings:
        raise UserError(
            f"a {len(prompt)}-token prompt and --generate {args.generate} need "
            f"{len(prompt) + args.generate} positions; {config.name} has "
            f"{config.max_position_embeddings}"
        )
    runs = {}
    for launch in launches:
        for variant in variants:
            base = T.Case(args.sockets[0], args.batch[0], context, launch, variant)
            runs[f"{variant}, {launch} launch"] = T.generation(
                timer, base, len(prompt), args.generate, f"{config.name} {variant} {launch}"
            )
    report = {
        "model": config.name,
        "engine": "sim",
        "sockets": args.sockets[0],
        "batch": args.batch[0],
        "context": len(prompt) + args.generate,  # the KV length of the last step timed
        "tokens": None,
        "prompt_tokens": len(prompt),
        "generate": args.generate,
        "generation": runs,
    }
    if args.json:
        print(json.dumps(report, allow_nan=False))
        return 0
    print(
        f"{config.name}: sim engine (timing), {args.generate} decode steps after a "
        f"{len(prompt)}-token prompt (KV cache {len(prompt) + 1} to "
        f"{len(prompt) + args.generate} rows), batch {args.batch[0]}, "
        f"{args.sockets[0]} socket(s)"
    )
    print(f"  {'':<28}{'TPOT p50 ms':>12}{'TPOT p99 ms':>12}{'total ms':>10}{'tokens/s':>10}")
    for name, g in runs.items():
        print(
            f"  {name:<28}{g['tpot_p50_ms']:>12.3f}{g['tpot_p99_ms']:>12.3f}"
            f"{g['total_ms']:>10.2f}{g['tokens_per_s']:>10.1f}"
        )
    return 0


def _print_timing(report: dict) -> None:
    by_launch = report.get("timing_by_launch") or {report["launch"]: report["timing"]}
    columns = [
        (launch, variant, t[variant])
        for launch, t in by_launch.items()
        for variant in VARIANTS
        if t[variant] is not None
    ]
    modes = " and ".join(by_launch)
    print(
        f"{report['model']}: sim engine (timing: one decode step at full context), "
        f"{report['sockets']} socket(s), {modes} launch, batch {report['batch']}, "
        f"context {report['context']}, roofline {report['roofline_ms_per_token']:.3f} ms/step"
    )
    rows = (
        ("TPOT ms (step time)", "ms_per_token", "{:.3f}"),
        ("tokens/s (all seqs)", "tokens_per_s", "{:.1f}"),
        ("% of HBM peak", "bandwidth_fraction_of_peak", "{:.1%}"),
        ("% of roofline", "roofline_fraction", "{:.1%}"),
        ("launches/step", "launches_per_token", "{}"),
        ("launch+sync ms/step", "launch_and_sync_ms_per_token", "{:.3f}"),
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
    if "gpu" in report:
        from rdu_compiler.tools.gpu_baseline import format_gpu

        print(format_gpu(report["gpu"]))
    _print_breakdown(report["breakdown"])


def _print_breakdown(breakdown: dict[str, dict[str, list]]) -> None:
    """Per kernel and per op, the variants side by side: time and what bounds it."""
    variants = list(breakdown)
    print("\n  time above the memory roofline, by cause (ms/step; simulator/report.py)")
    print(f"  {'':<28}" + "".join(f"{v:>12}" for v in variants))
    print(
        f"  {'memory roofline':<28}"
        + "".join(f"{breakdown[v]['memory_roofline_ms']:>12.4g}" for v in variants)
    )
    for cause in breakdown[variants[0]]["time_breakdown"]:
        print(
            f"  + {cause:<26}"
            + "".join(f"{breakdown[v]['time_breakdown'][cause]:>12.4g}" for v in variants)
        )
    print(
        "\n  per kernel, calls summed (total = memory + compute + latency: launch, sync,\n"
        "  fill/drain, waits; bound = the largest)"
    )
    _side_by_side(
        variants,
        {
            v: {k["kernel"].removesuffix(".looped"): k for k in breakdown[v]["kernels"]}
            for v in variants
        },
        "kernel",
        lambda k: f"{k['calls']:>4} {k['total_ms']:>9.4g} {k['bound']:>8}",
        f"{'calls':>4} {'total ms':>9} {'bound':>8}",
    )
    print(
        "\n  per op, every call and trip (ops overlap in the pipeline, so they add up to more\n"
        "  than the step): active time, the part of it off-chip memory was moving data, bound"
    )
    _side_by_side(
        variants,
        {v: {o["op"]: o for o in breakdown[v]["ops"]} for v in variants},
        "op",
        lambda o: f"{o['active_ms']:>9.4g} {o['memory_ms']:>9.4g} {o['bound']:>8}",
        f"{'active ms':>9} {'memory ms':>9} {'bound':>8}",
    )


def _side_by_side(variants, tables, what: str, cell, head: str) -> None:
    names = list(dict.fromkeys(n for v in variants for n in tables[v]))
    width = max(len(what), *(len(n) for n in names))
    cell_width = len(head)
    print(f"  {'':<{width}}" + "".join(f"   {v:^{cell_width}}" for v in variants))
    print(f"  {what:<{width}}" + "".join(f"   {head}" for _ in variants))
    for name in names:
        cells = [
            cell(tables[v][name]) if name in tables[v] else "-".center(cell_width) for v in variants
        ]
        print(f"  {name:<{width}}" + "".join(f"   {c}" for c in cells))


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
