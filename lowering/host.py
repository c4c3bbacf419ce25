"""The host side of `lower-dfk-to-rdu`: walk `@decode_step` and turn it into tensors, values
and launches.

:class:`Host` gives every value the views (tensor, index) that hold it: arguments, weights (one
tensor per buffer a socket holds, per-layer weights separately so each gets its own tier),
`dfk.slice` / `dfk.stack` as views, never copies, and each call's results (fresh tensors, or the
argument's buffer for an in-place update). Because buffers are reused, it checks the lowering
contract as it goes (docs/lowering.md, "What the lowering relies on, and checks"): no value is
read after an in-place update overwrote its buffer, and the step returns its logits, next token
and updated caches where the program keeps them. Tiers are `lowering/placement.py`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    SymbolRefAttr,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue

from rdu_compiler.lowering.diagnostics import fail_at, op_location, value_name
from rdu_compiler.lowering.kernels import KernelPlan, StoredResult
from rdu_compiler.lowering.tensor_types import shape_of, tensor_of
from rdu_compiler.rdu_dialect import dfk, llm, rdu
from rdu_compiler.rdu_dialect.interpreter import ENTRY
from rdu_compiler.rdu_dialect.llm import LAYER_ATTR, sockets_of
from rdu_compiler.rdu_dialect.tensors import dtype_name
from rdu_compiler.simulator.numerics import bytes_of
from rdu_compiler.simulator.program import LaunchMode


@dataclass
class HostTensor:
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


class Host:
    """Tensors, values and launches of the decode step."""

    def __init__(self, module: ModuleOp, plans: dict[str, KernelPlan], launch: LaunchMode):
        self.sockets = sockets_of(module)
        self.plans = plans
        self.launch = launch
        self.params = {op.sym_name.data: op for op in module.ops if isinstance(op, llm.ParamOp)}
        self.values: dict[str, rdu.ValueOp] = {}
        self.tensors: dict[str, HostTensor] = {}
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
                raise fail_at(
                    user,
                    f"reads {value_name(value)}, but the launch of "
                    f"@{call.callee.string_value()} at {op_location(call)} has updated its buffer "
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
                layers = shape_of(value)[0]
                want = [[(state, [])], [(state, [i]) for i in range(layers)]]
                what = f"result #{index} (the updated {state}, layers in order)"
            if views not in want:
                raise fail_at(
                    ret,
                    f"returns {value_name(value)} as {what}, but that value is held in "
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
                    "type": tensor_of(dtype, shape),
                }
            )

    def _tensor(self, tensor: HostTensor) -> str:
        self.tensors.setdefault(tensor.name, tensor)
        return tensor.name

    def _whole_source(
        self,
        value: str,
        shape: list[int],
        at: list[int] | None = None,
        shard: llm.ShardAttr | None = None,
        held_on: list[int] | None = None,
    ) -> rdu.SourceAttr:
        """The source of `value` held at `at`: all of it, or on socket s the shard
        `#llm.shard` gives (block s // group along its dim, group = sockets / parts, and with
        an interleave k every k-th row from row s % k along its interleave dim); on the
        sockets `held_on` only if given."""
        origin = (0,) * len(shape)
        at_ = tuple(at) if at else origin
        held = tuple(held_on or ())
        if shard is None:
            return _source_attr(value, origin, tuple(shape), at_, (), 1, (), held)
        step = [0] * len(shape)
        step[shard.dim.data] = shape[shard.dim.data]
        dealt = ()
        if shard.interleave.data > 1:  # rows dealt among the sockets sharing the block
            rows = [1] * len(shape)
            rows[shard.interleave_dim.data] = shard.interleave.data
            dealt = tuple(rows)
        group = self.sockets // shard.parts.data
        return _source_attr(value, origin, tuple(shape), at_, tuple(step), group, dealt, held)

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
            raise fail_at(
                step,
                f"@{ENTRY} must take (tokens, positions, k_cache, v_cache) and return "
                "(logits, next_token, k_cache, v_cache), the caches with their arguments' "
                "types (docs/decode_step.md)",
            )
        for name, arg in zip(_INPUTS, args[:2], strict=True):
            shape, dtype = shape_of(arg), dtype_name(arg)
            self._value(name, "input", shape, dtype)
            source = self._whole_source(name, shape)
            self._define(
                arg, [(self._tensor(HostTensor(name, shape, dtype, "input", [source])), [])]
            )
        for index, (name, arg) in enumerate(zip(_STATES, args[2:4], strict=True), start=2):
            shape, dtype = shape_of(arg), dtype_name(arg)
            attrs = step.arg_attrs.data[index].data if step.arg_attrs else {}
            shard = attrs.get(llm.SHARD_ATTR)
            if shard is not None and not isinstance(shard, llm.ShardAttr):
                raise fail_at(
                    step, f"argument #{index} ({name}) has an llm.shard that is not a #llm.shard"
                )
            self._value(name, "state", self._whole_shape(shape, shard), dtype)
            self._tensor(
                HostTensor(
                    name, shape, dtype, "kv_cache", [self._whole_source(name, shape, shard=shard)]
                )
            )
            self._tensor(HostTensor(f"{name}.out", shape, dtype, "kv_cache", aliases=name))
            self._define(arg, [(name, [])])

    def _weight_tensors(self, param: llm.ParamOp, per_trip: bool) -> list[tuple[str, list[int]]]:
        """Tensors holding a parameter: one, or (`per_trip`) one per leading slice (stacked by
        layout: each slice its own tensor and tier). A tensor holding several checkpoint
        tensors (MoE experts) has one source per expert; with the experts dealt over the
        sockets (`stack_shard`), each on the sockets holding it only."""
        dtype = dtype_name(param.type)
        piece = shape_of(param.type)[param.stack_depth :]  # a checkpoint tensor's shape
        whole = self._whole_shape(piece, param.shard)
        shape = shape_of(param.type)
        slices = [param.slice_source(i) for i in range(shape[0])] if per_trip else [param.source]
        inner = shape[1:] if per_trip else shape
        stacked_dims = inner[: len(inner) - len(piece)]
        dealt = param.stack_shard
        dealt_dim = None if dealt is None else dealt.dim.data - (1 if per_trip else 0)
        source_dims = list(stacked_dims)
        if dealt is not None and dealt_dim is not None:
            source_dims[dealt_dim] *= dealt.parts.data
        views = []
        for source in slices:
            flat = _flatten(source)
            sources = []
            for k, ckpt in enumerate(flat):
                self._value(ckpt, "param", whole, dtype)
                at = list(_unravel(k, source_dims)) + [0] * len(piece)
                held_on = None
                if dealt is not None and dealt_dim is not None:
                    # slice e of the dealt dim: slot e % held on the sockets of block e // held
                    block, at[dealt_dim] = divmod(at[dealt_dim], stacked_dims[dealt_dim])
                    held_on = [
                        s for s in range(self.sockets) if dealt.block(s, self.sockets)[0] == block
                    ]
                sources.append(self._whole_source(ckpt, piece, at, param.shard, held_on))
            name = _common_name(flat)
            if name in self.tensors and self.tensors[name].sources != sources:
                # another parameter reading the same checkpoint tensor, cut differently (the
                # untied LM head's shard of the embedding table): named after its symbol
                name = param.sym_name.data
            tensor = HostTensor(name, list(inner), dtype, "weight", sources)
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
                    raise fail_at(
                        call,
                        f"passes {value_name(operand)}, a stack of {len(views)} separate tensors, "
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
                (self._tensor(HostTensor(f"{plan.name}.{param}", shape, dtype, "activation")), [])
            ]
        for param, views in bound.items():
            bindings.append(_binding_attr(param, tuple((t, tuple(i)) for t, i in views)))
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
                    "kernel": SymbolRefAttr(plan.name),
                    "mode": rdu.LaunchModeAttr(rdu.LaunchMode(self.launch)),
                    "bindings": ArrayAttr(bindings),
                    "label": StringAttr(label),
                    "layers": DenseArrayBase.from_list(i64, layers),
                }
            )
        )

    def _updated_in_place(
        self, call: dfk.CallOp, plan: KernelPlan, where: StoredResult, operand: SSAValue
    ) -> list[tuple[str, list[int]]]:
        """The views a result updating `operand` in place is stored to: a KV cache into the
        cache's alias (`k_cache.out`), the residual stream into its own activation buffer."""
        views = self.views[operand]
        kinds = {self.tensors[t].kind for t, _ in views}
        if where.kind == "cache":
            if kinds != {"kv_cache"}:
                raise fail_at(
                    call,
                    f"@{plan.name} updates argument #{where.arg} in place as a KV cache, but "
                    f"the call passes {value_name(operand)}, which is not a view of "
                    f"{' or '.join(_STATES)}",
                )
            return [(f"{self._buffer(t)}.out", i) for t, i in views]
        if kinds != {"activation"} or sum(1 for _ in operand.uses) != 1:
            raise fail_at(
                call,
                f"@{plan.name} stores result #{plan.results.index(where)} in place over "
                f"argument #{where.arg} (as at its other calls, where that operand dies), but "
                f"this call's operand {value_name(operand)} "
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
        shape, dtype = shape_of(result), dtype_name(result)
        returned = [use.index for use in result.uses if isinstance(use.operation, func.ReturnOp)]
        if returned and returned[0] < len(_OUTPUTS):
            name = _OUTPUTS[returned[0]]
            self._value(name, "output", shape, dtype)
            return self._tensor(
                HostTensor(name, shape, dtype, "output", [self._whole_source(name, shape)])
            )
        hint = result.name_hint or "act"
        name, k = hint, 0
        while name in self.tensors:
            k += 1
            name = f"{hint}_{k}"
        return self._tensor(HostTensor(name, shape, dtype, "activation"))

    def walk(self, step: func.FuncOp) -> None:
        self.arguments(step)
        for op in step.body.block.ops:
            if isinstance(op, llm.WeightOp):
                weight = op.results[0]
                self.weight_of[weight] = self.params[op.param.root_reference.data]
                user = next((u.operation for u in weight.uses if not _is_call(u.operation)), None)
                if user is not None:
                    raise fail_at(
                        user,
                        f"uses the weight {value_name(weight)} outside a kernel call: the program "
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
                    raise fail_at(
                        op,
                        f"stacks {value_name(nested)}, itself a stack of separate tensors: "
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
                raise fail_at(
                    op,
                    f"'{op.name}' in @{ENTRY} outside a kernel: outline it first (outline-kernels)",
                )


# Attributes are immutable values: the ones a program's host side needs per layer (sources,
# bindings) are built once per process, and each later lowering of the same model (rdu-tune's
# trials, rdu-run's variants) reuses them, rather than have xDSL build and verify them again
# (a fifth of the lowering of 70B without kernel looping).
@lru_cache(maxsize=1 << 15)
def _source_attr(
    value: str,
    start: tuple[int, ...],
    shape: tuple[int, ...],
    at: tuple[int, ...],
    step: tuple[int, ...],
    group: int,
    dealt: tuple[int, ...],
    held_on: tuple[int, ...],
) -> rdu.SourceAttr:
    return rdu.SourceAttr(value, start, shape, at, step, group, dealt, held_on)


@lru_cache(maxsize=1 << 14)
def _binding_attr(param: str, views: tuple[tuple[str, tuple[int, ...]], ...]) -> rdu.BindingAttr:
    return rdu.BindingAttr(param, views)


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
