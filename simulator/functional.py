"""Functional simulation: run a program's units on real data.

Executes exactly what the program file says (``docs/program_format.md``, "Executing a program"):
every socket holds its own copy of every tensor, filled from the sources of *its* shard; each
launch binds params to views of those tensors (stacked params take trip ``i``'s view), and each
unit, for each of its ``count`` copies, reads the blocks its accesses name and writes its result
into the block its write names, with the op math of :mod:`simulator.numerics` (bf16 storage, f32
accumulation). Nothing else says what a unit computes, so a wrong index range or split in a
lowered program gives a wrong answer here. ``all_reduce`` sums the block over all sockets,
``all_gather`` concatenates every socket's block (or those of its group of sockets);
``kv_cache_write`` updates its cache block in
place, and views/aliases share numpy memory, so the KV cache is updated where it lives, never
copied.

Only the standard library, numpy and the simulator's own modules are imported (never xDSL or the
compiler): the program file is the only contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rdu_compiler.simulator import numerics as N
from rdu_compiler.simulator.program import (
    COLLECTIVES,
    Access,
    Agcu,
    Kernel,
    Launch,
    Pcu,
    Program,
    Source,
    Tensor,
)
from rdu_compiler.simulator.weights import RandomWeights, WeightSource

__all__ = ["FunctionalError", "FunctionalSimulator", "available_memory", "memory_needed"]

# Refuse when the estimate exceeds this fraction of the available memory: numpy temporaries
# (f32 copies of weight chunks inside linear, attention scores) and the interpreter need room.
MEMORY_MARGIN = 0.7


class FunctionalError(Exception):
    """The program cannot be run functionally here (too large, or inputs missing / wrong)."""


def memory_needed(program: Program, *, whole_values: bool = False) -> int:
    """Bytes the functional simulator holds: every non-alias tensor once per socket, plus the
    largest section's on-chip buffers per socket (buffers live while a section runs), plus,
    with ``whole_values`` (seeded random init, which draws a whole value in f32 before its
    blocks are cut out), the largest param value drawn and rounded."""
    drawn = max(
        (
            N.bytes_of(v.shape, "f32") + N.bytes_of(v.shape, v.dtype)
            for v in program.values
            if whole_values and v.role == "param"
        ),
        default=0,
    )
    tensors = sum(N.bytes_of(t.shape, t.dtype) for t in program.tensors if t.aliases is None)
    buffers = max(
        (
            sum(N.bytes_of(b.shape, b.dtype) for b in section.buffers)
            for kernel in program.kernels
            for section in kernel.sections
        ),
        default=0,
    )
    return program.sockets * (tensors + buffers) + drawn


def available_memory() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _slices(ranges: Any, step: Any, j: int) -> tuple[slice, ...]:
    """Unit ``j``'s block: the ranges shifted by ``j * step``."""
    if step is None or j == 0:
        return tuple(slice(a, b) for a, b in ranges)
    return tuple(slice(a + j * s, b + j * s) for (a, b), s in zip(ranges, step))


def _source_blocks(
    src: Source, tensor: Tensor, socket: int
) -> tuple[tuple[slice, ...], tuple[slice, ...], list[int]]:
    """Where socket ``socket``'s copy of ``src`` sits: (block in the value, block in the tensor,
    the block's shape in tensor coordinates)."""
    shard = socket // src.socket_group if src.socket_step is not None else 0
    in_value = _slices([(a, a + n) for a, n in zip(src.start, src.shape)], src.socket_step, shard)
    if src.interleave is not None:  # every k-th row from the socket's own (`Source`)
        in_value = tuple(
            slice(cut.start + socket % k, cut.start + socket % k + k * n, k)
            for cut, n, k in zip(in_value, src.shape, src.interleave)
        )
    extra = len(src.shape) - len(tensor.shape)
    shape = src.shape[extra:] if extra > 0 else [1] * -extra + src.shape
    return in_value, tuple(slice(a, a + n) for a, n in zip(src.at, shape)), shape


def _split_dim(access: Any) -> int | None:
    """The one dimension along which a counted access steps by exactly its block's extent
    (copies tile a contiguous range), -1 if it does not step, None otherwise."""
    if access.step is None or not any(access.step):
        return -1
    dims = [d for d, s in enumerate(access.step) if s]
    if len(dims) != 1:
        return None
    d = dims[0]
    a, b = access.ranges[d]
    return d if access.step[d] == b - a else None


# Ops whose result over the union of contiguous blocks equals the union of their results over
# each block, and along which dimensions: (operand dims that must be split like the write,
# operand dims that must not be split). Elementwise ops split everything along the write's
# dimension; a linear splits weight rows (and bias) along the output features; rope splits
# whole heads of x along the features (positions shared).
_SEPARABLE: dict[str, Callable[[list[int | None], int | None], bool]] = {
    **{
        op: (lambda reads, w: w is not None and w >= 0 and all(r == w for r in reads))
        for op in ("add", "mul", "silu", "gelu")
    },
    "linear": lambda reads, w: (
        reads[0] == -1 and reads[1] == 0 and all(r == 0 for r in reads[2:]) and w == 1
    ),
    "rope": lambda reads, w: reads == [1, -1] and w == 1,
}


class _Unit:
    """A unit prepared for execution: per copy ``j``, the read blocks, the written block and
    the attributes (``attr_step`` shifts them per copy).

    A counted group whose copies tile contiguous ranges of an op that is separable along them
    (``_SEPARABLE``: elementwise ops, linears split over output features, rope over heads) runs
    as one call over the union of the blocks: the same arithmetic per element, far fewer numpy
    calls. Anything else (an irregular offset in a corrupted or unusual program included) runs
    copy by copy, exactly as written."""

    __slots__ = (
        "id",
        "op",
        "reads",
        "write",
        "writes",
        "shapes",
        "fn",
        "attrs",
        "by_socket",
        "group",
        "fused",
    )

    def __init__(self, unit: Any):
        self.id, self.op = unit.id, unit.op
        count = unit.count
        rule = _SEPARABLE.get(unit.op)
        attr_step = unit.attr_step if isinstance(unit, Pcu) else {}
        self.by_socket = unit.attr_by_socket if isinstance(unit, Pcu) else {}
        fused_reads = [a for f in unit.fused for a in f.reads]
        write_dim = _split_dim(unit.write)
        if (
            count > 1
            and isinstance(unit, Pcu)
            and not attr_step
            and rule is not None
            and rule([_split_dim(a) for a in unit.reads], write_dim)
            and all(f.operand == -1 for f in unit.fused)  # epilogues are elementwise
            and all(_split_dim(a) == write_dim for a in fused_reads)
        ):
            count = 1
            accesses = [_union(a, unit.count) for a in (*unit.reads, unit.write, *fused_reads)]
            reads, write = accesses[: len(unit.reads)], accesses[len(unit.reads)]
            fused_reads = accesses[len(unit.reads) + 1 :]
        else:
            reads, write = unit.reads, unit.write
        self.reads = [(a.name, [_slices(a.ranges, a.step, j) for j in range(count)]) for a in reads]
        # fused ops in order: (operand, the op's function, its attributes, its reads as above)
        self.fused: list[tuple[int, Callable[..., Any], dict[str, Any], list[Any]]] = []
        taken = 0
        for f in unit.fused:
            own = fused_reads[taken : taken + len(f.reads)]
            taken += len(f.reads)
            slices = [(a.name, [_slices(a.ranges, a.step, j) for j in range(count)]) for a in own]
            self.fused.append((f.operand, N.OPS[f.op], f.attrs, slices))
        self.write = write.name
        self.writes = [_slices(write.ranges, write.step, j) for j in range(count)]
        self.shapes = [tuple(s.stop - s.start for s in w) for w in self.writes]
        attrs = {k: v for k, v in unit.attrs.items() if k != "group"}
        self.group: int | None = unit.attrs.get("group") if unit.op in COLLECTIVES else None
        self.attrs = [
            {k: v + j * attr_step[k] if k in attr_step else v for k, v in attrs.items()}
            for j in range(count)
        ]
        moves = (isinstance(unit, Agcu) and unit.op not in COLLECTIVES) or unit.op == "copy"
        self.fn: Callable[..., Any] | None = None if moves else N.OPS[unit.op]


def _union(access: Any, count: int) -> Access:
    """The block covering all ``count`` copies of a contiguous counted access."""
    step = access.step or [0] * len(access.ranges)
    return Access(
        name=access.name,
        ranges=[(a, b + (count - 1) * s) for (a, b), s in zip(access.ranges, step)],
    )


class FunctionalSimulator:
    """One program, its weights bound by value name, KV-cache state kept across :meth:`step`.

    ``weights`` provides every ``param`` value (checkpoint or seeded init) by name and full
    shape; each socket reads only the blocks its sources name. ``available_bytes`` (default:
    this machine's available memory) is what :func:`memory_needed` is checked against."""

    def __init__(
        self, program: Program, weights: WeightSource, *, available_bytes: int | None = None
    ):
        need = memory_needed(program, whole_values=isinstance(weights, RandomWeights))
        have = available_memory() if available_bytes is None else available_bytes
        if have is not None and need > MEMORY_MARGIN * have:
            raise FunctionalError(
                f"functional simulation of {program.model} on {program.sockets} socket(s) needs "
                f"about {need / 2**30:.1f} GiB of memory (every socket's tensors and on-chip "
                f"buffers), more than the {MEMORY_MARGIN * have / 2**30:.1f} GiB it may use "
                f"({MEMORY_MARGIN:.0%} of the {have / 2**30:.1f} GiB available, leaving room "
                f"for temporaries); time it instead (drop --functional), or use a smaller "
                f"model, batch or context, or fewer --layers"
            )
        self.program = program
        self.values = {v.name: v for v in program.values}
        self.kernels = {k.name: k for k in program.kernels}
        self._units = {
            k.name: [[_Unit(u) for u in s.units] for s in k.sections] for k in program.kernels
        }
        self.memory: list[dict[str, np.ndarray]] = []
        for _ in range(program.sockets):
            mem: dict[str, np.ndarray] = {}
            for t in program.tensors:
                if t.aliases is None:
                    mem[t.name] = np.zeros(t.shape, N.DTYPES[t.dtype])
            for t in program.tensors:
                if t.aliases is not None:
                    mem[t.name] = mem[t.aliases]
            self.memory.append(mem)
        self.bind_weights(weights)

    def bind_weights(self, weights: WeightSource) -> None:
        """Fill the weight tensors from ``weights``: the program stays, only its weight
        bindings change (how a Composition-of-Experts node switches between experts of one
        architecture, `rdu-serve --functional`)."""
        for t in self.program.tensors:
            if t.kind == "weight":
                self._fill(t, lambda src, block, v: weights.get(v.name, v.shape, v.dtype, block))

    def reset_state(self) -> None:
        """Zero the KV caches (state before a sequence's first step)."""
        for mem in self.memory:
            for t in self.program.tensors:
                if t.kind == "kv_cache" and t.aliases is None:
                    mem[t.name][...] = 0

    # -- data in and out -------------------------------------------------------------------

    def _fill(
        self, tensor: Tensor, read: Callable[[Source, tuple[slice, ...], Any], np.ndarray]
    ) -> None:
        for socket, mem in enumerate(self.memory):
            for src in (src for src in tensor.sources if src.holds_on(socket)):
                in_value, in_tensor, shape = _source_blocks(src, tensor, socket)
                mem[tensor.name][in_tensor] = read(src, in_value, self.values[src.value]).reshape(
                    shape
                )

    def _gather(self, role: str) -> dict[str, np.ndarray]:
        """Values of ``role`` assembled from the tensors holding them: each shard from the first
        socket holding it (replicated copies are equal)."""
        out: dict[str, np.ndarray] = {}
        for t in self.program.tensors:
            for src in t.sources:
                value = self.values[src.value]
                if value.role != role:
                    continue
                whole = out.setdefault(value.name, np.zeros(value.shape, N.DTYPES[value.dtype]))
                group = src.socket_group if src.socket_step is not None else self.program.sockets
                dealt = math.prod(src.interleave or [1])  # sockets of a group with other rows
                shards = [
                    first + i
                    for first in range(0, self.program.sockets, group)
                    for i in range(dealt)
                ]
                for socket in (s for s in shards if src.holds_on(s)):
                    in_value, in_tensor, _ = _source_blocks(src, t, socket)
                    whole[in_value] = self.memory[socket][t.name][in_tensor].reshape(
                        whole[in_value].shape
                    )
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The ``state`` values (the KV caches) as whole, unsharded arrays."""
        return self._gather("state")

    def step(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one decode step: ``inputs`` gives every ``input`` value by name; returns the
        ``output`` values. KV-cache state stays in the sockets' buffers for the next step."""
        wanted = {v.name: v for v in self.program.values if v.role == "input"}
        missing = sorted(wanted.keys() - inputs.keys())
        if missing:
            raise FunctionalError(f"missing step inputs: {', '.join(missing)}")
        arrays = {}
        for name, value in wanted.items():
            a = np.asarray(inputs[name]).astype(N.DTYPES[value.dtype])
            if list(a.shape) != value.shape:
                raise FunctionalError(
                    f"input {name!r} has shape {list(a.shape)}, the program needs {value.shape}"
                )
            arrays[name] = a
        for t in self.program.tensors:
            if t.kind == "input":
                self._fill(t, lambda src, block, v: arrays[v.name][block])
        for step in self.program.schedule:
            if isinstance(step, Launch):
                self._launch(self.kernels[step.kernel], step)
        return self._gather("output")

    def decode(self, tokens: Any, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """One decode step of a decode-step program, whose inputs are the token ids and the
        positions and whose outputs are the logits and the next tokens (each in that order in
        ``values``): returns ``(logits, next_tokens)``."""
        inputs = [v.name for v in self.program.values if v.role == "input"]
        outputs = [v.name for v in self.program.values if v.role == "output"]
        if len(inputs) != 2 or len(outputs) != 2:
            raise FunctionalError(
                f"a decode-step program has two inputs (token ids, positions) "
                f"and two outputs (logits, next tokens); this one has inputs "
                f"{inputs} and outputs {outputs}"
            )
        out = self.step({inputs[0]: tokens, inputs[1]: positions})
        return out[outputs[0]], out[outputs[1]]

    # -- execution ---------------------------------------------------------------------------

    def _launch(self, kernel: Kernel, launch: Launch) -> None:
        stacked = set(kernel.loop.stacked) if kernel.loop is not None else set()
        rank = {p.name: len(p.shape) for p in kernel.params}
        views = [
            {b.param: [mem[v.tensor][tuple(v.index)] for v in b.tensors] for b in launch.bindings}
            for mem in self.memory
        ]

        def bind(trip: int | None) -> list[dict[str, np.ndarray]]:
            """Every socket's params on ``trip`` (None: a section run once, which reads no
            stacked param)."""
            bound = []
            for socket_views in views:
                params = {}
                for name, vs in socket_views.items():
                    if name not in stacked:
                        params[name] = vs[0]
                    elif trip is None:
                        continue
                    elif len(vs) == 1 and vs[0].ndim == rank[name] + 1:
                        params[name] = vs[0][trip]  # entry `trip` of one stacked view
                    else:
                        params[name] = vs[trip]
                bound.append(params)
            return bound

        for s, trip in kernel.executions():
            section, units = kernel.sections[s], self._units[kernel.name][s]
            storage = [
                {
                    **params,
                    **{b.name: np.zeros(b.shape, N.DTYPES[b.dtype]) for b in section.buffers},
                }
                for params in bind(trip)
            ]
            for unit in units:
                try:
                    self._run(unit, storage)
                except (ValueError, IndexError) as e:
                    # The numerics refuse operands they cannot compute on (a token id
                    # outside the vocabulary, a position past the cache) this way.
                    raise FunctionalError(
                        f"kernel {kernel.name!r}, unit {unit.id!r} ({unit.op}): {e}"
                    ) from None

    @staticmethod
    def _run(unit: _Unit, storage: list[dict[str, np.ndarray]]) -> None:
        outs = [st[unit.write] for st in storage]
        arrays = [[st[name] for name, _ in unit.reads] for st in storage]
        for j, (where, shape) in enumerate(zip(unit.writes, unit.shapes)):
            blocks = [
                [a[slices[j]] for a, (_, slices) in zip(socket, unit.reads)] for socket in arrays
            ]
            for operand, fn, fused_attrs, fused_reads in unit.fused:
                if operand < 0:
                    continue
                for st, socket_blocks in zip(storage, blocks):  # a prologue: on its read
                    value = socket_blocks[operand]
                    more = [st[name][slices[j]] for name, slices in fused_reads]
                    socket_blocks[operand] = fn(value, *more, **fused_attrs, out_dtype=value.dtype)
            attrs = [unit.attrs[j]] * len(storage)
            if unit.by_socket:
                attrs = [
                    {
                        k: v + unit.by_socket[k][s] if k in unit.by_socket else v
                        for k, v in a.items()
                    }
                    for s, a in enumerate(attrs)
                ]
            if unit.op in COLLECTIVES:  # every socket gets the combination of its group's blocks
                assert unit.fn is not None, "a collective is a compute op"
                group = unit.group or len(storage)
                results = []
                for first in range(0, len(storage), group):
                    part = [b[0] for b in blocks[first : first + group]]
                    whole = unit.fn(part, **attrs[0], out_dtype=outs[0].dtype)
                    results += [whole] * group
            elif unit.fn is None:  # load / store / copy: the block itself
                results = [b[0] for b in blocks]
            elif unit.op == "kv_cache_write":  # in place: its write is its first read
                for b, a in zip(blocks, attrs):
                    N.kv_cache_write_(*b, **a)
                continue
            else:
                results = [
                    unit.fn(*b, **a, out_dtype=o.dtype) for b, a, o in zip(blocks, attrs, outs)
                ]
            for operand, fn, fused_attrs, fused_reads in unit.fused:
                if operand >= 0:
                    continue
                results = [  # an epilogue: on the result, in the written dtype
                    fn(
                        r,
                        *[st[n][slices[j]] for n, slices in fused_reads],
                        **fused_attrs,
                        out_dtype=o.dtype,
                    )
                    for r, st, o in zip(results, storage, outs)
                ]
            for o, r in zip(outs, results):
                o[where] = r if r.shape == shape else r.reshape(shape)
