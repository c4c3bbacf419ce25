"""`rdu-import`: a model (preset or Hugging Face config) -> one decode step as llm IR, or its
cost accounting (`--stats`, `--stats --json`).

Bad input (unknown model, bad config, bad option values, unwritable output) prints one
message and exits 1, never a traceback; `-o FILE` is written whole or not at all.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rdu_compiler.tools.cli import (
    ArgumentParser,
    UserError,
    check_context,
    integer,
    run_tool,
    write_atomically,
)

PROG = "rdu-import"

_EPILOG = """\
examples:
  rdu-import llama-3.1-8b                     print the decode step's llm IR
  rdu-import tiny-llama --context 16 -o step.mlir
  rdu-import ./my-model/ --layers 2           a HF model folder (its config.json), 2 layers
  rdu-import llama-3.1-8b --stats             parameters, KV cache, FLOPs and bytes per token
  rdu-import mixtral-8x7b --batch 8 --stats --json

Per token = per decode step / batch (weights are read once per step for all entries).
bytes_per_token = all parameters + KV cache (the Kernel Looping paper's convention);
bytes_read_per_token = what a step really moves (one embedding row per entry, the other
weights, MoE: top-k distinct experts per entry, KV read over attended rows, new rows written).
See passes/cost_model.py for the exact conventions.
"""


def _arguments() -> argparse.ArgumentParser:
    from rdu_compiler.frontend.builder import DEFAULT_CONTEXT, DTYPES

    p = ArgumentParser(
        prog=PROG,
        description="Import a model's decode step as llm-dialect IR (xDSL/MLIR text), or "
        "report its cost accounting.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a preset name (llama-3.1-8b, mixtral-8x7b, tiny-llama, ...), a Hugging Face "
        "config.json, or a model folder containing one",
    )
    p.add_argument(
        "--batch",
        type=integer(1),
        default=1,
        help="batch entries per step, each at its own position (default: 1)",
    )
    p.add_argument(
        "--context",
        type=integer(1),
        default=None,
        help="KV-cache length in tokens, at most the model's max_position_embeddings "
        f"(default: min(max_position_embeddings, {DEFAULT_CONTEXT}))",
    )
    p.add_argument(
        "--layers",
        type=integer(1),
        default=None,
        help="keep the model's first N decoder layers (default: all)",
    )
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="bf16",
        help="element type of weights, activations and caches (default: bf16)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the output to FILE (only if everything succeeded) instead of stdout",
    )
    p.add_argument(
        "--stats",
        action="store_true",
        help="print the cost accounting (parameters, KV cache, FLOPs and bytes per "
        "token) as a table instead of the IR",
    )
    p.add_argument(
        "--json", action="store_true", help="with --stats: print the figures as one JSON object"
    )
    p.add_argument(
        "--print-debuginfo",
        action="store_true",
        help='print each op\'s source location (loc("model.layers.3.self_attn"))',
    )
    return p


def _stats_table(stats: dict[str, Any]) -> str:
    """Human-readable stats: bytes in GiB and GB, FLOPs in GFLOPs, MoE active next to total."""
    moe = "active_param_bytes" in stats

    def size(n: float) -> str:
        return f"{n / 2**30:9.3f} GiB {n / 1e9:9.3f} GB"

    rows: list[tuple[str, str, str]] = [
        (
            "parameters",
            size(stats["param_bytes"]),
            size(stats["active_param_bytes"]) if moe else "",
        ),
        (
            "KV cache (full context)",
            size(stats["kv_bytes"]),
            size(stats["kv_bytes"]) if moe else "",
        ),
        (
            "bytes/token (params+KV)",
            size(stats["bytes_per_token"]),
            size(stats["active_bytes_per_token"]) if moe else "",
        ),
        ("bytes read/token", "", size(stats["bytes_read_per_token"]))
        if moe
        else ("bytes read/token", size(stats["bytes_read_per_token"]), ""),
        (
            "FLOPs/token",
            f"{stats['flops_per_token'] / 1e9:9.3f} GFLOPs",
            f"{stats['active_flops_per_token'] / 1e9:9.3f} GFLOPs" if moe else "",
        ),
        (
            "FLOPs/byte",
            f"{stats['flops_per_byte']:9.3f}",
            f"{stats['active_flops_per_byte']:9.3f}" if moe else "",
        ),
    ]
    head = (
        f"{stats['model']}: batch {stats['batch']}, context {stats['context']}, "
        f"{stats['dtype']} (per token = per step / batch)"
    )
    lines = [head]
    if moe:
        lines.append(
            f"{'':24}  {'all experts':<27}  active (top-k routed, "
            f"{stats['active_experts_per_layer']} experts/layer/step)"
        )
    lines += [f"{name:<24}  {total:<27}  {active}".rstrip() for name, total, active in rows]
    return "\n".join(lines) + "\n"


def _main(argv: Sequence[str] | None) -> int:
    args = _arguments().parse_args(argv)
    if args.json and not args.stats:
        raise UserError(f"--json needs --stats (see {PROG} --help)")

    from xdsl.printer import Printer

    from rdu_compiler.frontend.builder import build_decode_step, default_context
    from rdu_compiler.frontend.config import load_model_config

    config = load_model_config(args.model, layers=args.layers)
    context = default_context(config) if args.context is None else args.context
    check_context(context, config.max_position_embeddings)
    module = build_decode_step(config, batch=args.batch, context=context, dtype=args.dtype)
    module.verify()  # cheap (0.2 s at 126 layers); a config the builder mishandles fails here

    if args.stats:
        from rdu_compiler.passes.cost_model import step_stats

        stats = step_stats(module)
        text = json.dumps(stats, indent=2) + "\n" if args.json else _stats_table(stats)
    else:
        buffer = io.StringIO()
        Printer(stream=buffer, print_debuginfo=args.print_debuginfo).print_op(module)
        buffer.write("\n")
        text = buffer.getvalue()

    if args.output is not None:
        write_atomically(args.output, text)
        return 0
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`rdu-import ... | head`): not an error. Point stdout at
        # /dev/null so Python's exit-time flush stays quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, lambda: _main(argv))


if __name__ == "__main__":
    raise SystemExit(main())
