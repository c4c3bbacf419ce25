"""`kernel-looping`: N consecutive calls of one callee -> one loop over the callee's body.

Each `dfk.call` is a launch: launch, argument load, pipeline fill and drain, sync, while the
off-chip memory idles. A decode step is N calls of one decoder-layer kernel, so every maximal
run of consecutive calls to the same kernel is rewritten into one call of `@<kernel>.looped`,
whose body is a `dfk.loop` over the original body (the hardware outer loop, prefetching the
next iterations' stacked operands `pipeline-depth` deep).

The run analysis is generic over call ops: it reads only a call's callee, operands and
results (`CallLike`), so the same runs, rules and remarks apply to `func.call`s of a
`func.func`, for any xDSL flow. Such a run becomes upstream ops only (`_FuncCallLooping`):
an `scf.for` whose body calls the original function, with `iter_args` carrying the threaded
values and the stacked results, and `tensor.extract_slice` / `tensor.insert_slice` reading and
writing the stacked tensors per trip. The body calls the function rather than inlining it:
looping is a loop transformation, inlining a separate decision (MLIR's `inline` pass, with its
cost model), and a call keeps external declarations loopable and the code size unchanged.

Operands are classified position by position over the run:
- carried: call j+1 takes, at this position, a result of call j (the residual stream); the
  loop starts from call 0's operand and ends with the last call's result;
- invariant: the same SSA value in every call (positions, rope tables);
- stacked: anything else, one value per call. For `dfk.call`, weights read from module
  parameters are stacked by layout (a new stacked `llm.param` whose slices are the per-layer
  checkpoint tensors, so no runtime copy), other values with `dfk.stack` (per-layer KV-cache
  slices, which `stack(slice(x, 0..N-1)) -> x` folds back into the stacked cache). For
  `func.call`, values that are `tensor.extract_slice`s of one tensor at evenly spaced
  leading offsets are read from that tensor (no copy); others are stacked once, before the
  loop, with `tensor.empty` + `tensor.insert_slice`.
Results that are not carried come out stacked and are unstacked (`dfk.slice`,
`tensor.extract_slice`) only where a call's result was used. A run whose `dfk.call`s all
belong to one layer (one-op kernels, e.g. the k and v projections) keeps that `llm.layer` on
the new call.

Legality (DESIGN.md), checked between each pair of consecutive calls; a failing pair splits
the run, and each side is looped on its own if long enough:
1. the values threaded from one call to the next are used by nothing else, the threading is
   the same all along the run, and no operand is computed from an earlier call's results;
2. operands that vary must be stackable (static-shaped) tensors, and so must results that
   are not carried;
3. no op between the calls has side effects (moving the calls past it would reorder them).
Runs shorter than `min-trip-count` (and single calls) are left alone. Calls of a kernel that
already holds a loop are no candidates (the chip has one outer loop): this makes the rewrite
idempotent (a looped `func.call` run leaves one call per period in the loop body, which is
no run). A run broken by a call of another callee (A A B A A) is two runs, looped apart.

Beyond the paper, a repeating sequence of p <= `MAX_PERIOD` calls (A B A B ..., alternating
attention kinds) is looped the same way with one period as the unit: the loop body holds the
p bodies (p calls, for `func.call`), wired as the calls were (`@A.B.looped`). At each call of
a block, the period whose legal runs remove the most calls wins (the shorter on a tie). For
p > 1 the per-layer cache slices of one kind are every p-th layer, so they are stacked with
`dfk.stack` (a strided selection the stacked cache cannot fold back into).

With `remarks=true` the pass says on stderr, for each run it did not loop, which rule stopped
it, and sums up what it did (runs looped, call ops before and after).

The same rewrite, with the default options (`DEFAULT_OPTIONS`), is the canonicalization
pattern of `dfk.call`, so `canonicalize` loops too, unless the module carries
`dfk.no_kernel_looping` (which the `disable-kernel-looping` pass sets): a pipeline that asks for
no looping gets none. Like every MLIR canonicalization the pattern stays local: it adds the
looped kernel (and stacked parameters) beside the originals but erases no symbol; MLIR's
`symbol-dce` removes what became unused. The explicit `kernel-looping` pass is a request to
loop: it ignores the module attribute and erases the kernels and parameters it made unused.
`func.call` has no such canonicalization: its patterns belong to upstream, and a plugin that
changed what `canonicalize` does to every xDSL flow's calls would surprise them.

Cost: one match per block and call kind (at its first call) examines the block's calls, each
for at most `MAX_PERIOD` periods; the explicit pass walks the module once per block with a
looped run (to drop the per-layer parameters and kernels it made unused): linear in the
number of ops for the usual one run per step.
"""

from __future__ import annotations

import sys
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, cast

from xdsl.context import Context
from xdsl.dialects import arith, func, scf, tensor
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    DenseArrayBase,
    IndexType,
    ModuleOp,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, OpResult, Region, SSAValue
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)
from xdsl.rewriter import InsertPoint
from xdsl.traits import is_side_effect_free
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.passes.kernels import kernel_for, symbol_for
from rdu_compiler.passes.pass_options import CheckedOptionsPass
from rdu_compiler.rdu_dialect.dfk import (
    CallOp,
    KernelOp,
    LoopOp,
    ReturnOp,
    SliceOfStack,
    SliceOp,
    StackOfSlices,
    StackOp,
    YieldOp,
    stacked_type,
)
from rdu_compiler.rdu_dialect.llm import LAYER_ATTR, ParamOp, WeightOp
from rdu_compiler.rdu_dialect.ssa import require_dominance
from rdu_compiler.rdu_dialect.symbols import lookup_symbol

NO_KERNEL_LOOPING = "dfk.no_kernel_looping"
"""Module attribute (unit): the `dfk.call` canonicalization must not loop calls."""


@dataclass(frozen=True)
class LoopingOptions:
    """The options of kernel looping. Their defaults (`DEFAULT_OPTIONS`) are what the
    `dfk.call` canonicalization uses and what the `kernel-looping` pass's options default to."""

    min_trip_count: int = 2
    """Runs of fewer calls (of periods, for p > 1) are left alone."""
    pipeline_depth: int = 2
    """How many trips ahead a `dfk.loop` prefetches its stacked operands (`dfk.call` only:
    an `scf.for` has no such attribute)."""


DEFAULT_OPTIONS = LoopingOptions()


class CallLike(Protocol):
    """What the run analysis reads of a call op: the callee, the operands, the results.
    `dfk.call` and `func.call` both have these fields under these names."""

    @property
    def callee(self) -> SymbolRefAttr: ...

    @property
    def arguments(self) -> Sequence[SSAValue]: ...

    @property
    def res(self) -> Sequence[OpResult]: ...


# --------------------------------------------------------------------------------------
# Finding runs
# --------------------------------------------------------------------------------------

Position = tuple[int, int]
"""(index of a call within its period, operand or result index of that call)."""

MAX_PERIOD = 4
"""Longest repeating sequence of calls looked for (alternating layer kinds need 2)."""


def _callee(call: Operation) -> str:
    return cast(CallLike, call).callee.string_value()


def _args(call: Operation) -> Sequence[SSAValue]:
    return cast(CallLike, call).arguments


def _results(call: Operation) -> Sequence[OpResult]:
    return cast(CallLike, call).res


def _stackable(t: Attribute) -> bool:
    """Whether values of type `t` can be stacked into one tensor (rule 2)."""
    return isinstance(t, TensorType) and t.has_static_shape()


@dataclass(frozen=True)
class _Unit:
    """One period of a repeating call sequence: p consecutive calls (p = 1: one call) and
    the ops between them."""

    calls: tuple[Operation, ...]
    """Call ops of one kind (`CallLike`)."""
    gaps: tuple[tuple[Operation, ...], ...]
    """The ops between calls i and i+1 (p - 1 entries)."""

    def ops(self) -> list[Operation]:
        """The calls and the ops between them, in block order."""
        ops: list[Operation] = [self.calls[0]]
        for gap, call in zip(self.gaps, self.calls[1:], strict=True):
            ops += [*gap, call]
        return ops

    def wiring(self) -> dict[Position, Position]:
        """Operand positions fed by an earlier call of the same period -> that result."""
        index = {c: i for i, c in enumerate(self.calls)}
        return {
            (i, q): (index[v.op], v.index)
            for i, c in enumerate(self.calls)
            for q, v in enumerate(_args(c))
            if isinstance(v, OpResult) and v.op in index
        }

    def operand(self, position: Position) -> SSAValue:
        return _args(self.calls[position[0]])[position[1]]

    def result(self, position: Position) -> OpResult:
        return _results(self.calls[position[0]])[position[1]]

    def used_outside(self, position: Position) -> bool:
        return any(u.operation not in self.calls for u in self.result(position).uses)


@dataclass
class _Run:
    """Consecutive periods (of the same calls) that may form one loop."""

    wiring: dict[Position, Position]
    """How the calls of each period feed each other (the same in every period)."""
    units: list[_Unit] = field(default_factory=list)
    threading: dict[Position, Position] | None = None
    """Operand position -> the result of the previous period it takes (None: one period)."""
    moved: list[Operation] = field(default_factory=list)
    """Ops between the calls that use their results: they move after the looped call."""
    tainted: set[SSAValue] = field(default_factory=set)
    """Values computed from the run's results (which no later call of the run may take)."""


def _where(position: Position, p: int) -> str:
    return f"#{position[1]}" if p == 1 else f"#{position[1]} of call {position[0]}"


def _threads(threading: dict[Position, Position], p: int) -> str:
    pairs = (f"{_where(o, p)} <- result {_where(r, p)}" for o, r in sorted(threading.items()))
    return "{" + ", ".join(pairs) + "}"


def _link(run: _Run, unit: _Unit, gap: Sequence[Operation]) -> str | None:
    """Extends `run` with `unit` (the ops `gap` lying before it), or says which rule forbids.
    With an empty run, checks that `unit` alone can be a loop body."""
    p = len(unit.calls)
    if unit.wiring() != run.wiring:
        return "the calls of the two periods feed each other differently (rule 1)"
    prev = run.units[-1] if run.units else None
    index = {c: i for i, c in enumerate(unit.calls)}
    prev_index = {c: i for i, c in enumerate(prev.calls)} if prev else {}
    threading: dict[Position, Position] = {}
    moved: list[Operation] = []
    tainted = run.tainted  # grows in place: a run that fails to extend is closed anyway
    for op in [*gap, *unit.ops()]:
        if op not in index:
            if not is_side_effect_free(op):
                return f"'{op.name}' between them has side effects the loop would reorder (rule 3)"
            if any(v in tainted for v in op.operands):
                moved.append(op)
                tainted.update(op.results)
            continue
        i = index[op]
        for q, value in enumerate(_args(op)):
            if (i, q) in run.wiring:
                continue
            if isinstance(value, OpResult) and value.op in prev_index:
                threading[(i, q)] = (prev_index[value.op], value.index)
            elif value in tainted:
                return (
                    f"operand {_where((i, q), p)} is computed from an earlier call's results "
                    "(rule 1)"
                )
            elif prev and value is not prev.operand((i, q)) and not _stackable(value.type):
                return (
                    f"operand {_where((i, q), p)} varies but its type {value.type} cannot be "
                    "stacked (rule 2)"
                )
        tainted.update(op.results)
    if prev is not None:
        if run.threading is not None and threading != run.threading:
            return (
                f"it threads results into operands {_threads(threading, p)}, but the calls "
                f"before thread {_threads(run.threading, p)} (rule 1)"
            )
        for source in sorted(set(threading.values())):
            allowed = {(prev.calls[o[0]], o[1]) for o, s in run.wiring.items() if s == source} | {
                (unit.calls[o[0]], o[1]) for o, s in threading.items() if s == source
            }
            if {(u.operation, u.index) for u in prev.result(source).uses} != allowed:
                return (
                    f"result {_where(source, p)}, threaded into the next calls, has other uses "
                    "(rule 1)"
                )
        for i, call in enumerate(prev.calls):
            for r, t in enumerate(call.result_types):
                if (i, r) not in threading.values() and not _stackable(t):
                    return (
                        f"result {_where((i, r), p)} is not threaded and its type {t} cannot "
                        "be stacked (rule 2)"
                    )
        run.threading = threading
    run.units.append(unit)
    run.moved += moved
    return None


def _split(units: list[_Unit], gaps: Sequence[Sequence[Operation]]) -> tuple[list[_Run], list[str]]:
    """The maximal legal runs of consecutive periods (`gaps[k]`: the ops before period k+1),
    in order, and why the periods of consecutive runs are apart."""
    p = len(units[0].calls)
    what = "calls" if p == 1 else f"periods of {p} calls"
    runs: list[_Run] = []
    breaks = []
    current: _Run | None = None
    for k, unit in enumerate(units):
        if current is not None:
            reason = _link(current, unit, gaps[k - 1])
            if reason is None:
                continue
            breaks.append(f"{what} #{k - 1} and #{k} are not looped together: {reason}")
        current = _Run(unit.wiring())
        reason = _link(current, unit, ())
        if reason is None:
            runs.append(current)
        else:
            breaks.append(f"period #{k} cannot be a loop body: {reason}")
            current = None
    return runs, breaks


def _has_smaller_period(callees: Sequence[str]) -> bool:
    p = len(callees)
    return any(p % d == 0 and list(callees) == list(callees[:d]) * (p // d) for d in range(1, p))


def _segments(
    calls: list[Operation], gaps: list[list[Operation]], looped: set[str], min_units: int
) -> list[tuple[list[_Unit], list[_Run], list[str]]]:
    """Splits the calls of a block into repeating sequences, left to right: at each call,
    of the periods p = 1 .. MAX_PERIOD whose sequence repeats at least twice from there (and
    does not repeat with a shorter period), the one whose legal runs remove the most
    launches (the shorter on a tie). Calls of kernels in `looped` never take part."""
    callees = [_callee(c) for c in calls]
    segments = []
    start = 0
    while start < len(calls):
        best, best_saving = None, 0
        for p in range(1, MAX_PERIOD + 1):
            pattern = callees[start : start + p]
            if len(pattern) < p or looped.intersection(pattern) or _has_smaller_period(pattern):
                continue
            m = 1
            while callees[start + m * p : start + (m + 1) * p] == pattern:
                m += 1
            if m < 2:
                continue
            units = [
                _Unit(
                    tuple(calls[start + k * p : start + (k + 1) * p]),
                    tuple(tuple(g) for g in gaps[start + k * p : start + (k + 1) * p - 1]),
                )
                for k in range(m)
            ]
            between = [gaps[start + (k + 1) * p - 1] for k in range(m - 1)]
            runs, breaks = _split(units, between)
            saving = sum(len(r.units) * p - 1 for r in runs if len(r.units) >= min_units)
            if best is None or saving > best_saving:
                best, best_saving = (units, runs, breaks), saving
        if best is None:
            start += 1
        else:
            segments.append(best)
            start += len(best[0]) * len(best[0][0].calls)
    return segments


# --------------------------------------------------------------------------------------
# Rewriting a run
# --------------------------------------------------------------------------------------


def _looped_body(
    kernels: Sequence[KernelOp],
    run: _Run,
    classes: dict[Position, str],
    outputs: list[Position],
    depth: int,
) -> Block:
    """The body of the looped kernel: a `dfk.loop` whose body is a copy of the bodies of
    `kernels` (one period), wired as in the run."""
    threading = run.threading or {}
    n = len(run.units)
    positions = list(classes)
    outer = Block(
        arg_types=[
            stacked_type(cast(TensorType, t), n) if classes[o] == "stacked" else t
            for o in positions
            for t in (kernels[o[0]].function_type.inputs.data[o[1]],)
        ]
    )
    outer_arg = dict(zip(positions, outer.args, strict=True))
    groups = [
        [o for o in positions if classes[o] == g] for g in ("carried", "invariant", "stacked")
    ]
    carried, invariant, stacked_args = ([outer_arg[o] for o in group] for group in groups)
    inner = Block(arg_types=LoopOp.body_arg_types(carried, invariant, stacked_args))
    inner.args[0].name_hint = "i"
    inner_arg = dict(zip([o for group in groups for o in group], inner.args[1:], strict=True))
    returned: dict[Position, SSAValue] = {}
    for i, kernel in enumerate(kernels):
        mapping: dict[SSAValue, SSAValue] = {}
        for q, arg in enumerate(kernel.args):
            if (i, q) in run.wiring:
                mapping[arg] = returned[run.wiring[(i, q)]]
            else:
                mapping[arg] = inner_arg[(i, q)]
                inner_arg[(i, q)].name_hint = outer_arg[(i, q)].name_hint = arg.name_hint
        for op in kernel.body.block.ops:
            if op is not kernel.return_op:
                inner.add_op(op.clone(mapping))
        for r, value in enumerate(kernel.return_op.arguments):
            returned[(i, r)] = mapping.get(value, value)
    stacked = [o for o in outputs if o not in threading.values()]
    inner.add_op(
        YieldOp(
            carried=[returned[threading[o]] for o in groups[0]],
            stacked=[returned[o] for o in stacked],
        )
    )
    loop = LoopOp(n, carried, invariant, stacked_args, inner, pipeline_depth=depth)
    outer.add_op(loop)
    result = {threading[o]: loop.res[k] for k, o in reversed(list(enumerate(groups[0])))}
    result |= {o: loop.res[len(groups[0]) + k] for k, o in enumerate(stacked)}
    outer.add_op(ReturnOp(*(result[o] for o in outputs)))
    return outer


def _stacked_name(names: Sequence[str]) -> str:
    """`model.layers.0.mlp.w`, ..., `model.layers.7.mlp.w` -> `model.layers.0_to_7.mlp.w`:
    the dotted components that differ become `<first>_to_<last>` (`..._by_<step>` for layer
    numbers in steps other than 1, as the layers of one kind in alternating models)."""
    parts = [name.split(".") for name in names]
    if len({len(p) for p in parts}) != 1:
        return f"{names[0]}.stacked"

    def merged(column: tuple[str, ...]) -> str:
        if len(set(column)) == 1:
            return column[0]
        name = f"{column[0]}_to_{column[-1]}"
        if all(c.isdigit() for c in column):
            steps = {int(b) - int(a) for a, b in zip(column, column[1:], strict=False)}
            if len(steps) == 1 and (step := steps.pop()) != 1:
                name += f"_by_{step}"
        return name

    return ".".join(merged(column) for column in zip(*parts, strict=True))


def _stack(
    values: list[SSAValue], anchor: Operation, subsumed: list[ParamOp], rewriter: PatternRewriter
) -> SSAValue:
    """One stacked value of `values`, inserted before `anchor`: the read of a stacked
    parameter if every value reads a parameter (all of one stacking depth and shard; their
    params are added to `subsumed`), else a `dfk.stack`."""
    hint = values[0].name_hint
    params = [
        lookup_symbol(read, read.param.root_reference.data)
        if isinstance(read := v.owner, WeightOp)
        else None
        for v in values
    ]
    if (
        not all(isinstance(p, ParamOp) for p in params)
        or len({(cast(ParamOp, p).stack_depth, cast(ParamOp, p).shard) for p in params}) != 1
    ):
        stacked = rewriter.insert(StackOp(values), InsertPoint.before(anchor)).result
        stacked.name_hint = hint
        return stacked
    params = cast(list[ParamOp], params)
    subsumed += params
    stacked_t = stacked_type(params[0].type, len(params))
    sources = ArrayAttr([p.source for p in params])
    shard = params[0].shard
    name, param = symbol_for(
        anchor,
        _stacked_name([p.sym_name.data for p in params]),
        lambda s: (
            isinstance(s, ParamOp) and (s.type, s.source, s.shard) == (stacked_t, sources, shard)
        ),
    )
    if param is None:
        param = rewriter.insert(
            ParamOp(name, stacked_t, sources, shard), InsertPoint.after(params[-1])
        )
    read = rewriter.insert(WeightOp(cast(ParamOp, param)), InsertPoint.before(anchor)).result
    read.name_hint = hint
    return read


def _classes(run: _Run) -> dict[Position, str]:
    """Each operand position of one period that no earlier call of the period feeds:
    "carried", "invariant" or "stacked" (the module doc)."""
    first = run.units[0]
    threading = run.threading or {}
    return {
        (i, q): "carried"
        if (i, q) in threading
        else "invariant"
        if all(u.operand((i, q)) is first.operand((i, q)) for u in run.units)
        else "stacked"
        for i, call in enumerate(first.calls)
        for q in range(len(_args(call)))
        if (i, q) not in run.wiring
    }


def _outputs(run: _Run) -> list[Position]:
    """The result positions the loop yields: the threaded ones, and those some period uses
    outside itself (stacked)."""
    threading = run.threading or {}
    return [
        (i, r)
        for i, call in enumerate(run.units[0].calls)
        for r in range(len(call.results))
        if (i, r) in threading.values() or any(u.used_outside((i, r)) for u in run.units)
    ]


def _replace_run(
    run: _Run,
    results: dict[Position, SSAValue],
    unstack: Callable[[SSAValue, int, Position], Operation],
    point: InsertPoint,
    rewriter: PatternRewriter,
) -> None:
    """Replaces the calls of `run` by the loop, which `results` gives the outputs of (the
    last value of a threaded one, the stack of a stacked one) and which lies before `point`:
    unstacks (`unstack(stack, k, position)`: an op taking period k's value) the results used
    outside, moves the ops that use the run's results after the loop, and erases the calls
    and what only they used."""
    units = run.units
    last = units[-1]
    threading = run.threading or {}
    for o, result in results.items():
        if o in threading.values():
            result.name_hint = last.result(o).name_hint
            rewriter.replace_uses_with_if(
                last.result(o), result, lambda use: use.operation not in last.calls
            )
            continue
        for k, unit in enumerate(units):
            if unit.used_outside(o):
                piece = rewriter.insert(unstack(result, k, o), point)
                point = InsertPoint.after(piece)
                piece.results[0].name_hint = unit.result(o).name_hint
                calls = unit.calls
                rewriter.replace_uses_with_if(
                    unit.result(o),
                    piece.results[0],
                    lambda use, calls=calls: use.operation not in calls,
                )
    for op in run.moved:
        op.detach()
        rewriter.insert(op, point)
        point = InsertPoint.after(op)

    calls = [c for u in units for c in u.calls]
    dropped = [v for c in calls for v in _args(c)]
    for c in reversed(calls):
        rewriter.erase(c)
    for v in dropped:
        if isinstance(v, OpResult) and v.op.parent and not v.uses and is_side_effect_free(v.op):
            rewriter.erase(v.op)


def _loop_run(
    run: _Run, kernels: Sequence[KernelOp], depth: int, rewriter: PatternRewriter
) -> list[ParamOp]:
    """Replaces the `dfk.call`s of `run` by one call of the looped kernel; returns the
    parameters whose reads it stacked by layout."""
    units, n = run.units, len(run.units)
    first, last = units[0], units[-1]
    threading = run.threading or {}
    classes = _classes(run)
    outputs = _outputs(run)
    body = _looped_body(kernels, run, classes, outputs, depth)
    base = ".".join(k.sym_name.data for k in kernels)
    name, exists = kernel_for(kernels[0], f"{base}.looped", body)
    if not exists:
        result_types = cast(ReturnOp, body.last_op).arguments.types
        looped = KernelOp(name, (body.arg_types, result_types), Region(body))
        rewriter.insert(looped, InsertPoint.before(kernels[0]))

    subsumed: list[ParamOp] = []
    anchor = last.calls[-1]
    operands = [
        _stack([u.operand(o) for u in units], anchor, subsumed, rewriter)
        if cls == "stacked"
        else first.operand(o)
        for o, cls in classes.items()
    ]
    result_types = [
        t if o in threading.values() else stacked_type(cast(TensorType, t), n)
        for o in outputs
        for t in (last.result(o).type,)
    ]
    call = rewriter.insert(CallOp(name, operands, result_types), InsertPoint.before(anchor))
    # a run inside one layer (per-op kernels, e.g. the k and v projections) still belongs to
    # it: reports and traces name the layer
    layers = {c.attributes.get(LAYER_ATTR) for u in units for c in u.calls}
    if len(layers) == 1 and (layer := layers.pop()) is not None:
        call.attributes[LAYER_ATTR] = layer
    _replace_run(
        run,
        dict(zip(outputs, call.res, strict=True)),
        lambda stack, k, _: SliceOp(stack, k),
        InsertPoint.after(call),
        rewriter,
    )
    return subsumed


# --------------------------------------------------------------------------------------
# func.call runs: scf.for + tensor slices
# --------------------------------------------------------------------------------------


def _slice(source: SSAValue, index: SSAValue | int, result_type: Attribute) -> Operation:
    """`tensor.extract_slice` of entry `index` of the stacked `source` (rank-reducing: the
    result is one entry, of `result_type`)."""
    shape = cast(TensorType, result_type).get_shape()
    return tensor.ExtractSliceOp(
        source, [index, *[0] * len(shape)], [1, *shape], [1] * (len(shape) + 1), result_type
    )


def _insert(value: SSAValue, into: SSAValue, index: SSAValue | int) -> Operation:
    """`tensor.insert_slice` of `value` as entry `index` of the stacked `into`."""
    shape = cast(TensorType, value.type).get_shape()
    dynamic = [index] if isinstance(index, SSAValue) else []
    offsets = [DYNAMIC_INDEX if dynamic else index, *[0] * len(shape)]
    return tensor.InsertSliceOp.build(
        operands=[value, into, dynamic, [], []],
        result_types=[into.type],
        properties={
            "static_offsets": DenseArrayBase.from_list(i64, offsets),
            "static_sizes": DenseArrayBase.from_list(i64, [1, *shape]),
            "static_strides": DenseArrayBase.from_list(i64, [1] * (len(shape) + 1)),
        },
    )


def _evenly_spaced_slices(values: Sequence[SSAValue]) -> tuple[int, int] | None:
    """(first, step) if `values` are `tensor.extract_slice`s of one tensor, alike but for a
    static leading offset `first + step * k` (k = 0, 1, ...) of leading size 1: then entry k
    is read from that tensor as it is, with no stack built. None otherwise."""
    slices = [v.owner for v in values]
    if not all(isinstance(s, tensor.ExtractSliceOp) for s in slices):
        return None
    slices = cast(list[tensor.ExtractSliceOp], slices)
    head = slices[0]
    offsets = [s.static_offsets.get_values() for s in slices]
    alike = all(
        s.source is head.source
        and not s.offsets
        and not s.sizes
        and not s.strides
        and s.static_sizes == head.static_sizes
        and s.static_strides == head.static_strides
        and s.result.type == head.result.type
        and o[1:] == offsets[0][1:]
        for s, o in zip(slices, offsets, strict=True)
    )
    if not alike or not offsets[0] or head.static_sizes.get_values()[0] != 1:
        return None
    first, step = offsets[0][0], offsets[1][0] - offsets[0][0]
    if step < 1 or any(o[0] != first + step * k for k, o in enumerate(offsets)):
        return None
    return first, step


def _append(body: Block, op: Operation) -> SSAValue:
    """Adds `op` at the end of `body`; its (single) result."""
    body.add_op(op)
    return op.results[0]


@dataclass
class _ForBuilder:
    """Builds the ops of one looped `func.call` run: index constants and stacks before the
    loop (before `anchor`), per-trip reads in the loop body."""

    anchor: Operation
    rewriter: PatternRewriter
    constants: dict[int, SSAValue] = field(default_factory=dict)
    trip_indices: dict[tuple[int, int], SSAValue] = field(default_factory=dict)
    """(first, step) -> `first + step * i` computed in the loop body (once per loop)."""

    def before(self, op: Operation) -> SSAValue:
        return self.rewriter.insert(op, InsertPoint.before(self.anchor)).results[0]

    def index(self, value: int) -> SSAValue:
        """An `index` constant, one per value."""
        if value not in self.constants:
            constant = self.before(arith.ConstantOp.from_int_and_width(value, IndexType()))
            constant.name_hint = f"c{value}"
            self.constants[value] = constant
        return self.constants[value]

    def trip_index(self, body: Block, i: SSAValue, first: int, step: int) -> SSAValue:
        """`first + step * i`, computed once per loop at the end of `body` (so far)."""
        if (0, step) not in self.trip_indices:
            self.trip_indices[(0, step)] = (
                i if step == 1 else _append(body, arith.MuliOp(i, self.index(step)))
            )
        if (first, step) not in self.trip_indices:
            scaled = self.trip_indices[(0, step)]
            self.trip_indices[(first, step)] = _append(
                body, arith.AddiOp(scaled, self.index(first))
            )
        return self.trip_indices[(first, step)]

    def reader(
        self, values: Sequence[SSAValue], name: str | None
    ) -> Callable[[Block, SSAValue], SSAValue]:
        """How a trip reads its entry of the stacked `values` (given the body and the
        induction variable): from the tensor they are evenly spaced slices of, or from a
        stack built here once."""
        if (spacing := _evenly_spaced_slices(values)) is not None:
            first, step = spacing
            head = cast(tensor.ExtractSliceOp, values[0].owner)

            def read_slice(body: Block, i: SSAValue) -> SSAValue:
                i = self.trip_index(body, i, first, step)
                offsets = head.static_offsets.get_values()[1:]
                piece = tensor.ExtractSliceOp(
                    head.source,
                    [i, *offsets],
                    head.static_sizes.get_values(),
                    head.static_strides.get_values(),
                    head.result.type,
                )
                piece.result.name_hint = name
                return _append(body, piece)

            return read_slice
        entry_type = values[0].type
        stack = self.before(
            tensor.EmptyOp([], stacked_type(cast(TensorType, entry_type), len(values)))
        )
        for k, value in enumerate(values):
            stack = self.before(_insert(value, stack, k))
        stack.name_hint = f"{name}_stack" if name else None

        def read_stack(body: Block, i: SSAValue) -> SSAValue:
            piece = _slice(stack, i, entry_type)
            piece.results[0].name_hint = name
            return _append(body, piece)

        return read_stack


def _param_name(function: func.FuncOp, q: int) -> str | None:
    """The name of `function`'s parameter #q (None for a declaration)."""
    entry = function.body.blocks.first
    return entry.args[q].name_hint if entry is not None else None


def _loop_func_run(run: _Run, functions: Sequence[func.FuncOp], rewriter: PatternRewriter) -> None:
    """Replaces the `func.call`s of `run` by an `scf.for` whose body makes one period's
    calls: carried operands and stacked results in `iter_args`, invariant operands used as
    they are, stacked operands read per trip."""
    units, n = run.units, len(run.units)
    first, last = units[0], units[-1]
    threading = run.threading or {}
    classes = _classes(run)
    outputs = _outputs(run)
    build = _ForBuilder(last.calls[-1], rewriter)
    bounds = [build.index(0), build.index(n), build.index(1)]
    readers = {
        o: build.reader([u.operand(o) for u in units], _param_name(functions[o[0]], o[1]))
        for o, cls in classes.items()
        if cls == "stacked"
    }
    carried = [o for o, cls in classes.items() if cls == "carried"]
    stacked = [o for o in outputs if o not in threading.values()]
    inits = [first.operand(o) for o in carried]
    for o in stacked:
        empty = tensor.EmptyOp([], stacked_type(cast(TensorType, first.result(o).type), n))
        inits.append(build.before(empty))
    body = Block(arg_types=[IndexType(), *(v.type for v in inits)])
    i, *iter_args = body.args
    i.name_hint = "i"
    carried_arg = dict(zip(carried, iter_args[: len(carried)], strict=True))
    returned: dict[Position, SSAValue] = {}
    for c, call in enumerate(first.calls):
        operands = []
        for q, value in enumerate(_args(call)):
            o = (c, q)
            if o in run.wiring:
                operands.append(returned[run.wiring[o]])
            elif classes[o] == "carried":
                operands.append(carried_arg[o])
                carried_arg[o].name_hint = _param_name(functions[c], q) or value.name_hint
            elif classes[o] == "invariant":
                operands.append(value)
            else:
                operands.append(readers[o](body, i))
        new = func.CallOp(_callee(call), operands, call.result_types)
        new.attributes.update(call.attributes)
        body.add_op(new)
        returned |= {(c, r): result for r, result in enumerate(new.res)}
    yielded = [returned[threading[o]] for o in carried]
    for o, acc in zip(stacked, iter_args[len(carried) :], strict=True):
        yielded.append(_append(body, _insert(returned[o], acc, i)))
    body.add_op(scf.YieldOp(*yielded))
    lower, upper, step = bounds
    loop = rewriter.insert(
        scf.ForOp(lower, upper, step, inits, body), InsertPoint.before(last.calls[-1])
    )
    results = {threading[o]: loop.res[k] for k, o in reversed(list(enumerate(carried)))}
    results |= {o: loop.res[len(carried) + k] for k, o in enumerate(stacked)}
    _replace_run(
        run,
        {o: results[o] for o in outputs},
        lambda stack, k, o: _slice(stack, k, first.result(o).type),
        InsertPoint.after(loop),
        rewriter,
    )


def _drop_unused(
    module: ModuleOp, symbols: Sequence[KernelOp | ParamOp], rewriter: PatternRewriter
) -> None:
    """Erases those of `symbols` (kernels, parameters) nothing refers to any more."""
    used = {op.callee.string_value() for op in module.walk() if isinstance(op, CallOp)}
    used |= {op.param.root_reference.data for op in module.walk() if isinstance(op, WeightOp)}
    for symbol in symbols:
        if symbol.parent is not None and symbol.sym_name.data not in used:
            rewriter.erase(symbol)


# --------------------------------------------------------------------------------------
# Patterns and pass
# --------------------------------------------------------------------------------------


def _before(op: Operation):
    """The ops before `op` in its block, nearest first."""
    prev = op.prev_op
    while prev is not None:
        yield prev
        prev = prev.prev_op


def _calls(first: Operation) -> tuple[list[Operation], list[list[Operation]]]:
    """The calls of `first`'s kind in its block from `first` on, and the ops between
    consecutive ones (calls of other kinds among them)."""
    calls, gaps, gap = [first], [], []
    op = first.next_op
    while op is not None:
        if type(op) is type(first):
            calls.append(op)
            gaps.append(gap)
            gap = []
        else:
            gap.append(op)
        op = op.next_op
    return calls, gaps


def _module(op: Operation) -> ModuleOp | None:
    """The module `op` is in (None for a detached op)."""
    ancestor: Operation | None = op
    while ancestor is not None and not isinstance(ancestor, ModuleOp):
        ancestor = ancestor.parent_op()
    return ancestor


@dataclass
class _LoopConsecutive(RewritePattern):
    """Loops every legal run of the calls of one kind (`call_type`) in a block, matched at
    the block's first such call (which examines all of them at once)."""

    call_type: ClassVar[type[Operation]]
    callee_type: ClassVar[type[Operation]]

    options: LoopingOptions = DEFAULT_OPTIONS
    remark: Callable[[str], None] | None = None
    """Where to explain the runs left alone (None: silently)."""
    canonical: bool = True
    """As a canonicalization: stays local (erases no symbol) and does nothing in a module
    marked `dfk.no_kernel_looping`."""
    runs_looped: int = 0
    """How many runs this pattern has looped (for the pass's summary)."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter):
        if not isinstance(op, self.call_type) or any(
            isinstance(o, self.call_type) for o in _before(op)
        ):
            return
        module = _module(op)
        if self.canonical and module is not None and NO_KERNEL_LOOPING in module.attributes:
            return
        calls, gaps = _calls(op)
        found = {name: lookup_symbol(c, name) for c in calls for name in (_callee(c),)}
        callees = {n: c for n, c in found.items() if isinstance(c, self.callee_type)}
        if len(callees) != len(found):
            return  # unresolved callees: the verifier says so
        min_units = max(2, self.options.min_trip_count)
        for units, runs, breaks in _segments(calls, gaps, self.excluded(callees), min_units):
            period = [callees[_callee(c)] for c in units[0].calls]
            label = ", ".join(f"@{_callee(c)}" for c in units[0].calls)
            for reason in breaks:
                self._say(f"{label}: {reason}")
            for run in runs:
                if len(run.units) >= min_units:
                    self.loop(run, period, rewriter)
                    self.runs_looped += 1
                elif len(run.units) > 1:
                    self._say(
                        f"{label}: a run of {len(run.units)} "
                        f"{'calls' if len(period) == 1 else 'periods'} is shorter than "
                        f"min-trip-count={self.options.min_trip_count}"
                    )
        self.done(module, rewriter)

    def excluded(self, callees: dict[str, Operation]) -> set[str]:
        """Callees whose calls take part in no run."""
        return set()

    @abstractmethod
    def loop(self, run: _Run, callees: list[Operation], rewriter: PatternRewriter) -> None:
        """Replaces the calls of `run` (of one period's `callees`) by one loop."""

    def done(self, module: ModuleOp | None, rewriter: PatternRewriter) -> None:
        """After the block's runs are looped."""

    def _say(self, message: str) -> None:
        if self.remark is not None:
            self.remark(message)


@dataclass
class LoopConsecutiveCalls(_LoopConsecutive):
    """Kernel looping of `dfk.call`s: each run becomes one call of a looped kernel. Not
    `canonical` (the explicit pass), it then erases the kernels and parameters it made
    unused."""

    call_type = CallOp
    callee_type = KernelOp
    _subsumed: list[KernelOp | ParamOp] = field(default_factory=list)

    def excluded(self, callees: dict[str, Operation]) -> set[str]:
        # a kernel already holding a loop (the chip has one outer loop)
        return {
            name
            for name, k in callees.items()
            if any(isinstance(o, LoopOp) for o in cast(KernelOp, k).body.block.ops)
        }

    def loop(self, run: _Run, callees: list[Operation], rewriter: PatternRewriter) -> None:
        kernels = cast(list[KernelOp], callees)
        params = _loop_run(run, kernels, self.options.pipeline_depth, rewriter)
        self._subsumed += [*kernels, *params]

    def done(self, module: ModuleOp | None, rewriter: PatternRewriter) -> None:
        if self._subsumed and not self.canonical and module is not None:
            _drop_unused(module, list(dict.fromkeys(self._subsumed)), rewriter)
        self._subsumed.clear()


@dataclass
class LoopConsecutiveFuncCalls(_LoopConsecutive):
    """Kernel looping of `func.call`s: each run becomes an `scf.for` calling the function
    (upstream ops only). It adds and erases no symbol."""

    call_type = func.CallOp
    callee_type = func.FuncOp

    def loop(self, run: _Run, callees: list[Operation], rewriter: PatternRewriter) -> None:
        _loop_func_run(run, cast(list[func.FuncOp], callees), rewriter)


def _count_calls(module: ModuleOp) -> int:
    return sum(isinstance(op, CallOp | func.CallOp) for op in module.walk())


@dataclass(frozen=True)
class KernelLooping(CheckedOptionsPass):
    """Loops every legal run of consecutive calls to one callee, `dfk.call` or `func.call`
    (see the module doc); option defaults are `DEFAULT_OPTIONS`."""

    name = "kernel-looping"

    min_trip_count: int = DEFAULT_OPTIONS.min_trip_count
    pipeline_depth: int = DEFAULT_OPTIONS.pipeline_depth
    remarks: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require_dominance(op)
        for option in ("min_trip_count", "pipeline_depth"):
            if getattr(self, option) < 1:
                raise PassFailedException(
                    f"kernel-looping: {option.replace('_', '-')} must be >= 1, got "
                    f"{getattr(self, option)}"
                )
        messages: dict[str, None] = {}
        options = LoopingOptions(self.min_trip_count, self.pipeline_depth)
        remark = (lambda m: messages.setdefault(m)) if self.remarks else None
        patterns = [
            LoopConsecutiveCalls(options, remark, canonical=False),
            LoopConsecutiveFuncCalls(options, remark, canonical=False),
        ]
        before = _count_calls(op)
        PatternRewriteWalker(
            GreedyRewritePatternApplier([*patterns, StackOfSlices(), SliceOfStack()])
        ).rewrite_module(op)
        if self.remarks:
            after = _count_calls(op)
            for message in messages:
                print(f"remark: kernel-looping: {message}", file=sys.stderr)
            runs = sum(p.runs_looped for p in patterns)
            print(
                f"remark: kernel-looping: {runs} run(s) looped; calls {before} -> {after} "
                f"({before - after} call sites removed)",
                file=sys.stderr,
            )


@dataclass(frozen=True)
class DisableKernelLooping(CheckedOptionsPass):
    """Marks the module `dfk.no_kernel_looping`, so that `canonicalize` does not loop calls
    (the pipeline of a run that asks for no kernel looping)."""

    name = "disable-kernel-looping"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        op.attributes[NO_KERNEL_LOOPING] = UnitAttr()
