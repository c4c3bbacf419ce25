"""`rdu-run --gpu NODE`: the decode step the compiler accounts for, timed as a GPU node would
run it (`simulator/gpu_node.py`), beside the simulated RDU.

The workload is the compiler's own figures for the step, not a second cost model:

* weight and KV bytes and FLOPs: `passes.cost_model` over the step's ops, the accounting the
  lowering gives each unit as its work. At one socket the FLOPs are the RDU program's; its
  roofline bytes are these plus the activations its kernels pass through HBM (0.01% more for
  Llama 3.1 8B; `test/unit/test_gpu_baseline.py` checks both);
* kernels per step: the step sharded over ``tensor_parallel`` GPUs by `shard-tensor-parallel`,
  one kernel per llm compute op (what `outline-kernels{policy=op}` makes a kernel of: on one
  GPU, the launches of the unfused program), its collectives included;
* collectives: the `llm.all_reduce`s the sharding inserted, each with its tensor's bytes, and
  the LM head's `llm.all_gather` of the logits as half an all-reduce of its result (an
  all-gather is one collective moving half an all-reduce's bytes).
"""

from __future__ import annotations

from typing import Any

from rdu_compiler.tools.cli import UserError


def parse_gpu_nodes(text: str) -> list[str]:
    """``dgx-h100`` or ``dgx-h100,dgx-a100`` -> node names (argparse type of ``--gpu``)."""
    import argparse

    from rdu_compiler.simulator.gpu_node import GPU_NODES

    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in GPU_NODES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown GPU node {', '.join(unknown) or '(none given)'}; known: "
            f"{', '.join(sorted(GPU_NODES))}"
        )
    return names


def decode_workload(model: Any, *, batch: int, context: int, dtype: str, tensor_parallel: int):
    """The :class:`~rdu_compiler.simulator.gpu_node.DecodeWorkload` of one decode step of
    ``model`` (a ModelConfig, or an unsharded llm-level `.mlir` step) on ``tensor_parallel``
    GPUs."""
    from xdsl.context import Context
    from xdsl.utils.exceptions import PassFailedException

    from rdu_compiler.passes.cost_model import tensor_bytes, total_cost
    from rdu_compiler.passes.outline_kernels import outlinable
    from rdu_compiler.passes.shard_tensor_parallel import ShardTensorParallel
    from rdu_compiler.rdu_dialect.llm import AllGatherOp, AllReduceOp
    from rdu_compiler.simulator.gpu_node import DecodeWorkload
    from rdu_compiler.tools.ir_file import decode_step_module

    if getattr(model, "stage", "llm") != "llm" or getattr(model, "sockets", None) is not None:
        raise UserError(
            f"--gpu needs the decode step at the llm level, unsharded (as rdu-import prints "
            f"it); {model.name} is {model.stage}"
            + (f", sharded over {model.sockets}" if getattr(model, "sockets", None) else "")
        )
    module = decode_step_module(model, batch=batch, context=context, dtype=dtype)
    cost = total_cost(module.walk())
    try:
        ShardTensorParallel(sockets=tensor_parallel).apply(Context(), module)
    except PassFailedException as error:
        raise UserError(
            f"--gpu on {tensor_parallel} tensor-parallel GPUs: {error} (--gpu-tp N sets how many)"
        ) from None
    kernels = [op for op in module.walk() if outlinable(op)]
    reduced = [tensor_bytes(op.results[0]) for op in kernels if isinstance(op, AllReduceOp)]
    gathered = [tensor_bytes(op.results[0]) // 2 for op in kernels if isinstance(op, AllGatherOp)]
    return DecodeWorkload(
        weight_bytes=cost.weight_bytes,
        kv_bytes_per_step=cost.kv_read_bytes + cost.kv_write_bytes,
        flops_per_step=float(cost.flops),
        kernels_per_step=len(kernels),
        batch=batch,
        all_reduce_bytes_per_step=sum(reduced) + sum(gathered),
        all_reduces_per_step=len(reduced) + len(gathered),
        tensor_parallel=tensor_parallel,
    )


def gpu_figures(node_name: str, workload: Any, rdu: dict[str, Any]) -> dict[str, Any]:
    """One node's figures for the JSON ``gpu`` object and the table (ms per step; the keys
    of rdu-run's timing where they mean the same: ``ms_per_token`` is TPOT, the step time).
    ``rdu``: the RDU step compared with (``variant``, ``sockets``, ``ms_per_token``);
    ``rdu_speedup`` = the GPU step / the RDU step."""
    from rdu_compiler.simulator.gpu_node import get_gpu_node
    from rdu_compiler.simulator.timing import SimulationError

    node = get_gpu_node(node_name)
    try:
        step = node.decode_step(workload)
    except SimulationError as error:
        raise UserError(str(error)) from None
    tp = workload.tensor_parallel
    moved = workload.weight_bytes + workload.kv_bytes_per_step
    return {
        "node": node.name,
        "gpus": node.gpus,
        "tensor_parallel": tp,
        "ms_per_token": step.step_s * 1e3,
        "tokens_per_s": workload.batch / step.step_s,
        "bandwidth_fraction_of_peak": moved / step.step_s / (tp * node.hbm_bandwidth),
        "roofline_fraction": step.roofline_s / step.step_s,
        "roofline_ms": step.roofline_s * 1e3,
        "kernels_per_step": workload.kernels_per_step,
        "collectives_per_step": workload.all_reduces_per_step,
        "memory_ms": step.memory_s * 1e3,
        "compute_ms": step.compute_s * 1e3,
        "launch_gaps_ms": step.launch_gaps_s * 1e3,
        "all_reduce_ms": step.all_reduce_s * 1e3,
        "bytes_per_step": moved,
        "flops_per_step": workload.flops_per_step,
        "rdu_variant": rdu["variant"],
        "rdu_sockets": rdu["sockets"],
        "rdu_speedup": step.step_s * 1e3 / rdu["ms_per_token"],
    }


def format_gpu(figures: dict[str, dict[str, Any]]) -> str:
    """The GPU nodes side by side, in the rows of rdu-run's timing table; the step is the
    larger of memory and compute, plus the launch gaps and the all-reduces."""
    names = list(figures)
    first = figures[names[0]]
    rows = (
        ("GPUs, tensor parallel", "tensor_parallel", "{}"),
        ("TPOT ms (step time)", "ms_per_token", "{:.3f}"),
        ("tokens/s (all seqs)", "tokens_per_s", "{:.1f}"),
        ("% of HBM peak", "bandwidth_fraction_of_peak", "{:.1%}"),
        ("% of roofline", "roofline_fraction", "{:.1%}"),
        ("kernels/step", "kernels_per_step", "{}"),
        ("  memory ms (HBM)", "memory_ms", "{:.3f}"),
        ("  compute ms (peak)", "compute_ms", "{:.3f}"),
        ("  launch gaps ms", "launch_gaps_ms", "{:.3f}"),
        ("  all-reduces ms", "all_reduce_ms", "{:.3f}"),
        (f"RDU ({first['rdu_variant']}) speedup", "rdu_speedup", "{:.2f}x"),
    )
    lines = [
        "\n  GPU baseline: one kernel per op on tensor-parallel GPUs (docs/gpu_baseline.md);\n"
        f"  RDU speedup = GPU step / the simulated RDU step on {first['rdu_sockets']} socket(s)",
        f"  {'':<22}" + "".join(f"{name:>14}" for name in names),
    ]
    for label, key, fmt in rows:
        lines.append(
            f"  {label:<22}" + "".join(f"{fmt.format(figures[n][key]):>14}" for n in names)
        )
    return "\n".join(lines)
