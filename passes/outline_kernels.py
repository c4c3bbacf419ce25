"""`outline-kernels`: group the `llm` ops of a decode step into `dfk.kernel`s and launch them
with `dfk.call`s (layer-level fusion).

Policies (option `policy`):
- `layer` (default): the ops of decoder layer i (`llm.layer = i`, set by the frontend; never
  found from locations) become one kernel; the unmarked ops before the first layer (the
  embedding) one kernel `@embed`, those after the last layer (final norm, LM head, argmax)
  one kernel `@lm_head` (unmarked ops between layers, if any, `@glue`).
- `op`: one kernel per op, the unfused baseline (like a compiler's lowest fusion level).

What is not outlined, and why:
- `llm.weight` reads stay in the caller and their values become kernel arguments: the layers
  then differ only in the values passed in, so their kernels are structurally identical (and
  kernel looping can later stack those arguments by layout);
- the `dfk.slice` / `dfk.stack` plumbing of the stacked KV caches, and every non-`llm` op,
  stays in the caller.

Structurally identical kernels are one symbol: a Llama decode step becomes `@embed`, N calls to
`@decoder_layer`, `@lm_head`. Names are stable: the first kind of layer is `@decoder_layer`,
a second distinct kind (e.g. sliding-window layers) `@decoder_layer_1`, and so on in order of
first appearance; under `op`, `@linear`, `@linear_1`, ... Inside a kernel the ops lose their
`llm.layer` attribute (one kernel serves every layer); each call carries its layer instead.

A kernel's arguments are the values its ops use from outside, in order of first use; its
results the values used outside, in op order. The call is placed where the group's last op
was, which is valid when no op outside the group uses a group value before that point (always
true for the frontend's IR); otherwise the pass fails and names the group. Cost: linear in the
number of ops.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, OpResult, Region, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.passes.kernels import kernel_for
from rdu_compiler.passes.pass_options import CheckedOptionsPass
from rdu_compiler.rdu_dialect.dfk import CallOp, KernelOp, ReturnOp
from rdu_compiler.rdu_dialect.llm import LAYER_ATTR, ParamOp, WeightOp, layer_of
from rdu_compiler.rdu_dialect.ssa import require_dominance


def outlinable(op: Operation) -> bool:
    """Compute ops of the llm dialect (not parameters, not weight reads): what `policy=op`
    makes one kernel of (the GPU baseline counts them as a GPU's kernels per step)."""
    return op.dialect_name() == "llm" and not isinstance(op, WeightOp | ParamOp)


def _groups(block: Block, policy: str) -> list[tuple[str, int | None, list[Operation]]]:
    """The ops of `block` to outline, as (kernel base name, layer or None, ops in block
    order), in order of each group's first op."""
    ops = [op for op in block.ops if outlinable(op)]
    if policy == "op":
        return [(op.name.removeprefix("llm."), layer_of(op), [op]) for op in ops]
    layers = {layer_of(op) for op in ops} - {None}
    groups: dict[Hashable, tuple[str, int | None, list[Operation]]] = {}
    seen = set[int]()
    for op in ops:
        layer = layer_of(op)
        if layer is not None:
            seen.add(layer)
            key: Hashable = ("layer", layer)
            base = "decoder_layer"
        else:
            key = ("glue", len(seen))
            base = "embed" if not seen else "lm_head" if seen == layers else "glue"
        groups.setdefault(key, (base, layer, []))[2].append(op)
    return list(groups.values())


def _describe(base: str, layer: int | None) -> str:
    return f"layer {layer}" if layer is not None else f"the {base} ops"


@dataclass(frozen=True)
class OutlineKernels(CheckedOptionsPass):
    """Outlines the llm ops of every `func.func` into `dfk.kernel`s (see the module doc)."""

    name = "outline-kernels"

    policy: Literal["layer", "op"] = "layer"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require_dominance(op)
        for function in [f for f in op.ops if isinstance(f, func.FuncOp)]:
            for block in function.body.blocks:
                position = {o: i for i, o in enumerate(block.ops)}
                for base, layer, group in _groups(block, self.policy):
                    call = _outline(group, base, layer, position, function)
                    position[call] = position[group[-1]]


def _outline(
    group: list[Operation],
    base: str,
    layer: int | None,
    position: dict[Operation, int],
    function: func.FuncOp,
) -> CallOp:
    """Replaces `group` by a call of its kernel (an existing identical one, or a new one
    inserted before `function`)."""
    inside = set(group)
    inputs = list(
        dict.fromkeys(
            v for o in group for v in o.operands if not (isinstance(v, OpResult) and v.op in inside)
        )
    )
    outputs = [
        r for o in group for r in o.results if any(u.operation not in inside for u in r.uses)
    ]
    last = group[-1]
    block = last.parent_block()
    assert block is not None, "grouped ops live in the function's block"
    for use in (u for r in outputs for u in r.uses):
        user = block.find_ancestor_op_in_block(use.operation)
        if user is not None and user not in inside and position[user] < position[last]:
            raise PassFailedException(
                f"cannot outline {_describe(base, layer)} as one kernel: "
                f"'{user.name}' uses one of its values before its last op"
            )

    # the group's ops move into the body (cheaper than copies: most layers' bodies are
    # dropped again, as the kernel of an identical layer exists)
    where = InsertPoint.before(last.next_op) if last.next_op else InsertPoint.at_end(block)
    layer_attr = group[0].attributes[LAYER_ATTR] if layer is not None else None
    body = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = {}
    for value, arg in zip(inputs, body.args):
        mapping[value] = arg
        arg.name_hint = value.name_hint
    for o in group:
        o.detach()
        o.operands = [mapping.get(v, v) for v in o.operands]
        o.attributes.pop(LAYER_ATTR, None)
        body.add_op(o)
    body.add_op(ReturnOp(*outputs))

    name, exists = kernel_for(function, base, body)
    if not exists:
        kernel = KernelOp(name, (body.arg_types, [r.type for r in outputs]), Region(body))
        Rewriter.insert_op(kernel, InsertPoint.before(function))

    call = CallOp(name, inputs, [r.type for r in outputs])
    if layer_attr is not None:  # a layer's group
        call.attributes[LAYER_ATTR] = layer_attr
    Rewriter.insert_op(call, where)
    for old, new in zip(outputs, call.res):
        new.name_hint = old.name_hint
        old.replace_uses_with_if(
            new, lambda use: body.find_ancestor_op_in_block(use.operation) is None
        )
    return call
