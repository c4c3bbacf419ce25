"""Unit mapping: one fused kernel body's llm ops onto PCU / PMU / AGCU units, as plain data.

:class:`KernelLowering` walks a kernel body op by op and records :class:`Unit`s (what each unit
reads and writes as :class:`Access` ranges, its count, its work) with one lowering per op kind:
linear (staged weights, systolic PCUs over output features), MoE (experts' intermediate blocks,
then a combine), attention (over KV heads, or flash-decoding style over context blocks, then a
combine), the KV cache write (in place), collectives (one AGCU) and the rest (elementwise over
features, norms and the like on one PCU). Units stay plain data until the sections are known
(`lowering/sections.py` cuts and materializes them), so a kernel that does not fit can be cut
without rebuilding ops. How many PCUs and how much SRAM each op gets comes from the
:class:`Mapping` knobs or, where they say -1, from the cost-model allocation
(`lowering/allocation.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from xdsl.dialects.builtin import (
    ArrayAttr,
    BoolAttr,
    DictionaryAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import IRDLOperation

from rdu_compiler.lowering.allocation import Allocation
from rdu_compiler.lowering.diagnostics import fail, fail_at, value_name
from rdu_compiler.lowering.tensor_types import shape_of, whole
from rdu_compiler.passes.cost_model import moe_expert_share, op_cost, tensor_bytes
from rdu_compiler.passes.fusion import FusionPlan
from rdu_compiler.rdu_dialect import llm, rdu
from rdu_compiler.rdu_dialect.tensors import dtype_name
from rdu_compiler.simulator.hardware import HardwarePreset
from rdu_compiler.simulator.numerics import bytes_of


def _divisor(n: int, at_most: int) -> int:
    """The largest divisor of n that is <= at_most: a split into equal, exact blocks."""
    return max(d for d in range(1, min(n, max(at_most, 1)) + 1) if n % d == 0)


def _divisor_at_least(n: int, at_least: int) -> int:
    """The smallest divisor of n that is >= at_least (n itself if none is smaller)."""
    return next(d for d in range(max(1, min(at_least, n)), n + 1) if n % d == 0)


STAGED_TRIPS_AHEAD = 1
"""Trips ahead whose weights the SRAM plan leaves room for unless `prefetch` says (kernel
looping's default pipeline depth 2 keeps one trip in flight)."""

STREAM_TILE = 65536
"""Bytes per stream tile (and per staging buffer when `tile-bytes` is given but no more)."""


@dataclass(frozen=True)
class Mapping:
    """The knobs of the mapping (pass options of the same names, dashed). -1 leaves a knob to
    the cost-model allocation (`lowering/allocation.py`); a value overrides it."""

    matmul_par: int = -1  # PCUs per linear (largest divisor of its output features <= this)
    attention_par: int = -1  # PCUs per attention (kv-head groups x context blocks)
    simd_par: int = 8
    agcus: int = 4
    tile_bytes: int = -1  # staging per PMU buffer (-1: the SRAM plan); stream tiles 64 KiB
    buffer_depth: int = 2
    prefetch: int = -1  # -1: the dfk.loop's pipeline depth - 1 (iterations in flight)
    # the dtype a row-split linear's partials cross the links in, to its all-reduce: f32 (the
    # accumulators, rounded once after the sum: exactly the reference), bf16 (rounded before:
    # half the bytes of f32) or auto (the linear's result dtype, as systems reduce: bf16 for a
    # bf16 model; see docs/tensor_parallelism.md for the measured choice of default)
    collective_dtype: Literal["auto", "f32", "bf16"] = "auto"

    def check(self) -> None:
        if self.collective_dtype not in ("auto", "f32", "bf16"):
            raise fail(f"collective-dtype must be auto, f32 or bf16, got {self.collective_dtype!r}")
        for name in ("simd_par", "agcus", "buffer_depth"):
            if getattr(self, name) < 1:
                raise fail(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("matmul_par", "attention_par", "tile_bytes", "prefetch"):
            if getattr(self, name) < -1 or getattr(self, name) == 0 and name != "prefetch":
                raise fail(
                    f"{name.replace('_', '-')} must be >= 1 (or -1: from the "
                    f"{'loop' if name == 'prefetch' else 'allocation'}), got {getattr(self, name)}"
                )

    @property
    def tile(self) -> int:
        """Bytes per stream tile."""
        return self.tile_bytes if self.tile_bytes > 0 else STREAM_TILE


Ranges = list[tuple[int, int]]


@dataclass
class Access:
    """What a unit reads or writes: `ranges` of buffer or param `name` (unit j shifted by j x
    `step`)."""

    name: str
    ranges: Ranges
    step: list[int] | None = None

    def attr(self) -> rdu.AccessAttr:
        return rdu.AccessAttr(self.name, self.ranges, self.step)

    def block(self) -> list[int]:
        return [b - a for a, b in self.ranges]


@dataclass
class FusedOp:
    """An op run in a unit's pipeline (the program's `Fused`): on the unit's result (`operand`
    -1) or on its read `operand` before the unit's op, with `reads` as its other operands."""

    op: str
    operand: int
    reads: list[Access]
    attrs: dict[str, Attribute]

    def attr(self) -> DictionaryAttr:
        entry: dict[str, Attribute] = {
            "op": StringAttr(self.op),
            "operand": IntegerAttr(self.operand, i64),
            "reads": ArrayAttr([a.attr() for a in self.reads]),
        }
        if self.attrs:
            entry["attrs"] = DictionaryAttr(self.attrs)
        return DictionaryAttr(entry)


@dataclass
class Unit:
    """A group of `count` like units (PCU, PMU or AGCU) of one op, with its work."""

    kind: Literal["pcu", "pmu", "agcu"]
    op: str
    id: str
    reads: list[Access]
    write: Access
    count: int = 1
    flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    tiles: int = 0
    roofline_bytes: int | None = None  # a transfer's share of the unsharded step's bytes
    attrs: dict[str, Attribute] = field(default_factory=dict)
    attr_step: dict[str, int] = field(default_factory=dict)
    attr_by_socket: dict[str, list[int]] = field(default_factory=dict)
    mode: str = "simd"
    sram_bytes: int = 0
    buffers: int = 1
    group: int = 0  # the op it belongs to: sections are cut between groups only
    fused: list[FusedOp] = field(default_factory=list)

    def all_reads(self) -> list[Access]:
        """What the unit reads: its own reads, then its fused ops'."""
        return [*self.reads, *(a for f in self.fused for a in f.reads)]


def fresh_name(hint: str, taken: set[str]) -> str:
    """`hint`, or `hint_1`, `hint_2`, ... if taken; the name returned is added to `taken`."""
    name, k = hint, 0
    while name in taken:
        k += 1
        name = f"{hint}_{k}"
    taken.add(name)
    return name


class KernelLowering:
    """Maps one kernel body onto units (see the module docstring)."""

    def __init__(self, knobs: Mapping, preset: HardwarePreset):
        self.knobs = knobs
        self.preset = preset
        self.alloc = Allocation()
        self.units: list[Unit] = []
        self.params: dict[str, tuple[list[int], str]] = {}  # name -> shape, dtype (ordered)
        self.buffers: dict[str, tuple[list[int], str]] = {}
        self.buffer_of: dict[SSAValue, str] = {}
        self.param_of: dict[SSAValue, str] = {}
        self.loaded: dict[str, str] = {}  # param -> buffer holding it
        self.load_unit: dict[str, Unit] = {}
        self.cache_param_of: dict[SSAValue, str] = {}  # kv_cache_write result -> cache param
        self.names: set[str] = set()
        self.ids: set[str] = set()
        self.group = 0
        self.fusions = FusionPlan()  # set by the caller (`passes/fusion.py`'s plan of the body)

    # -- names -----------------------------------------------------------------------------

    def add_param(self, hint: str, shape: list[int], dtype: str) -> str:
        name = fresh_name(hint, self.names)
        self.params[name] = (shape, dtype)
        return name

    def _buffer(self, hint: str, shape: list[int], dtype: str) -> str:
        name = fresh_name(hint, self.names)
        self.buffers[name] = (shape, dtype)
        return name

    def _unit(self, unit: Unit) -> Unit:
        unit.id = fresh_name(unit.id, self.ids)
        unit.group = self.group
        if not unit.tiles and (unit.bytes_read or unit.bytes_written):
            moved = max(unit.bytes_read, unit.bytes_written)
            unit.tiles = max(unit.count, -(-moved // self.knobs.tile))
        self.units.append(unit)
        return unit

    # -- params in, results out -------------------------------------------------------------

    def _load(self, value: SSAValue, split_dim: int | None = None) -> str:
        """The buffer holding kernel param `value` (loaded by AGCUs on first use; `agcus` of
        them over `split_dim`: a weight's rows, a KV cache's context rows)."""
        param = self.param_of[value]
        if param in self.loaded:
            return self.loaded[param]
        shape, dtype = self.params[param]
        buffer = self._buffer(f"{param}.ld", shape, dtype)
        dim = 0 if split_dim is None else split_dim
        count = _divisor(shape[dim], self.knobs.agcus) if split_dim is not None else 1
        step = [0] * len(shape)
        step[dim] = shape[dim] // count
        block = whole(shape)
        block[dim] = (0, step[dim])
        step = step if count > 1 else None
        size = bytes_of(shape, dtype)
        self.load_unit[param] = self._unit(
            Unit(
                "agcu",
                "load",
                f"ld.{param}",
                [Access(param, block, step)],
                Access(buffer, block, step),
                count=count,
                bytes_read=size,
                bytes_written=size,
            )
        )
        self.loaded[param] = buffer
        return buffer

    def _read_cache(self, value: SSAValue) -> str:
        """The buffer holding a KV cache: loaded by AGCUs over its context rows."""
        if value in self.param_of and value not in self.buffer_of:
            return self._load(value, split_dim=2)
        return self._read(value)

    def _read(self, value: SSAValue) -> str:
        """The buffer holding `value`: a param (loaded on first use) or an op's result."""
        if value in self.buffer_of:
            return self.buffer_of[value]
        if value in self.param_of:
            return self._load(value)
        raise fail(f"{value_name(value)} is neither a kernel argument nor computed in the kernel")

    def _set_load_bytes(self, param: str, size: int) -> None:
        """A load moves what its consumer really reads (attended KV rows, gathered rows)."""
        unit = self.load_unit[param]
        unit.bytes_read = unit.bytes_written = size
        unit.tiles = 0 if size == 0 else max(unit.count, -(-size // self.knobs.tile))

    def store(self, value: SSAValue, param: str, size: int | None = None) -> None:
        buffer = self._read(value)
        shape, dtype = self.buffers[buffer]
        size = bytes_of(shape, dtype) if size is None else size
        self._unit(
            Unit(
                "agcu",
                "store",
                f"st.{param}",
                [Access(buffer, whole(shape))],
                Access(param, whole(shape)),
                bytes_read=size,
                bytes_written=size,
            )
        )

    # -- compute ops -------------------------------------------------------------------------

    def _result(self, op: Operation, dtype: str | None = None) -> tuple[str, list[int], str]:
        """The buffer `op`'s units write: its result's, or, with an epilogue chain fused, the
        chain's last result's."""
        chain = self.fusions.epilogues.get(op)
        res = (chain[-1] if chain else op).results[0]
        shape, dtype = shape_of(res), dtype or dtype_name(res)
        name = self._buffer(res.name_hint or op.name.removeprefix("llm."), shape, dtype)
        self.buffer_of[res] = name
        return name, shape, dtype

    def _epilogue(self, anchor: Operation, unit: Unit) -> None:
        """Run `anchor`'s fused epilogue chain in `unit`: each op on the result so far, its
        other operand read as the unit writes."""
        value = anchor.results[0]
        for op in self.fusions.epilogues.get(anchor, ()):
            others = [v for v in op.operands if v is not value]
            reads = [Access(self._read(v), unit.write.ranges, unit.write.step) for v in others]
            unit.fused.append(FusedOp(op.name.removeprefix("llm."), -1, reads, self._attrs(op)))
            unit.flops += op_cost(op).flops
            if unit.kind == "pcu":  # a collective's bytes are its block's, over the links
                unit.bytes_read += sum(map(tensor_bytes, others))
            value = op.results[0]

    def _prologue(self, op: Operation, index: int) -> tuple[SSAValue, llm.RopeOp | None]:
        """Operand `index` of `op` as its units read it, and the rope fused to run on it
        first, if any (`_with_prologue` adds it to the units)."""
        value = op.operands[index]
        rope = value.owner
        if isinstance(rope, llm.RopeOp) and rope in self.fusions.prologues.get(op, ()):
            return rope.input, rope
        return value, None

    def _with_prologue(self, unit: Unit, rope: llm.RopeOp | None, operand: int) -> None:
        """Run `rope` on the unit's read `operand` before its op; each unit whose read does
        not step ropes the whole block."""
        if rope is None:
            return
        positions = self._read(rope.positions)
        read = Access(positions, whole(shape_of(rope.positions)))
        unit.fused.insert(0, FusedOp("rope", operand, [read], self._attrs(rope)))
        per_unit = unit.count if unit.reads[operand].step is None else 1
        unit.flops += op_cost(rope).flops * per_unit
        unit.bytes_read += tensor_bytes(rope.positions) * unit.count

    def _pcu(
        self,
        op: Operation,
        reads: list[Access],
        write: Access,
        count: int,
        mode: str = "simd",
        attrs: dict[str, Attribute] | None = None,
        bytes_read: int | None = None,
        bytes_written: int | None = None,
        attr_step: dict[str, int] | None = None,
        op_name: str | None = None,
        flops: int | None = None,
        attr_by_socket: dict[str, list[int]] | None = None,
    ) -> Unit:
        """A PCU group; its bytes are the regions it accesses unless the op touches less (a
        gather, the attended KV rows, a KV write's new rows)."""

        def region_bytes(a: Access) -> int:
            space = self.buffers[a.name]
            return bytes_of(a.block(), space[1]) * (count if a.step else 1)

        return self._unit(
            Unit(
                "pcu",
                op_name or op.name.removeprefix("llm."),
                write.name,
                reads,
                write,
                count=count,
                flops=op_cost(op).flops if flops is None else flops,
                bytes_read=sum(map(region_bytes, reads)) if bytes_read is None else bytes_read,
                bytes_written=region_bytes(write) if bytes_written is None else bytes_written,
                attrs=attrs or {},
                attr_step=attr_step or {},
                attr_by_socket=attr_by_socket or {},
                mode=mode,
            )
        )

    def lower_op(self, op: Operation) -> None:
        if op in self.fusions.fused:  # runs in its anchor's units, lowered where its chain ends
            anchor = self.fusions.chain_end(op)
            if anchor is None:
                return
            op = anchor
        elif op in self.fusions.epilogues:
            return
        self.group += 1
        for value in op.operands:
            if value.owner in self.fusions.fused:
                continue  # a prologue's result: the anchor reads its input
            if value not in self.buffer_of and value not in self.param_of:
                raise fail_at(
                    op,
                    f"reads {value_name(value)}, which is neither an argument of the kernel nor "
                    "computed in it (a value captured from outside that the lowering cannot map)",
                )
        for fused in (*self.fusions.prologues.get(op, ()), *self.fusions.epilogues.get(op, ())):
            for value in fused.operands:  # loads of fused ops' operands come before the unit
                if value in self.param_of:
                    self._read(value)
        if isinstance(op, llm.LinearOp):
            return self._linear(op)
        if isinstance(op, llm.KVCacheWriteOp):
            return self._kv_cache_write(op)
        if isinstance(op, llm.AttentionOp):
            return self._attention(op)
        if isinstance(op, llm.RopeOp):
            return self._split_features(op, op.head_dim.value.data)
        if isinstance(op, llm.SiluOp | llm.GeluOp | llm.AddOp | llm.MulOp):
            return self._split_features(op, 1)
        if isinstance(op, llm.MoEOp):
            return self._moe(op)
        if isinstance(op, llm.AllReduceOp | llm.AllGatherOp):
            return self._collective(op)
        if isinstance(
            op,
            llm.EmbeddingOp | llm.RMSNormOp | llm.LayerNormOp | llm.ArgmaxOp | llm.SoftmaxOp,
        ):
            return self._whole_op(op)
        raise fail_at(op, f"no mapping for '{op.name}' onto RDU units")

    def _collective(self, op: llm.AllReduceOp | llm.AllGatherOp) -> None:
        """One AGCU: it reads this socket's block (f32 partials for a row-split linear's
        all-reduce) and writes what every socket gets; an all-gather names its dim."""
        src = self._read(op.input)
        out, shape, dtype = self._result(op)
        part = shape_of(op.input)
        unit = self._unit(
            Unit(
                "agcu",
                op.name.removeprefix("llm."),
                out,
                [Access(src, whole(part))],
                Access(out, whole(shape)),
                bytes_read=bytes_of(part, self.buffers[src][1]),
                bytes_written=bytes_of(shape, dtype),
                attrs={"dim": op.dim} if isinstance(op, llm.AllGatherOp) else {},
            )
        )
        self._epilogue(op, unit)

    def _group_gather(self, src: str, dst: str, group: int) -> None:
        """One AGCU all-gathering `src` along dim 1 into `dst` over consecutive groups of
        `group` sockets (the sockets sharing a kv head whose cache they deal)."""
        part, dtype = self.buffers[src]
        shape = self.buffers[dst][0]
        self._unit(
            Unit(
                "agcu",
                "all_gather",
                dst,
                [Access(src, whole(part))],
                Access(dst, whole(shape)),
                bytes_read=bytes_of(part, dtype),
                bytes_written=bytes_of(shape, dtype),
                attrs={"dim": IntegerAttr(1, i64), "group": IntegerAttr(group, i64)},
            )
        )

    def _attrs(self, op: Operation, **overrides: Any) -> dict[str, Attribute]:
        """The op's properties, typed as on the op, as the numerics keywords."""
        assert isinstance(op, IRDLOperation)  # every llm op is defined by IRDL
        attrs: dict[str, Attribute] = {}
        for name in type(op).get_irdl_definition().properties:
            attr = op.properties.get(name)
            if attr is not None and name not in ("context_shards", "expert_shards"):
                # units say them per socket (`attr_by_socket`)
                attrs[name] = attr
        for name, value in overrides.items():
            attrs[name] = IntegerAttr(value, i64)
        return attrs

    def _whole_op(self, op: Operation) -> None:
        reads = [self._read(v) for v in op.operands]
        out, shape, _ = self._result(op)
        bytes_read = None
        if isinstance(op, llm.EmbeddingOp):
            gathered = op_cost(op).weight_bytes
            if op.table in self.param_of:
                self._set_load_bytes(self.param_of[op.table], gathered)
            bytes_read = gathered + tensor_bytes(op.ids)
        self._pcu(
            op,
            [Access(r, whole(self.buffers[r][0])) for r in reads],
            Access(out, whole(shape)),
            1,
            attrs=self._attrs(op),
            bytes_read=bytes_read,
        )

    def _units(self, op: Operation, extent: int, knob: int) -> int:
        """How many PCUs split `extent` (always a divisor): the knob's largest divisor not
        above it, or the allocation's smallest divisor not below what it wants."""
        count = (
            _divisor(extent, knob)
            if knob > 0
            else _divisor_at_least(extent, self.alloc.pcus(op) or 1)
        )
        self.alloc.placed[op] = count
        return count

    def _stage_weight(
        self,
        value: SSAValue,
        dim: int,
        pcus: int,
        moved: int | None = None,
        roofline_bytes: int | None = None,
    ) -> str:
        """Load a weight (by AGCUs over `dim`) and stage it in PMUs over `dim` (their SRAM from
        the allocation, or one PMU per PCU with `tile-bytes` x `buffer-depth`): the buffer the
        `pcus` PCUs read. `moved`: the bytes really read (the routed experts' share);
        `roofline_bytes`: the load's share of the unsharded step's bytes, if smaller."""
        loaded = self._load(value, split_dim=dim)
        param = self.param_of[value]
        shape, dtype = shape_of(value), dtype_name(value)
        size = bytes_of(shape, dtype) if moved is None else moved
        if moved is not None:
            self._set_load_bytes(param, moved)
        self.load_unit[param].roofline_bytes = roofline_bytes
        depth = self.knobs.buffer_depth
        if self.knobs.tile_bytes > 0:
            count = pcus
            per_pmu = min(self.knobs.tile_bytes, size // count) * depth
        else:
            staged_bytes = self.alloc.staging.get(value, self.preset.pmu_bytes)
            count = _divisor_at_least(shape[dim], -(-staged_bytes // self.preset.pmu_bytes))
            per_pmu = staged_bytes // count
        block = whole(shape)
        block[dim] = (0, shape[dim] // count)
        step = [0] * len(shape)
        step[dim] = shape[dim] // count
        staged = self._buffer(f"{param}.pmu", shape, dtype)
        self._unit(
            Unit(
                "pmu",
                "copy",
                f"pmu.{param}",
                [Access(loaded, block, step if count > 1 else None)],
                Access(staged, block, step if count > 1 else None),
                count=count,
                bytes_read=size,
                bytes_written=size,
                sram_bytes=max(1, min(self.preset.pmu_bytes, per_pmu)),
                buffers=depth,
            )
        )
        return staged

    def _moe(self, op: llm.MoEOp) -> None:
        """Experts over PCUs: every unit takes one block of every expert's intermediate dim
        (gate / up rows, down columns) and computes the routed experts' partial down
        projections (`moe_partial`, f32); `moe_combine` units (over hidden features) sum the
        blocks, round each expert once and weight them. Each unit routes the real tokens
        itself (the router is small); the weights staged are the routed share (the cost
        model's assumption: `min(E, B x top_k)` distinct experts per step). Experts dealt
        over the sockets (`expert_shards`): the units hold the socket's experts, from its
        first one on (`expert_start` per socket), the combine hands the all-reduce its sum in
        the collective dtype (as a row-split linear does), and the loads are the busiest
        socket's, with the socket's share of the unsharded step's bytes as their
        `roofline_bytes` (cost model)."""
        experts, inter, hidden = shape_of(op.gate)
        routed_over = shape_of(op.router)[0]  # the router scores every expert
        batch, top_k = shape_of(op.input)[0], op.top_k.value.data
        shards = llm.expert_shards_of(op)
        count = self._units(op, inter, self.knobs.matmul_par)
        block = inter // count
        cost, router_bytes = op_cost(op), tensor_bytes(op.router)
        routed, every = cost.weight_bytes - router_bytes, cost.dense_weight_bytes - router_bytes
        share = moe_expert_share(op) if shards > 1 else None
        x, router = self._read(op.input), self._read(op.router)
        weights = []
        for w, dim in ((op.gate, 1), (op.up, 1), (op.down, 2)):
            if w in self.param_of:
                weights.append(
                    self._stage_weight(
                        w,
                        dim,
                        count,
                        tensor_bytes(w) * routed // every,
                        None if share is None else tensor_bytes(w) * share // every,
                    )
                )
            else:
                weights.append(self._read(w))
        by_socket = None
        if shards > 1:
            module = op.get_toplevel_object()
            sockets = llm.sockets_of(module) if isinstance(module, ModuleOp) else 1
            by_socket = {"expert_start": [s * shards // sockets * experts for s in range(sockets)]}
        multi = count > 1
        rows = [(0, experts), (0, block), (0, hidden)]
        cols = [(0, experts), (0, hidden), (0, block)]
        partial = self._buffer(
            f"{op.results[0].name_hint or 'moe'}.part", [batch, count, top_k, hidden], "f32"
        )
        shared = [
            Access(x, whole([batch, hidden])),
            Access(router, whole([routed_over, hidden])),
        ]
        self._pcu(
            op,
            [
                *shared,
                Access(weights[0], rows, [0, block, 0] if multi else None),
                Access(weights[1], rows, [0, block, 0] if multi else None),
                Access(weights[2], cols, [0, 0, block] if multi else None),
            ],
            Access(partial, [(0, batch), (0, 1), (0, top_k), (0, hidden)], [0, 1, 0, 0]),
            count,
            mode="systolic",
            attrs=self._attrs(op, **({"expert_start": 0} if by_socket else {})),
            attr_by_socket=by_socket,
            op_name="moe_partial",
            bytes_read=routed + router_bytes + tensor_bytes(op.input),
        )
        self.group += 1
        parts = _divisor(hidden, self.knobs.simd_par)
        width = hidden // parts
        dtype = self.knobs.collective_dtype
        out, _, _ = self._result(op, dtype if shards > 1 and dtype != "auto" else None)
        combine = self._attrs(op)
        if shards > 1 and dtype == "f32":
            combine["accumulate_only"] = BoolAttr.from_bool(True)
        split = parts > 1
        self._pcu(
            op,
            [
                *shared,
                Access(
                    partial,
                    [(0, batch), (0, count), (0, top_k), (0, width)],
                    [0, 0, 0, width] if split else None,
                ),
            ],
            Access(out, [(0, batch), (0, width)], [0, width] if split else None),
            parts,
            attrs=combine,
            op_name="moe_combine",
            flops=0,
        )

    def _linear(self, op: llm.LinearOp) -> None:
        outs, ins = shape_of(op.weight)
        count = self._units(op, outs, self.knobs.matmul_par)
        rows = outs // count
        x = self._read(op.input)
        if op.weight in self.param_of:
            w = self._stage_weight(op.weight, 0, count)
        else:
            w = self._read(op.weight)
        batch = shape_of(op.input)[0]
        reads = [Access(x, whole([batch, ins])), Access(w, [(0, rows), (0, ins)], [rows, 0])]
        if op.bias is not None:
            reads.append(Access(self._read(op.bias), [(0, rows)], [rows]))
        # a row-split linear (its result only feeds all-reduces) hands them its partials in
        # the collective dtype: its f32 accumulator, so that the sum over the sockets is
        # rounded once, or rounded (bf16, or the result's dtype), fewer bytes on the links
        uses = list(op.results[0].uses)
        partial = bool(uses) and all(isinstance(u.operation, llm.AllReduceOp) for u in uses)
        dtype = self.knobs.collective_dtype
        out, _, _ = self._result(op, dtype if partial and dtype != "auto" else None)
        accumulate = partial and dtype == "f32"
        unit = self._pcu(
            op,
            reads,
            Access(out, [(0, batch), (0, rows)], [0, rows]),
            count,
            mode="systolic",
            attrs={"accumulate_only": BoolAttr.from_bool(True)} if accumulate else None,
        )
        self._epilogue(op, unit)

    def _split_features(self, op: Operation, group: int) -> None:
        """Elementwise / per-head ops on `[B, F]`: units over groups of `group` features."""
        shape = shape_of(op.results[0])
        features = shape[-1]
        count = _divisor(features // group, self.knobs.simd_par)
        width = features // count
        step = [0] * (len(shape) - 1) + [width]
        block = whole(shape[:-1]) + [(0, width)]
        reads = []
        for value in op.operands:
            buffer = self._read(value)
            if shape_of(value) == shape:
                reads.append(Access(buffer, block, step if count > 1 else None))
            else:  # positions of rope: every unit reads all of them
                reads.append(Access(buffer, whole(shape_of(value))))
        out, _, _ = self._result(op)
        self._pcu(
            op, reads, Access(out, block, step if count > 1 else None), count, attrs=self._attrs(op)
        )

    def _heads(self, kv_heads: int) -> int:
        return _divisor(kv_heads, self.knobs.simd_par)

    def _kv_cache_write(self, op: llm.KVCacheWriteOp) -> None:
        b, kvh, s, d = shape_of(op.cache)
        count = self._heads(kvh)
        kh = kvh // count
        cache = self._read_cache(op.cache)
        if op.cache in self.param_of:
            self.cache_param_of[op.results[0]] = self.param_of[op.cache]
        elif op.cache in self.cache_param_of:
            self.cache_param_of[op.results[0]] = self.cache_param_of[op.cache]
        else:
            raise fail_at(
                op,
                f"writes into {value_name(op.cache)}, which is not a KV cache passed to the "
                "kernel: the lowering updates caches in place, in the buffer the kernel was given",
            )
        multi = count > 1
        block = Access(cache, [(0, b), (0, kh), (0, s), (0, d)], [0, kh, 0, 0] if multi else None)
        new_value, rope = self._prologue(op, 1)
        new = Access(self._read(new_value), [(0, b), (0, kh * d)], [0, kh * d] if multi else None)
        pos = Access(self._read(op.positions), whole(shape_of(op.positions)))
        self.buffer_of[op.results[0]] = cache
        shards = llm.context_shards_of(op)
        dealt = shards > 1  # this socket holds the positions t with t % shards == its own
        unit = self._pcu(
            op,
            [block, new, pos],
            block,
            count,
            attrs={k: IntegerAttr(v, i64) for k, v in (("row_offset", 0), ("row_stride", shards))}
            if dealt
            else None,
            attr_by_socket={"row_offset": self._socket_members(op, shards)} if dealt else None,
            bytes_read=tensor_bytes(op.new) + tensor_bytes(op.positions),
            bytes_written=op_cost(op).kv_write_bytes,
        )
        self._with_prologue(unit, rope, 1)

    @staticmethod
    def _socket_members(op: Operation, shards: int, scale: int = 1) -> list[int]:
        """Per socket of the module, `scale` times its place in its group of `shards`."""
        module = op.get_toplevel_object()
        sockets = llm.sockets_of(module) if isinstance(module, ModuleOp) else 1
        return [socket % shards * scale for socket in range(sockets)]

    def _attention(self, op: llm.AttentionOp) -> None:
        """Attention over kv-head groups (each unit its heads' whole context) while there are
        enough kv heads for the PCUs it gets; beyond that over context blocks, flash-decoding
        style: `attention_partial` units each attend one block of every kv head's rows
        (f32 partials: weighted sum, maximum, sum of exponentials), `attention_combine` units
        merge the blocks per query head. A cache dealt along the sequence over the k sockets
        sharing its kv head (`context_shards`) always goes by blocks: the group's queries are
        all-gathered first, each socket's partials cover all of them over the positions it
        holds (`row_stride` k, its first position by socket), `attention_merge` units fold
        its blocks into one partial, the partials are all-gathered and each socket combines
        its own heads (`head_start` by socket)."""
        b, kvh, s, d = shape_of(op.k_cache)
        heads = op.num_heads.value.data
        shards = llm.context_shards_of(op)
        knob = self.knobs.attention_par
        want = knob if knob > 0 else (self.alloc.pcus(op) or self.knobs.simd_par)
        kv_read = op_cost(op).kv_read_bytes
        k_cache, v_cache = (self._read_cache(c) for c in (op.k_cache, op.v_cache))
        for cache in (op.k_cache, op.v_cache):
            param = self.cache_param_of.get(cache, self.param_of.get(cache))
            if param is not None and param in self.load_unit:
                self._set_load_bytes(param, kv_read // 2)
        pos = Access(self._read(op.positions), whole(shape_of(op.positions)))
        query_value, rope = self._prologue(op, 0)
        query = self._read(query_value)
        bytes_read = tensor_bytes(op.query) + kv_read + tensor_bytes(op.positions)
        if shards == 1 and (want <= kvh or s == 1):
            count = self.alloc.placed[op] = _divisor(kvh, want)
            kh, qh = kvh // count, heads // count
            multi = count > 1
            q = Access(query, [(0, b), (0, qh * d)], [0, qh * d] if multi else None)
            caches = [
                Access(c, [(0, b), (0, kh), (0, s), (0, d)], [0, kh, 0, 0] if multi else None)
                for c in (k_cache, v_cache)
            ]
            out, _, _ = self._result(op)
            unit = self._pcu(
                op,
                [q, *caches, pos],
                Access(out, q.ranges, q.step),
                count,
                mode="systolic",
                attrs=self._attrs(op, num_heads=qh, num_kv_heads=kh),
                bytes_read=bytes_read,
            )
            self._with_prologue(unit, rope, 0)
            return
        blocks = _divisor(s, want) if knob > 0 else _divisor_at_least(s, want)
        self.alloc.placed[op] = blocks
        rows = s // blocks
        name = op.results[0].name_hint or "attn"
        attended = heads * shards  # the group's query heads
        if shards > 1:
            gathered = self._buffer(f"{name}.q", [b, attended * d], dtype_name(op.query))
            self._group_gather(query, gathered, shards)
            query = gathered
            self.group += 1
        partial = self._buffer(f"{name}.part", [b, blocks, attended, d + 2], "f32")
        caches = [
            Access(c, [(0, b), (0, kvh), (0, rows), (0, d)], [0, 0, rows, 0])
            for c in (k_cache, v_cache)
        ]
        written = [(0, b), (0, 1), (0, attended), (0, d + 2)]
        unit = self._pcu(
            op,
            [Access(query, whole([b, attended * d])), *caches, pos],
            Access(partial, written, [0, 1, 0, 0]),
            blocks,
            mode="systolic",
            attrs=self._attrs(op, num_heads=attended, block_start=0)
            | ({"row_stride": IntegerAttr(shards, i64)} if shards > 1 else {}),
            attr_step={"block_start": rows * shards},
            attr_by_socket={"block_start": self._socket_members(op, shards)}
            if shards > 1
            else None,
            op_name="attention_partial",
            bytes_read=bytes_read,
        )
        self._with_prologue(unit, rope, 0)
        self.group += 1
        if shards > 1 and blocks > 1:  # one partial per socket, whatever its blocks
            merged = self._buffer(f"{name}.merged", [b, 1, attended, d + 2], "f32")
            units = _divisor(attended, self.knobs.simd_par)
            per = attended // units
            step = [0, 0, per, 0] if units > 1 else None
            self._pcu(
                op,
                [Access(partial, [(0, b), (0, blocks), (0, per), (0, d + 2)], step)],
                Access(merged, [(0, b), (0, 1), (0, per), (0, d + 2)], step),
                units,
                op_name="attention_merge",
                flops=0,
            )
            partial, blocks = merged, 1
            self.group += 1
        if shards > 1:
            gathered = self._buffer(f"{name}.parts", [b, shards * blocks, attended, d + 2], "f32")
            self._group_gather(partial, gathered, shards)
            partial, blocks = gathered, shards * blocks
            self.group += 1
        count = _divisor(heads, self.knobs.simd_par)
        qh = heads // count
        multi = count > 1
        out, _, _ = self._result(op)
        if shards == 1:
            reads = Access(
                partial,
                [(0, b), (0, blocks), (0, qh), (0, d + 2)],
                [0, 0, qh, 0] if multi else None,
            )
            picked: dict[str, Any] = {}
        else:  # every unit reads the group's heads and combines its own
            reads = Access(partial, whole([b, blocks, attended, d + 2]))
            picked = {
                "attrs": {"head_start": IntegerAttr(0, i64), "heads": IntegerAttr(qh, i64)},
                "attr_step": {"head_start": qh},
                "attr_by_socket": {"head_start": self._socket_members(op, shards, heads)},
                "bytes_read": b * blocks * heads * (d + 2) * 4,
            }
        self._pcu(
            op,
            [reads],
            Access(out, [(0, b), (0, qh * d)], [0, qh * d] if multi else None),
            count,
            op_name="attention_combine",
            flops=0,
            **picked,
        )
