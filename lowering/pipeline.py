"""The default pipeline, as a pass (`rdu-pipeline{...}`) and as an in-process API.

`rdu-pipeline{sockets=1 kernel-looping=true fusion=layer launch=software hw=sn40l}` runs
outline-kernels{policy=fusion} -> kernel-looping (or disable-kernel-looping) -> canonicalize
-> shard-tensor-parallel{sockets} -> lower-dfk-to-rdu{hw launch}, so users need not spell out
every pass. :func:`compile_program` runs the same passes on a module (or builds one from a
model config) and returns the :class:`simulator.program.Program`, never printing or
re-parsing text (text is the slow path: tools such as `rdu-run` call this).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.transforms.canonicalize import CanonicalizePass
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import ModelConfig, load_model_config
from rdu_compiler.lowering.emit_program import build_program
from rdu_compiler.lowering.lower_dfk_to_rdu import LowerDfkToRdu, Mapping
from rdu_compiler.passes.kernel_looping import DisableKernelLooping, KernelLooping
from rdu_compiler.passes.outline_kernels import OutlineKernels
from rdu_compiler.passes.shard_tensor_parallel import ShardTensorParallel
from rdu_compiler.rdu_dialect import dfk
from rdu_compiler.simulator.program import Program, validate_program

__all__ = ["RduPipeline", "compile_program", "pipeline_passes", "refuse_unlooping"]


def refuse_unlooping(module: ModuleOp, kernel_looping: bool) -> None:
    """A module kernel-looped already (IR from a file) cannot be compiled without looping:
    say so rather than silently compile the loop."""
    if not kernel_looping and any(isinstance(op, dfk.LoopOp) for op in module.walk()):
        raise PassFailedException(
            "rdu-pipeline: the module is kernel-looped already (it holds a dfk.loop): it "
            "cannot be compiled without kernel looping"
        )


def pipeline_passes(
    *,
    sockets: int = 1,
    kernel_looping: bool = True,
    fusion: str = "layer",
    launch: str = "software",
    hw: str = "sn40l",
    hw_overrides: str = "",
    mapping: Mapping = Mapping(),
) -> list[ModulePass]:
    """The passes of the default pipeline, in order (`mapping`: the lowering's knobs)."""
    return [
        OutlineKernels(policy=fusion),  # type: ignore[arg-type]
        KernelLooping() if kernel_looping else DisableKernelLooping(),
        CanonicalizePass(),
        ShardTensorParallel(sockets=sockets),
        LowerDfkToRdu(hw=hw, hw_overrides=hw_overrides, launch=launch, **asdict(mapping)),
    ]


@dataclass(frozen=True)
class RduPipeline(ModulePass):
    """llm decode step -> rdu program IR with the default passes (module docstring)."""

    name = "rdu-pipeline"

    sockets: int = 1
    kernel_looping: bool = True
    fusion: Literal["layer", "op"] = "layer"
    launch: str = "software"
    hw: str = "sn40l"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        refuse_unlooping(op, self.kernel_looping)
        for p in pipeline_passes(
            sockets=self.sockets,
            kernel_looping=self.kernel_looping,
            fusion=self.fusion,
            launch=self.launch,
            hw=self.hw,
        ):
            p.apply(ctx, op)


def compile_program(
    model: ModuleOp | ModelConfig | str,
    *,
    sockets: int = 1,
    kernel_looping: bool = True,
    launch: str = "software",
    fusion: str = "layer",
    batch: int = 1,
    context: int | None = None,
    layers: int | None = None,
    hw: str = "sn40l",
    hw_overrides: str = "",
    mapping: Mapping = Mapping(),
) -> Program:
    """The validated program of one decode step of `model`: an llm module from rdu-import
    (modified in place), a `ModelConfig`, or a preset name / HF config path (`layers` keeps the
    first layers); `batch` and `context` apply when the step is built here. `hw_overrides`
    (`"pcus=512,..."`) and `mapping` tune the lowering. Raises PassFailedException (a
    user-facing message) for a model the pipeline refuses (does not fit, unsupported sharding
    or option) and ProgramError should the lowering emit an invalid program."""
    if isinstance(model, str):
        model = load_model_config(model, layers=layers)
    if isinstance(model, ModelConfig):
        model = build_decode_step(model, batch=batch, context=context)
    refuse_unlooping(model, kernel_looping)
    ctx = Context()
    for p in pipeline_passes(
        sockets=sockets,
        kernel_looping=kernel_looping,
        fusion=fusion,
        launch=launch,
        hw=hw,
        hw_overrides=hw_overrides,
        mapping=mapping,
    ):
        p.apply(ctx, model)
    program = build_program(model)
    validate_program(program)
    return program
