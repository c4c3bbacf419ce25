"""Lower one `dfk.kernel`: its arguments as params, its body through the unit mapping, its
results stored (KV caches into aliases, the residual stream in place, the rest fresh), its
sections, and for a looped kernel the `rdu.hw_loop` with stacked params and a prefetch depth.

Also the kernel-side lowering contract: an in-place update (`ResultAliasesOperand`) must not be
followed by a read of the old value, a loop must carry and stack its arguments once, and which
kernel result may overwrite which argument (:func:`inplace_pairs`, decided over every call of the
kernel so that its looped and unlooped forms agree). :class:`KernelPlan` is what the host side
needs to bind a launch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from xdsl.dialects.builtin import (
    ArrayAttr,
    IntegerAttr,
    StringAttr,
    i64,
)
from xdsl.ir import Block, Operation, OpResult, Region, SSAValue

from rdu_compiler.lowering.allocation import Allocation, allocate
from rdu_compiler.lowering.diagnostics import fail_at, op_location, value_name
from rdu_compiler.lowering.sections import materialize_section, spill, split_sections
from rdu_compiler.lowering.tensor_types import shape_of, tensor_of
from rdu_compiler.lowering.unit_mapping import STAGED_TRIPS_AHEAD, KernelLowering, Mapping
from rdu_compiler.passes.cost_model import op_cost
from rdu_compiler.passes.fusion import plan_fusions
from rdu_compiler.rdu_dialect import dfk, llm, rdu
from rdu_compiler.rdu_dialect.tensors import dtype_name
from rdu_compiler.simulator.hardware import HardwarePreset
from rdu_compiler.simulator.program import Resources


@dataclass(frozen=True)
class StoredResult:
    """Where a kernel result is stored: `param`; `kind` `cache` (an updated KV cache, bound to
    the alias of argument `arg`'s buffer), `inplace` (into argument `arg`'s own param) or
    `fresh` (a param of its own)."""

    param: str
    kind: Literal["cache", "inplace", "fresh"]
    arg: int | None


@dataclass
class KernelPlan:
    """What the host side needs to know about a lowered kernel."""

    name: str
    arg_params: dict[int, str]  # kernel argument index -> param name (args the body reads)
    results: list[StoredResult]
    stacked_args: set[int]
    trips: int
    layers_per_trip: int
    spills: list[tuple[str, list[int], str]]  # scratch params: name, shape, dtype
    op: rdu.KernelOp
    allocation: Allocation


def lower_kernel(
    kernel: dfk.KernelOp,
    inplace: dict[int, int],
    knobs: Mapping,
    preset: HardwarePreset,
    reserved: Resources | None = None,
) -> KernelPlan:
    """`kernel` lowered; `reserved`: what a configuration it shares the chip with holds (the
    allocation sizes the body for the rest)."""
    name = kernel.sym_name.data
    lowering = KernelLowering(knobs, preset)
    returned = list(kernel.return_op.arguments)
    loop = next((op for op in kernel.body.ops if isinstance(op, dfk.LoopOp)), None)
    arg_index: dict[SSAValue, int] = {arg: i for i, arg in enumerate(kernel.args)}
    body_arg: dict[SSAValue, int] = {}  # body-level value -> kernel argument index
    stacked_args: set[int] = set()
    shared: dict[SSAValue, int] = {}  # body values reading an argument that others read too
    stacked_outputs: set[int] = set()  # kernel results the loop yields per trip, stacked
    if loop is None:
        body_ops = [op for op in kernel.body.ops if not isinstance(op, dfk.ReturnOp)]
        outputs = returned
        body_arg.update(arg_index)
        trips = 1
    else:
        others = [op for op in kernel.body.ops if op not in (loop, kernel.return_op)]
        if others or any(v not in arg_index for v in loop.operands):
            raise fail_at(
                others[0] if others else loop,
                f"kernel @{name}: a looped kernel must be one dfk.loop over its arguments",
            )
        body_ops = [op for op in loop.body.ops if not isinstance(op, dfk.YieldOp)]
        operands = (*loop.carried, *loop.invariant, *loop.stacked)
        block_args = (*loop.carried_args, *loop.invariant_args, *loop.stacked_args)
        for operand, arg in zip(operands, block_args, strict=True):
            body_arg[arg] = arg_index[operand]
        # a kernel argument the body reads directly (captured) is the same every trip: an
        # invariant operand in all but name
        captured = {
            value: None
            for op in (*body_ops, loop.yield_op)
            for value in op.operands
            if value in arg_index
        }
        body_arg.update((value, arg_index[value]) for value in captured)
        # read-only views of one argument (invariant operands, captures) share its param; an
        # argument the loop also carries (updated in place) or stacks (a slice per trip)
        # cannot be read another way at the same time
        entering = [arg_index[v] for v in (*loop.carried, *loop.stacked)]
        reads = [arg_index[v] for v in (*loop.invariant, *captured)]
        twice = next((i for i in entering if (entering + reads).count(i) > 1), None)
        if twice is not None:
            raise fail_at(
                loop,
                f"kernel @{name}: argument {value_name(kernel.args[twice])} enters the loop "
                "twice, once carried or stacked (a buffer updated, or sliced, per trip) and "
                "once more: pass it once",
            )
        shared = {arg: body_arg[arg] for arg in (*loop.invariant_args, *captured)}
        stacked_args = {arg_index[v] for v in loop.stacked}
        yielded = (*loop.yield_op.carried, *loop.yield_op.stacked)
        through: dict[SSAValue, SSAValue] = dict(zip(loop.results, yielded, strict=True))
        not_looped = next((v for v in returned if v not in through), None)
        if not_looped is not None:
            raise fail_at(
                kernel.return_op,
                f"kernel @{name} returns {value_name(not_looped)}, which its loop does not yield: "
                "a looped kernel returns its loop's results only",
            )
        outputs = [through[v] for v in returned]
        stacked_outputs = {r for r, v in enumerate(returned) if v in loop.stacked_results}
        trips = loop.trip_count
        for result, init in zip(loop.carried_results, loop.carried, strict=True):
            if result not in returned:
                raise fail_at(
                    loop,
                    f"kernel @{name}: the loop carries {value_name(init)} from trip to trip "
                    "through that argument's buffer, so the kernel must return the final "
                    "carried value",
                )
            if inplace.get(returned.index(result)) != arg_index[init]:
                raise fail_at(
                    loop,
                    f"kernel @{name}: the value its loop carries must be updated in "
                    f"place, but the call's operand for it lives on after the call",
                )
    _check_in_place_updates(body_ops)
    param_of_shared: dict[int, str] = {}
    for value, index in body_arg.items():
        if index in param_of_shared and value in shared:
            lowering.param_of[value] = param_of_shared[index]
            continue
        arg = kernel.args[index]
        lowering.param_of[value] = lowering.add_param(
            arg.name_hint or f"arg{index}", shape_of(value), dtype_name(value)
        )
        if value in shared:
            param_of_shared[index] = lowering.param_of[value]
    # names of results of their own first, so that buffers (named after values too) do not
    # take them: params are what launches bind and reports show
    own = {
        r: lowering.add_param(v.name_hint or f"result{r}", shape_of(v), dtype_name(v))
        for r, v in enumerate(outputs)
        if r not in inplace and not isinstance(v.owner, llm.KVCacheWriteOp)
    }
    lowering.fusions = plan_fusions(body_ops)
    lowering.alloc = allocate(
        body_ops,
        preset,
        weights={v: True for v in lowering.param_of},
        small_pcus=knobs.simd_par
        * sum(1 for op in body_ops if _stage_free(op) and op not in lowering.fusions.fused),
        prefetch=planned_prefetch(knobs),
        staging_override=knobs.tile_bytes if knobs.tile_bytes > 0 else None,
        buffer_depth=knobs.buffer_depth,
        reserved=reserved,
    )
    for op in body_ops:
        lowering.lower_op(op)
    # results: KV caches into params bound to aliases of their inputs (only the new rows
    # move), a result replacing a dying argument in place, anything else into its own param
    arg_of_param = {lowering.param_of[v]: i for v, i in body_arg.items()}
    results: list[StoredResult] = []
    for r, value in enumerate(outputs):
        cache = lowering.cache_param_of.get(value)
        if cache is not None:
            param = lowering.add_param(f"{cache}_out", *lowering.params[cache])
            writer = value.owner  # the llm.kv_cache_write that cache_param_of records
            assert isinstance(writer, Operation)
            lowering.store(value, param, size=op_cost(writer).kv_write_bytes)
            results.append(StoredResult(param, "cache", arg_of_param[cache]))
        elif r in inplace:
            param = next(p for p, i in arg_of_param.items() if i == inplace[r])
            lowering.store(value, param)
            results.append(StoredResult(param, "inplace", inplace[r]))
        else:
            lowering.store(value, own[r])
            results.append(StoredResult(own[r], "fresh", None))
    sections = split_sections(name, lowering.units, preset)
    spills = spill(lowering, sections) if len(sections) > 1 else []
    # params in order of first use, so a looped body and its unlooped kernel agree
    used_params = {
        a.name: None
        for units in sections
        for u in units
        for a in (*u.all_reads(), u.write)
        if a.name in lowering.params
    }
    block = Block()
    for param in used_params:
        shape, dtype = lowering.params[param]
        block.add_op(
            rdu.ParamOp(
                properties={
                    "param": StringAttr(param),
                    "type": tensor_of(dtype, shape),
                }
            )
        )
    section_ops = [materialize_section(lowering, units) for units in sections]
    # a stacked output is written to trip i's slice on trip i, whatever its kind (an updated
    # cache, a per-layer activation read later through dfk.slice): its param is stacked too
    stacked_set = {lowering.param_of[a] for a in loop.stacked_args} if loop is not None else set()
    stacked_set |= {results[r].param for r in stacked_outputs}
    stacked = [p for p in used_params if p in stacked_set]
    if loop is None:
        block.add_ops(section_ops)
    else:
        prefetch = _prefetch(section_ops, loop, knobs, preset)
        block.add_op(
            rdu.HwLoopOp(
                properties={
                    "trips": IntegerAttr(trips, i64),
                    "prefetch": IntegerAttr(prefetch, i64),
                    "stacked": ArrayAttr([StringAttr(p) for p in stacked]),
                },
                regions=[Region(Block(section_ops))],
            )
        )
    op = rdu.KernelOp(properties={"sym_name": StringAttr(name)}, regions=[Region(block)])
    layers = sum(isinstance(o, llm.AttentionOp) for o in body_ops) or 1
    return KernelPlan(
        name,
        {i: p for p, i in arg_of_param.items() if p in used_params},
        results,
        stacked_args,
        trips,
        layers,
        spills,
        op,
        lowering.alloc,
    )


def _check_in_place_updates(ops: Sequence[Operation]) -> None:
    """An op whose result reuses an operand's buffer (`ResultAliasesOperand`, the KV cache
    write) overwrites that operand: the lowering is only right when nothing reads the operand
    after the op (the precondition the trait states)."""
    for op in ops:
        trait = op.get_trait(llm.ResultAliasesOperand)
        if trait is None:
            continue
        overwritten = op.operands[trait.index]
        for use in overwritten.uses:
            later = use.operation
            if later is op:
                continue
            if later.parent_block() is not op.parent_block() or op.is_before_in_block(later):
                raise fail_at(
                    later,
                    f"reads {value_name(overwritten)} after '{op.name}' at {op_location(op)} "
                    "updated it in place (its result reuses that buffer): read the updated "
                    "value, or keep the old one out of the kernel",
                )


def planned_prefetch(knobs: Mapping) -> int:
    """The trips ahead the allocation stages weights for: the same in a looped and an unlooped
    kernel, so that both map a layer alike (the loop's own depth is bounded later)."""
    return knobs.prefetch if knobs.prefetch >= 0 else STAGED_TRIPS_AHEAD


def _wanted_prefetch(loop: dfk.LoopOp, knobs: Mapping) -> int:
    return knobs.prefetch if knobs.prefetch >= 0 else loop.pipeline_depth - 1


def _stage_free(op: Operation) -> bool:
    """An op that streams nothing off-chip (its units are `simd-par`, not allocated)."""
    return not isinstance(op, llm.LinearOp | llm.AttentionOp | llm.MoEOp)


def _prefetch(
    sections: list[rdu.SectionOp], loop: dfk.LoopOp, knobs: Mapping, preset: HardwarePreset
) -> int:
    """Trips whose loads may run ahead (the knob, or the loop's pipeline depth - 1): each
    needs its own copy of the staged weight tiles, so the depth is bounded by the SRAM the
    sections leave free."""
    wanted = _wanted_prefetch(loop, knobs)
    staged = max(s.sram_bytes.value.data for s in sections)
    return wanted if staged == 0 else min(wanted, (preset.sram_bytes - staged) // staged)


def _returns_cache(kernel: dfk.KernelOp, index: int) -> bool:
    """Whether result `index` of `kernel` is an updated KV cache (a `kv_cache_write`'s result,
    maybe yielded by the kernel's loop)."""
    value = kernel.return_op.arguments[index]
    if isinstance(value, OpResult) and isinstance(value.owner, dfk.LoopOp):
        loop = value.owner
        value = (*loop.yield_op.carried, *loop.yield_op.stacked)[value.index]
    return isinstance(value.owner, llm.KVCacheWriteOp)


def inplace_pairs(calls: Sequence[dfk.CallOp], kernels: dict[str, dfk.KernelOp]) -> dict[int, int]:
    """Kernel result -> the argument it overwrites in place: same type, and at every call of
    the kernel the operand is an activation (a result, not a KV cache, of an earlier call)
    that dies at that call. This is the residual stream, which is how a hardware loop
    carries it from trip to trip; the same for a kernel's looped and unlooped forms. A
    residual stream that lives on after one of the calls (a skip connection) is not updated
    in place at any of them."""

    def activation(value: SSAValue) -> bool:
        producer = value.owner
        return (
            isinstance(value, OpResult)
            and isinstance(producer, dfk.CallOp)
            and sum(1 for _ in value.uses) == 1
            and not _returns_cache(kernels[producer.callee.string_value()], value.index)
        )

    pairs: dict[int, int] = {}
    first = calls[0]
    for r, result in enumerate(first.res):
        for a, operand in enumerate(first.arguments):
            if (
                a not in pairs.values()
                and operand.type == result.type
                and all(activation(call.arguments[a]) for call in calls)
            ):
                pairs[r] = a
                break
    return pairs
