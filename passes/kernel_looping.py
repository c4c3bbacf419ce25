"""`kernel-looping`: N consecutive launches of one kernel -> one launch of a pipelined loop.

Each `dfk.call` is a launch: launch, argument load, pipeline fill and drain, sync, while the
off-chip memory idles. A decode step is N calls of one decoder-layer kernel, so every maximal
run of consecutive calls to the same kernel is rewritten into one call of `@<kernel>.looped`,
whose body is a `dfk.loop` over the original body (the hardware outer loop, prefetching the
next iterations' stacked operands `pipeline-depth` deep).

Operands are classified position by position over the run:
- carried: call j+1 takes, at this position, a result of call j (the residual stream); the
  loop starts from call 0's operand and ends with the last call's result;
- invariant: the same SSA value in every call (positions, rope tables);
- stacked: anything else, one value per call: weights read from module parameters are stacked
  by layout (a new stacked `llm.param` whose slices are the per-layer checkpoint tensors, so
  no runtime copy), other values with `dfk.stack` (per-layer KV-cache slices, which
  `stack(slice(x, 0..N-1)) -> x` folds back into the stacked cache).
Results that are not carried come out stacked and are unstacked with `dfk.slice` only where
a call's result was used. A run whose calls all belong to one layer (one-op kernels, e.g. the
k and v projections) keeps that `llm.layer` on the new call.

Legality (DESIGN.md), checked between each pair of consecutive calls; a failing pair splits
the run, and each side is looped on its own if long enough:
1. the values threaded from one call to the next are used by nothing else, the threading is
   the same all along the run, and no operand is computed from an earlier call's results;
2. operands that vary must be stackable tensors, and so must results that are not carried;
3. no op between the calls has side effects (moving the launches past it would reorder them).
Runs shorter than `min-trip-count` (and single calls) are left alone. Calls of a kernel that
already holds a loop are no candidates (the chip has one outer loop): this makes the rewrite
idempotent. A run broken by a call of another kernel (A A B A A) is two runs, looped apart.

Beyond the paper, a repeating sequence of p <= `MAX_PERIOD` calls (A B A B ..., alternating
attention kinds) is looped the same way with one period as the unit: the loop body holds the
p bodies, wired as the calls were (`@A.B.looped`). At each call of a block, the period whose
legal runs remove the most launches wins (the shorter on a tie). For p > 1 the per-layer
cache slices of one kind are every p-th layer, so they are stacked with `dfk.stack` (a
strided selection the stacked cache cannot fold back into).

With `remarks=true` the pass says on stderr, for each run it did not loop, which rule stopped
it, and sums up what it did (runs looped, calls before and after, launches removed).

The same rewrite, with default options, is the canonicalization pattern of `dfk.call`, so
`canonicalize` loops too, unless the module carries `dfk.no_kernel_looping` (which the
`disable-kernel-looping` pass sets): a pipeline that asks for no looping gets none. The
explicit `kernel-looping` pass is such a request and ignores that attribute.

Cost: one match per block (at its first call) examines the block's calls, each for at most
`MAX_PERIOD` periods; each looped run costs one walk of the module (to drop the per-layer
parameters and kernels it made unused): linear in the number of ops for the usual one run
per step.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, TensorType, UnitAttr
from xdsl.ir import Block, Operation, OpResult, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint
from xdsl.traits import is_side_effect_free
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.passes.kernels import kernel_for, symbol_for
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
from rdu_compiler.rdu_dialect.symbols import lookup_symbol

NO_KERNEL_LOOPING = "dfk.no_kernel_looping"
"""Module attribute (unit): the `dfk.call` canonicalization must not loop calls."""

# --------------------------------------------------------------------------------------
# Finding runs
# --------------------------------------------------------------------------------------

Position = tuple[int, int]
"""(index of a call within its period, operand or result index of that call)."""

MAX_PERIOD = 4
"""Longest repeating sequence of calls looked for (alternating layer kinds need 2)."""


@dataclass(frozen=True)
class _Unit:
    """One period of a repeating call sequence: p consecutive calls (p = 1: one call) and
    the ops between them."""

    calls: tuple[CallOp, ...]
    gaps: tuple[tuple[Operation, ...], ...]
    """The ops between calls i and i+1 (p - 1 entries)."""

    def ops(self) -> list[Operation]:
        """The calls and the ops between them, in block order."""
        ops: list[Operation] = [self.calls[0]]
        for gap, call in zip(self.gaps, self.calls[1:]):
            ops += [*gap, call]
        return ops

    def wiring(self) -> dict[Position, Position]:
        """Operand positions fed by an earlier call of the same period -> that result."""
        index = {c: i for i, c in enumerate(self.calls)}
        return {
            (i, q): (index[v.op], v.index)
            for i, c in enumerate(self.calls)
            for q, v in enumerate(c.arguments)
            if isinstance(v, OpResult) and v.op in index
        }

    def operand(self, position: Position) -> SSAValue:
        return self.calls[position[0]].arguments[position[1]]

    def result(self, position: Position) -> OpResult:
        return self.calls[position[0]].res[position[1]]

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
        for q, value in enumerate(op.arguments):
            if (i, q) in run.wiring:
                continue
            if isinstance(value, OpResult) and value.op in prev_index:
                threading[(i, q)] = (prev_index[value.op], value.index)
            elif value in tainted:
                return (
                    f"operand {_where((i, q), p)} is computed from an earlier call's results "
                    "(rule 1)"
                )
            elif (
                prev
                and value is not prev.operand((i, q))
                and not isinstance(value.type, TensorType)
            ):
                return (
                    f"operand {_where((i, q), p)} varies but its type {value.type} cannot be "
                    "stacked (rule 2)"
                )
        tainted.update(op.res)
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
            for r, t in enumerate(call.res.types):
                if (i, r) not in threading.values() and not isinstance(t, TensorType):
                    return (
                        f"result {_where((i, r), p)} is not threaded and its type {t} cannot "
                        "be stacked (rule 2)"
                    )
        run.threading = threading
    run.units.append(unit)
    run.moved += moved
    return None


def _split(units: list[_Unit], gaps: list[Sequence[Operation]]) -> tuple[list[_Run], list[str]]:
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
    calls: list[CallOp], gaps: list[list[Operation]], looped: set[str], min_units: int
) -> list[tuple[list[_Unit], list[_Run], list[str]]]:
    """Splits the calls of a block into repeating sequences, left to right: at each call,
    of the periods p = 1 .. MAX_PERIOD whose sequence repeats at least twice from there (and
    does not repeat with a shorter period), the one whose legal runs remove the most
    launches (the shorter on a tie). Calls of kernels in `looped` never take part."""
    callees = [c.callee.string_value() for c in calls]
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
    outer_arg = dict(zip(positions, outer.args))
    groups = [
        [o for o in positions if classes[o] == g] for g in ("carried", "invariant", "stacked")
    ]
    operands = [[outer_arg[o] for o in group] for group in groups]
    inner = Block(arg_types=LoopOp.body_arg_types(*operands))
    inner.args[0].name_hint = "i"
    inner_arg = dict(zip([o for group in groups for o in group], inner.args[1:]))
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
    loop = LoopOp(n, *operands, inner, pipeline_depth=depth)
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
            steps = {int(b) - int(a) for a, b in zip(column, column[1:])}
            if len(steps) == 1 and (step := steps.pop()) != 1:
                name += f"_by_{step}"
        return name

    return ".".join(merged(column) for column in zip(*parts))


def _stack(
    values: list[SSAValue], anchor: CallOp, subsumed: list[ParamOp], rewriter: PatternRewriter
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


def _loop_run(
    run: _Run, kernels: Sequence[KernelOp], depth: int, rewriter: PatternRewriter
) -> list[ParamOp]:
    """Replaces the calls of `run` by one call of the looped kernel; returns the parameters
    whose reads it stacked by layout."""
    units, n = run.units, len(run.units)
    first, last = units[0], units[-1]
    threading = run.threading or {}
    classes = {
        (i, q): "carried"
        if (i, q) in threading
        else "invariant"
        if all(u.operand((i, q)) is first.operand((i, q)) for u in units)
        else "stacked"
        for i, call in enumerate(first.calls)
        for q in range(len(call.arguments))
        if (i, q) not in run.wiring
    }
    # Results: the threaded ones, and those some period uses outside itself (stacked).
    outputs = [
        (i, r)
        for i, call in enumerate(first.calls)
        for r in range(len(call.res))
        if (i, r) in threading.values() or any(u.used_outside((i, r)) for u in units)
    ]
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
    point = InsertPoint.after(call)
    for o, result in zip(outputs, call.res):
        if o in threading.values():
            result.name_hint = last.result(o).name_hint
            rewriter.replace_uses_with_if(
                last.result(o), result, lambda use: use.operation not in last.calls
            )
            continue
        for k, unit in enumerate(units):
            if unit.used_outside(o):
                piece = rewriter.insert(SliceOp(result, k), point)
                point = InsertPoint.after(piece)
                rewriter.replace_uses_with_if(
                    unit.result(o), piece.result, lambda use: use.operation not in unit.calls
                )
    for op in run.moved:
        op.detach()
        rewriter.insert(op, point)
        point = InsertPoint.after(op)

    calls = [c for u in units for c in u.calls]
    dropped = [v for c in calls for v in c.arguments]
    for c in reversed(calls):
        rewriter.erase(c)
    for v in dropped:
        if isinstance(v, OpResult) and v.op.parent and not v.uses and is_side_effect_free(v.op):
            rewriter.erase(v.op)
    return subsumed


def _drop_unused(
    module: ModuleOp, symbols: Sequence[KernelOp | ParamOp], rewriter: PatternRewriter
) -> None:
    """Erases those of `symbols` (kernels, parameters) nothing refers to any more."""
    used = {
        op.callee.string_value() if isinstance(op, CallOp) else op.param.root_reference.data
        for op in module.walk()
        if isinstance(op, CallOp | WeightOp)
    }
    for symbol in symbols:
        if symbol.parent is not None and symbol.sym_name.data not in used:
            rewriter.erase(symbol)


# --------------------------------------------------------------------------------------
# Pattern and pass
# --------------------------------------------------------------------------------------


def _before(op: Operation):
    """The ops before `op` in its block, nearest first."""
    while (op := op.prev_op) is not None:
        yield op


def _calls(first: CallOp) -> tuple[list[CallOp], list[list[Operation]]]:
    """The calls of `first`'s block from `first` on, and the ops between consecutive ones."""
    calls, gaps, gap = [first], [], []
    op = first.next_op
    while op is not None:
        if isinstance(op, CallOp):
            calls.append(op)
            gaps.append(gap)
            gap = []
        else:
            gap.append(op)
        op = op.next_op
    return calls, gaps


def _module(op: Operation) -> ModuleOp:
    while not isinstance(op, ModuleOp):
        op = op.parent_op()
    return op


@dataclass
class LoopConsecutiveCalls(RewritePattern):
    """Loops every legal run of the call sequence that starts at the matched `dfk.call`."""

    min_trip_count: int = 2
    pipeline_depth: int = 2
    remark: Callable[[str], None] | None = None
    """Where to explain the runs left alone (None: silently)."""
    canonical: bool = True
    """As a canonicalization: does nothing in a module marked `dfk.no_kernel_looping`."""
    runs_looped: int = 0
    """How many runs this pattern has looped (for the pass's summary)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: CallOp, rewriter: PatternRewriter):
        # One match per block, at its first call, examines all the block's calls at once.
        if any(isinstance(o, CallOp) for o in _before(op)):
            return
        module = _module(op)
        if self.canonical and NO_KERNEL_LOOPING in module.attributes:
            return
        calls, gaps = _calls(op)
        kernels = {
            name: cast(KernelOp, lookup_symbol(c, name))
            for c in calls
            for name in (c.callee.string_value(),)
        }
        looped = {
            name
            for name, k in kernels.items()
            if any(isinstance(o, LoopOp) for o in k.body.block.ops)
        }
        min_units = max(2, self.min_trip_count)
        subsumed: list[ParamOp] = []
        used: list[KernelOp] = []
        for units, runs, breaks in _segments(calls, gaps, looped, min_units):
            callees = [kernels[c.callee.string_value()] for c in units[0].calls]
            label = ", ".join(f"@{k.sym_name.data}" for k in callees)
            for reason in breaks:
                self._say(f"{label}: {reason}")
            for run in runs:
                if len(run.units) >= min_units:
                    subsumed += _loop_run(run, callees, self.pipeline_depth, rewriter)
                    used += callees
                    self.runs_looped += 1
                elif len(run.units) > 1:
                    self._say(
                        f"{label}: a run of {len(run.units)} "
                        f"{'calls' if len(callees) == 1 else 'periods'} is shorter than "
                        f"min-trip-count={self.min_trip_count}"
                    )
        if used:
            _drop_unused(module, [*dict.fromkeys(used), *dict.fromkeys(subsumed)], rewriter)

    def _say(self, message: str) -> None:
        if self.remark is not None:
            self.remark(message)


def _count_calls(module: ModuleOp) -> int:
    return sum(isinstance(op, CallOp) for op in module.walk())


@dataclass(frozen=True)
class KernelLooping(ModulePass):
    """Loops every legal run of consecutive calls to one kernel (see the module doc)."""

    name = "kernel-looping"

    min_trip_count: int = 2
    pipeline_depth: int = 2
    remarks: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for option in ("min_trip_count", "pipeline_depth"):
            if getattr(self, option) < 1:
                raise PassFailedException(
                    f"kernel-looping: {option.replace('_', '-')} must be >= 1, got "
                    f"{getattr(self, option)}"
                )
        messages: dict[str, None] = {}
        pattern = LoopConsecutiveCalls(
            self.min_trip_count,
            self.pipeline_depth,
            (lambda m: messages.setdefault(m)) if self.remarks else None,
            canonical=False,
        )
        before = _count_calls(op)
        PatternRewriteWalker(
            GreedyRewritePatternApplier([pattern, StackOfSlices(), SliceOfStack()])
        ).rewrite_module(op)
        if self.remarks:
            after = _count_calls(op)
            for message in messages:
                print(f"remark: kernel-looping: {message}", file=sys.stderr)
            print(
                f"remark: kernel-looping: {pattern.runs_looped} run(s) looped; calls {before} "
                f"-> {after} ({before - after} launches removed)",
                file=sys.stderr,
            )


@dataclass(frozen=True)
class DisableKernelLooping(ModulePass):
    """Marks the module `dfk.no_kernel_looping`, so that `canonicalize` does not loop calls
    (the pipeline of a run that asks for no kernel looping)."""

    name = "disable-kernel-looping"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        op.attributes[NO_KERNEL_LOOPING] = UnitAttr()
