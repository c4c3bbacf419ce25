"""Timing runs of rdu-run: compile a case with the default pipeline, simulate it, and turn the
result into rows (one per case and variant) for tables, JSON, CSV and charts; sweeps over the
product of socket counts, batches, contexts, launch modes and looped / unlooped; and generation
timing (one step per KV-cache length as the cache grows).

Vocabulary (every table, JSON key and chart): a *step* is one decode step of every batch entry;
*TPOT* (time per output token of one sequence) is the step time; *tokens/s* counts all
sequences (batch / step time); *per token* means per step / batch.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rdu_compiler.tools.cli import Progress, UserError

if TYPE_CHECKING:
    from rdu_compiler.simulator.program import LaunchMode

LAUNCHES: tuple[LaunchMode, ...] = ("software", "hardware")
VARIANTS = ("looped", "unlooped")


@dataclass(frozen=True)
class Case:
    """One compiled program: the shape of the step and how it is compiled."""

    sockets: int
    batch: int
    context: int
    launch: LaunchMode
    looping: str  # "looped" or "unlooped"


@dataclass
class Result:
    case: Case
    program: Any
    preset: Any
    timing: Any
    summary: dict[str, Any]


class Timer:
    """Compiles and simulates cases of one model on one hardware description (a preset, maybe
    from a file, with overrides: the lowering fits against it and the simulator times on it)."""

    def __init__(self, config: Any, dtype: str, preset: Any, options: dict | None = None):
        """`options`: more `compile_program` options (rdu-run --pipeline's fusion, mapping)."""
        from rdu_compiler.simulator.hardware import get_preset, list_presets, overrides_between

        self.config, self.dtype, self.preset = config, dtype, preset
        self.options = options or {}
        base = get_preset(preset.name if preset.name in list_presets() else "sn40l")
        self.hw, self.hw_overrides = base.name, overrides_between(base, preset)

    def compile(self, case: Case) -> Any:
        from xdsl.utils.exceptions import DiagnosticException

        from rdu_compiler.lowering.pipeline import compile_program
        from rdu_compiler.simulator.program import ProgramError
        from rdu_compiler.tools.ir_file import decode_step_module

        module = decode_step_module(
            self.config, batch=case.batch, context=case.context, dtype=self.dtype
        )
        try:
            return compile_program(
                module,
                sockets=case.sockets,
                kernel_looping=case.looping == "looped",
                launch=case.launch,
                hw=self.hw,
                hw_overrides=self.hw_overrides,
                **self.options,
            )
        except (ProgramError, DiagnosticException) as error:
            raise UserError(str(error)) from None

    def run(self, case: Case) -> Result:
        from rdu_compiler.simulator.report import summarize
        from rdu_compiler.simulator.timing import SimulationError, simulate

        program = self.compile(case)
        # the timeline is kept: breakdowns, per-trip charts and traces read it (cheap next to
        # compiling)
        try:
            timing = simulate(program, self.preset, trace=True)
        except SimulationError as error:
            raise UserError(
                f"{self.config.name} ({case.looping}, {case.launch} launch): {error}"
            ) from None
        return Result(case, program, self.preset, timing, summarize(program, self.preset, timing))


def cases(
    sockets: Sequence[int],
    batches: Sequence[int],
    contexts: Sequence[int],
    launches: Sequence[LaunchMode],
    variants: Sequence[str],
) -> list[Case]:
    """The product, in the order the options list them (variants innermost)."""
    return [
        Case(s, b, c, launch, v)
        for s, b, c, launch, v in itertools.product(sockets, batches, contexts, launches, variants)
    ]


def step_bound(result: Result) -> tuple[str, dict[str, float]]:
    """What bounds the step (memory, compute or latency: the largest share of its time, by
    :mod:`simulator.breakdown`'s rule summed over the kernels) and those three shares, ms."""
    from rdu_compiler.simulator.breakdown import BOUNDS, kernel_breakdown

    kernels = kernel_breakdown(result.program, result.timing)
    shares = {f"{b}_ms": float(sum(k[f"{b}_ms"] for k in kernels)) for b in BOUNDS}
    return max(BOUNDS, key=lambda b: shares[f"{b}_ms"]), shares


def row(config_name: str, result: Result) -> dict[str, Any]:
    """One case as a flat row (the sweep's JSON list entry and CSV line): ``time_breakdown``
    is the report's (the time above the memory roofline by cause, adding up to ``tpot_ms -
    memory_roofline_ms``); ``bound`` and ``bound_shares`` split the whole step three ways."""
    s, c = result.summary, result.case
    bound, shares = step_bound(result)
    return {
        "model": config_name,
        "sockets": c.sockets,
        "batch": c.batch,
        "context": c.context,
        "looping": c.looping,
        "launch": c.launch,
        "tpot_ms": s["ms_per_token"],
        "tokens_per_s": s["tokens_per_s"],
        "roofline_ms": s["roofline_ms"],
        "memory_roofline_ms": s["memory_roofline_ms"],
        "compute_roofline_ms": s["compute_roofline_ms"],
        "roofline_fraction": s["roofline_fraction"],
        "bandwidth_fraction_of_peak": s["bandwidth_fraction_of_peak"],
        "launches_per_step": s["launches_per_token"],
        "launch_and_sync_ms": s["launch_and_sync_ms_per_token"],
        "bound": bound,
        "bound_shares": shares,
        "time_breakdown": s["time_breakdown"],
    }


def run_cases(timer: Timer, todo: Sequence[Case], title: str) -> Iterator[Result]:
    """Each case compiled and simulated in turn, with a progress bar on a terminal."""
    with Progress(len(todo)) as progress:
        for case in todo:
            progress.advance(
                f"{title}: {case.sockets} socket(s), batch {case.batch}, context "
                f"{case.context}, {case.launch} launch, {case.looping}"
            )
            yield timer.run(case)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV, nested dicts flattened (``time_breakdown.memory_ms``)."""
    flat = [
        {
            **{k: v for k, v in r.items() if not isinstance(v, dict)},
            **{
                f"{k}.{kk}": vv for k, v in r.items() if isinstance(v, dict) for kk, vv in v.items()
            },
        }
        for r in rows
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A sweep as a table: one line per case and variant."""
    head = (
        f"{'sockets':>7} {'batch':>6} {'context':>8} {'launch':>8} {'looping':>9} "
        f"{'TPOT ms':>9} {'tokens/s':>10} {'roofline ms':>11} {'% roofline':>10} "
        f"{'launch+sync ms':>14}  bound"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['sockets']:>7} {r['batch']:>6} {r['context']:>8} {r['launch']:>8} "
            f"{r['looping']:>9} {r['tpot_ms']:>9.3f} {r['tokens_per_s']:>10.1f} "
            f"{r['roofline_ms']:>11.4g} {r['roofline_fraction']:>10.1%} "
            f"{r['launch_and_sync_ms']:>14.3f}  {r['bound']}"
        )
    return "\n".join(lines)


def generation(
    timer: Timer, base: Case, prompt_tokens: int, steps: int, title: str
) -> dict[str, Any]:
    """``--generate N``: the N decode steps after a ``prompt_tokens``-token prompt, step i
    attending ``prompt_tokens + i + 1`` cache rows (one program per length: a compiled step
    reads the cache at its full context). TPOT p50 / p99 over the steps, and the total."""
    import numpy as np

    lengths = [prompt_tokens + i + 1 for i in range(steps)]
    todo = [
        Case(base.sockets, base.batch, n, base.launch, base.looping) for n in dict.fromkeys(lengths)
    ]
    by_length = {r.case.context: r.summary["ms_per_token"] for r in run_cases(timer, todo, title)}
    step_ms = [by_length[n] for n in lengths]
    total = float(sum(step_ms))
    return {
        "tpot_p50_ms": float(np.percentile(step_ms, 50)),
        "tpot_p99_ms": float(np.percentile(step_ms, 99)),
        "total_ms": total,
        "tokens_per_s": base.batch * steps / total * 1e3,
        "step_ms": step_ms,
    }
