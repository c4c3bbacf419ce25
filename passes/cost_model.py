"""Cost accounting of `llm` IR: FLOPs and off-chip bytes per op, and per decode step.

An analysis, not a rewrite: xDSL ops in, numbers out. Lowering reuses :func:`op_cost` for the
work of each unit; `rdu-import --stats` reports :func:`step_stats`.

Conventions (per op, from the op's operand types alone, so an op costs the same in the
frontend's flat step and inside a kernel or loop body):

* FLOPs are those of the matrix products, 2 per multiply-add: `llm.linear` `2*B*OUT*IN`;
  `llm.attention` `QK^T` and `PV`, `2 * 2*B*heads*head_dim*attended`; `llm.moe` the router
  `2*B*E*H` and per routed expert `3 * 2*H*I`. Elementwise ops, norms, rope, softmax, bias
  adds and argmax are O(B*width) (under 0.1% of a step) and count 0, as in the usual
  "2 x parameters" estimate.
* `attended = min(S, sliding_window)` rows per batch entry, `S` the cache length: we account
  the steady state of a full cache (the step's context), not a particular position. A cache
  dealt over `k` sockets along the sequence (`context_shards = k`: every k-th position) holds
  `S` of the `k S` positions and attends `min(S, ceil(sliding_window / k))` of them.
* Weight bytes are counted where a weight is used, by operand role: `llm.linear` reads its
  whole weight (and bias), norms their weight, `llm.embedding` one table row per batch entry
  (so with tied embeddings the LM head still reads the whole table), `llm.moe` its router and
  the routed experts.
* MoE routing assumption: each batch entry picks `top_k` distinct experts and different
  entries pick different ones, so a step reads `min(E, B*top_k)` experts per layer (an upper
  bound; at batch 1 it is exact). The `dense_*` fields count every expert (as if all ran),
  which is the all-parameters convention of `bytes_per_token`. Experts dealt over sockets
  (`expert_shards`, `moe=expert`): the op's cost is its busiest socket's, all the tokens'
  routed experts on this socket as far as it holds them, `min(E', B*top_k)` of its `E'`
  experts read and `B * min(top_k, E')` expert products (a worst case: the sockets meet at
  the all-reduce after the block, so the step waits for the busiest; with one expert per
  socket it is exact at batch 1, and for `B*top_k` well above `E` nearly every expert is
  routed anyway); :func:`moe_expert_share` is a socket's share of the unsharded step's
  routed bytes, what the roofline counts.
* KV bytes: `llm.attention` reads K and V over the attended rows; `llm.kv_cache_write` writes
  the new row (the cache itself is updated in place, never copied).

Whole-step figures (:func:`step_stats`, the `rdu-import --stats --json` keys). A step at batch
`B` makes `B` tokens; weights are read once per step and shared by its `B` tokens, KV is per
entry. "Per token" is therefore "per step / B":

* `param_bytes`: all parameters (every expert); `kv_bytes`: the K and V caches of all layers
  and batch entries at full context (their allocation).
* `bytes_per_token = (param_bytes + kv_bytes) / B`: the Kernel Looping paper's convention
  (Table 1: Llama 3.1 8B, batch 1, 4K context, 15.4 GiB/token).
* `bytes_read_per_token`: what a step really moves, `/ B`: the op weight bytes above (routed
  experts), KV read over attended rows, new rows written.
* `flops_per_token`: step FLOPs `/ B`, all experts counted for MoE (pairs with
  `bytes_per_token`); `flops_per_byte = flops_per_token / bytes_per_token`.
* MoE only: `active_param_bytes` (what one token's `top_k` experts touch, e.g. Mixtral
  8x7B's 12.9B parameters), `active_flops_per_token` (the routed work),
  `active_bytes_per_token` (parameters the step touches under the routing assumption plus KV,
  `/ B`), `active_flops_per_byte`, `active_experts_per_layer`.
Bytes and FLOPs are integers (per-token values rounded to the nearest unit).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Attribute, Operation, SSAValue

from rdu_compiler.frontend.builder import MODEL_ATTR
from rdu_compiler.rdu_dialect.llm import (
    AttentionOp,
    EmbeddingOp,
    KVCacheWriteOp,
    LayerNormOp,
    LinearOp,
    MoEOp,
    ParamOp,
    RMSNormOp,
    context_shards_of,
    expert_shards_of,
)
from rdu_compiler.rdu_dialect.tensors import dtype_name, tensor_shape
from rdu_compiler.simulator.numerics import bytes_of

__all__ = [
    "OpCost",
    "tensor_bytes",
    "op_cost",
    "moe_expert_share",
    "total_cost",
    "step_stats",
    "STATS_KEYS",
]

STATS_KEYS = (
    "model",
    "batch",
    "context",
    "dtype",
    "param_bytes",
    "kv_bytes",
    "flops_per_token",
    "bytes_per_token",
    "bytes_read_per_token",
    "flops_per_byte",
)
"""The keys of `rdu-import --stats --json` other tools rely on (DESIGN.md); MoE adds more."""


def tensor_bytes(t: Attribute | SSAValue) -> int:
    """Size in bytes of a static tensor type (or of a value of one)."""
    return bytes_of(tensor_shape(t), dtype_name(t))


@dataclass(frozen=True)
class OpCost:
    """The work of one op (or a sum of ops). `dense_*` count every MoE expert; for any
    other op they equal `flops` / `weight_bytes`."""

    flops: int = 0
    weight_bytes: int = 0
    kv_read_bytes: int = 0
    kv_write_bytes: int = 0
    dense_flops: int = 0
    dense_weight_bytes: int = 0

    @property
    def bytes_moved(self) -> int:
        """Off-chip bytes: weights read (routed experts), KV read and written."""
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes

    def __add__(self, other: OpCost) -> OpCost:
        return OpCost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


ZERO = OpCost()


def _dense(flops: int = 0, weight_bytes: int = 0, kv_read: int = 0, kv_write: int = 0) -> OpCost:
    return OpCost(flops, weight_bytes, kv_read, kv_write, flops, weight_bytes)


def _moe_experts(op: MoEOp) -> tuple[int, int, int]:
    """(experts held: all E unless dealt over sockets, bytes of one expert's gate+up+down,
    experts a step reads: of those held, at most `B * top_k`)."""
    held = tensor_shape(op.gate)[0]
    per_expert = sum(tensor_bytes(w) for w in (op.gate, op.up, op.down)) // held
    batch = tensor_shape(op.input)[0]
    return held, per_expert, min(held, batch * op.top_k.value.data)


def moe_expert_share(op: MoEOp) -> int:
    """One socket's share of the expert bytes the unsharded step reads (`min(E, B*top_k)`
    experts over the `expert_shards` sockets dealing them): what the memory roofline counts
    when each socket is costed as the busiest (see the module doc)."""
    _, per_expert, _ = _moe_experts(op)
    experts, top_k = op.num_experts.value.data, op.top_k.value.data
    routed = min(experts, tensor_shape(op.input)[0] * top_k)
    return routed * per_expert // expert_shards_of(op)


def op_cost(op: Operation) -> OpCost:
    """FLOPs and bytes of one llm op (see the module docstring); zero for the others."""
    if isinstance(op, LinearOp):
        batch, inputs = tensor_shape(op.input)
        outputs = tensor_shape(op.weight)[0]
        weights = tensor_bytes(op.weight) + (tensor_bytes(op.bias) if op.bias else 0)
        return _dense(2 * batch * outputs * inputs, weights)
    if isinstance(op, AttentionOp):
        batch, kv_heads, context, head_dim = tensor_shape(op.k_cache)
        attended = context
        if op.sliding_window:  # of the window's positions, the ones this cache holds
            attended = min(context, -(-op.sliding_window.value.data // context_shards_of(op)))
        heads = op.num_heads.value.data * context_shards_of(op)  # the group's queries
        row = tensor_bytes(op.k_cache) // (batch * kv_heads * context)  # one head's row
        return _dense(
            flops=2 * 2 * batch * heads * head_dim * attended,
            kv_read=2 * batch * kv_heads * attended * row,
        )
    if isinstance(op, KVCacheWriteOp):
        return _dense(kv_write=tensor_bytes(op.new))
    if isinstance(op, EmbeddingOp):
        vocab = tensor_shape(op.table)[0]
        return _dense(weight_bytes=tensor_bytes(op.table) // vocab * tensor_shape(op.ids)[0])
    if isinstance(op, RMSNormOp):
        return _dense(weight_bytes=tensor_bytes(op.weight))
    if isinstance(op, LayerNormOp):
        return _dense(weight_bytes=tensor_bytes(op.weight) + tensor_bytes(op.bias))
    if isinstance(op, MoEOp):
        batch, hidden = tensor_shape(op.input)
        held, per_expert, read = _moe_experts(op)
        inner = tensor_shape(op.gate)[1]
        router_flops = 2 * batch * op.num_experts.value.data * hidden
        expert_flops = 3 * 2 * hidden * inner
        router = tensor_bytes(op.router)
        return OpCost(
            flops=router_flops + batch * min(op.top_k.value.data, held) * expert_flops,
            weight_bytes=router + read * per_expert,
            dense_flops=router_flops + batch * held * expert_flops,
            dense_weight_bytes=router + held * per_expert,
        )
    return ZERO


def total_cost(ops: Iterable[Operation]) -> OpCost:
    """Sum of :func:`op_cost` over `ops` (e.g. `module.walk()`, or one layer's ops)."""
    total = ZERO
    for op in ops:
        total += op_cost(op)
    return total


def _decode_step(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "decode_step":
            return op
    raise ValueError("module has no func.func @decode_step (not a decode step from rdu-import)")


def _per_token(value: int, batch: int) -> int:
    return round(value / batch)


def step_stats(module: ModuleOp) -> dict[str, Any]:
    """The whole-step figures of a decode-step module (see the module docstring).

    Batch, context and dtype are read from the step's signature (tokens `[B]`, caches
    `[L, B, KVH, S, D]`), the model name from the module's `llm.model` attribute, so they
    cannot disagree with the IR.
    """
    step = _decode_step(module)
    tokens, _, k_cache, v_cache = step.body.block.args
    batch = tensor_shape(tokens)[0]
    context = tensor_shape(k_cache)[3]
    model = module.attributes.get(MODEL_ATTR)

    param_bytes = sum(tensor_bytes(op.type) for op in module.ops if isinstance(op, ParamOp))
    kv_bytes = tensor_bytes(k_cache) + tensor_bytes(v_cache)
    cost = total_cost(step.walk())
    bytes_per_token = (param_bytes + kv_bytes) / batch
    flops_per_token = cost.dense_flops / batch
    stats: dict[str, Any] = {
        "model": model.data if isinstance(model, StringAttr) else None,
        "batch": batch,
        "context": context,
        "dtype": dtype_name(k_cache),
        "param_bytes": param_bytes,
        "kv_bytes": kv_bytes,
        "flops_per_token": _per_token(cost.dense_flops, batch),
        "bytes_per_token": _per_token(param_bytes + kv_bytes, batch),
        "bytes_read_per_token": _per_token(cost.bytes_moved, batch),
        "flops_per_byte": flops_per_token / bytes_per_token,
    }
    moes = [op for op in step.walk() if isinstance(op, MoEOp)]
    if moes:
        idle = 0  # parameter bytes of the experts one token does not use
        for op in moes:
            experts, per_expert, _ = _moe_experts(op)
            idle += (experts - op.top_k.value.data) * per_expert
        step_params = param_bytes - (cost.dense_weight_bytes - cost.weight_bytes)
        active_bytes = (step_params + kv_bytes) / batch
        stats |= {
            "active_param_bytes": param_bytes - idle,
            "active_flops_per_token": _per_token(cost.flops, batch),
            "active_bytes_per_token": round(active_bytes),
            "active_flops_per_byte": cost.flops / batch / active_bytes,
            "active_experts_per_layer": _moe_experts(moes[0])[2],
        }
    return stats
