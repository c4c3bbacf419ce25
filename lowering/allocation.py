"""Cost-model-driven allocation of a kernel body's units (the first job of `lower-dfk-to-rdu`).

A fused layer is a pipeline: while one stage computes, the socket's HBM streams the next
stages' weights and KV rows. The HBM stays busy only if no stage is slower than the data it
consumes arrives. So, per op of the body, from `passes.cost_model.op_cost` and the op's
operand types:

* its **work**: off-chip bytes (the weights it streams, the KV rows it attends: what it costs
  the socket's HBM), FLOPs, and the on-chip bytes its units read (one f32 vector per cycle);
* its **rate target**: it must finish its work in at most `PACE` times the time the socket's
  HBM (`hbm_bandwidth x hbm_efficiency`) needs for its off-chip bytes. Summed over the ops of
  a layer, compute then takes at most `PACE` of the layer's HBM time, which leaves the rest
  for the all-reduce barriers and pipeline fill;
* its **PCUs**: the fewest that meet the target at its rate (a systolic PCU does
  `lanes x 2 x stages x clock` FLOP/s, any unit moves `lanes x 4 bytes x clock`). The FLOPs
  grow with the batch, so a large batch gets more PCUs, up to the chip's budget. If the ops
  want more than the chip has (compute-bound), the attention keeps what it wants: its KV rows
  stream while it runs (they are not staged ahead), so a slower attention idles the HBM. The
  ops beside it (its segment: the ops between two collectives, which run side by side) need
  only keep pace with the attention's KV time, and the other ops share the rest, each the same
  fraction of what it wanted (70B at batch 80 on 16 sockets: attention 8 -> 32 PCUs, the MLP's
  linears 128 -> 256 each).

Ops without off-chip bytes (norms, rope, elementwise ops, the KV write) touch a few kB and keep
`simd-par` units. The weight **staging** (PMUs between a weight's loads and its PCUs) gets the
chip's SRAM: each linear weight of a trip is staged whole while `1 + prefetch` trips' worth fit
(so the loads of the MLP stream during attention and the next trip's during this one's tail),
otherwise every weight the same fraction; each PMU holds at most its SRAM. The knobs
(`matmul-par`, `attention-par`, `tile-bytes`) override the allocation where given. A kernel
sized to share the chip with another configuration (`reserved`: the LM head beside the looped
layers, `lowering/shared_configuration.py`) plans with the PCUs, PMUs and SRAM that one leaves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from xdsl.ir import Operation, SSAValue

from rdu_compiler.passes.cost_model import op_cost, tensor_bytes
from rdu_compiler.rdu_dialect import llm
from rdu_compiler.rdu_dialect.tensors import tensor_shape
from rdu_compiler.simulator.hardware import HardwarePreset, pcu_flops_per_s, vector_bytes_per_s
from rdu_compiler.simulator.program import Resources

__all__ = ["PACE", "Allocation", "Stage", "allocate"]

PACE = 0.5
"""Fraction of its off-chip bytes' HBM time a stage may compute for (see the module doc)."""

STAGING_FLOOR = 65536
"""The least SRAM a weight's staging gets when SRAM is short (two 32 KiB tiles)."""

SRAM_FILL = 0.9
"""Fraction of the SRAM the staging plans for (the rest: tiles of the non-linear ops)."""


@dataclass(frozen=True)
class Stage:
    """What the allocation decided for one op: `pcus` wanted (before the lowering rounds it to
    a divisor of the split dimension), its work, and its expected time at that count."""

    op: str
    pcus: int
    offchip_bytes: int
    flops: int
    onchip_bytes: int
    systolic: bool

    def seconds(self, preset: HardwarePreset, pcus: int | None = None) -> float:
        n = pcus or self.pcus
        flop_rate = pcu_flops_per_s(preset, n, systolic=self.systolic)
        return max(self.flops / flop_rate, self.onchip_bytes / vector_bytes_per_s(preset, n))


@dataclass
class Allocation:
    """Per op of a kernel body: its stage (PCUs), and per staged weight its SRAM bytes."""

    stages: dict[Operation, Stage] = field(default_factory=dict)
    staging: dict[SSAValue, int] = field(default_factory=dict)
    hbm_rate: float = 0.0
    placed: dict[Operation, int] = field(default_factory=dict)  # PCUs the lowering used
    notes: list[str] = field(default_factory=list)  # why it was sized so, for the summary

    def pcus(self, op: Operation) -> int:
        stage = self.stages.get(op)
        return stage.pcus if stage is not None else 0

    def seconds(self, preset: HardwarePreset) -> float:
        """Expected time of the stages one after the other, each no faster than its off-chip
        bytes at HBM rate (at the PCUs the lowering used)."""
        return sum(
            max(stage.seconds(preset, self.placed.get(op, stage.pcus)), self._hbm_seconds(stage))
            for op, stage in self.stages.items()
        )

    def _hbm_seconds(self, stage: Stage) -> float:
        return stage.offchip_bytes / self.hbm_rate if self.hbm_rate else 0.0

    def report(self, preset: HardwarePreset) -> list[str]:
        """One line per allocated stage: PCUs, work, expected time against its HBM time."""
        lines = []
        for op, stage in self.stages.items():
            pcus = self.placed.get(op, stage.pcus)
            name = op.results[0].name_hint or stage.op
            hbm_us = self._hbm_seconds(stage) * 1e6
            lines.append(
                f"{stage.op} '{name}': {pcus} PCUs, {stage.offchip_bytes} bytes off-chip, "
                f"{stage.flops} FLOPs: {stage.seconds(preset, pcus) * 1e6:.2f} us "
                f"(its bytes at HBM rate: {hbm_us:.2f} us)"
            )
        staged = sum(self.staging.values())
        if staged:
            lines.append(f"weight staging: {staged} bytes of SRAM over {len(self.staging)} weights")
        return lines + self.notes


def _stage(op: Operation) -> Stage | None:
    """The work of an op that streams off-chip data (linear, attention, MoE), else None."""
    cost = op_cost(op)
    name = op.name.removeprefix("llm.")
    if isinstance(op, llm.LinearOp):
        onchip = tensor_bytes(op.weight) + tensor_bytes(op.input)
        return Stage(name, 1, cost.weight_bytes, cost.flops, onchip, True)
    if isinstance(op, llm.AttentionOp):
        onchip = cost.kv_read_bytes + tensor_bytes(op.query)
        return Stage(name, 1, cost.kv_read_bytes, cost.flops, onchip, True)
    if isinstance(op, llm.MoEOp):
        onchip = cost.weight_bytes + tensor_bytes(op.input)
        return Stage(name, 1, cost.weight_bytes, cost.flops, onchip, True)
    return None


def allocate(
    ops: Sequence[Operation],
    preset: HardwarePreset,
    *,
    weights: dict[SSAValue, bool],
    small_pcus: int,
    prefetch: int,
    staging_override: int | None,
    buffer_depth: int,
    reserved: Resources | None = None,
) -> Allocation:
    """The allocation of one kernel body (`ops`, in order). `weights` says, per linear weight
    value, whether it is streamed from off-chip (a kernel argument); `small_pcus` is what the
    ops without off-chip bytes take; `prefetch` the trips whose weights are staged ahead;
    `staging_override` (tile-bytes x buffer-depth per PMU) replaces the SRAM plan;
    `reserved`: what another configuration sharing the chip holds (the body gets the rest)."""
    taken = reserved or Resources(pcus=0, pmus=0, sram_bytes=0)
    hbm = preset.hbm_bandwidth * preset.hbm_efficiency
    alloc = Allocation(hbm_rate=hbm)
    stages = {op: s for op in ops if (s := _stage(op)) is not None}
    wanted: dict[Operation, int] = {}
    for op, stage in stages.items():
        if stage.offchip_bytes == 0 or (
            isinstance(op, llm.LinearOp) and not weights.get(op.weight, False)
        ):
            wanted[op] = 1
            continue
        target = PACE * stage.offchip_bytes / hbm
        wanted[op] = max(1, math.ceil(stage.seconds(preset, 1) / target))
    budget = max(len(wanted), preset.pcus - taken.pcus - small_pcus)
    wanted = _share(wanted, _paced(ops, stages, wanted, preset, hbm), budget)
    choices = {op: _choices(op) for op in wanted}
    wanted = {op: _pick(choices[op], n) for op, n in wanted.items()}
    while sum(wanted.values()) > budget:  # rounding to divisors went over: step the largest down
        op = max(wanted, key=lambda o: (wanted[o], -list(wanted).index(o)))
        smaller = [d for d in choices[op] if d < wanted[op]]
        if not smaller:
            break
        wanted[op] = smaller[-1]
    for op, stage in stages.items():
        alloc.stages[op] = Stage(
            stage.op,
            wanted[op],
            stage.offchip_bytes,
            stage.flops,
            stage.onchip_bytes,
            stage.systolic,
        )
    if staging_override is not None:
        return alloc
    streamed = _streamed(stages, weights)
    per_trip = sum(streamed.values())
    if per_trip:
        free_pmus = max(0, preset.pmus - taken.pmus)
        free_sram = max(0, min(preset.sram_bytes - taken.sram_bytes, free_pmus * preset.pmu_bytes))
        room = SRAM_FILL * free_sram
        fraction = min(1.0, room / (per_trip * (1 + prefetch) * _depth_factor(buffer_depth)))
        for w, moved in streamed.items():
            whole = moved * _depth_factor(buffer_depth)
            alloc.staging[w] = int(max(min(whole, STAGING_FLOOR), whole * fraction))
    return alloc


def _paced(
    ops: Sequence[Operation],
    stages: dict[Operation, Stage],
    wanted: dict[Operation, int],
    preset: HardwarePreset,
    hbm: float,
) -> dict[Operation, int]:
    """The PCUs each op needs when its segment (the ops between two collectives, which run
    side by side) holds an attention: the attention streams its KV rows for their HBM time
    whatever its PCUs, so the ops beside it only need to finish within `PACE` of that time,
    not of their own bytes'. Ops of segments without attention are absent."""
    segments: list[list[Operation]] = [[]]
    for op in ops:
        if isinstance(op, llm.AllReduceOp | llm.AllGatherOp):
            segments.append([])
        elif op in wanted:
            segments[-1].append(op)
    paced: dict[Operation, int] = {}
    for segment in segments:
        kv_bytes = [stages[op].offchip_bytes for op in segment if isinstance(op, llm.AttentionOp)]
        if not kv_bytes:
            continue
        target = PACE * max(kv_bytes) / hbm
        for op in segment:
            relaxed = max(1, math.ceil(stages[op].seconds(preset, 1) / target)) if target else 1
            paced[op] = wanted[op] if isinstance(op, llm.AttentionOp) else min(wanted[op], relaxed)
    return paced


def _share(
    wanted: dict[Operation, int], paced: dict[Operation, int], budget: int
) -> dict[Operation, int]:
    """Scale the wanted PCUs into the budget when the ops want more (compute-bound). An
    attention's KV rows cannot be staged ahead (they stream while it runs, so a slower
    attention idles the HBM), while weights are staged ahead of their PCUs: the ops of an
    attention's segment get what keeps pace with it (`paced`), and the other ops share the
    rest, each the same fraction of what it wanted. Only if the paced ops alone want the
    budget does every op get the same share of what it wanted."""
    total = sum(wanted.values())
    if total <= budget:
        return wanted
    pinned = sum(paced.values())
    rest = total - sum(wanted[op] for op in paced)
    if pinned < budget and rest > 0:
        room = budget - pinned
        return {
            op: paced[op] if op in paced else min(n, max(1, n * room // rest))
            for op, n in wanted.items()
        }
    return {op: max(1, n * budget // total) for op, n in wanted.items()}


def _streamed(stages: dict[Operation, Stage], weights: dict[SSAValue, bool]) -> dict[SSAValue, int]:
    """The weights staged through PMUs, with the bytes a trip moves: a linear's whole weight,
    the routed share of an MoE's expert weights."""
    out: dict[SSAValue, int] = {}
    for op in stages:
        if isinstance(op, llm.LinearOp) and weights.get(op.weight):
            out[op.weight] = tensor_bytes(op.weight)
        elif isinstance(op, llm.MoEOp):
            cost, router = op_cost(op), tensor_bytes(op.router)
            routed, every = cost.weight_bytes - router, cost.dense_weight_bytes - router
            for w in (op.gate, op.up, op.down):
                if weights.get(w):
                    out[w] = tensor_bytes(w) * routed // every
    return out


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def _choices(op: Operation) -> list[int]:
    """The PCU counts an op's units can split it into exactly: divisors of a linear's output
    features; an attention's kv heads, or beyond them its context rows (blocks)."""
    if isinstance(op, llm.LinearOp):
        return _divisors(tensor_shape(op.weight)[0])
    if isinstance(op, llm.MoEOp):
        return _divisors(tensor_shape(op.gate)[1])
    if isinstance(op, llm.AttentionOp):
        _, kv_heads, context, _ = tensor_shape(op.k_cache)
        heads = _divisors(kv_heads)
        return heads + [d for d in _divisors(context) if d > heads[-1]]
    return [1]


def _pick(choices: list[int], want: int) -> int:
    """The choice nearest `want`: the smallest not below it unless that overshoots by half."""
    above = [d for d in choices if d >= want]
    below = [d for d in choices if d <= want]
    if above and (not below or above[0] <= 1.5 * want):
        return above[0]
    return below[-1]


def _depth_factor(buffer_depth: int) -> float:
    """SRAM per byte that may run ahead: with `buffer_depth` buffers, one is being consumed."""
    return buffer_depth / max(1, buffer_depth - 1)
