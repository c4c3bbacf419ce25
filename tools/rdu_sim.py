"""`rdu-sim PROGRAM`: simulate an emitted program file.

Timing by default (a report table, `--json`, `--trace FILE` for Perfetto / chrome://tracing,
`--hw-override key=value,...` to change hardware figures). `--functional` runs the program's
units on real numbers instead: weights from `--weights PATH` or `--seed N`, the `--prompt`
token ids fed one per step (every batch entry the same), then `--steps N` greedy tokens.

PROGRAM may also be an `.mlir` decode step at any stage from `llm` down (as `rdu-import` prints
it, or after outline-kernels, kernel-looping, sharding): it is compiled first with the default
pipeline (kernel looping on; the IR's socket count, one if unsharded), so a user can simulate
their own or hand-edited IR. Only then does rdu-sim import the compiler (and xDSL); for a
program file it imports only the simulator and `tools.cli`: the program is all it reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rdu_compiler.tools.cli import (
    ArgumentParser,
    UserError,
    decode_loop,
    decode_steps,
    integer,
    is_ir_file,
    parse_prompt,
    print_generated,
    run_tool,
    write_atomically,
)

PROG = "rdu-sim"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "program",
        metavar="PROGRAM",
        help="an rdu-program JSON file, or an .mlir decode step (compiled first)",
    )
    p.add_argument(
        "--functional", action="store_true", help="compute real numbers instead of timing"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--weights", metavar="PATH", help="safetensors file or HF model folder")
    source.add_argument("--seed", type=integer(0), help="seeded random init (default: seed 0)")
    p.add_argument(
        "--prompt",
        metavar="IDS",
        help="functional: comma-separated token ids fed one per step (default: 1)",
    )
    p.add_argument(
        "--steps",
        type=integer(0),
        metavar="N",
        help="functional: greedy tokens after the prompt (default: 8)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome / Perfetto trace (timing)")
    p.add_argument(
        "--hw-override",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="change hardware figures (names in simulator/hardware.py)",
    )
    return p


# Options only one mode reads: given to the other, they are refused rather than ignored.
_FUNCTIONAL_ONLY = ("weights", "seed", "prompt", "steps")
_TIMING_ONLY = ("trace", "hw_override")


def _refuse_unused(args: argparse.Namespace) -> None:
    mode, unused = ("functional", _TIMING_ONLY) if args.functional else ("timing", _FUNCTIONAL_ONLY)
    given = [
        f"--{name.replace('_', '-')}" for name in unused if getattr(args, name) not in (None, [])
    ]
    if given:
        other = "timing (without --functional)" if args.functional else "--functional"
        raise UserError(f"{', '.join(given)}: not used by a {mode} run, only by {other} runs")
    if args.trace == "":
        raise UserError("--trace needs a file name")


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _refuse_unused(args)
    from rdu_compiler.simulator.program import compiled_hardware, load_program, validate_program

    program = _compile_ir(args.program) if is_ir_file(args.program) else load_program(args.program)
    # the hardware the program was compiled for; --hw-override changes figures on top of it,
    # a what-if that must still fit (checked here too, so that the message names the file)
    preset = compiled_hardware(program)
    if args.hw_override:
        preset = preset.with_overrides(",".join(args.hw_override))
        validate_program(program, preset, name=args.program)
    return _functional(args, program) if args.functional else _timing(args, program, preset)


def _compile_ir(path: str):
    """The program of an `.mlir` decode step, through the default pipeline."""
    from xdsl.utils.exceptions import DiagnosticException

    from rdu_compiler.lowering.pipeline import compile_program
    from rdu_compiler.tools.ir_file import load_ir_model

    model = load_ir_model(path)
    try:
        return compile_program(model.module, sockets=model.sockets or 1)
    except DiagnosticException as error:
        raise UserError(str(error)) from None


def _functional(args: argparse.Namespace, program) -> int:
    from rdu_compiler.simulator.functional import FunctionalSimulator
    from rdu_compiler.simulator.weights import open_weights

    logits = next(v for v in program.values if v.role == "output")
    prompt = parse_prompt(
        "1" if args.prompt is None else args.prompt, logits.shape[-1], program.model
    )
    steps = 8 if args.steps is None else args.steps
    if decode_steps(prompt, steps) > program.context:
        raise UserError(
            f"a {len(prompt)}-token prompt and {steps} generated tokens need "
            f"{decode_steps(prompt, steps)} cache rows, but the program's "
            f"context is {program.context}"
        )
    sim = FunctionalSimulator(program, open_weights(args.weights, args.seed))
    tokens, _ = decode_loop(sim.decode, prompt, steps, program.batch)
    if args.json:
        print(
            json.dumps(
                {
                    "model": program.model,
                    "sockets": program.sockets,
                    "batch": program.batch,
                    "context": program.context,
                    "prompt": prompt,
                    "tokens": tokens,
                }
            )
        )
    else:
        print(
            f"{program.model} on {program.sockets} socket(s), functional, prompt "
            f"{', '.join(map(str, prompt))}"
        )
        print_generated(tokens)
    return 0


def _timing(args: argparse.Namespace, program, preset) -> int:
    from rdu_compiler.simulator.report import chrome_trace, format_table, summarize
    from rdu_compiler.simulator.timing import simulate

    timing = simulate(program, preset, trace=args.trace is not None, what_if=bool(args.hw_override))
    summary = summarize(program, preset, timing)
    if args.trace:
        write_atomically(
            args.trace, json.dumps(chrome_trace(program, preset, timing), allow_nan=False)
        )
    print(json.dumps(summary, allow_nan=False) if args.json else format_table(summary))
    return 0


def _errors() -> tuple[type[BaseException], ...]:
    """User errors of the simulator alone (tools.cli's default list would import xDSL)."""
    from rdu_compiler.simulator.functional import FunctionalError
    from rdu_compiler.simulator.hardware import PresetError
    from rdu_compiler.simulator.program import ProgramError
    from rdu_compiler.simulator.timing import SimulationError
    from rdu_compiler.simulator.weights import WeightError

    return (
        UserError,
        ProgramError,
        PresetError,
        SimulationError,
        WeightError,
        FunctionalError,
        OSError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(
        PROG,
        lambda: run(argv),
        _errors(),
        smaller="a program of fewer layers, a shorter context or a smaller batch",
    )


if __name__ == "__main__":
    sys.exit(main())
