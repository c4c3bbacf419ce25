"""KV heads fewer than sockets: replicate each kv head's cache, or deal it along the sequence?

With `g` kv heads on `N > g` sockets, every kv head serves the query heads of `m = N / g`
sockets. Replicated, each of them reads the head's whole cache every step. Dealt along the
sequence over `k` of them (k divides m; position t on socket t % k of the group, at row
t // k), each reads `1 / k` of it. The k sockets hold different query heads of the same kv
head, so they all-gather their queries, each computes flash-decoding partials of all k
sockets' heads over its positions, they all-gather the partials (`[B, k heads, head_dim + 2]`
f32 per socket) and each combines its own heads before the o projection. So dealing saves
HBM time in proportion to the context and costs two collectives per attention, whose P2P
latency does not shrink with the context.

The cost model (per step and socket, all attention ops of the step): the attended K / V
bytes over the HBM's sustained rate (`hbm_bandwidth x hbm_efficiency`) plus, when `k > 1`,
the two all-gathers over `k` sockets (`collective_plan`: latency and bytes over the P2P
links).
`k` is the candidate with the least time (ties: fewer sockets). The K / V projections stay
replicated on the m sockets: splitting their `head_dim` outputs would need another gather
per projection (rope pairs the two halves of a head) at the same P2P latency, for a weight of
`head_dim x hidden` per socket (1 MiB for llama-3.1-8b: 0.6 us of HBM against 2 us of
latency). The same holds for the queries the other way round: gathering them (a few hundred
bytes) costs one latency, computing them on every socket of the group would read `k` times
the socket's share of the q projection (2 MiB more per layer for llama-3.1-8b on 16 sockets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.ir import Operation

from rdu_compiler.passes.cost_model import tensor_bytes
from rdu_compiler.rdu_dialect.dfk import LoopOp
from rdu_compiler.rdu_dialect.llm import AttentionOp, context_shards_of
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
            f"KV caches: each kv head shared by {self.replicas} sockets, {how} (cost model, KV "
            f"reads + combine per step and socket: {figures}; kv-seq-split overrides)"
        )


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


def plan_context_split(
    attentions: Sequence[AttentionOp],
    sockets: int,
    replicas: int,
    preset: HardwarePreset,
    *,
    sharded: bool,
    knob: int = -1,
) -> ContextSplit:
    """The choice for `attentions` (the step's attention ops, before sharding, or after it
    (`sharded`): then a cache holds one kv head and its `context_shards` share of the
    sequence), whose kv heads are each shared by `replicas` of the `sockets` sockets.
    `knob` > 0 forces the largest candidate not above it (`kv-seq-split`); -1 leaves it to
    the cost model."""
    hbm = preset.hbm_bandwidth * preset.hbm_efficiency
    seconds: dict[int, float] = {}
    for k in _divisors(replicas):
        total = 0.0
        for op in attentions:
            trips = _trips(op)
            batch, _, context, head_dim = tensor_shape(op.k_cache)
            positions = context * context_shards_of(op)  # the whole sequence
            window = op.sliding_window.value.data if op.sliding_window else positions
            row = tensor_bytes(op.k_cache) // (tensor_shape(op.k_cache)[1] * context)
            heads_per_socket = op.num_heads.value.data // (1 if sharded else sockets)
            attended = -(-min(positions, window) // k)
            total += trips * 2 * attended * row / hbm  # K and V rows of one kv head
            if k > 1:  # gather the group's queries, then their partials
                query = tensor_bytes(op.query) // (op.num_heads.value.data // heads_per_socket)
                partial = batch * k * heads_per_socket * (head_dim + 2) * 4
                for block in (query, partial):
                    latency, moved = collective_plan(preset, "all_gather", k, block)
                    total += trips * (latency + moved / (preset.p2p_bandwidth * preset.p2p_links))
        seconds[k] = total
    if knob > 0:
        shards = max(k for k in seconds if k <= knob)
    else:
        shards = min(seconds, key=lambda k: (seconds[k], k))
    return ContextSplit(shards, replicas, seconds)
