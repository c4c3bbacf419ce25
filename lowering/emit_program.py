"""`-t rdu-program`: the program file (`docs/program_format.md`) of a module in the rdu dialect.

The rdu dialect states everything the program says, so emission is a transcription: each op
becomes its `simulator.program` struct, streams come from the units' SSA edges (bytes = what
the producer writes), and the header comes from the module (`llm.model`, `rdu.hardware`,
`llm.sockets`), the launches (launch mode) and the step's values (batch, context, dtype). The
result is validated and encoded by `simulator.program.encode_program` (deterministic bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any, cast

from msgspec import UNSET
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    UnitAttr,
)
from xdsl.ir import Attribute
from xdsl.utils.target import Target

from rdu_compiler.lowering.lower_dfk_to_rdu import lowered_hardware
from rdu_compiler.passes.pass_options import CheckedOptions
from rdu_compiler.rdu_dialect import rdu
from rdu_compiler.rdu_dialect.llm import RopeScalingAttr, sockets_of
from rdu_compiler.rdu_dialect.tensors import dtype_name, tensor_shape
from rdu_compiler.simulator.hardware import parse_overrides
from rdu_compiler.simulator.program import (
    Access,
    Agcu,
    Binding,
    Buffer,
    DType,
    Fused,
    Kernel,
    Launch,
    Loop,
    Param,
    Pcu,
    Pmu,
    Program,
    ProgramError,
    Resources,
    Section,
    Source,
    Stream,
    Sync,
    Tensor,
    Value,
    View,
    Work,
    encode_program,
)

__all__ = ["ProgramEmissionError", "RduProgramTarget", "build_program"]


class ProgramEmissionError(ValueError):
    """A module that is not (fully) lowered to the rdu dialect, or whose program the loader
    would refuse (a ValueError, so that `rdu-opt` reports it as a user error)."""


def _type(t: Attribute) -> tuple[list[int], DType]:
    """Shape and dtype of a tensor type the rdu verifier has checked (a tensor of a program
    dtype; `encode_program` validates the dtype again)."""
    return list(tensor_shape(t)), cast(DType, dtype_name(t))


def _ints(attr: Any) -> list[int]:
    return list(attr.get_values())


def _json(attr: Attribute) -> Any:
    """An op attribute as plain JSON (the numerics keyword value): a unit attribute is `true`,
    a rope scaling a dictionary of its kind and fields, a float of any width its value."""
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, UnitAttr):
        return True
    if isinstance(attr, IntegerAttr):
        value = attr.value.data
        return bool(value) if str(attr.type) == "i1" else value
    if isinstance(attr, FloatAttr):
        return attr.value.data
    if isinstance(attr, RopeScalingAttr):
        return {"kind": attr.kind.data, **attr.values()}
    if isinstance(attr, DictionaryAttr):
        return {k: _json(v) for k, v in attr.data.items()}
    if isinstance(attr, ArrayAttr):
        return [_json(v) for v in attr.data]
    raise ProgramEmissionError(f"attribute {attr} has no JSON form")


def _access(attr: rdu.AccessAttr) -> Access:
    return Access(name=attr.target.data, ranges=attr.ranges, step=attr.steps)


def _fused(attr: DictionaryAttr) -> Fused:
    entry = attr.data
    return Fused(
        op=_json(entry["op"]),
        operand=_json(entry["operand"]),
        reads=[_access(a) for a in rdu.fused_reads(attr)],
        attrs=_json(entry["attrs"]) if "attrs" in entry else {},
    )


def _unit(op: rdu.UnitOp) -> Pcu | Pmu | Agcu:
    common: dict[str, Any] = dict(
        id=op.id.data,
        op=op.op_name,
        count=op.count.value.data,
        reads=[_access(a) for a in op.reads],
        write=_access(op.write),
        work=Work(**op.work.as_dict()),
        fused=[_fused(f) for f in op.fused.data] if op.fused is not None else [],
    )
    if isinstance(op, rdu.PmuOp):
        return Pmu(**common, sram_bytes=op.sram_bytes.value.data, buffers=op.buffers.value.data)
    assert isinstance(op, rdu.PcuOp | rdu.AgcuOp)
    attrs = _json(op.attrs) if op.attrs is not None else {}
    if isinstance(op, rdu.PcuOp):
        attr_step = _json(op.attr_step) if op.attr_step is not None else {}
        by_socket = _json(op.attr_by_socket) if op.attr_by_socket is not None else {}
        return Pcu(
            **common,
            attrs=attrs,
            mode=op.mode.data.value,
            attr_step=attr_step,
            attr_by_socket=by_socket,
        )
    return Agcu(**common, attrs=attrs)


def _section(op: rdu.SectionOp) -> Section:
    units = op.units
    streams = []
    for unit in units:
        for stream in unit.inputs:
            producer = stream.owner
            assert isinstance(producer, rdu.UnitOp)
            kind = stream.type
            assert isinstance(kind, rdu.StreamType)
            streams.append(
                Stream(
                    producer=producer.id.data,
                    consumer=unit.id.data,
                    bytes=producer.work.as_dict()["bytes_written"],
                    tile_bytes=kind.tile_bytes,
                    depth=kind.depth.value.data,
                )
            )
    return Section(
        resources=Resources(
            pcus=op.pcus.value.data, pmus=op.pmus.value.data, sram_bytes=op.sram_bytes.value.data
        ),
        buffers=[
            Buffer(name=b.buffer.data, shape=_type(b.type)[0], dtype=_type(b.type)[1])
            for b in op.body.ops
            if isinstance(b, rdu.BufferOp)
        ],
        units=[_unit(u) for u in units],
        streams=streams,
        configured_with_previous=op.configured_with_previous is not None,
    )


def _kernel(op: rdu.KernelOp) -> Kernel:
    loop, looped = op.loop, op.loop_range()
    sections = [_section(s) for s in op.sections]
    return Kernel(
        name=op.sym_name.data,
        params=[
            Param(name=p.param.data, shape=_type(p.type)[0], dtype=_type(p.type)[1])
            for p in op.params
        ],
        sections=sections,
        loop=None
        if loop is None
        else Loop(
            trips=loop.trips.value.data,
            prefetch=loop.prefetch.value.data,
            stacked=[s.data for s in loop.stacked],
            # a loop over all sections says nothing more (the format's default)
            sections=looped if looped != (0, len(sections)) else None,
        ),
    )


def _tensor(op: rdu.TensorOp) -> Tensor:
    shape, dtype = _type(op.type)
    sources = [
        Source(
            value=s.value.data,
            start=_ints(s.start),
            shape=_ints(s.shape),
            at=_ints(s.at),
            socket_step=_ints(s.socket_step) or None,
            socket_group=s.socket_group.value.data,
            interleave=_ints(s.interleave) or None,
            sockets=_ints(s.sockets) or None,
        )
        for s in (op.sources or ())
    ]
    return Tensor(
        name=op.sym_name.data,
        kind=op.kind.data.value,
        shape=shape,
        dtype=dtype,
        tier=op.tier.data.value,
        sources=sources,
        aliases=op.aliases.root_reference.data if op.aliases else None,
    )


def _launch(op: rdu.LaunchOp) -> Launch:
    return Launch(
        kernel=op.kernel.root_reference.data,
        label=op.label.data,
        layers=_ints(op.layers),
        bindings=[
            Binding(param=b.param.data, tensors=[View(tensor=t, index=i) for t, i in b.views])
            for b in op.bindings
        ],
    )


def build_program(module: ModuleOp) -> Program:
    """The program a module in the rdu dialect describes (not yet validated)."""
    values, tensors, kernels, schedule = [], [], [], []
    modes: set[rdu.LaunchMode] = set()
    for op in module.ops:
        if isinstance(op, rdu.ValueOp):
            shape, dtype = _type(op.type)
            values.append(
                Value(name=op.value.data, role=op.role.data.value, shape=shape, dtype=dtype)
            )
        elif isinstance(op, rdu.TensorOp):
            tensors.append(_tensor(op))
        elif isinstance(op, rdu.KernelOp):
            kernels.append(_kernel(op))
        elif isinstance(op, func.FuncOp):
            for host in op.body.walk():
                if isinstance(host, rdu.LaunchOp):
                    schedule.append(_launch(host))
                    modes.add(host.mode.data)
                elif isinstance(host, rdu.SyncOp):
                    schedule.append(Sync())
        else:
            raise ProgramEmissionError(
                f"'{op.name}' is not rdu: lower the module first "
                f"(rdu-pipeline, or lower-dfk-to-rdu)"
            )
    if len(modes) > 1:
        raise ProgramEmissionError(f"launches mix launch modes {sorted(m.value for m in modes)}")
    by_name = {v.name: v for v in values}
    if "tokens" not in by_name or "k_cache" not in by_name:
        raise ProgramEmissionError("the module has no tokens / k_cache values (a decode step)")
    hardware, overrides = lowered_hardware(module) or ("sn40l", "")
    model = module.attributes.get("llm.model")
    return Program(
        model=model.data if isinstance(model, StringAttr) else "model",
        hardware=hardware,
        hardware_overrides=parse_overrides(overrides) if overrides else UNSET,
        sockets=sockets_of(module),
        launch_mode=modes.pop().value if modes else "software",
        batch=by_name["tokens"].shape[0],
        context=by_name["k_cache"].shape[3],
        dtype=by_name["k_cache"].dtype,
        values=values,
        tensors=tensors,
        kernels=kernels,
        schedule=schedule,
    )


@dataclass(frozen=True)
class RduProgramTarget(CheckedOptions, Target):
    """`-t rdu-program`: writes the validated program file (`pretty`: one item per line)."""

    name = "rdu-program"

    pretty: bool = True

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        try:
            data = encode_program(build_program(module), pretty=self.pretty)
        except ProgramError as error:
            raise ProgramEmissionError(f"the program is not valid:\n{error}") from None
        output.write(data.decode())
