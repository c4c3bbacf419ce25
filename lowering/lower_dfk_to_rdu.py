"""`lower-dfk-to-rdu`: map a decode step of dfk kernels onto the units of an RDU.

Input: a module after `outline-kernels` (and maybe `kernel-looping`): `dfk.kernel`s whose bodies
are llm ops or one `dfk.loop`, and `func.func @decode_step` calling them. Output: the `rdu`
dialect (`rdu_dialect/rdu.py`), which says everything the program file says.

Mapping, per kernel (the looped kernel's loop body is mapped exactly like the unlooped kernel,
so the per-layer unit graph and work are identical; only the hardware loop and the schedule
differ):

* every kernel argument the body reads is a param, loaded by AGCUs into a buffer; a linear's
  weight is loaded by `agcus` AGCUs (split over its rows) and staged by one PMU per PCU of the
  linear (`buffer-depth` buffers of at most `tile-bytes` each: weights stream through);
* each llm op runs on a PCU group: linears (systolic) split over output features into
  `matmul-par` units, elementwise ops over features and rope / KV writes / attention over heads
  into `simd-par` units (always a divisor, so the splits are exact); norms, embedding, argmax
  and MoE on one unit; `llm.all_reduce` and `llm.all_gather` on an AGCU;
* kernel results are stored by AGCUs: the updated KV cache into a param bound to a buffer that
  aliases the input cache (only the new rows are written), a result that replaces an argument
  that dies at the call (the residual stream) in place into that argument's param (which is
  how a hardware loop carries it from trip to trip), anything else into a param of its own;
  in a looped kernel, every result the loop yields stacked (updated cache slices, per-op
  loops' per-trip results) is a stacked param: trip i writes slice i of what it is bound to;
* work comes from `passes.cost_model.op_cost` (FLOPs, weight / KV bytes really read);
* resources per kernel are checked against the preset; a kernel that does not fit is split
  into sections, data crossing a section boundary going through an HBM scratch tensor; a loop
  over several sections reconfigures every trip (the report says so). A single op too large
  for the chip fails with a diagnostic naming kernel, resource, need and capacity;
* the loop becomes `rdu.hw_loop` with the stacked params and a prefetch depth (trips whose
  loads may run ahead) bounded by the SRAM left for the extra staged weights.

Buffers are reused where the IR is value-semantic (caches and the residual stream updated in
place, slices and stacks as views), so the lowering checks that this cannot change what the step
computes and refuses, at the op, IR that relies on a copy (docs/lowering.md, "What the lowering
relies on, and checks").

Host side: one tensor per buffer a socket holds (per-layer weights separately, so each has its
own tier; KV caches stacked, with `.out` aliases), weights placed in HBM while they fit and in
DDR after (inputs, outputs and activations always in HBM, KV caches while they fit), launches
binding params to views, a final sync. The module is stamped `rdu.hardware`; the socket count
stays `llm.sockets`.

This file is the pass only (options, the order of the steps, the module it writes); the steps
are modules of their own, each importing only those listed before it:
`lowering/diagnostics.py` (refusals), `lowering/tensor_types.py`, `lowering/allocation.py`
(the cost-model allocation), `lowering/unit_mapping.py` (the knobs and one kernel body's ops
onto units), `lowering/sections.py` (cutting, spilling, materializing sections),
`lowering/kernels.py` (one kernel: params, results, loop, in-place checks), `lowering/host.py`
(the decode step's tensors and launches, and its contract checks) and
`lowering/placement.py` (memory tiers).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    ModuleOp,
    StringAttr,
    SymbolRefAttr,
)
from xdsl.ir import Attribute

from rdu_compiler.lowering.diagnostics import fail, fail_at
from rdu_compiler.lowering.host import Host
from rdu_compiler.lowering.kernels import inplace_pairs
from rdu_compiler.lowering.placement import place_tensors
from rdu_compiler.lowering.shared_configuration import lower_kernels
from rdu_compiler.lowering.tensor_types import tensor_of
from rdu_compiler.lowering.unit_mapping import Mapping
from rdu_compiler.passes.context_split import ContextSplit, kernel_calls, plan_context_split
from rdu_compiler.passes.pass_options import CheckedOptionsPass
from rdu_compiler.rdu_dialect import dfk, llm, rdu
from rdu_compiler.rdu_dialect.interpreter import ENTRY
from rdu_compiler.rdu_dialect.llm import sockets_of
from rdu_compiler.rdu_dialect.ssa import require_dominance
from rdu_compiler.simulator.hardware import (
    HardwarePreset,
    PresetError,
    get_preset,
    overrides_between,
)
from rdu_compiler.simulator.program import LaunchMode

__all__ = [
    "HARDWARE_ATTR",
    "HARDWARE_OVERRIDES_ATTR",
    "LowerDfkToRdu",
    "Mapping",
    "lowered_hardware",
    "stamp_hardware",
]

HARDWARE_ATTR = "rdu.hardware"
"""Module attribute naming the hardware preset the module was lowered for."""
HARDWARE_OVERRIDES_ATTR = "rdu.hardware_overrides"
"""Module attribute: `key=value,...`, the figures of the hardware the module was lowered for
that differ from its preset's (absent when none); the program records them."""


def lowered_hardware(module: ModuleOp) -> tuple[str, str] | None:
    """The hardware `module` was lowered for: its preset's name and `key=value,...` overrides
    (`""`: none), or None if it is not lowered."""
    name = module.attributes.get(HARDWARE_ATTR)
    if not isinstance(name, StringAttr):
        return None
    overrides = module.attributes.get(HARDWARE_OVERRIDES_ATTR)
    return name.data, overrides.data if isinstance(overrides, StringAttr) else ""


def stamp_hardware(module: ModuleOp, base: HardwarePreset, preset: HardwarePreset) -> None:
    """Record on `module` that it is lowered for `preset`: the preset `base` overridden."""
    module.attributes[HARDWARE_ATTR] = StringAttr(base.name)
    overrides = overrides_between(base, preset)
    if overrides:
        module.attributes[HARDWARE_OVERRIDES_ATTR] = StringAttr(overrides)
    else:
        module.attributes.pop(HARDWARE_OVERRIDES_ATTR, None)


@dataclass(frozen=True)
class LowerDfkToRdu(CheckedOptionsPass):
    """Maps dfk kernels onto RDU units and the decode step onto a host schedule (module doc)."""

    name = "lower-dfk-to-rdu"

    hw: str = "sn40l"
    hw_overrides: str = ""
    launch: LaunchMode = "software"
    matmul_par: int = Mapping.matmul_par
    attention_par: int = Mapping.attention_par
    simd_par: int = Mapping.simd_par
    agcus: int = Mapping.agcus
    tile_bytes: int = Mapping.tile_bytes
    buffer_depth: int = Mapping.buffer_depth
    prefetch: int = Mapping.prefetch
    collective_dtype: Literal["auto", "f32", "bf16"] = Mapping.collective_dtype
    summary: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require_dominance(op)
        try:
            base = preset = get_preset(self.hw)
            if self.hw_overrides:
                preset = base.with_overrides(self.hw_overrides)
        except PresetError as error:
            raise fail(str(error)) from None
        knobs = Mapping(
            matmul_par=self.matmul_par,
            attention_par=self.attention_par,
            simd_par=self.simd_par,
            agcus=self.agcus,
            tile_bytes=self.tile_bytes,
            buffer_depth=self.buffer_depth,
            prefetch=self.prefetch,
            collective_dtype=self.collective_dtype,
        )
        knobs.check()
        step = next(
            (o for o in op.ops if isinstance(o, func.FuncOp) and o.sym_name.data == ENTRY), None
        )
        if step is None:
            raise fail(f"no func.func @{ENTRY} (a decode step from rdu-import)")
        kernels = {o.sym_name.data: o for o in op.ops if isinstance(o, dfk.KernelOp)}
        calls = [o for o in step.body.block.ops if isinstance(o, dfk.CallOp)]
        calls_of: dict[str, list[dfk.CallOp]] = {}
        for call in calls:
            name = call.callee.string_value()
            if name not in kernels:
                raise fail_at(call, f"calls @{name}, which is no dfk.kernel of the module")
            calls_of.setdefault(name, []).append(call)
        inplace = {name: inplace_pairs(of, kernels) for name, of in calls_of.items()}
        plans = lower_kernels(kernels, calls, inplace, knobs, preset)
        host = Host(op, plans, self.launch)
        host.walk(step)
        sockets = sockets_of(op)
        model_attr = op.attributes.get("llm.model")
        model = model_attr.data if isinstance(model_attr, StringAttr) else "model"
        tensors = list(host.tensors.values())
        summary = place_tensors(tensors, preset, sockets, model)
        if self.summary:
            print(f"remark: lower-dfk-to-rdu: {summary}", file=sys.stderr)
            if (shared := _shared_kv_heads(op, step, preset)) is not None:
                print(f"remark: lower-dfk-to-rdu: {shared.describe()}", file=sys.stderr)
            for plan in plans.values():
                for line in plan.allocation.report(preset):
                    print(f"remark: lower-dfk-to-rdu: kernel @{plan.name}: {line}", file=sys.stderr)
                sections = len(plan.op.sections)
                if sections > 1:
                    print(
                        f"remark: lower-dfk-to-rdu: kernel @{plan.name} needs {sections} "
                        f"sections"
                        + (
                            f", reconfigured on each of its {plan.trips} trips"
                            if plan.op.loop is not None
                            else ""
                        ),
                        file=sys.stderr,
                    )
        body = op.body.block
        for old in reversed(list(body.ops)):
            body.erase_op(old, safe_erase=False)
        body.add_ops(host.values.values())
        for t in tensors:
            props: dict[str, Attribute] = {
                "sym_name": StringAttr(t.name),
                "type": tensor_of(t.dtype, t.shape),
                "kind": rdu.TensorKindAttr(rdu.TensorKind(t.kind)),
                "tier": rdu.MemoryTierAttr(rdu.MemoryTier(t.tier)),
            }
            if t.sources:
                props["sources"] = ArrayAttr(t.sources)
            if t.aliases:
                props["aliases"] = SymbolRefAttr(t.aliases)
            body.add_op(rdu.TensorOp(properties=props))
        body.add_ops(plan.op for plan in plans.values())
        main = func.FuncOp(ENTRY, ((), ()))
        main.body.block.add_ops([*host.launches, rdu.SyncOp(), func.ReturnOp()])
        body.add_op(main)
        stamp_hardware(op, base, preset)


def _shared_kv_heads(
    module: ModuleOp, step: func.FuncOp, preset: HardwarePreset
) -> ContextSplit | None:
    """How the sharding shared kv heads fewer than the sockets (replicated, or dealt along the
    sequence: the cache's `#llm.shard` interleave), with the cost model's figures for the
    summary; None when every socket has kv heads of its own."""
    sockets = sockets_of(module)
    attrs = step.arg_attrs.data[2].data if step.arg_attrs else {}
    shard = attrs.get(llm.SHARD_ATTR)
    attentions = [o for o in module.walk() if isinstance(o, llm.AttentionOp)]
    if not isinstance(shard, llm.ShardAttr) or shard.parts.data == sockets or not attentions:
        return None
    return plan_context_split(
        attentions,
        sockets,
        sockets // shard.parts.data,
        preset,
        sharded=True,
        runs=kernel_calls(module),
        knob=shard.interleave.data,
    )
