"""KV heads fewer than sockets: replicate each kv head's cache, or deal it along the sequence?

With `g` kv heads on `N > g` sockets, every kv head serves the query heads of `m = N / g`
sockets. Replicated, each of them reads the head's whole cache every step. Dealt along the
sequence over `k` of them (k divides m; position t on socket t % k of the group, at row
t // k), each reads `1 / k` of it. The k sockets hold different query heads of the same kv
head, so they all-gather their queries, each computes flash-decoding partials of all k
sockets' heads over its positions, they all-gather the partials (`[B, k heads, head_dim + 2]`
f32 per socket) and each combines its own heads before the o projection. So dealing saves
HBM time in proportion to the context and puts two collectives, whose P2P latency does not
shrink with the context, on the layer's critical path.

The cost model (per step and socket) follows how a layer runs: its weights are staged ahead
(the next trip's stream in while this one computes), so a layer takes the larger of

* its **HBM time**: the bytes one socket reads for it (its share of each weight, as the
  sharding analysis cuts it, replicated K / V projections included, plus the attended K / V
  rows of its kv head) over the sustained rate (`hbm_bandwidth x hbm_efficiency`), and
* its **critical path**: the residual stream flows through the layer's ops one after the
  other, each op a PCU pipeline to cross (`pcu_stages x stage_latency_s`; an attention two:
  partials and combine, dealt three, with the merge of its context blocks; an op fused into a
  neighbour's pipeline, `passes/fusion.py`, one stage), each all-reduce its `collective_plan`
  (latency and bytes over the P2P links), and a dealt attention's two all-gathers on top;

times the trips of the loop around it (a looped layer's trips cannot overlap: each waits for
the residual stream of the last). `k` is the candidate with the least time (ties: fewer
sockets). So at a short context, where the layer is HBM-bound with either choice, or where
dealing makes the path longer than the bytes it saves, the cache stays replicated; once the
replicated K / V rows cost more HBM time than the path gains, it is dealt.

The K / V projections stay replicated on the m sockets: splitting their `head_dim` outputs
would need another gather per projection (rope pairs the two halves of a head) at the same P2P
latency, for a weight of `head_dim x hidden` per socket (1 MiB for llama-3.1-8b: 0.6 us of
HBM against 2 us of latency). The same holds for the queries the other way round: gathering
them (a few hundred bytes) costs one latency, computing them on every socket of the group
would read `k` times the socket's share of the q projection (2 MiB more per layer for
llama-3.1-8b on 16 sockets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation

from rdu_compiler.passes.cost_model import op_cost, tensor_bytes
from rdu_compiler.passes.fusion import plan_fusions
from rdu_compiler.rdu_dialect.dfk import CallOp, KernelOp, LoopOp
from rdu_compiler.rdu_dialect.llm import (
    AllGatherOp,
    AllReduceOp,
    AttentionOp,
    ParamOp,
    WeightOp,
    context_shards_of,
)
from rdu_compiler.rdu_dialect.tensors import tensor_shape
from rdu_compiler.simulator.hardware import HardwarePreset, collective_plan

__all__ = ["ContextSplit", "plan_context_split"]


@dataclass(frozen=True)
class ContextSplit:
    """The choice for one module: each kv head shared by `replicas` sockets is dealt over
    `shards` of them (1: replicated); `seconds` per candidate (per step and socket)."""

    shards: int
    replicas: int
    seconds: dict[int, float]

    def describe(self) -> str:
        """One line for a summary: the choice and the cost model's figures."""
        figures = ", ".join(
            f"{'replicated' if k == 1 else f'dealt over {k}'} {t * 1e6:.1f} us"
            for k, t in sorted(self.seconds.items())
        )
        how = "replicated" if self.shards == 1 else f"dealt along the sequence over {self.shards}"
        return (
            f"KV caches: each kv head shared by {self.replicas} sockets, {how} (cost model, per "
            f"step and socket, each layer the larger of its HBM time and its critical path: "
            f"{figures}; kv-seq-split overrides)"
        )


def kernel_calls(module: ModuleOp) -> Callable[[Block], int]:
    """`runs` for :func:`plan_context_split`: how many calls run each kernel's body (an
    unlooped step calls its one layer kernel once per layer), 1 for any other block."""
    kernels = {op.sym_name.data: op.body.block for op in module.ops if isinstance(op, KernelOp)}
    counts = Counter(op.callee.string_value() for op in module.walk() if isinstance(op, CallOp))
    calls = {kernels[name]: n for name, n in counts.items() if name in kernels}
    return lambda block: calls.get(block, 1)


def _trips(op: Operation) -> int:
    """How many times a step runs `op`: once, or once per trip of each loop around it."""
    trips, parent = 1, op.parent_op()
    while parent is not None:
        if isinstance(parent, LoopOp):
            trips *= parent.trip_count
        parent = parent.parent_op()
    return trips


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class _Model:
    """What the cost of one block needs besides its ops."""

    preset: HardwarePreset
    sockets: int
    sharded: bool
    weight_parts: Callable[[Operation], int]
    reduced: Callable[[Operation], bool]

    @property
    def hop(self) -> float:
        """A tile crossing one PCU pipeline."""
        return self.preset.pcu_stages * self.preset.stage_latency_s

    def collective(self, op: str, sockets: int, block: float) -> float:
        latency, moved = collective_plan(self.preset, op, sockets, block)
        return latency + moved / (self.preset.p2p_bandwidth * self.preset.p2p_links)

    def attention(self, op: AttentionOp, k: int) -> tuple[float, float, float]:
        """(K / V bytes one socket reads, path before the partials start (the query gather),
        path from there to the combined result), dealt over `k`."""
        batch, _, context, head_dim = tensor_shape(op.k_cache)
        positions = context * context_shards_of(op)  # the whole sequence
        window = op.sliding_window.value.data if op.sliding_window else positions
        row = tensor_bytes(op.k_cache) // (tensor_shape(op.k_cache)[1] * context)
        heads = op.num_heads.value.data // (1 if self.sharded else self.sockets)
        kv_bytes = 2 * -(-min(positions, window) // k) * row  # K and V rows of one kv head
        if k == 1:
            return kv_bytes, 0.0, 2 * self.hop
        query = tensor_bytes(op.query) // (op.num_heads.value.data // heads)
        partial = batch * k * heads * (head_dim + 2) * 4
        gather_queries = self.collective("all_gather", k, query)
        return kv_bytes, gather_queries, 3 * self.hop + self.collective("all_gather", k, partial)

    def block_seconds(self, block: Block, k: int) -> float:
        """One run of `block`: the larger of its HBM time and its critical path."""
        ready: dict[object, float] = {}
        offchip, path = 0, 0.0
        fused = plan_fusions(block.ops).fused
        for op in block.ops:
            start = max((ready.get(v, 0.0) for v in op.operands), default=0.0)
            if op in fused:  # one more stage of its anchor's pipeline (`passes/fusion.py`)
                took = self.preset.stage_latency_s
            elif isinstance(op, AttentionOp):
                kv_bytes, before, after = self.attention(op, k)
                offchip += kv_bytes
                query = ready.get(op.query, 0.0) + before
                start = max(query, *(ready.get(v, 0.0) for v in op.operands[1:]))
                took = after
            elif isinstance(op, AllReduceOp | AllGatherOp):
                block_bytes = tensor_bytes(op.operands[0])
                if not self.sharded and isinstance(op, AllGatherOp):
                    block_bytes //= self.sockets
                took = self.collective(op.name.removeprefix("llm."), self.sockets, block_bytes)
            elif op.dialect_name() == "llm" and not isinstance(op, ParamOp | WeightOp):
                offchip += op_cost(op).weight_bytes // self.weight_parts(op)
                took = self.hop
                if self.reduced(op):
                    took += self.collective("all_reduce", self.sockets, tensor_bytes(op.results[0]))
            else:
                took = 0.0
            for result in op.results:
                ready[result] = start + took
            path = max(path, start + took)
        hbm = self.preset.hbm_bandwidth * self.preset.hbm_efficiency
        return max(offchip / hbm, path)


def _step_seconds(
    model: _Model, blocks: list[tuple[Block, AttentionOp]], runs: Callable[[Block], int], k: int
) -> float:
    """The step's time with caches dealt over `k`: each block's, once per run (added run by
    run, as the same block called from several places adds up)."""
    total = 0.0
    for block, op in blocks:
        once = _trips(op) * model.block_seconds(block, k)
        for _ in range(runs(block)):
            total += once
    return total


def plan_context_split(
    attentions: Sequence[AttentionOp],
    sockets: int,
    replicas: int,
    preset: HardwarePreset,
    *,
    sharded: bool,
    weight_parts: Callable[[Operation], int] = lambda op: 1,
    reduced: Callable[[Operation], bool] = lambda op: False,
    runs: Callable[[Block], int] = lambda block: 1,
    knob: int = -1,
) -> ContextSplit:
    """The choice for `attentions` (the step's attention ops, before sharding, or after it
    (`sharded`): then a cache holds one kv head and its `context_shards` share of the
    sequence), whose kv heads are each shared by `replicas` of the `sockets` sockets. Before
    sharding, `weight_parts(op)` says in how many parts the sharding cuts `op`'s weight (its
    bytes on one socket: the whole over that) and `reduced(op)` whether an all-reduce of its
    result will follow (after sharding, the IR says both); `runs(block)` how many calls run
    a block besides the loops around it (a kernel's body, called once per unlooped layer).
    `knob` > 0 forces the largest candidate not above it (`kv-seq-split`); -1 leaves it to
    the cost model."""
    model = _Model(preset, sockets, sharded, weight_parts, reduced)
    blocks = list({id(b): (b, op) for op in attentions if (b := op.parent_block())}.values())
    seconds = {k: _step_seconds(model, blocks, runs, k) for k in _divisors(replicas)}
    if knob > 0:
        shards = max(k for k in seconds if k <= knob)
    else:
        shards = min(seconds, key=lambda k: (seconds[k], k))
    return ContextSplit(shards, replicas, seconds)
