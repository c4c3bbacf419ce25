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
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    BFloat16Type,
    BoolAttr,
    DenseArrayBase,
    DictionaryAttr,
    FileLineColLoc,
    Float16Type,
    Float32Type,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    NameLoc,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    i64,
)
from xdsl.ir import Attribute, Block, BlockArgument, Operation, OpResult, Region, SSAValue
from xdsl.irdl import IRDLOperation
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.lowering.allocation import Allocation, allocate
from rdu_compiler.passes.cost_model import op_cost, tensor_bytes
from rdu_compiler.rdu_dialect import dfk, llm, rdu
from rdu_compiler.rdu_dialect.interpreter import ENTRY
from rdu_compiler.rdu_dialect.llm import LAYER_ATTR, sockets_of
from rdu_compiler.rdu_dialect.ssa import require_dominance
from rdu_compiler.simulator.hardware import HardwarePreset, PresetError, get_preset
from rdu_compiler.simulator.numerics import DTYPES, bytes_of

__all__ = ["HARDWARE_ATTR", "LowerDfkToRdu", "Mapping"]

HARDWARE_ATTR = "rdu.hardware"
"""Module attribute naming the hardware preset the module was lowered for."""


def _fail(message: str) -> PassFailedException:
    return PassFailedException(f"lower-dfk-to-rdu: {message}")


def _where(op: Operation) -> str:
    """Where `op` is, for a message: `file:line:col` when the IR came from text (tools stamp
    every parsed op with its position), else the op's name, its source module path (the
    frontend's `loc("model.layers.0.self_attn")`) and the function or kernel holding it."""
    location = op.location
    if isinstance(location, FileLineColLoc):
        return f"{location.filename.data}:{location.line.data}:{location.column.data}"
    where = f"'{op.name}'"
    if isinstance(location, NameLoc):
        where += f" ({location.desc.data})"
    holder = op.parent_op()
    while holder is not None and not isinstance(holder, func.FuncOp | dfk.KernelOp):
        holder = holder.parent_op()
    if holder is not None:
        where += (
            f" in {'kernel ' if isinstance(holder, dfk.KernelOp) else ''}@{holder.sym_name.data}"
        )
    return where


def _fail_at(op: Operation, message: str) -> PassFailedException:
    """A refusal located at `op` (see `_where`)."""
    return _fail(f"{_where(op)}: {message}")


def _named(value: SSAValue) -> str:
    """A value as a message names it: `%name`, else what defines it (never a Python repr)."""
    if value.name_hint:
        return f"%{value.name_hint}"
    if isinstance(value, BlockArgument):
        return f"argument #{value.index}"
    assert isinstance(value, OpResult)
    return f"result #{value.index} of '{value.owner.name}'"


def _divisor(n: int, at_most: int) -> int:
    """The largest divisor of n that is <= at_most: a split into equal, exact blocks."""
    return max(d for d in range(1, min(n, max(at_most, 1)) + 1) if n % d == 0)


def _divisor_at_least(n: int, at_least: int) -> int:
    """The smallest divisor of n that is >= at_least (n itself if none is smaller)."""
    return next(d for d in range(max(1, min(at_least, n)), n + 1) if n % d == 0)


def _shape(value: SSAValue | Attribute) -> list[int]:
    t = value.type if isinstance(value, SSAValue) else value
    assert isinstance(t, TensorType)
    return list(t.get_shape())


def _dtype(value: SSAValue | Attribute) -> str:
    t = value.type if isinstance(value, SSAValue) else value
    assert isinstance(t, TensorType)
    return str(t.element_type)


def _whole(shape: Sequence[int]) -> list[tuple[int, int]]:
    return [(0, n) for n in shape]


# ----------------------------------------------------------------------------------------------
# Mapping knobs
# ----------------------------------------------------------------------------------------------


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

    def check(self) -> None:
        for name in ("simd_par", "agcus", "buffer_depth"):
            if getattr(self, name) < 1:
                raise _fail(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("matmul_par", "attention_par", "tile_bytes", "prefetch"):
            if getattr(self, name) < -1 or getattr(self, name) == 0 and name != "prefetch":
                raise _fail(
                    f"{name.replace('_', '-')} must be >= 1 (or -1: from the "
                    f"{'loop' if name == 'prefetch' else 'allocation'}), got {getattr(self, name)}"
                )

    @property
    def tile(self) -> int:
        """Bytes per stream tile."""
        return self.tile_bytes if self.tile_bytes > 0 else STREAM_TILE


# ----------------------------------------------------------------------------------------------
# Units of one kernel, as plain data (materialized as rdu ops once sections are known)
# ----------------------------------------------------------------------------------------------


Ranges = list[tuple[int, int]]


@dataclass
class Access:
    name: str
    ranges: Ranges
    step: list[int] | None = None

    def attr(self) -> rdu.AccessAttr:
        return rdu.AccessAttr(self.name, self.ranges, self.step)

    def block(self) -> list[int]:
        return [b - a for a, b in self.ranges]


@dataclass
class Unit:
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
    attrs: dict[str, Attribute] = field(default_factory=dict)
    attr_step: dict[str, int] = field(default_factory=dict)
    mode: str = "simd"
    sram_bytes: int = 0
    buffers: int = 1
    group: int = 0  # the op it belongs to: sections are cut between groups only


@dataclass(frozen=True)
class _Result:
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
    results: list[_Result]
    stacked_args: set[int]
    trips: int
    layers_per_trip: int
    spills: list[tuple[str, list[int], str]]  # scratch params: name, shape, dtype
    op: rdu.KernelOp
    allocation: Allocation


class _KernelLowering:
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

    # -- names -----------------------------------------------------------------------------

    def _fresh(self, hint: str, taken: set[str]) -> str:
        name, k = hint, 0
        while name in taken:
            k += 1
            name = f"{hint}_{k}"
        taken.add(name)
        return name

    def add_param(self, hint: str, shape: list[int], dtype: str) -> str:
        name = self._fresh(hint, self.names)
        self.params[name] = (shape, dtype)
        return name

    def _buffer(self, hint: str, shape: list[int], dtype: str) -> str:
        name = self._fresh(hint, self.names)
        self.buffers[name] = (shape, dtype)
        return name

    def _unit(self, unit: Unit) -> Unit:
        unit.id = self._fresh(unit.id, self.ids)
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
        block = _whole(shape)
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
        raise _fail(f"{_named(value)} is neither a kernel argument nor computed in the kernel")

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
                [Access(buffer, _whole(shape))],
                Access(param, _whole(shape)),
                bytes_read=size,
                bytes_written=size,
            )
        )

    # -- compute ops -------------------------------------------------------------------------

    def _result(self, op: Operation, dtype: str | None = None) -> tuple[str, list[int], str]:
        res = op.results[0]
        shape, dtype = _shape(res), dtype or _dtype(res)
        name = self._buffer(res.name_hint or op.name.removeprefix("llm."), shape, dtype)
        self.buffer_of[res] = name
        return name, shape, dtype

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
                mode=mode,
            )
        )

    def lower_op(self, op: Operation) -> None:
        self.group += 1
        for value in op.operands:
            if value not in self.buffer_of and value not in self.param_of:
                raise _fail_at(
                    op,
                    f"reads {_named(value)}, which is neither an argument of the kernel nor "
                    "computed in it (a value captured from outside that the lowering cannot map)",
                )
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
        raise _fail_at(op, f"no mapping for '{op.name}' onto RDU units")

    def _collective(self, op: llm.AllReduceOp | llm.AllGatherOp) -> None:
        """One AGCU: it reads this socket's block (f32 partials for a row-split linear's
        all-reduce) and writes what every socket gets; an all-gather names its dim."""
        src = self._read(op.input)
        out, shape, dtype = self._result(op)
        part = _shape(op.input)
        self._unit(
            Unit(
                "agcu",
                op.name.removeprefix("llm."),
                out,
                [Access(src, _whole(part))],
                Access(out, _whole(shape)),
                bytes_read=bytes_of(part, self.buffers[src][1]),
                bytes_written=bytes_of(shape, dtype),
                attrs={"dim": op.dim} if isinstance(op, llm.AllGatherOp) else {},
            )
        )

    def _attrs(self, op: Operation, **overrides: Any) -> dict[str, Attribute]:
        """The op's properties, typed as on the op, as the numerics keywords."""
        assert isinstance(op, IRDLOperation)  # every llm op is defined by IRDL
        attrs: dict[str, Attribute] = {}
        for name in type(op).get_irdl_definition().properties:
            attr = op.properties.get(name)
            if attr is not None:
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
            [Access(r, _whole(self.buffers[r][0])) for r in reads],
            Access(out, _whole(shape)),
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

    def _stage_weight(self, value: SSAValue, dim: int, pcus: int, moved: int | None = None) -> str:
        """Load a weight (by AGCUs over `dim`) and stage it in PMUs over `dim` (their SRAM from
        the allocation, or one PMU per PCU with `tile-bytes` x `buffer-depth`): the buffer the
        `pcus` PCUs read. `moved`: the bytes really read (the routed experts' share)."""
        loaded = self._load(value, split_dim=dim)
        param = self.param_of[value]
        shape, dtype = _shape(value), _dtype(value)
        size = bytes_of(shape, dtype) if moved is None else moved
        if moved is not None:
            self._set_load_bytes(param, moved)
        depth = self.knobs.buffer_depth
        if self.knobs.tile_bytes > 0:
            count = pcus
            per_pmu = min(self.knobs.tile_bytes, size // count) * depth
        else:
            staged_bytes = self.alloc.staging.get(value, self.preset.pmu_bytes)
            count = _divisor_at_least(shape[dim], -(-staged_bytes // self.preset.pmu_bytes))
            per_pmu = staged_bytes // count
        block = _whole(shape)
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
        model's assumption: `min(E, B x top_k)` distinct experts per step)."""
        experts, inter, hidden = _shape(op.gate)
        batch, top_k = _shape(op.input)[0], op.top_k.value.data
        count = self._units(op, inter, self.knobs.matmul_par)
        block = inter // count
        cost, router_bytes = op_cost(op), tensor_bytes(op.router)
        routed, every = cost.weight_bytes - router_bytes, cost.dense_weight_bytes - router_bytes
        x, router = self._read(op.input), self._read(op.router)
        weights = []
        for w, dim in ((op.gate, 1), (op.up, 1), (op.down, 2)):
            if w in self.param_of:
                weights.append(self._stage_weight(w, dim, count, tensor_bytes(w) * routed // every))
            else:
                weights.append(self._read(w))
        multi = count > 1
        rows = [(0, experts), (0, block), (0, hidden)]
        cols = [(0, experts), (0, hidden), (0, block)]
        partial = self._buffer(
            f"{op.results[0].name_hint or 'moe'}.part", [batch, count, top_k, hidden], "f32"
        )
        shared = [Access(x, _whole([batch, hidden])), Access(router, _whole([experts, hidden]))]
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
            attrs=self._attrs(op),
            op_name="moe_partial",
            bytes_read=routed + router_bytes + tensor_bytes(op.input),
        )
        self.group += 1
        parts = _divisor(hidden, self.knobs.simd_par)
        width = hidden // parts
        out, _, _ = self._result(op)
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
            attrs=self._attrs(op),
            op_name="moe_combine",
            flops=0,
        )

    def _linear(self, op: llm.LinearOp) -> None:
        outs, ins = _shape(op.weight)
        count = self._units(op, outs, self.knobs.matmul_par)
        rows = outs // count
        x = self._read(op.input)
        if op.weight in self.param_of:
            w = self._stage_weight(op.weight, 0, count)
        else:
            w = self._read(op.weight)
        batch = _shape(op.input)[0]
        reads = [Access(x, _whole([batch, ins])), Access(w, [(0, rows), (0, ins)], [rows, 0])]
        if op.bias is not None:
            reads.append(Access(self._read(op.bias), [(0, rows)], [rows]))
        # a row-split linear (its result only feeds all-reduces) hands them its f32
        # accumulator, so that the sum over the sockets is rounded once
        uses = list(op.results[0].uses)
        partial = bool(uses) and all(isinstance(u.operation, llm.AllReduceOp) for u in uses)
        out, _, _ = self._result(op, "f32" if partial else None)
        self._pcu(
            op,
            reads,
            Access(out, [(0, batch), (0, rows)], [0, rows]),
            count,
            mode="systolic",
            attrs={"accumulate_only": BoolAttr.from_bool(True)} if partial else None,
        )

    def _split_features(self, op: Operation, group: int) -> None:
        """Elementwise / per-head ops on `[B, F]`: units over groups of `group` features."""
        shape = _shape(op.results[0])
        features = shape[-1]
        count = _divisor(features // group, self.knobs.simd_par)
        width = features // count
        step = [0] * (len(shape) - 1) + [width]
        block = _whole(shape[:-1]) + [(0, width)]
        reads = []
        for value in op.operands:
            buffer = self._read(value)
            if _shape(value) == shape:
                reads.append(Access(buffer, block, step if count > 1 else None))
            else:  # positions of rope: every unit reads all of them
                reads.append(Access(buffer, _whole(_shape(value))))
        out, _, _ = self._result(op)
        self._pcu(
            op, reads, Access(out, block, step if count > 1 else None), count, attrs=self._attrs(op)
        )

    def _heads(self, kv_heads: int) -> int:
        return _divisor(kv_heads, self.knobs.simd_par)

    def _kv_cache_write(self, op: llm.KVCacheWriteOp) -> None:
        b, kvh, s, d = _shape(op.cache)
        count = self._heads(kvh)
        kh = kvh // count
        cache = self._read_cache(op.cache)
        if op.cache in self.param_of:
            self.cache_param_of[op.results[0]] = self.param_of[op.cache]
        elif op.cache in self.cache_param_of:
            self.cache_param_of[op.results[0]] = self.cache_param_of[op.cache]
        else:
            raise _fail_at(
                op,
                f"writes into {_named(op.cache)}, which is not a KV cache passed to the kernel: "
                "the lowering updates caches in place, in the buffer the kernel was given",
            )
        multi = count > 1
        block = Access(cache, [(0, b), (0, kh), (0, s), (0, d)], [0, kh, 0, 0] if multi else None)
        new = Access(self._read(op.new), [(0, b), (0, kh * d)], [0, kh * d] if multi else None)
        pos = Access(self._read(op.positions), _whole(_shape(op.positions)))
        self.buffer_of[op.results[0]] = cache
        self._pcu(
            op,
            [block, new, pos],
            block,
            count,
            bytes_read=tensor_bytes(op.new) + tensor_bytes(op.positions),
            bytes_written=op_cost(op).kv_write_bytes,
        )

    def _attention(self, op: llm.AttentionOp) -> None:
        """Attention over kv-head groups (each unit its heads' whole context) while there are
        enough kv heads for the PCUs it gets; beyond that over context blocks, flash-decoding
        style: `attention_partial` units each attend one block of every kv head's rows
        (f32 partials: weighted sum, maximum, sum of exponentials), `attention_combine` units
        merge the blocks per query head."""
        b, kvh, s, d = _shape(op.k_cache)
        heads = op.num_heads.value.data
        knob = self.knobs.attention_par
        want = knob if knob > 0 else (self.alloc.pcus(op) or self.knobs.simd_par)
        kv_read = op_cost(op).kv_read_bytes
        k_cache, v_cache = (self._read_cache(c) for c in (op.k_cache, op.v_cache))
        for cache in (op.k_cache, op.v_cache):
            param = self.cache_param_of.get(cache, self.param_of.get(cache))
            if param is not None and param in self.load_unit:
                self._set_load_bytes(param, kv_read // 2)
        pos = Access(self._read(op.positions), _whole(_shape(op.positions)))
        query = self._read(op.query)
        bytes_read = tensor_bytes(op.query) + kv_read + tensor_bytes(op.positions)
        if want <= kvh or s == 1:
            count = self.alloc.placed[op] = _divisor(kvh, want)
            kh, qh = kvh // count, heads // count
            multi = count > 1
            q = Access(query, [(0, b), (0, qh * d)], [0, qh * d] if multi else None)
            caches = [
                Access(c, [(0, b), (0, kh), (0, s), (0, d)], [0, kh, 0, 0] if multi else None)
                for c in (k_cache, v_cache)
            ]
            out, _, _ = self._result(op)
            self._pcu(
                op,
                [q, *caches, pos],
                Access(out, q.ranges, q.step),
                count,
                mode="systolic",
                attrs=self._attrs(op, num_heads=qh, num_kv_heads=kh),
                bytes_read=bytes_read,
            )
            return
        blocks = _divisor(s, want) if knob > 0 else _divisor_at_least(s, want)
        self.alloc.placed[op] = blocks
        rows = s // blocks
        partial = self._buffer(
            f"{op.results[0].name_hint or 'attn'}.part", [b, blocks, heads, d + 2], "f32"
        )
        caches = [
            Access(c, [(0, b), (0, kvh), (0, rows), (0, d)], [0, 0, rows, 0])
            for c in (k_cache, v_cache)
        ]
        written = [(0, b), (0, 1), (0, heads), (0, d + 2)]
        self._pcu(
            op,
            [Access(query, _whole([b, heads * d])), *caches, pos],
            Access(partial, written, [0, 1, 0, 0]),
            blocks,
            mode="systolic",
            attrs=self._attrs(op, block_start=0),
            attr_step={"block_start": rows},
            op_name="attention_partial",
            bytes_read=bytes_read,
        )
        self.group += 1
        count = _divisor(heads, self.knobs.simd_par)
        qh = heads // count
        multi = count > 1
        out, _, _ = self._result(op)
        self._pcu(
            op,
            [
                Access(
                    partial,
                    [(0, b), (0, blocks), (0, qh), (0, d + 2)],
                    [0, 0, qh, 0] if multi else None,
                )
            ],
            Access(out, [(0, b), (0, qh * d)], [0, qh * d] if multi else None),
            count,
            op_name="attention_combine",
            flops=0,
        )


# ----------------------------------------------------------------------------------------------
# Sections and materialization
# ----------------------------------------------------------------------------------------------


_RESOURCE = {"pcus": "PCUs", "pmus": "PMUs", "sram_bytes": "bytes of SRAM"}


def _footprint(units: Sequence[Unit]) -> dict[str, int]:
    used = {"pcus": 0, "pmus": 0, "sram_bytes": 0}
    for unit in units:
        if unit.kind == "pcu":
            used["pcus"] += unit.count
        elif unit.kind == "pmu":
            used["pmus"] += unit.count
            used["sram_bytes"] += unit.count * unit.sram_bytes
    return used


def _split_sections(kernel: str, units: list[Unit], preset: HardwarePreset) -> list[list[Unit]]:
    """Units cut into sections whose resources fit the preset, in list order and only between
    ops (an op's loads, staging PMUs and PCUs stay together). An op that alone needs more than
    the chip fails with a diagnostic."""
    limits = {"pcus": preset.pcus, "pmus": preset.pmus, "sram_bytes": preset.sram_bytes}
    groups: dict[int, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.group, []).append(unit)
    sections: list[list[Unit]] = [[]]
    used = dict.fromkeys(limits, 0)
    for group in groups.values():
        need = _footprint(group)
        for key, value in need.items():
            if value > limits[key]:
                what = next((u for u in group if u.kind == "pcu"), group[-1])
                raise _fail(
                    f"kernel @{kernel} does not fit: its {what.op} '{what.id}' alone "
                    f"needs {value} {_RESOURCE[key]} but {preset.name} has "
                    f"{limits[key]} per socket (lower the parallelization factors)"
                )
        if sections[-1] and any(used[k] + need[k] > limits[k] for k in limits):
            sections.append([])
            used = dict.fromkeys(limits, 0)
        sections[-1].extend(group)
        for key in limits:
            used[key] += need[key]
    return sections


def _spill(
    lowering: _KernelLowering, sections: list[list[Unit]]
) -> list[tuple[str, list[int], str]]:
    """Buffers do not survive a section: one read in a later section than the one that wrote
    it goes through a scratch param (stored once at the end of the writing section, loaded at
    the start of each later section reading it)."""
    spills: list[tuple[str, list[int], str]] = []
    written_in: dict[str, int] = {}
    for s, section in enumerate(sections):
        loads: list[Unit] = []
        for unit in section:
            for access in unit.reads:
                origin = written_in.get(access.name)
                if origin is None or origin == s:
                    continue
                shape, dtype = lowering.buffers[access.name]
                param, size = f"{access.name}.spill", bytes_of(shape, dtype)
                if param not in lowering.params:
                    lowering.params[param] = (shape, dtype)
                    spills.append((param, shape, dtype))
                    sections[origin].append(
                        Unit(
                            "agcu",
                            "store",
                            f"st.{param}",
                            [Access(access.name, _whole(shape))],
                            Access(param, _whole(shape)),
                            bytes_read=size,
                            bytes_written=size,
                            tiles=1,
                        )
                    )
                if all(u.write.name != access.name for u in loads):
                    loads.append(
                        Unit(
                            "agcu",
                            "load",
                            f"ld.{param}.{s}",
                            [Access(param, _whole(shape))],
                            Access(access.name, _whole(shape)),
                            bytes_read=size,
                            bytes_written=size,
                            tiles=1,
                        )
                    )
            written_in.setdefault(unit.write.name, s)
        section[:0] = loads
    return spills


def _materialize_section(lowering: _KernelLowering, units: list[Unit]) -> rdu.SectionOp:
    knobs = lowering.knobs
    used = {access.name for unit in units for access in (*unit.reads, unit.write)}
    block = Block()
    for name, (shape, dtype) in lowering.buffers.items():
        if name in used:
            block.add_op(
                rdu.BufferOp(
                    properties={
                        "buffer": StringAttr(name),
                        "type": TensorType(_element(dtype), shape),
                    }
                )
            )
    producer: dict[str, SSAValue] = {}
    ops: list[rdu.UnitOp] = []
    for unit in units:
        inputs: list[SSAValue] = []
        for access in unit.reads:
            stream = producer.get(access.name)
            if stream is not None and stream not in inputs:
                inputs.append(stream)
        space = lowering.buffers.get(unit.write.name) or lowering.params[unit.write.name]
        elements = max(
            1, min(math.prod(unit.write.block()), knobs.tile // DTYPES[space[1]].itemsize)
        )
        stream_type = rdu.StreamType(TensorType(_element(space[1]), [elements]), knobs.buffer_depth)
        props: dict[str, Attribute] = {
            "op": rdu.PcuComputeAttr(rdu.PcuCompute(unit.op))
            if unit.kind == "pcu"
            else StringAttr(unit.op),
            "id": StringAttr(unit.id),
            "count": IntegerAttr(unit.count, i64),
            "reads": ArrayAttr([a.attr() for a in unit.reads]),
            "write": unit.write.attr(),
            "work": rdu.WorkAttr(unit.flops, unit.bytes_read, unit.bytes_written, unit.tiles),
        }
        if unit.kind == "pcu":
            cls: type[rdu.UnitOp] = rdu.PcuOp
            props["mode"] = rdu.PcuModeAttr(rdu.PcuMode(unit.mode))
        elif unit.kind == "pmu":
            cls = rdu.PmuOp
            props["sram_bytes"] = IntegerAttr(unit.sram_bytes, i64)
            props["buffers"] = IntegerAttr(unit.buffers, i64)
        else:
            cls = rdu.AgcuOp
        if unit.attrs:
            props["attrs"] = DictionaryAttr(unit.attrs)
        if unit.attr_step:
            props["attr_step"] = DictionaryAttr(
                {k: IntegerAttr(v, i64) for k, v in unit.attr_step.items()}
            )
        op = cls.create(operands=inputs, result_types=[stream_type], properties=props)
        block.add_op(op)
        ops.append(op)
        if unit.write.name in lowering.buffers:
            producer[unit.write.name] = op.results[0]
    totals = rdu.used_resources(ops)
    return rdu.SectionOp(
        properties={k: IntegerAttr(v, i64) for k, v in totals.items()}, regions=[Region(block)]
    )


def _element(dtype: str) -> Attribute:
    return {
        "bf16": BFloat16Type(),
        "f16": Float16Type(),
        "f32": Float32Type(),
        "i32": IntegerType(32),
        "i64": IntegerType(64),
    }[dtype]


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


def _lower_kernel(
    kernel: dfk.KernelOp, inplace: dict[int, int], knobs: Mapping, preset: HardwarePreset
) -> KernelPlan:
    name = kernel.sym_name.data
    lowering = _KernelLowering(knobs, preset)
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
            raise _fail_at(
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
            raise _fail_at(
                loop,
                f"kernel @{name}: argument {_named(kernel.args[twice])} enters the loop "
                "twice, once carried or stacked (a buffer updated, or sliced, per trip) and "
                "once more: pass it once",
            )
        shared = {arg: body_arg[arg] for arg in (*loop.invariant_args, *captured)}
        stacked_args = {arg_index[v] for v in loop.stacked}
        yielded = (*loop.yield_op.carried, *loop.yield_op.stacked)
        through: dict[SSAValue, SSAValue] = dict(zip(loop.results, yielded, strict=True))
        not_looped = next((v for v in returned if v not in through), None)
        if not_looped is not None:
            raise _fail_at(
                kernel.return_op,
                f"kernel @{name} returns {_named(not_looped)}, which its loop does not yield: "
                "a looped kernel returns its loop's results only",
            )
        outputs = [through[v] for v in returned]
        stacked_outputs = {r for r, v in enumerate(returned) if v in loop.stacked_results}
        trips = loop.trip_count
        for result, init in zip(loop.carried_results, loop.carried, strict=True):
            if result not in returned:
                raise _fail_at(
                    loop,
                    f"kernel @{name}: the loop carries {_named(init)} from trip to trip "
                    "through that argument's buffer, so the kernel must return the final "
                    "carried value",
                )
            if inplace.get(returned.index(result)) != arg_index[init]:
                raise _fail_at(
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
            arg.name_hint or f"arg{index}", _shape(value), _dtype(value)
        )
        if value in shared:
            param_of_shared[index] = lowering.param_of[value]
    # names of results of their own first, so that buffers (named after values too) do not
    # take them: params are what launches bind and reports show
    own = {
        r: lowering.add_param(v.name_hint or f"result{r}", _shape(v), _dtype(v))
        for r, v in enumerate(outputs)
        if r not in inplace and not isinstance(v.owner, llm.KVCacheWriteOp)
    }
    lowering.alloc = allocate(
        body_ops,
        preset,
        weights={v: True for v in lowering.param_of},
        small_pcus=knobs.simd_par * sum(1 for op in body_ops if _stage_free(op)),
        # the same in a looped and an unlooped kernel, so that both map a layer alike
        prefetch=knobs.prefetch if knobs.prefetch >= 0 else STAGED_TRIPS_AHEAD,
        staging_override=knobs.tile_bytes if knobs.tile_bytes > 0 else None,
        buffer_depth=knobs.buffer_depth,
    )
    for op in body_ops:
        lowering.lower_op(op)
    # results: KV caches into params bound to aliases of their inputs (only the new rows
    # move), a result replacing a dying argument in place, anything else into its own param
    arg_of_param = {lowering.param_of[v]: i for v, i in body_arg.items()}
    results: list[_Result] = []
    for r, value in enumerate(outputs):
        cache = lowering.cache_param_of.get(value)
        if cache is not None:
            param = lowering.add_param(f"{cache}_out", *lowering.params[cache])
            writer = value.owner  # the llm.kv_cache_write that cache_param_of records
            assert isinstance(writer, Operation)
            lowering.store(value, param, size=op_cost(writer).kv_write_bytes)
            results.append(_Result(param, "cache", arg_of_param[cache]))
        elif r in inplace:
            param = next(p for p, i in arg_of_param.items() if i == inplace[r])
            lowering.store(value, param)
            results.append(_Result(param, "inplace", inplace[r]))
        else:
            lowering.store(value, own[r])
            results.append(_Result(own[r], "fresh", None))
    sections = _split_sections(name, lowering.units, preset)
    spills = _spill(lowering, sections) if len(sections) > 1 else []
    # params in order of first use, so a looped body and its unlooped kernel agree
    used_params = {
        a.name: None
        for units in sections
        for u in units
        for a in (*u.reads, u.write)
        if a.name in lowering.params
    }
    block = Block()
    for param in used_params:
        shape, dtype = lowering.params[param]
        block.add_op(
            rdu.ParamOp(
                properties={"param": StringAttr(param), "type": TensorType(_element(dtype), shape)}
            )
        )
    section_ops = [_materialize_section(lowering, units) for units in sections]
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
                raise _fail_at(
                    later,
                    f"reads {_named(overwritten)} after '{op.name}' at {_where(op)} updated it "
                    "in place (its result reuses that buffer): read the updated value, or "
                    "keep the old one out of the kernel",
                )


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


# ----------------------------------------------------------------------------------------------
# Host side: tensors, tiers, schedule
# ----------------------------------------------------------------------------------------------


@dataclass
class _Tensor:
    name: str
    shape: list[int]
    dtype: str
    kind: str
    sources: list[rdu.SourceAttr] = field(default_factory=list)
    aliases: str | None = None
    tier: str = "hbm"

    @property
    def nbytes(self) -> int:
        return bytes_of(self.shape, self.dtype)


_INPUTS = ("tokens", "positions")
_STATES = ("k_cache", "v_cache")
_OUTPUTS = ("logits", "next_token")


class _Host:
    """Tensors, values and launches of the decode step."""

    def __init__(self, module: ModuleOp, plans: dict[str, KernelPlan], launch: str):
        self.sockets = sockets_of(module)
        self.plans = plans
        self.launch = launch
        self.params = {op.sym_name.data: op for op in module.ops if isinstance(op, llm.ParamOp)}
        self.values: dict[str, rdu.ValueOp] = {}
        self.tensors: dict[str, _Tensor] = {}
        self.views: dict[SSAValue, list[tuple[str, list[int]]]] = {}
        # in-place updates so far (buffer, index, the call), and per view of each value how
        # many of them had happened when the view was taken: a later overlapping update makes
        # the view stale (its buffer no longer holds the value)
        self.updates: list[tuple[str, list[int], dfk.CallOp]] = []
        self.taken: dict[SSAValue, list[int]] = {}
        # per region (buffer, index): the last update of exactly it, and the last update of it
        # or anything inside it (so a check costs one look-up per index level, not a scan)
        self.last_update: dict[tuple[str, tuple[int, ...]], int] = {}
        self.last_inside: dict[tuple[str, tuple[int, ...]], int] = {}
        self.weight_of: dict[SSAValue, llm.ParamOp] = {}
        self.launches: list[rdu.LaunchOp] = []
        self.next_layer = 0

    # -- the contract: which buffer holds which value (docs/lowering.md, "The contract") -------

    def _define(
        self,
        value: SSAValue,
        views: list[tuple[str, list[int]]],
        taken: list[int] | None = None,
    ) -> None:
        self.views[value] = views
        self.taken[value] = [len(self.updates)] * len(views) if taken is None else taken

    def _buffer(self, tensor: str) -> str:
        """The buffer a tensor is (an alias names its target's)."""
        return self.tensors[tensor].aliases or tensor

    def _record_update(self, buffer: str, index: list[int], call: dfk.CallOp) -> None:
        seq, region = len(self.updates), tuple(index)
        self.updates.append((buffer, index, call))
        self.last_update[(buffer, region)] = seq
        for k in range(len(region) + 1):
            self.last_inside[(buffer, region[:k])] = seq

    def _check_current(self, value: SSAValue, user: Operation) -> None:
        """Refuse `user` reading `value` from a buffer that an in-place update (a KV cache
        write, the residual stream) has overwritten since: the program would read the new
        contents where the IR means the old value."""
        for (tensor, index), taken in zip(self.views[value], self.taken[value], strict=True):
            buffer, region = self._buffer(tensor), tuple(index)
            last = max(
                [
                    self.last_inside.get((buffer, region), -1),
                    *(self.last_update.get((buffer, region[:k]), -1) for k in range(len(region))),
                ]
            )
            if last >= taken:
                call = self.updates[last][2]
                raise _fail_at(
                    user,
                    f"reads {_named(value)}, but the launch of "
                    f"@{call.callee.string_value()} at {_where(call)} has updated its buffer "
                    f"({_view_text(buffer, index)}) in place since: the lowering reuses "
                    "an updated value's buffer, so the old value must not be read after "
                    "the update",
                )

    def _check_returned(self, ret: func.ReturnOp) -> None:
        """The step's results must be where the program keeps them: logits and next token in
        their output tensors, each updated cache in its state's buffer, layers in order (the
        next step reads the caches from there)."""
        for index, value in enumerate(ret.arguments):
            self._check_current(value, ret)
            views = [(self._buffer(t), i) for t, i in self.views[value]]
            want: list[list[tuple[str, list[int]]]]
            if index < len(_OUTPUTS):
                want = [[(_OUTPUTS[index], [])]]
                what = f"result #{index} ({_OUTPUTS[index]})"
            else:
                state = _STATES[index - len(_OUTPUTS)]
                layers = _shape(value)[0]
                want = [[(state, [])], [(state, [i]) for i in range(layers)]]
                what = f"result #{index} (the updated {state}, layers in order)"
            if views not in want:
                raise _fail_at(
                    ret,
                    f"returns {_named(value)} as {what}, but that value is held in "
                    f"{', '.join(_view_text(t, i) for t, i in views)}, not in "
                    f"{_view_text(*want[0][0])} where the program keeps it (the lowering "
                    "makes no copy)",
                )

    def _value(self, name: str, role: str, shape: Sequence[int], dtype: str) -> None:
        if name not in self.values:
            self.values[name] = rdu.ValueOp(
                properties={
                    "value": StringAttr(name),
                    "role": rdu.ValueRoleAttr(rdu.ValueRole(role)),
                    "type": TensorType(_element(dtype), list(shape)),
                }
            )

    def _tensor(self, tensor: _Tensor) -> str:
        self.tensors.setdefault(tensor.name, tensor)
        return tensor.name

    def _whole_source(
        self,
        value: str,
        shape: list[int],
        at: list[int] | None = None,
        shard: llm.ShardAttr | None = None,
    ) -> rdu.SourceAttr:
        """The source of `value` held at `at`: all of it, or on socket s the shard
        `#llm.shard` gives (block s // group along its dim, group = sockets / parts)."""
        at = at or [0] * len(shape)
        if shard is None:
            return rdu.SourceAttr(value, [0] * len(shape), shape, at)
        step = [0] * len(shape)
        step[shard.dim.data] = shape[shard.dim.data]
        return rdu.SourceAttr(
            value, [0] * len(shape), shape, at, step, self.sockets // shard.parts.data
        )

    @staticmethod
    def _whole_shape(shape: Sequence[int], shard: llm.ShardAttr | None) -> list[int]:
        return list(shard.whole_shape(shape)) if shard is not None else list(shape)

    def arguments(self, step: func.FuncOp) -> None:
        args = step.body.block.args
        outputs = step.function_type.outputs.data
        if (
            len(args) != len(_INPUTS) + len(_STATES)
            or len(outputs) != len(_OUTPUTS) + len(_STATES)
            or list(outputs[len(_OUTPUTS) :]) != [a.type for a in args[len(_INPUTS) :]]
        ):
            raise _fail_at(
                step,
                f"@{ENTRY} must take (tokens, positions, k_cache, v_cache) and return "
                "(logits, next_token, k_cache, v_cache), the caches with their arguments' "
                "types (docs/decode_step.md)",
            )
        for name, arg in zip(_INPUTS, args[:2], strict=True):
            shape, dtype = _shape(arg), _dtype(arg)
            self._value(name, "input", shape, dtype)
            source = self._whole_source(name, shape)
            self._define(arg, [(self._tensor(_Tensor(name, shape, dtype, "input", [source])), [])])
        for index, (name, arg) in enumerate(zip(_STATES, args[2:4], strict=True), start=2):
            shape, dtype = _shape(arg), _dtype(arg)
            attrs = step.arg_attrs.data[index].data if step.arg_attrs else {}
            shard = attrs.get(llm.SHARD_ATTR)
            if shard is not None and not isinstance(shard, llm.ShardAttr):
                raise _fail_at(
                    step, f"argument #{index} ({name}) has an llm.shard that is not a #llm.shard"
                )
            self._value(name, "state", self._whole_shape(shape, shard), dtype)
            self._tensor(
                _Tensor(
                    name, shape, dtype, "kv_cache", [self._whole_source(name, shape, shard=shard)]
                )
            )
            self._tensor(_Tensor(f"{name}.out", shape, dtype, "kv_cache", aliases=name))
            self._define(arg, [(name, [])])

    def _weight_tensors(self, param: llm.ParamOp, per_trip: bool) -> list[tuple[str, list[int]]]:
        """Tensors holding a parameter: one, or (`per_trip`) one per leading slice (stacked by
        layout: each slice its own tensor and tier). A tensor holding several checkpoint
        tensors (MoE experts) has one source per expert."""
        dtype = _dtype(param.type)
        piece = list(param.checkpoint_type.get_shape())
        whole = self._whole_shape(piece, param.shard)
        shape = _shape(param.type)
        slices = [param.slice_source(i) for i in range(shape[0])] if per_trip else [param.source]
        inner = shape[1:] if per_trip else shape
        stacked_dims = inner[: len(inner) - len(piece)]
        views = []
        for source in slices:
            flat = _flatten(source)
            sources = []
            for k, ckpt in enumerate(flat):
                self._value(ckpt, "param", whole, dtype)
                at = list(_unravel(k, stacked_dims)) + [0] * len(piece)
                sources.append(self._whole_source(ckpt, piece, at, param.shard))
            name = _common_name(flat)
            if name in self.tensors and self.tensors[name].sources != sources:
                # another parameter reading the same checkpoint tensor, cut differently (the
                # untied LM head's shard of the embedding table): named after its symbol
                name = param.sym_name.data
            tensor = _Tensor(name, list(inner), dtype, "weight", sources)
            views.append((self._tensor(tensor), []))
        return views

    def call(self, call: dfk.CallOp) -> None:
        plan = self.plans[call.callee.string_value()]
        bindings: list[rdu.BindingAttr] = []
        bound: dict[str, list[tuple[str, list[int]]]] = {}
        for index, operand in enumerate(call.arguments):
            if operand in self.weight_of:
                self._define(
                    operand,
                    self._weight_tensors(self.weight_of[operand], index in plan.stacked_args),
                )
            self._check_current(operand, call)
            if index in plan.arg_params:
                views = self.views[operand]
                if index not in plan.stacked_args and len(views) != 1:
                    raise _fail_at(
                        call,
                        f"passes {_named(operand)}, a stack of {len(views)} separate tensors, "
                        f"as argument #{index} of @{plan.name}, which needs one tensor",
                    )
                bound[plan.arg_params[index]] = views
        results: list[tuple[SSAValue, list[tuple[str, list[int]]]]] = []
        for result, where in zip(call.res, plan.results, strict=True):
            if where.kind == "fresh":
                views = [(self._fresh_tensor(result), [])]
            else:
                assert where.arg is not None  # set for "cache" and "inplace" results
                operand = call.arguments[where.arg]
                views = self._updated_in_place(call, plan, where, operand)
                for tensor, index in views:
                    self._record_update(self._buffer(tensor), index, call)
            results.append((result, views))
            bound[where.param] = views
        for result, views in results:
            self._define(result, views)
        for param, shape, dtype in plan.spills:
            bound[param] = [
                (self._tensor(_Tensor(f"{plan.name}.{param}", shape, dtype, "activation")), [])
            ]
        for param, views in bound.items():
            bindings.append(rdu.BindingAttr(param, views))
        layers = self._layers(call, plan)
        label = (
            f"layer {layers[0]}"
            if len(set(layers)) == 1
            else f"layers {layers[0]}-{layers[-1]}"
            if layers
            else plan.name
        )
        self.launches.append(
            rdu.LaunchOp(
                properties={
                    "kernel": _symbol(plan.name),
                    "mode": rdu.LaunchModeAttr(rdu.LaunchMode(self.launch)),
                    "bindings": ArrayAttr(bindings),
                    "label": StringAttr(label),
                    "layers": DenseArrayBase.from_list(i64, layers),
                }
            )
        )

    def _updated_in_place(
        self, call: dfk.CallOp, plan: KernelPlan, where: _Result, operand: SSAValue
    ) -> list[tuple[str, list[int]]]:
        """The views a result updating `operand` in place is stored to: a KV cache into the
        cache's alias (`k_cache.out`), the residual stream into its own activation buffer."""
        views = self.views[operand]
        kinds = {self.tensors[t].kind for t, _ in views}
        if where.kind == "cache":
            if kinds != {"kv_cache"}:
                raise _fail_at(
                    call,
                    f"@{plan.name} updates argument #{where.arg} in place as a KV cache, but "
                    f"the call passes {_named(operand)}, which is not a view of "
                    f"{' or '.join(_STATES)}",
                )
            return [(f"{self._buffer(t)}.out", i) for t, i in views]
        if kinds != {"activation"} or sum(1 for _ in operand.uses) != 1:
            raise _fail_at(
                call,
                f"@{plan.name} stores result #{plan.results.index(where)} in place over "
                f"argument #{where.arg} (as at its other calls, where that operand dies), but "
                f"this call's operand {_named(operand)} "
                + (
                    "is used again"
                    if kinds == {"activation"}
                    else f"is {' / '.join(sorted(kinds))} data it must not overwrite"
                ),
            )
        return views

    def _layers(self, call: dfk.CallOp, plan: KernelPlan) -> list[int]:
        layer = call.attributes.get(LAYER_ATTR)
        if isinstance(layer, IntegerAttr):  # one layer, or a loop over ops of one layer
            layers = [layer.value.data] * plan.trips
        elif plan.trips > 1:
            layers = list(
                range(self.next_layer, self.next_layer + plan.trips * plan.layers_per_trip)
            )
        else:
            return []
        self.next_layer = layers[-1] + 1
        return layers

    def _fresh_tensor(self, result: SSAValue) -> str:
        shape, dtype = _shape(result), _dtype(result)
        returned = [use.index for use in result.uses if isinstance(use.operation, func.ReturnOp)]
        if returned and returned[0] < len(_OUTPUTS):
            name = _OUTPUTS[returned[0]]
            self._value(name, "output", shape, dtype)
            return self._tensor(
                _Tensor(name, shape, dtype, "output", [self._whole_source(name, shape)])
            )
        hint = result.name_hint or "act"
        name, k = hint, 0
        while name in self.tensors:
            k += 1
            name = f"{hint}_{k}"
        return self._tensor(_Tensor(name, shape, dtype, "activation"))

    def walk(self, step: func.FuncOp) -> None:
        self.arguments(step)
        for op in step.body.block.ops:
            if isinstance(op, llm.WeightOp):
                weight = op.results[0]
                self.weight_of[weight] = self.params[op.param.root_reference.data]
                user = next((u.operation for u in weight.uses if not _is_call(u.operation)), None)
                if user is not None:
                    raise _fail_at(
                        user,
                        f"uses the weight {_named(weight)} outside a kernel call: the program "
                        "binds weights to kernel arguments only",
                    )
            elif isinstance(op, dfk.SliceOp):
                views, taken = self.views[op.source], self.taken[op.source]
                index = op.index_attr.value.data
                if len(views) == 1:
                    self._define(op.results[0], [(views[0][0], views[0][1] + [index])], taken)
                else:
                    self._define(op.results[0], [views[index]], [taken[index]])
            elif isinstance(op, dfk.StackOp):
                nested = next((x for x in op.inputs if len(self.views[x]) != 1), None)
                if nested is not None:
                    raise _fail_at(
                        op,
                        f"stacks {_named(nested)}, itself a stack of separate tensors: "
                        "the lowering binds one tensor per stacked slice (stack the slices)",
                    )
                self._define(
                    op.results[0],
                    [self.views[x][0] for x in op.inputs],
                    [self.taken[x][0] for x in op.inputs],
                )
            elif isinstance(op, dfk.CallOp):
                self.call(op)
            elif isinstance(op, func.ReturnOp):
                self._check_returned(op)
            else:
                raise _fail_at(
                    op,
                    f"'{op.name}' in @{ENTRY} outside a kernel: outline it first (outline-kernels)",
                )


def _is_call(op: Operation) -> bool:
    return isinstance(op, dfk.CallOp)


def _view_text(tensor: str, index: Sequence[int]) -> str:
    """`k_cache[1]`: a view as messages show it."""
    return tensor + "".join(f"[{i}]" for i in index)


def _common_name(sources: Sequence[str]) -> str:
    """A tensor's name from its checkpoint sources: the one name, or the dot-separated parts
    all of them share (`...experts.0.w1.weight`, `...experts.1.w1.weight` -> `...experts.w1.
    weight`), so a looped and an unlooped program name the same tensor alike."""
    parts = [name.split(".") for name in sources]
    if len({len(p) for p in parts}) != 1:
        return sources[0]
    return ".".join(p for p, *others in zip(*parts, strict=True) if all(o == p for o in others))


def _flatten(source: Attribute) -> list[str]:
    if isinstance(source, ArrayAttr):
        return [name for s in source.data for name in _flatten(s)]
    assert isinstance(source, StringAttr)
    return [source.data]


def _unravel(k: int, dims: Sequence[int]) -> tuple[int, ...]:
    out = []
    for d in reversed(dims):
        out.append(k % d)
        k //= d
    return tuple(reversed(out))


def _symbol(name: str) -> Attribute:
    return SymbolRefAttr(name)


def _natural(name: str) -> list[Any]:
    """Sort key reading digit runs as numbers (`layers.2` before `layers.10`)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _size(nbytes: int) -> str:
    """Bytes for a person: in the largest binary unit they reach (GiB, MiB, KiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} bytes"


def _place(tensors: list[_Tensor], preset: HardwarePreset, sockets: int, model: str) -> str:
    """Memory tiers: inputs, outputs and activations in HBM; the KV caches in HBM while they
    fit (else the last ones, by name, in DDR, with their aliases: a long context or a large
    batch still runs, from the slower tier); weights in HBM while they fit, then DDR, in
    checkpoint order (layers in numeric order), so that a looped and an unlooped program place
    every weight alike. Returns a one-line summary."""
    hbm = preset.hbm_bytes
    owners = [t for t in tensors if t.aliases is None]
    pinned = sum(t.nbytes for t in owners if t.kind not in ("weight", "kv_cache"))
    caches = sorted((t for t in owners if t.kind == "kv_cache"), key=lambda t: t.name)
    in_hbm = list(caches)
    while in_hbm and pinned + sum(t.nbytes for t in in_hbm) > hbm:
        moved = in_hbm.pop()
        for t in tensors:
            if t is moved or t.aliases == moved.name:
                t.tier = "ddr"
    fixed = pinned + sum(t.nbytes for t in in_hbm)
    if fixed > hbm:
        raise _fail(
            f"{model} does not fit: inputs, outputs and activations need {_size(pinned)} of HBM "
            f"per socket ({sockets} socket(s)) but {preset.name} has {_size(hbm)}; use a "
            f"smaller batch"
        )
    free, spilled = hbm - fixed, 0
    ddr_used = sum(t.nbytes for t in caches if t not in in_hbm)
    weights = sorted(
        (t for t in tensors if t.kind == "weight"), key=lambda t: _natural(t.sources[0].value.data)
    )
    for t in weights:
        if t.nbytes <= free:
            free -= t.nbytes
        else:
            t.tier = "ddr"
            ddr_used += t.nbytes
            spilled += 1
    if ddr_used > preset.ddr_bytes:
        raise _fail(
            f"{model} does not fit: weights and KV caches need "
            f"{_size(sum(t.nbytes for t in weights + caches))} per socket ({sockets} socket(s)) "
            f"but {preset.name} has {_size(hbm - pinned)} of HBM left after inputs, outputs and "
            f"activations and {_size(preset.ddr_bytes)} of DDR; use more sockets (they split "
            f"the weights and KV heads) or a smaller batch or context"
        )
    where = ", ".join(f"{t.name} in {t.tier.upper()}" for t in caches)
    return (
        f"{model}: {len(weights) - spilled} weight tensor(s) in HBM, {spilled} in DDR "
        f"({ddr_used} bytes per socket); {where or 'no KV caches'} ({sockets} socket(s))"
    )


# ----------------------------------------------------------------------------------------------
# The pass
# ----------------------------------------------------------------------------------------------


def _returns_cache(kernel: dfk.KernelOp, index: int) -> bool:
    """Whether result `index` of `kernel` is an updated KV cache (a `kv_cache_write`'s result,
    maybe yielded by the kernel's loop)."""
    value = kernel.return_op.arguments[index]
    if isinstance(value, OpResult) and isinstance(value.owner, dfk.LoopOp):
        loop = value.owner
        value = (*loop.yield_op.carried, *loop.yield_op.stacked)[value.index]
    return isinstance(value.owner, llm.KVCacheWriteOp)


def _inplace_pairs(calls: Sequence[dfk.CallOp], kernels: dict[str, dfk.KernelOp]) -> dict[int, int]:
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


@dataclass(frozen=True)
class LowerDfkToRdu(ModulePass):
    """Maps dfk kernels onto RDU units and the decode step onto a host schedule (module doc)."""

    name = "lower-dfk-to-rdu"

    hw: str = "sn40l"
    hw_overrides: str = ""
    launch: str = "software"
    matmul_par: int = Mapping.matmul_par
    attention_par: int = Mapping.attention_par
    simd_par: int = Mapping.simd_par
    agcus: int = Mapping.agcus
    tile_bytes: int = Mapping.tile_bytes
    buffer_depth: int = Mapping.buffer_depth
    prefetch: int = Mapping.prefetch
    summary: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require_dominance(op)
        try:
            preset = get_preset(self.hw)
            if self.hw_overrides:
                preset = preset.with_overrides(self.hw_overrides)
        except PresetError as error:
            raise _fail(str(error)) from None
        if self.launch not in ("software", "hardware"):
            raise _fail(f"launch must be software or hardware, got {self.launch!r}")
        knobs = Mapping(
            matmul_par=self.matmul_par,
            attention_par=self.attention_par,
            simd_par=self.simd_par,
            agcus=self.agcus,
            tile_bytes=self.tile_bytes,
            buffer_depth=self.buffer_depth,
            prefetch=self.prefetch,
        )
        knobs.check()
        step = next(
            (o for o in op.ops if isinstance(o, func.FuncOp) and o.sym_name.data == ENTRY), None
        )
        if step is None:
            raise _fail(f"no func.func @{ENTRY} (a decode step from rdu-import)")
        kernels = {o.sym_name.data: o for o in op.ops if isinstance(o, dfk.KernelOp)}
        calls = [o for o in step.body.block.ops if isinstance(o, dfk.CallOp)]
        calls_of: dict[str, list[dfk.CallOp]] = {}
        for call in calls:
            name = call.callee.string_value()
            if name not in kernels:
                raise _fail_at(call, f"calls @{name}, which is no dfk.kernel of the module")
            calls_of.setdefault(name, []).append(call)
        plans = {
            name: _lower_kernel(kernels[name], _inplace_pairs(of, kernels), knobs, preset)
            for name, of in calls_of.items()
        }
        host = _Host(op, plans, self.launch)
        host.walk(step)
        sockets = sockets_of(op)
        model_attr = op.attributes.get("llm.model")
        model = model_attr.data if isinstance(model_attr, StringAttr) else "model"
        tensors = list(host.tensors.values())
        summary = _place(tensors, preset, sockets, model)
        if self.summary:
            print(f"remark: lower-dfk-to-rdu: {summary}", file=sys.stderr)
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
                "type": TensorType(_element(t.dtype), t.shape),
                "kind": rdu.TensorKindAttr(rdu.TensorKind(t.kind)),
                "tier": rdu.MemoryTierAttr(rdu.MemoryTier(t.tier)),
            }
            if t.sources:
                props["sources"] = ArrayAttr(t.sources)
            if t.aliases:
                props["aliases"] = _symbol(t.aliases)
            body.add_op(rdu.TensorOp(properties=props))
        body.add_ops(plan.op for plan in plans.values())
        main = func.FuncOp(ENTRY, ((), ()))
        main.body.block.add_ops([*host.launches, rdu.SyncOp(), func.ReturnOp()])
        body.add_op(main)
        op.attributes[HARDWARE_ATTR] = StringAttr(preset.name)
