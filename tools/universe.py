"""The one registry of rdu-compiler's dialects, passes and targets.

Exposed to plain `xdsl-opt` through the `xdsl.universe` entry point (pyproject.toml), and read
by `rdu-opt`. Factories import lazily so that starting a driver stays cheap.
"""

from collections.abc import Callable

from xdsl.ir import Dialect
from xdsl.passes import ModulePass
from xdsl.universe import Universe
from xdsl.utils.target import Target


def _llm() -> Dialect:
    from rdu_compiler.rdu_dialect.llm import LLM

    return LLM


def _dfk() -> Dialect:
    from rdu_compiler.rdu_dialect.dfk import DFK

    return DFK


def _rdu() -> Dialect:
    from rdu_compiler.rdu_dialect.rdu import RDU

    return RDU


DIALECTS: dict[str, Callable[[], Dialect]] = {"llm": _llm, "dfk": _dfk, "rdu": _rdu}


def _outline_kernels() -> type[ModulePass]:
    from rdu_compiler.passes.outline_kernels import OutlineKernels

    return OutlineKernels


def _kernel_looping() -> type[ModulePass]:
    from rdu_compiler.passes.kernel_looping import KernelLooping

    return KernelLooping


def _disable_kernel_looping() -> type[ModulePass]:
    from rdu_compiler.passes.kernel_looping import DisableKernelLooping

    return DisableKernelLooping


def _shard_tensor_parallel() -> type[ModulePass]:
    from rdu_compiler.passes.shard_tensor_parallel import ShardTensorParallel

    return ShardTensorParallel


def _lower_dfk_to_rdu() -> type[ModulePass]:
    from rdu_compiler.lowering.lower_dfk_to_rdu import LowerDfkToRdu

    return LowerDfkToRdu


def _merge_launches() -> type[ModulePass]:
    from rdu_compiler.lowering.merge_launches import MergeLaunches

    return MergeLaunches


def _rdu_pipeline() -> type[ModulePass]:
    from rdu_compiler.lowering.pipeline import RduPipeline

    return RduPipeline


def _rdu_program() -> type[Target]:
    from rdu_compiler.lowering.emit_program import RduProgramTarget

    return RduProgramTarget


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "outline-kernels": _outline_kernels,
    "kernel-looping": _kernel_looping,
    "disable-kernel-looping": _disable_kernel_looping,
    "shard-tensor-parallel": _shard_tensor_parallel,
    "lower-dfk-to-rdu": _lower_dfk_to_rdu,
    "merge-launches": _merge_launches,
    "rdu-pipeline": _rdu_pipeline,
}
# What each pass does, for `rdu-opt --help` and `--list-passes` (one line, with its options).
PASS_HELP: dict[str, str] = {
    "outline-kernels": "fuse each decoder layer (policy=layer) or op (policy=op) into a "
    "dfk.kernel and call it; identical kernels merged",
    "kernel-looping": "N consecutive calls of one kernel -> one call of a pipelined loop "
    "{min-trip-count=2 pipeline-depth=2 remarks=false}",
    "disable-kernel-looping": "mark the module so that canonicalize does not loop calls",
    "shard-tensor-parallel": "Megatron-style SPMD sharding over sockets {sockets=1|2|4|8|16}",
    "lower-dfk-to-rdu": "map kernels onto PCUs/PMUs/AGCUs, place tensors in HBM/DDR, check "
    "fits {hw=sn40l launch=software|hardware}",
    "merge-launches": "a looped launch takes in the embedding and LM head launches around it: "
    "one launch per step {hw=sn40l remarks=false}",
    "rdu-pipeline": "the default pipeline, llm -> rdu {sockets kernel-looping single-launch "
    "fusion launch hw}; then -t rdu-program writes the program file",
}
TARGETS: dict[str, Callable[[], type[Target]]] = {"rdu-program": _rdu_program}

RDU_UNIVERSE = Universe(all_dialects=DIALECTS, all_passes=PASSES, all_targets=TARGETS)
