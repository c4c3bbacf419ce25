"""The default pipeline, as a pass (`rdu-pipeline{...}`) and as an in-process API.

`rdu-pipeline{sockets=1 kernel-looping=true single-launch=true fusion=layer launch=software
hw=sn40l ...}` runs outline-kernels{policy=fusion} -> kernel-looping (or
disable-kernel-looping) -> canonicalize -> shard-tensor-parallel{sockets kv-seq-split hw
hw-overrides} -> lower-dfk-to-rdu{hw hw-overrides launch <mapping knobs>} ->
merge-launches{hw hw-overrides} (unless single-launch=false: the embedding and LM head
launches then stay apart from the looped layers'), so users need not spell out every pass.
`kv-seq-split` (-1: the cost model of `passes/context_split.py`) says whether caches whose kv
heads are fewer than the sockets are dealt along the sequence; it changes the sharded IR, so it
is a pipeline option, not a lowering knob; so is `moe` (`tensor`: every expert split over the
sockets; `expert`: the experts dealt over them, docs/tensor_parallelism.md). Its options are
the fields of :class:`RduPipeline`, which inherits every knob of the lowering's
:class:`Mapping` (a knob added there is an option here, and a dimension of `rdu-tune`'s
default space, without further edits).
:func:`compile_program` runs the same passes on a module (or builds one from a model config)
and returns the :class:`simulator.program.Program`, never printing or re-parsing text (text is
the slow path: tools such as `rdu-run` call this); :func:`prepare_module` and
:func:`lower_to_program` are its two halves, for callers that lower one prepared module many
times with different knobs (`rdu-tune`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.transforms.canonicalize import CanonicalizePass
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import ModelConfig, load_model_config
from rdu_compiler.lowering.emit_program import build_program
from rdu_compiler.lowering.lower_dfk_to_rdu import LowerDfkToRdu, Mapping
from rdu_compiler.lowering.merge_launches import MergeLaunches
from rdu_compiler.passes.kernel_looping import DisableKernelLooping, KernelLooping
from rdu_compiler.passes.outline_kernels import OutlineKernels
from rdu_compiler.passes.pass_options import (
    CheckedOptionsPass,
    PipelineError,
    UnknownPassError,
    parse_pass_pipeline,
)
from rdu_compiler.passes.shard_tensor_parallel import MoeSplit, ShardTensorParallel
from rdu_compiler.rdu_dialect import dfk
from rdu_compiler.simulator.program import LaunchMode, Program, validate_program

__all__ = [
    "RduPipeline",
    "compile_program",
    "lower_to_program",
    "pipeline_passes",
    "prepare_module",
    "refuse_unlooping",
]


DEFAULT_MAPPING = Mapping()  # frozen: one shared default instance is safe


def refuse_unlooping(module: ModuleOp, kernel_looping: bool) -> None:
    """A module kernel-looped already (IR from a file) cannot be compiled without looping:
    say so rather than silently compile the loop."""
    if not kernel_looping and any(isinstance(op, dfk.LoopOp) for op in module.walk()):
        raise PassFailedException(
            "rdu-pipeline: the module is kernel-looped already (it holds a dfk.loop): it "
            "cannot be compiled without kernel looping"
        )


def _front_passes(
    *,
    sockets: int,
    kernel_looping: bool,
    fusion: str,
    kv_seq_split: int = -1,
    moe: MoeSplit = "tensor",
    hw: str = "sn40l",
    hw_overrides: str = "",
) -> list[ModulePass]:
    """The passes before the lowering: they do not depend on the lowering's knobs (the
    hardware only decides, with `kv_seq_split=-1`, whether caches are dealt along the
    sequence)."""
    return [
        OutlineKernels(policy=fusion),  # type: ignore[arg-type]
        KernelLooping() if kernel_looping else DisableKernelLooping(),
        CanonicalizePass(),
        ShardTensorParallel(
            sockets=sockets,
            kv_seq_split=kv_seq_split,
            moe=moe,
            hw=hw,
            hw_overrides=hw_overrides,
        ),
    ]


def pipeline_passes(**options: Any) -> list[ModulePass]:
    """The passes of the default pipeline with these options (:class:`RduPipeline`'s, the
    lowering's knobs among them), in order."""
    return RduPipeline(**options).passes()


def _lowering_passes(
    *, single_launch: bool, launch: LaunchMode, hw: str, hw_overrides: str, mapping: Mapping
) -> list[ModulePass]:
    """The lowering and, with `single_launch`, the merge of each looped launch with the
    embedding and LM head launches around it (a program without a loop has none to merge)."""
    lower = LowerDfkToRdu(hw=hw, hw_overrides=hw_overrides, launch=launch, **asdict(mapping))
    merge = [MergeLaunches(hw=hw, hw_overrides=hw_overrides)] if single_launch else []
    return [lower, *merge]


@dataclass(frozen=True)
class RduPipeline(CheckedOptionsPass, Mapping):
    """llm decode step -> rdu program IR with the default passes (module docstring). The
    fields are the options: the pipeline's own below, and the lowering's :class:`Mapping`
    knobs, inherited."""

    name = "rdu-pipeline"

    sockets: int = 1
    kernel_looping: bool = True
    single_launch: bool = True
    fusion: Literal["layer", "op"] = "layer"
    launch: LaunchMode = "software"
    hw: str = "sn40l"
    hw_overrides: str = ""
    kv_seq_split: int = -1  # KV heads fewer than sockets: deal caches over at most this many
    moe: MoeSplit = "tensor"  # MoE: every expert split, or experts dealt

    def mapping(self) -> Mapping:
        """The lowering's knobs of this pipeline."""
        return Mapping(**{f.name: getattr(self, f.name) for f in fields(Mapping)})

    def prepare_options(self) -> dict[str, Any]:
        """The options of :func:`prepare_module` (the passes before the lowering): one
        prepared module serves every pipeline that agrees on them."""
        return {
            "sockets": self.sockets,
            "kernel_looping": self.kernel_looping,
            "fusion": self.fusion,
            "kv_seq_split": self.kv_seq_split,
            "moe": self.moe,
            "hw": self.hw,
            "hw_overrides": self.hw_overrides,
        }

    def lowering_options(self) -> dict[str, Any]:
        """The options of :func:`lower_to_program` (the lowering and merging its launches)."""
        return {
            "single_launch": self.single_launch,
            "launch": self.launch,
            "hw": self.hw,
            "hw_overrides": self.hw_overrides,
            "mapping": self.mapping(),
        }

    def compile_options(self) -> dict[str, Any]:
        """These options as keyword arguments of :func:`compile_program`."""
        return {**self.prepare_options(), **self.lowering_options()}

    def spec(self) -> str:
        """The exact `rdu-pipeline{...}` text of these options, every option spelled out (so
        it reproduces them even if a default changes), dashed names, in field order;
        `hw-overrides` only when there are some."""
        items = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "hw_overrides" and not value:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str) and not value.replace("-", "").replace("_", "").isalnum():
                text = f'"{value}"'
            else:
                text = str(value)
            items.append(f"{f.name.replace('_', '-')}={text}")
        return f"{self.name}{{{' '.join(items)}}}"

    @classmethod
    def parse(cls, text: str) -> RduPipeline:
        """`rdu-pipeline{...}` text (as :meth:`spec` writes it, or any subset of the options)
        -> the options; a message (PassFailedException) for anything else."""
        try:
            specs = parse_pass_pipeline(text.strip(), {cls.name: lambda: cls})
        except UnknownPassError:
            specs = []
        except PipelineError as error:
            raise PassFailedException(f"bad pipeline '{text}': {error}") from None
        if len(specs) != 1:
            raise PassFailedException(f"expected one {cls.name}{{...}}, got '{text}'")
        return cls.from_pass_spec(specs[0])

    def passes(self) -> list[ModulePass]:
        """The passes these options run, in order: those :func:`prepare_module` runs, then
        those :func:`lower_to_program` runs."""
        return [
            *_front_passes(**self.prepare_options()),
            *_lowering_passes(**self.lowering_options()),
        ]

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        refuse_unlooping(op, self.kernel_looping)
        for p in self.passes():
            p.apply(ctx, op)


def compile_program(
    model: ModuleOp | ModelConfig | str,
    *,
    sockets: int = 1,
    kernel_looping: bool = True,
    single_launch: bool = True,
    launch: LaunchMode = "software",
    fusion: str = "layer",
    batch: int = 1,
    context: int | None = None,
    layers: int | None = None,
    hw: str = "sn40l",
    hw_overrides: str = "",
    mapping: Mapping = DEFAULT_MAPPING,
    kv_seq_split: int = -1,
    moe: MoeSplit = "tensor",
) -> Program:
    """The validated program of one decode step of `model`: an llm module from rdu-import
    (modified in place), a `ModelConfig`, or a preset name / HF config path (`layers` keeps the
    first layers); `batch` and `context` apply when the step is built here. `hw_overrides`
    (`"pcus=512,..."`) and `mapping` tune the lowering. Raises PassFailedException (a
    user-facing message) for a model the pipeline refuses (does not fit, unsupported sharding
    or option) and ProgramError should the lowering emit an invalid program."""
    module = prepare_module(
        model,
        sockets=sockets,
        kernel_looping=kernel_looping,
        fusion=fusion,
        batch=batch,
        context=context,
        layers=layers,
        kv_seq_split=kv_seq_split,
        moe=moe,
        hw=hw,
        hw_overrides=hw_overrides,
    )
    return lower_to_program(
        module,
        single_launch=single_launch,
        launch=launch,
        hw=hw,
        hw_overrides=hw_overrides,
        mapping=mapping,
    )


def prepare_module(
    model: ModuleOp | ModelConfig | str,
    *,
    sockets: int = 1,
    kernel_looping: bool = True,
    fusion: str = "layer",
    batch: int = 1,
    context: int | None = None,
    layers: int | None = None,
    kv_seq_split: int = -1,
    moe: MoeSplit = "tensor",
    hw: str = "sn40l",
    hw_overrides: str = "",
) -> ModuleOp:
    """The first half of :func:`compile_program`: the passes before the lowering (outline,
    loop, canonicalize, shard), which the lowering's knobs do not affect. A caller that lowers
    one model with many knobs prepares it once and lowers clones of it."""
    if isinstance(model, str):
        model = load_model_config(model, layers=layers)
    if isinstance(model, ModelConfig):
        model = build_decode_step(model, batch=batch, context=context)
    refuse_unlooping(model, kernel_looping)
    ctx = Context()
    front = _front_passes(
        sockets=sockets,
        kernel_looping=kernel_looping,
        fusion=fusion,
        kv_seq_split=kv_seq_split,
        moe=moe,
        hw=hw,
        hw_overrides=hw_overrides,
    )
    for p in front:
        p.apply(ctx, model)
    return model


def lower_to_program(
    module: ModuleOp,
    *,
    single_launch: bool = True,
    launch: LaunchMode = "software",
    hw: str = "sn40l",
    hw_overrides: str = "",
    mapping: Mapping = DEFAULT_MAPPING,
) -> Program:
    """The second half of :func:`compile_program`: lower a :func:`prepare_module` module (in
    place) and emit its validated program."""
    ctx = Context()
    for p in _lowering_passes(
        single_launch=single_launch,
        launch=launch,
        hw=hw,
        hw_overrides=hw_overrides,
        mapping=mapping,
    ):
        p.apply(ctx, module)
    program = build_program(module)
    validate_program(program)
    return program
