"""Pipeline fusion: which small ops run inside a neighbour's unit instead of a PCU of their own.

On a dataflow chip every op lowered to PCUs of its own is a pipeline the residual stream must
cross (`pcu_stages` stages: a hop), and the hops of a decoder layer add up on its critical
path, which a looped layer cannot overlap with the next trip's. An elementwise op next to a
bigger one can instead take one more stage of that op's pipeline. Two forms:

* **epilogue** (`operand == -1`): applied to the anchor's result as it leaves the pipeline.
  Anchors are a linear whose result is not a row-split partial (its PCUs hold whole output
  features) and an all-reduce (its AGCU already combines the sockets' blocks: the residual
  add is one more operand of that sum's write-back). A chain may follow: `silu` / `gelu`, then
  `mul` by the up projection (the gated MLP), or `add` of the residual; every value inside
  the chain has one use, each binary op takes its other operand as a read of the same shape.
* **prologue** (`operand == i`): applied to the anchor's operand `i` as it enters. `rope`
  cannot be an epilogue of its projection (it pairs features `i` and `i + head_dim / 2`,
  which the linear's PCUs hold apart), but its consumers read whole heads: the attention's
  query (which is first all-gathered when the cache is dealt along the sequence: rope is per
  head and position, so roping after the gather is the same) and the KV write's new row.

The rule lives here, upstream of the lowering, because the cost model of
`passes/context_split.py` walks the same critical path: the lowering fuses what it says, the
cost model charges a fused op one stage instead of a hop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xdsl.ir import Operation, SSAValue

from rdu_compiler.rdu_dialect import llm

__all__ = ["Fusion", "FusionPlan", "fusion_of", "plan_fusions"]


@dataclass(frozen=True)
class Fusion:
    """`op` runs in `anchor`'s unit: on its result (`operand` -1, epilogue) or on its operand
    `operand` before it runs (prologue)."""

    anchor: Operation
    operand: int


_EPILOGUE_OPS = (llm.SiluOp, llm.GeluOp, llm.AddOp, llm.MulOp)


def _single_use(value: SSAValue) -> Operation | None:
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def _epilogue_anchor(value: SSAValue) -> Operation | None:
    """The anchor whose epilogue chain ends in `value`, if the chain may go on from it."""
    owner = value.owner
    if not isinstance(owner, Operation) or _single_use(value) is None:
        return None
    if isinstance(owner, llm.AllReduceOp):
        return owner
    if isinstance(owner, llm.LinearOp):
        return owner  # its single use is not an all-reduce when the chain goes on
    fused = fusion_of(owner)
    return fused.anchor if fused is not None and fused.operand == -1 else None


def fusion_of(op: Operation) -> Fusion | None:
    """Where `op` runs fused, or None when it is lowered to units of its own."""
    if isinstance(op, llm.RopeOp):
        user = _single_use(op.results[0])
        if isinstance(user, llm.AttentionOp) and user.query == op.results[0]:
            return Fusion(user, 0)
        if isinstance(user, llm.KVCacheWriteOp) and user.new == op.results[0]:
            return Fusion(user, 1)
        return None
    if not isinstance(op, _EPILOGUE_OPS) or len(set(op.operands)) != len(op.operands):
        return None
    # an operand continuing a chain wins over one that would start it (silu(gate) * up: the
    # gate's chain, with the up projection read)
    continuing, starting = [], []
    for value in op.operands:
        anchor = _epilogue_anchor(value)
        if (
            anchor is None
            or anchor.parent_block() is not op.parent_block()
            or anchor.results[0].type != op.results[0].type
        ):
            continue
        (starting if anchor is value.owner else continuing).append(anchor)
    for anchors in (continuing, starting):
        if len(anchors) == 1:
            return Fusion(anchors[0], -1)
        if anchors:
            return None  # two chains meet: not one pipeline
    return None


@dataclass
class FusionPlan:
    """The fusions of one block's ops: per fused op its `Fusion`, per anchor its prologues and
    its epilogue chain (in order); an anchor with an epilogue is lowered where its chain ends
    (every read of the chain is computed by then)."""

    fused: dict[Operation, Fusion] = field(default_factory=dict)
    prologues: dict[Operation, list[Operation]] = field(default_factory=dict)
    epilogues: dict[Operation, list[Operation]] = field(default_factory=dict)

    def chain_end(self, op: Operation) -> Operation | None:
        """The anchor to lower now: `op` ends its anchor's epilogue chain."""
        fusion = self.fused.get(op)
        if fusion is None or fusion.operand != -1:
            return None
        return fusion.anchor if self.epilogues[fusion.anchor][-1] is op else None


def plan_fusions(ops: Iterable[Operation]) -> FusionPlan:
    """The fusions among `ops` (one block's, in order)."""
    plan = FusionPlan()
    for op in ops:
        fusion = fusion_of(op)
        if fusion is None:
            continue
        plan.fused[op] = fusion
        into = plan.epilogues if fusion.operand == -1 else plan.prologues
        into.setdefault(fusion.anchor, []).append(op)
    return plan
