"""`shard-tensor-parallel{sockets=N}`: Megatron-style tensor parallelism as one SPMD program.

Every socket runs the same module on its own shard of the weights and KV caches; the module is
stamped `llm.sockets = N` (later stages read it). What is split (docs/tensor_parallelism.md):
- attention: q projection (+ bias, q norm, rope) column-split by query heads, N parts; k / v
  projections and the KV caches by kv heads; o_proj row-split, then `llm.all_reduce`;
- gated MLP: gate / up column-split, down row-split, then `llm.all_reduce`;
- MoE (`moe=tensor`, the default): every expert's intermediate dim (gate / up column, down
  row), router replicated, then `llm.all_reduce` of the layer's output; `moe=expert`: the
  experts dealt over the sockets (`E / N` whole experts each, the stacked parameters'
  `stack_shard`, `llm.moe`'s `expert_shards`; with fewer experts than sockets each expert on
  `N / E` sockets, which deal its intermediate rows, a `#llm.shard` interleave), router
  replicated, each socket computing its own experts for the tokens routed to them, then the
  same `llm.all_reduce`;
- LM head: split by vocab rows when the vocab divides by N (each rank computes `vocab / N`
  logits), then `llm.all_gather` of the logits, so the argmax and the returned logits are
  whole; replicated when the vocab does not divide. A head tied to the embedding first gets
  a parameter symbol of its own for its read of the table (the embedding gathers rows of the
  whole table, which stays whole);
- embedding, norms and argmax: replicated.
KV heads fewer than sockets (N = m * kv_heads): the kv-head dim is cut in `kv_heads` parts, so
each rank holds the one kv head its query heads use (group mapping: rank r holds q heads
[r*h/N, (r+1)*h/N) and kv head r*kv_heads/N), replicated on m ranks: `#llm.shard` with
`parts < N` marks that replication, whose bytes are real traffic. Or (`kv-seq-split`, -1: the
cost model of `passes/context_split.py` on the hardware preset `hw`) the caches are dealt
along the sequence over k of the m ranks (`#llm.shard` interleave k: rank r holds every k-th
position from r % k), and `llm.kv_cache_write` / `llm.attention` get `context_shards = k`:
each rank writes the positions it holds, and the group gathers queries and partials
(docs/tensor_parallelism.md). K / V projections stay replicated.

How (the same on llm, outlined and looped IR, since it never looks at where ops are): values
that must be cut alike form classes (a union-find): an elementwise op's operands and result, a
call operand and the kernel argument, a kernel's returned value and the call result, the loop's
operands, block arguments, yields and results, stack / slice, a weight read and its `llm.param`.
A split is counted from the last dim, so stacking and slicing leading dims keep it. Seeds come
from the ops that define the scheme: `llm.attention` (q heads, kv heads), the MLP activation
(`llm.silu` / `llm.gelu`: the intermediate), `llm.moe`; `llm.linear` and `llm.kv_cache_write`
propagate (a linear whose output is split is column-split; one whose input is split is
row-split). The LM head (a linear read by `llm.argmax`) is seeded by its output (vocab), its
all-gather inserted first so that the logits' users see the whole logits. Then every split
value is retyped, attention head counts divided, all-reduces inserted after row-split linears
and MoE, parameters get their `#llm.shard` and the entry function's split arguments / results
an `llm.shard` attribute (so the engine can cut and reassemble the caches). Calls needing
different splits of one kernel (`outline-kernels{policy=op}` shares one `@linear` among q and
o projections) must be independent: a kernel called several times (the layers without kernel
looping) is kept whole when its own ops imply every split the analysis gives its values (then
a copy per call would be cut alike), else every call gets its own copy of every kernel and the
identical copies are merged back afterwards (stable names, as outlining).

Refused, with a message naming the model dims: query heads not a multiple of N; kv heads
neither a multiple nor a divisor of N; an intermediate size not a multiple of N; with
`moe=expert`, experts neither a divisor nor a multiple of N (or, fewer than N, an expert
intermediate size that the N / E sockets sharing an expert cannot deal evenly); a row-split
linear with a bias; a full-width norm (or any op without a rule) over split features; a module
already sharded over another socket count. Sharding a module already stamped with N changes
nothing (idempotent); `sockets=1` only stamps. Cost: linear in the number of ops (the
propagation sweeps the linears a few times, as deep as the chain from attention to the weights).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Literal, TypeGuard, get_args

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    FunctionType,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    i64,
)
from xdsl.ir import Attribute, Block, BlockArgument, Operation, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.passes.context_split import ContextSplit, kernel_calls, plan_context_split
from rdu_compiler.passes.kernels import kernel_for
from rdu_compiler.passes.pass_options import CheckedOptionsPass
from rdu_compiler.rdu_dialect import dfk, llm
from rdu_compiler.rdu_dialect.ssa import require_dominance
from rdu_compiler.rdu_dialect.symbols import lookup_symbol
from rdu_compiler.rdu_dialect.tensors import tensor_shape, tensor_type
from rdu_compiler.simulator.hardware import PresetError, get_preset

SOCKET_COUNTS = (1, 2, 4, 8, 16)
"""The socket counts the pass accepts (SN40L systems of 1 to 16 sockets)."""


def _head_split_problem(heads: int, kv_heads: int, sockets: int) -> str | None:
    """Why `heads` query / `kv_heads` kv heads cannot be split over `sockets` (None if they can)."""
    if heads % sockets:
        return f"the {heads} query heads are not a multiple of {sockets}"
    if kv_heads % sockets and sockets % kv_heads:
        return f"the {kv_heads} kv heads neither divide nor are a multiple of {sockets}"
    return None


@dataclass(frozen=True)
class Split:
    """How a value is cut over the ranks: along dim `dim` counted from the end (negative), in
    `parts` equal blocks; rank r of N holds block `r * parts // N`. With `interleave` k > 1
    the ranks sharing a block deal its rows along `interleave_dim` (negative): rank r holds
    every k-th row from row `r % k` (a KV cache dealt along the sequence)."""

    dim: int
    parts: int
    interleave_dim: int = -2
    interleave: int = 1

    def shard_type(self, t: TensorType) -> TensorType:
        return _shard_type(self, t)

    def attr(self, rank: int) -> llm.ShardAttr:
        """As a `#llm.shard` of a tensor of rank `rank`."""
        return _shard_attr(self, rank)


# Attributes are immutable: the many layers' values cut alike share one (built and verified
# once, not once per value).
@cache
def _shard_type(split: Split, t: TensorType) -> TensorType:
    shape = list(t.get_shape())
    shape[split.dim] //= split.parts
    if split.interleave > 1:
        shape[split.interleave_dim] //= split.interleave
    return TensorType(t.element_type, shape, t.encoding)


@cache
def _shard_attr(split: Split, rank: int) -> llm.ShardAttr:
    if split.interleave == 1:
        return llm.ShardAttr(rank + split.dim, split.parts)
    return llm.ShardAttr(
        rank + split.dim, split.parts, rank + split.interleave_dim, split.interleave
    )


Key = SSAValue | llm.ParamOp


class _Splits:
    """Classes of values (and parameters) cut alike, each with its `Split` once known. All
    unions are made before the first `set`."""

    def __init__(self) -> None:
        self.parent: dict[Key, Key] = {}
        self.split: dict[Key, Split] = {}

    @classmethod
    def linked(cls, root: Operation) -> _Splits:
        """The classes of the ops under `root` (`_link`), no split known yet."""
        classes = cls()
        _link(root, classes)
        return classes

    def classes(self) -> _Splits:
        """The same classes, no split known yet (for another analysis of the same IR)."""
        copy = _Splits()
        copy.parent = dict(self.parent)
        return copy

    def find(self, key: Key) -> Key:
        root = key
        while (up := self.parent.get(root, root)) is not root:
            root = up
        while key is not root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, *keys: Key) -> None:
        root = self.find(keys[0])
        for key in keys[1:]:
            other = self.find(key)
            if other is not root:
                self.parent[other] = root

    def get(self, key: Key | None) -> Split | None:
        return None if key is None else self.split.get(self.find(key))

    def set(self, key: Key | None, split: Split, why: str) -> bool:
        """Records that `key` is cut as `split` (required by `why`); True if that is new."""
        if key is None:
            return False
        root = self.find(key)
        old = self.split.get(root)
        if old is None:
            self.split[root] = split
            return True
        if old != split:
            raise PassFailedException(
                f"{why} needs a split of dim {split.dim} in {split.parts} parts of a value "
                f"already split on dim {old.dim} in {old.parts} parts"
            )
        return False


def _width(value: SSAValue) -> int:
    """The last dim of a tensor value."""
    return tensor_shape(value)[-1]


def _terminator_operands(block: Block) -> tuple[SSAValue, ...]:
    """What a function or kernel body returns (verified to end in its return op)."""
    terminator = block.last_op
    assert terminator is not None
    return tuple(terminator.operands)


def _calls(module: ModuleOp) -> dict[str, list[dfk.CallOp]]:
    """The calls of each kernel, in module order (kernels by their first call)."""
    calls: dict[str, list[dfk.CallOp]] = defaultdict(list)
    for op in module.walk():
        if isinstance(op, dfk.CallOp):
            calls[op.callee.string_value()].append(op)
    return calls


def _kernel(call: dfk.CallOp) -> dfk.KernelOp:
    kernel = lookup_symbol(call, call.callee.string_value())
    assert isinstance(kernel, dfk.KernelOp), "verified IR: the callee is a kernel"
    return kernel


def _symbols(root: Operation) -> dict[str, Operation]:
    """The parameters and kernels of the module holding `root`, by name (one table for the
    many lookups of a walk)."""
    module = root if isinstance(root, ModuleOp) else root.get_toplevel_object()
    assert isinstance(module, ModuleOp), "verified IR: ops sit in the module"
    return {op.sym_name.data: op for op in module.ops if isinstance(op, llm.ParamOp | dfk.KernelOp)}


# --------------------------------------------------------------------------------------
# Analysis: which values are cut, and how
# --------------------------------------------------------------------------------------


def _link(root: Operation, splits: _Splits) -> None:
    """Unions the values that must be cut alike (see the module doc), for the ops under `root`."""
    symbols = _symbols(root)
    for op in root.walk():
        if isinstance(op, llm.WeightOp):
            param = symbols[op.param.root_reference.data]
            assert isinstance(param, llm.ParamOp), "verified IR: llm.weight reads an llm.param"
            splits.union(op.result, param)
        elif isinstance(op, llm.RopeOp | llm.SiluOp | llm.GeluOp | llm.RMSNormOp):
            splits.union(op.input, op.result)
        elif isinstance(op, llm.AddOp | llm.MulOp):
            splits.union(op.lhs, op.rhs, op.result)
        elif isinstance(op, llm.KVCacheWriteOp):
            splits.union(op.cache, op.result)
        elif isinstance(op, llm.AttentionOp):
            splits.union(op.query, op.result)
            splits.union(op.k_cache, op.v_cache)
        elif isinstance(op, dfk.CallOp):
            kernel = symbols[op.callee.string_value()]
            assert isinstance(kernel, dfk.KernelOp), "verified IR: the callee is a kernel"
            for a, b in zip(op.arguments, kernel.args):
                splits.union(a, b)
            for a, b in zip(op.res, kernel.return_op.arguments):
                splits.union(a, b)
        elif isinstance(op, dfk.LoopOp):
            operands = (*op.carried, *op.invariant, *op.stacked)
            for value, arg in zip(operands, op.body.block.args[1:]):
                splits.union(value, arg)
            yielded = op.yield_op
            for values in zip(op.carried, yielded.carried, op.carried_results):
                splits.union(*values)
            for value, result in zip(yielded.stacked, op.stacked_results):
                splits.union(value, result)
        elif isinstance(op, dfk.StackOp):
            splits.union(op.result, *op.inputs)
        elif isinstance(op, dfk.SliceOp):
            splits.union(op.source, op.result)


MoeSplit = Literal["tensor", "expert"]
MOE_SPLITS: tuple[MoeSplit, ...] = get_args(MoeSplit)
"""How `llm.moe` is split (`moe=`): every expert over the sockets, or the experts dealt."""


def _seed(
    op: Operation, splits: _Splits, sockets: int, model: str, context_shards: int, moe: str
) -> None:
    """The splits `op` defines by itself: attention heads, the MLP intermediate, experts (or,
    `moe` = expert, the experts dealt whole); a cache whose kv heads are shared by several
    sockets is dealt along the sequence over `context_shards` of them."""
    if isinstance(op, llm.AttentionOp):
        heads, kv_heads = op.num_heads.value.data, op.num_kv_heads.value.data
        if problem := _head_split_problem(heads, kv_heads, sockets):
            ok = [n for n in SOCKET_COUNTS if not _head_split_problem(heads, kv_heads, n)]
            raise PassFailedException(
                f"{model} ({heads} attention heads, {kv_heads} kv heads) cannot be split over "
                f"{sockets} sockets: {problem} (supported: {', '.join(map(str, ok))} sockets)"
            )
        splits.set(op.query, Split(-1, sockets), "llm.attention (query heads)")
        split = Split(-3, min(kv_heads, sockets), interleave=context_shards)
        for cache in (op.k_cache, op.v_cache):
            splits.set(cache, split, "llm.attention (kv heads)")
        return
    if isinstance(op, llm.MoEOp) and moe == "expert":
        experts, inner = op.num_experts.value.data, tensor_shape(op.gate)[1]
        if experts % sockets and sockets % experts:
            raise PassFailedException(
                f"{model}: moe=expert deals the {experts} experts over the sockets, but "
                f"{experts} neither divides nor is a multiple of {sockets} (use moe=tensor)"
            )
        # fewer experts than sockets: each expert on `share` sockets, which deal its
        # intermediate rows (gate / up rows, down columns) among themselves
        share = max(1, sockets // experts)
        if inner % share:
            raise PassFailedException(
                f"{model}: moe=expert splits each of the {experts} experts over {share} "
                f"sockets, but the expert intermediate size {inner} is not a multiple of {share}"
            )
        for weight, rows in ((op.gate, -2), (op.up, -2), (op.down, -1)):
            split = Split(-3, min(experts, sockets), rows, share)
            splits.set(weight, split, "llm.moe (experts)")
        return
    if isinstance(op, llm.MoEOp):
        what, inner = "expert intermediate size", tensor_shape(op.gate)[1]
        cuts = ((op.gate, -2), (op.up, -2), (op.down, -1))
    elif isinstance(op, llm.SiluOp | llm.GeluOp):
        what, inner = "MLP intermediate size", _width(op.result)
        cuts = ((op.result, -1),)
    else:
        return
    if inner % sockets:
        raise PassFailedException(f"{model}: the {what} {inner} is not a multiple of {sockets}")
    for value, dim in cuts:
        splits.set(value, Split(dim, sockets), f"{op.name} ({what})")


def _propagate(op: llm.LinearOp | llm.KVCacheWriteOp, splits: _Splits) -> bool:
    """Infers the rest of `op`'s splits from those known; True if anything new was learnt."""
    if isinstance(op, llm.KVCacheWriteOp):  # the cache [B, KVH, S, D], the new rows [B, KVH*D]
        if cache := splits.get(op.cache):
            return splits.set(op.new, Split(-1, cache.parts), "llm.kv_cache_write")
        if new := splits.get(op.new):
            return splits.set(op.cache, Split(-3, new.parts), "llm.kv_cache_write")
        return False
    out, inp, weight = splits.get(op.result), splits.get(op.input), splits.get(op.weight)
    column = out or (weight if weight and weight.dim == -2 else None)
    row = inp or (weight if weight and weight.dim == -1 else None)
    if column and row:
        raise PassFailedException(
            "an llm.linear would be split on both its input and its output features"
        )
    if column:
        why = "a column-split llm.linear"
        return (
            splits.set(op.result, Split(-1, column.parts), why)
            | splits.set(op.weight, Split(-2, column.parts), why)
            | splits.set(op.bias, Split(-1, column.parts), why)
        )
    if row:
        if op.bias is not None:
            raise PassFailedException(
                "a row-split llm.linear (o_proj / down_proj) with a bias is not supported: "
                "the bias would be summed once per socket"
            )
        why = "a row-split llm.linear"
        return splits.set(op.input, Split(-1, row.parts), why) | splits.set(
            op.weight, Split(-1, row.parts), why
        )
    return False


_SPLITTABLE = (
    *(llm.WeightOp, llm.LinearOp, llm.RopeOp, llm.SiluOp, llm.GeluOp, llm.RMSNormOp),
    *(llm.AddOp, llm.MulOp, llm.KVCacheWriteOp, llm.AttentionOp, llm.MoEOp, llm.AllGatherOp),
)
"""The llm ops that may touch split values (each has its rule above)."""


def _check(op: Operation, splits: _Splits) -> None:
    """Refuses an llm op the splits would make wrong."""
    split = any(splits.get(v) for v in (*op.operands, *op.results))
    if split and not isinstance(op, _SPLITTABLE):
        raise PassFailedException(
            f"{op.name} has no sharding rule but would see features split across sockets"
        )
    if isinstance(op, llm.RMSNormOp) and split and _width(op.weight) == _width(op.input):
        raise PassFailedException("an llm.rms_norm normalizes over features split across sockets")


def _read_by_argmax(linear: llm.LinearOp) -> bool:
    """Whether an `llm.argmax` reads the linear's result (an LM head)."""
    return any(isinstance(use.operation, llm.ArgmaxOp) for use in linear.result.uses)


def _untie_lm_heads(module: ModuleOp, classes: _Splits) -> list[tuple[llm.WeightOp, llm.ParamOp]]:
    """A tied LM head reads the embedding's table: its `llm.weight` gets a parameter symbol of
    its own (`@<table>.lm_head`, the same checkpoint tensor), so the head can be split by vocab
    while the embedding gathers rows of the whole table. Only a head whose weight comes
    straight from an `llm.weight` used by nothing else (the frontend's form) is untied.
    `classes`: the module's (`_Splits.linked`). Returns each untied read with the parameter
    it read (for `_retie`)."""
    ops = list(module.walk())
    tables = {classes.find(op.table) for op in ops if isinstance(op, llm.EmbeddingOp)}
    calls = _calls(module)
    untied_reads = []
    for head in ops:
        if not (
            isinstance(head, llm.LinearOp)
            and _read_by_argmax(head)
            and classes.find(head.weight) in tables
        ):
            continue
        read = head.weight
        kernel = head.parent_op()
        if isinstance(read, BlockArgument) and isinstance(kernel, dfk.KernelOp):
            sites = calls[kernel.sym_name.data]
            if len(sites) != 1:
                continue
            read = sites[0].arguments[read.index]
        weight = read.owner
        if not isinstance(weight, llm.WeightOp) or len(list(read.uses)) != 1:
            continue
        param = lookup_symbol(weight, weight.param.root_reference.data)
        assert isinstance(param, llm.ParamOp), "verified IR: llm.weight reads an llm.param"
        untied = param.clone()
        untied.properties["sym_name"] = StringAttr(f"{param.sym_name.data}.lm_head")
        Rewriter.insert_op(untied, InsertPoint.after(param))
        weight.properties["param"] = SymbolRefAttr(untied.sym_name.data)
        untied_reads.append((weight, param))
    return untied_reads


def _retie(untied_reads: list[tuple[llm.WeightOp, llm.ParamOp]], gathers: list[Operation]) -> None:
    """Undoes `_untie_lm_heads` (given what it returned) and the LM heads' all-gathers."""
    for gather in gathers:
        gather.results[0].replace_all_uses_with(gather.operands[0])
        Rewriter.erase_op(gather)
    for weight, param in untied_reads:
        untied = lookup_symbol(weight, weight.param.root_reference.data)
        assert untied is not None, "the parameter `_untie_lm_heads` inserted"
        weight.properties["param"] = SymbolRefAttr(param.sym_name.data)
        Rewriter.erase_op(untied)


def _lm_heads(module: ModuleOp, sockets: int, classes: _Splits) -> list[llm.LinearOp]:
    """The LM heads to split by vocab rows: linears read by an `llm.argmax`, whose vocab is a
    multiple of `sockets` and whose weight is not also an embedding table (tied embeddings:
    the embedding gathers rows of the whole table, so the shared parameter stays whole)."""
    ops = list(module.walk())
    tables = {classes.find(op.table) for op in ops if isinstance(op, llm.EmbeddingOp)}
    return [
        op
        for op in ops
        if isinstance(op, llm.LinearOp)
        and _read_by_argmax(op)
        and _width(op.result) % sockets == 0
        and classes.find(op.weight) not in tables
    ]


def _model_name(op: Operation) -> str:
    """The model's name for messages (the module's `llm.model`)."""
    module = op if isinstance(op, ModuleOp) else op.get_toplevel_object()
    model = module.attributes.get("llm.model") if isinstance(module, ModuleOp) else None
    return model.data if isinstance(model, StringAttr) else "the model"


def _closure(
    root: Operation,
    sockets: int,
    heads: list[llm.LinearOp],
    context_shards: int,
    moe: str,
    classes: _Splits | None = None,
) -> _Splits:
    """The splits that the ops under `root` (the module, or one kernel) imply by themselves:
    their classes (`classes`, if linked already), seeds and `heads`, propagated until
    nothing new is learnt."""
    model = _model_name(root)
    splits = classes.classes() if classes else _Splits.linked(root)
    ops = list(root.walk())
    for op in ops:
        _seed(op, splits, sockets, model, context_shards, moe)
    for head in heads:
        splits.set(head.result, Split(-1, sockets), "the vocab-parallel LM head")
    rules = [op for op in ops if isinstance(op, llm.LinearOp | llm.KVCacheWriteOp)]
    while any([_propagate(op, splits) for op in rules]):  # a list: every rule runs each sweep
        pass
    return splits


def _analyse(
    module: ModuleOp,
    sockets: int,
    heads: list[llm.LinearOp],
    context_shards: int,
    moe: str,
    classes: _Splits,
) -> _Splits:
    splits = _closure(module, sockets, heads, context_shards, moe, classes)
    for op in module.walk():
        if op.dialect_name() == "llm":
            _check(op, splits)
    return splits


# --------------------------------------------------------------------------------------
# Rewrite
# --------------------------------------------------------------------------------------


def _values(root: Operation) -> Iterator[SSAValue]:
    """The results and block arguments under `root`."""
    for op in root.walk():
        yield from op.results
        for region in op.regions:
            for block in region.blocks:
                yield from block.args


def _collective_after(
    op: llm.LinearOp | llm.MoEOp, collective: type[Operation], **properties: Attribute
) -> Operation:
    """Combines `op`'s per-rank result over the sockets with `collective` (an all-reduce of
    partial sums, an all-gather of vocab blocks), for all of its users."""
    part = op.result
    whole = collective.create(
        operands=[part],
        result_types=[part.type],
        properties=properties,
        attributes={k: v for k, v in op.attributes.items() if k == llm.LAYER_ATTR},
    )
    whole.location = op.location
    Rewriter.insert_op(whole, InsertPoint.after(op))
    part.replace_uses_with_if(whole.results[0], lambda use: use.operation is not whole)
    return whole


def _shard_attrs(
    values: tuple[SSAValue, ...], old: ArrayAttr[DictionaryAttr] | None, splits: _Splits
) -> ArrayAttr[DictionaryAttr] | None:
    """`old` argument / result attributes plus `llm.shard` on the split `values`."""
    if not any(splits.get(v) for v in values):
        return old
    dicts = old.data if old is not None else [DictionaryAttr({})] * len(values)
    out = []
    for value, attrs in zip(values, dicts):
        entries = dict(attrs.data)
        if split := splits.get(value):
            entries[llm.SHARD_ATTR] = split.attr(len(tensor_shape(value)))
        out.append(DictionaryAttr(entries))
    return ArrayAttr(out)


def _reduced(op: Operation, splits: _Splits) -> TypeGuard[llm.LinearOp | llm.MoEOp]:
    """Whether the sharding puts an all-reduce after `op`: a row-split linear's partial sums,
    an MoE's (every expert split)."""
    return isinstance(op, llm.MoEOp) or (
        isinstance(op, llm.LinearOp) and splits.get(op.input) is not None
    )


def _weight_parts(op: Operation, splits: _Splits) -> int:
    """In how many parts the sharding cuts `op`'s weight (a linear's, an MoE's experts): its
    bytes on one socket are the whole over that; 1 for replicated weights (norms)."""
    weight = op.weight if isinstance(op, llm.LinearOp) else None
    weight = op.gate if isinstance(op, llm.MoEOp) else weight
    split = splits.get(weight)
    return split.parts if split is not None else 1


def _rewrite(module: ModuleOp, splits: _Splits) -> None:
    """Applies the splits: all decisions read first (the retyping replaces the values)."""
    ops = list(module.walk())
    reduced = [op for op in ops if _reduced(op, splits)]
    heads = [
        (op, splits.get(op.query), splits.get(op.k_cache))
        for op in ops
        if isinstance(op, llm.AttentionOp)
    ]
    dealt = [
        (op, split.interleave)
        for op in ops
        if isinstance(op, llm.AttentionOp | llm.KVCacheWriteOp)
        and (split := splits.get(op.k_cache if isinstance(op, llm.AttentionOp) else op.cache))
        and split.interleave > 1
    ]
    functions = [
        (
            f,
            _shard_attrs(f.args, f.arg_attrs, splits),
            _shard_attrs(_terminator_operands(f.body.block), f.res_attrs, splits),
        )
        for f in ops
        if isinstance(f, func.FuncOp)
    ]
    dealt_experts = [
        (op, split.parts)
        for op in ops
        if isinstance(op, llm.MoEOp) and (split := splits.get(op.gate)) and split.dim == -3
    ]
    for param in ops:
        if isinstance(param, llm.ParamOp) and (split := splits.get(param)):
            rank = len(param.checkpoint_type.get_shape())
            if -split.dim > rank:  # a stacked dim (the experts): each rank binds its slices
                whole = len(param.type.get_shape())
                param.properties["stack_shard"] = Split(split.dim, split.parts).attr(whole)
                if split.interleave > 1:  # and the ranks sharing a slice deal its rows
                    other = -1 if split.interleave_dim != -1 else -2
                    rows = Split(other, 1, split.interleave_dim, split.interleave)
                    param.properties["shard"] = rows.attr(rank)
            else:
                param.properties["shard"] = split.attr(rank)
            param.properties["type"] = split.shard_type(param.type)
    split_values = [(v, split) for v in _values(module) if (split := splits.get(v))]
    for value, split in split_values:
        Rewriter.replace_value_with_new_type(value, split.shard_type(tensor_type(value)))
    for op, query, kv in heads:
        # every attention seeds the split of its query and caches (`_seed`)
        assert query is not None and kv is not None
        op.properties["num_heads"] = IntegerAttr(op.num_heads.value.data // query.parts, i64)
        op.properties["num_kv_heads"] = IntegerAttr(op.num_kv_heads.value.data // kv.parts, i64)
    for op, shards in dealt:
        op.properties["context_shards"] = IntegerAttr(shards, i64)
    for op, shards in dealt_experts:
        op.properties["expert_shards"] = IntegerAttr(shards, i64)
    for op in reduced:
        _collective_after(op, llm.AllReduceOp, reduction=StringAttr("sum"))
    for f, arg_attrs, res_attrs in functions:
        f.arg_attrs, f.res_attrs = arg_attrs, res_attrs
    for op in module.walk():
        if isinstance(op, func.FuncOp | dfk.KernelOp):
            block = op.body.block
            op.properties["function_type"] = FunctionType.from_lists(
                block.arg_types, [v.type for v in _terminator_operands(block)]
            )


def _keep_their_splits(
    module: ModuleOp,
    kernels: list[dfk.KernelOp],
    splits: _Splits,
    heads: list[llm.LinearOp],
    sockets: int,
    context_shards: int,
    moe: str,
) -> bool:
    """Whether `splits` (the analysis of `module` with each of `kernels` kept whole for its
    several calls) cuts each kernel as one copy per call would be cut: then the copies would
    all be alike and merge back into the kernel, so keeping it whole changes nothing.

    It is so when the kernel's own ops already imply every split the analysis gives its
    values (`_closure` of the kernel alone). With one copy per call, each copy's splits would
    be implied by at least its own ops and by at most the module analysis (whose unions and
    seeds include the copy's, so its splits satisfy the copy's rules), hence the same; the
    values outside the kernels then get the same splits too, derived from the same facts. A
    kernel whose values share a class with an embedding table or an LM head's weight
    (`heads`, or any linear read by an argmax) is never kept whole: the untying and the
    choice of the heads read those classes."""
    guarded = {splits.find(head.weight) for head in heads}
    for op in module.walk():
        if isinstance(op, llm.EmbeddingOp):
            guarded.add(splits.find(op.table))
        elif isinstance(op, llm.LinearOp) and _read_by_argmax(op):
            guarded.add(splits.find(op.weight))
    for kernel in kernels:
        values = list(_values(kernel))
        if any(splits.find(v) in guarded for v in values):
            return False
        try:
            own = _closure(kernel, sockets, [], context_shards, moe)
        except PassFailedException:  # its own ops alone would cut a value two ways
            return False
        if any(own.get(v) != splits.get(v) for v in values):
            return False
    return True


def _privatize(module: ModuleOp) -> dict[dfk.KernelOp, tuple[str, dfk.CallOp]]:
    """Gives every call but the first of each kernel its own copy of the kernel (under a
    temporary name), so that calls whose operands need different splits stay independent.
    Returns each copy with its kernel's name and its one call."""
    copies: dict[dfk.KernelOp, tuple[str, dfk.CallOp]] = {}
    for name, sites in _calls(module).items():
        kernel = anchor = _kernel(sites[0])
        for i, call in enumerate(sites[1:], 1):
            copy = kernel.clone()
            copy.properties["sym_name"] = StringAttr(f"{name}.call{i}")
            Rewriter.insert_op(copy, InsertPoint.after(anchor))
            anchor = copy
            call.properties["callee"] = SymbolRefAttr(copy.sym_name)
            copies[copy] = (name, call)
    return copies


def _merge(copies: dict[dfk.KernelOp, tuple[str, dfk.CallOp]]) -> None:
    """Merges each copy made by `_privatize` into an identical kernel, else names it as
    outlining names a distinct kernel (`name`, `name_1`, ...)."""
    for copy, (name, call) in copies.items():
        new_name, exists = kernel_for(copy, name, copy.body.block)
        call.properties["callee"] = SymbolRefAttr(new_name)
        if exists:
            Rewriter.erase_op(copy)
        else:
            copy.properties["sym_name"] = StringAttr(new_name)


@dataclass(frozen=True)
class ShardTensorParallel(CheckedOptionsPass):
    """Shards the module over `sockets` sockets (see the module doc)."""

    name = "shard-tensor-parallel"

    sockets: int = 1
    kv_seq_split: int = -1
    moe: MoeSplit = "tensor"
    hw: str = "sn40l"
    hw_overrides: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require_dominance(op)
        if self.moe not in MOE_SPLITS:
            raise PassFailedException(f"moe must be {' or '.join(MOE_SPLITS)}, got '{self.moe}'")
        if self.sockets not in SOCKET_COUNTS:
            raise PassFailedException(
                f"sockets={self.sockets} is not supported (one of "
                f"{', '.join(map(str, SOCKET_COUNTS))})"
            )
        if self.kv_seq_split < -1 or self.kv_seq_split == 0:
            raise PassFailedException(
                f"kv-seq-split must be >= 1 (or -1: from the cost model), got {self.kv_seq_split}"
            )
        stamped = llm.sockets_of(op)
        if stamped not in (1, self.sockets):
            raise PassFailedException(
                f"the module is already sharded over {stamped} sockets ({llm.SOCKETS_ATTR}); "
                f"shard the unsharded module over {self.sockets} instead"
            )
        if stamped == 1 and self.sockets > 1:
            # kernels called several times (unlooped layers) are first kept whole; only if
            # that could cut them otherwise than a copy per call, each call gets its copy
            shared = [_kernel(sites[0]) for sites in _calls(op).values() if len(sites) > 1]
            if not (shared and self._shard(op, shared)):
                copies = _privatize(op)
                self._shard(op, [])
                _merge(copies)
        op.attributes[llm.SOCKETS_ATTR] = IntegerAttr(self.sockets, i64)

    def _shard(self, module: ModuleOp, shared: list[dfk.KernelOp]) -> bool:
        """Shards `module`, whose kernels `shared` are each kept whole for their several
        calls (every other kernel has one call). False, and the module left as it was, when
        a kernel kept whole would be cut otherwise than one copy per call would be
        (`_keep_their_splits`; an analysis refusing the shared kernel counts as such)."""
        classes = _Splits.linked(module)
        untied = _untie_lm_heads(module, classes)
        heads = _lm_heads(module, self.sockets, _Splits.linked(module) if untied else classes)
        # the logits [B, vocab] are gathered along the vocab
        gathers = [_collective_after(h, llm.AllGatherOp, dim=IntegerAttr(1, i64)) for h in heads]
        try:
            splits = self._splits(module, heads, shared)
        except PassFailedException:
            if not shared:
                raise
            splits = None
        if splits is None:
            _retie(untied, gathers)
            return False
        _rewrite(module, splits)
        return True

    def _splits(
        self, module: ModuleOp, heads: list[llm.LinearOp], shared: list[dfk.KernelOp]
    ) -> _Splits | None:
        """The analysis, caches dealt along the sequence as `context_split` says; None when a
        kernel of `shared` would not keep its splits (`_keep_their_splits`)."""
        classes = _Splits.linked(module)
        shards = 1
        while True:
            splits = _analyse(module, self.sockets, heads, shards, self.moe, classes)
            if shared and not _keep_their_splits(
                module, shared, splits, heads, self.sockets, shards, self.moe
            ):
                return None
            if shards > 1:
                return splits
            split = self.context_split(module, splits)
            if split is None or split.shards == 1:
                return splits
            shards = split.shards

    def context_split(self, module: ModuleOp, splits: _Splits) -> ContextSplit | None:
        """How caches whose kv heads are fewer than the sockets are shared (None when every
        socket has kv heads of its own): `kv-seq-split`, or the cost model
        (`passes/context_split.py`) on the hardware preset `hw` (with `hw-overrides`), which
        reads each op's share of the weights and its all-reduces from `splits` (the analysis
        with replicated caches: the weights' cuts do not depend on the choice)."""
        attentions = [op for op in module.walk() if isinstance(op, llm.AttentionOp)]
        kv_heads = {op.num_kv_heads.value.data for op in attentions}
        if (
            not attentions
            or min(kv_heads) >= self.sockets
            or any(
                _head_split_problem(
                    op.num_heads.value.data, op.num_kv_heads.value.data, self.sockets
                )
                for op in attentions
            )
        ):  # nothing to share, or refused by the analysis
            return None
        try:
            preset = get_preset(self.hw)
            if self.hw_overrides:
                preset = preset.with_overrides(self.hw_overrides)
        except PresetError as error:
            raise PassFailedException(f"{self.name}: {error}") from None
        return plan_context_split(
            attentions,
            self.sockets,
            self.sockets // min(kv_heads),
            preset,
            sharded=False,
            weight_parts=lambda op: _weight_parts(op, splits),
            reduced=lambda op: _reduced(op, splits),
            runs=kernel_calls(module),
            knob=self.kv_seq_split,
        )
