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
    "rdu-pipeline": _rdu_pipeline,
}
TARGETS: dict[str, Callable[[], type[Target]]] = {"rdu-program": _rdu_program}

RDU_UNIVERSE = Universe(all_dialects=DIALECTS, all_passes=PASSES, all_targets=TARGETS)
