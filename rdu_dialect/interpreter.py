"""Reference semantics of the `llm` and `dfk` dialects on xDSL's interpreter framework.

Any module whose entry is `func.func @decode_step` (docs/decode_step.md), at the llm level or
after outlining into `dfk` kernels and kernel looping, runs here; "semantics are preserved by
every pass" is checked by running the module before and after and comparing.

The math of every llm op is `simulator.numerics.OPS[short name]` (bf16 storage, f32 compute,
one rounding per op): this file only binds values to it. Operands go positionally in IR order
and properties as keywords of the same names, so an llm op whose math is in `OPS` needs no code
here. What this file adds is what the numerics cannot know: parameter binding by checkpoint
name, the dfk control structure (kernels, calls, the pipelined loop, stacking), and SPMD
execution of a module sharded over sockets (`llm.sockets`, docs/tensor_parallelism.md).

SPMD: each rank is an ordinary single-socket interpreter of the same module that binds its own
shard of every sharded parameter (`#llm.shard`). The ranks run in threads and meet only at
the collectives (`llm.all_reduce`, `llm.all_gather`, and `llm.attention` over a cache dealt
along the sequence, `context_shards`), through one exchange (`_Exchange`): every
rank runs the same collectives in the same order, so the k-th of each rank is one collective;
each leaves its part, waits for the others and combines all parts in rank order: an all-reduce
sums them in f32, rounding once, an all-gather concatenates them (the same bits on every
rank). A row-split linear (whose result only feeds all-reduces) hands over its unrounded f32
accumulator, so its sum over the ranks is rounded once, like the unsharded linear. Why threads
rather than lockstep per op: every op, kernel and loop then runs exactly as on one socket
(the one per-rank variant: a cache dealt along the sequence holds, and is written at, the
positions of its rank), and the only shared state is the exchange.
`ReferenceEngine` takes and returns whole (unsharded) caches: it cuts each rank's shard out of
the entry's `llm.shard` arguments and puts the ranks' results back together, checking that
replicas (replicated KV heads, replicated results such as the logits) agree bit for bit.

Values are numpy arrays (bf16 as `ml_dtypes.bfloat16`), token ids / positions int32 arrays, the
loop's induction variable a Python int. Everything is value-semantic: `llm.kv_cache_write` uses
the copying form, so a cache passed in is never modified (the aliasing the IR promises is a
buffer-reuse licence for lowering, not a meaning).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.interpreter import (
    Interpreter,
    InterpreterFunctions,
    ReturnedValues,
    impl,
    impl_callable,
    impl_terminator,
    register_impls,
)
from xdsl.interpreters.builtin import BuiltinFunctions
from xdsl.interpreters.func import FuncFunctions
from xdsl.ir import Attribute, Operation
from xdsl.irdl import IRDLOperation
from xdsl.traits import SymbolTable
from xdsl.utils.hints import isa

from rdu_compiler.rdu_dialect import dfk, llm
from rdu_compiler.rdu_dialect.symbols import lookup_symbol
from rdu_compiler.rdu_dialect.tensors import dtype_name, tensor_shape
from rdu_compiler.simulator import numerics
from rdu_compiler.simulator.weights import WeightSource

__all__ = [
    "ENTRY",
    "DfkFunctions",
    "LlmFunctions",
    "Ranks",
    "ReferenceEngine",
    "ReferenceEngineError",
    "make_interpreter",
]

ENTRY = "decode_step"
"""The entry function a decode-step module must have (docs/decode_step.md)."""


class ReferenceEngineError(Exception):
    """A module or input the reference cannot run (a user-facing message, not a bug)."""


class _Exchange:
    """Where the ranks' collectives meet (see the module doc): each rank leaves its part, all
    wait, each combines the parts in rank order (`numerics.all_reduce` or `all_gather`), and
    all wait again before any rank may leave the part of its next collective."""

    def __init__(self, sockets: int):
        self.parts: list[Any] = [None] * sockets
        self.barrier = threading.Barrier(sockets)

    def __call__(
        self, rank: int, part: np.ndarray, combine: Callable[[list[Any]], np.ndarray]
    ) -> np.ndarray:
        self.parts[rank] = part
        self.barrier.wait()
        whole = combine(self.parts)
        self.barrier.wait()
        return whole


def _gather_group(parts: list[Any], *, start: int, count: int, dim: int) -> np.ndarray:
    """The parts of ranks `start .. start + count - 1` side by side along `dim`."""
    return numerics.all_gather(parts[start : start + count], dim=dim)


def _element_dtype(t: Attribute) -> np.dtype:
    return numerics.dtype_from_name(dtype_name(t))


def _python_value(attr: Attribute | None) -> Any:
    """An op property as the keyword value `simulator.numerics` expects."""
    if attr is None:
        return None
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, IntegerAttr | FloatAttr):
        return attr.value.data
    if isinstance(attr, UnitAttr):
        return True
    if isinstance(attr, llm.RopeScalingAttr):
        # The attribute's verifier checks every field's type (original_max_position_embeddings
        # is an int), which `values()`'s int | float cannot say.
        return numerics.RopeScaling(attr.kind.data, **cast(dict[str, Any], attr.values()))
    raise NotImplementedError(f"no Python value for property {attr}")


def _run_math(
    self: InterpreterFunctions, interpreter: Interpreter, op: Operation, args: tuple[Any, ...]
) -> tuple[Any, ...]:
    """Any llm op whose math is `numerics.OPS[name]`: operands positionally, properties by
    name (an absent optional one as None, which each numerics function reads as its default)."""
    assert isinstance(op, IRDLOperation), "every llm op is IRDL-defined"
    kwargs = {
        name: _python_value(getattr(op, name)) for name in type(op).get_irdl_definition().properties
    }
    return (numerics.OPS[op.name.removeprefix("llm.")](*args, **kwargs),)


class LlmFunctions(InterpreterFunctions):
    """llm ops of rank `rank` (of `exchange`'s sockets). Parameters come from `weights` by
    checkpoint name (the rank's shard of a sharded one), each bound once per interpreter
    (cached by parameter symbol), so repeated decode steps read them once."""

    def __init__(self, weights: WeightSource, rank: int, exchange: _Exchange):
        self.weights, self.rank, self.exchange = weights, rank, exchange

    @impl(llm.WeightOp)
    def run_weight(self, interpreter: Interpreter, op: llm.WeightOp, args: tuple[Any, ...]):
        name = op.param.root_reference.data
        cache = interpreter.get_data(LlmFunctions, "params", dict)
        if name not in cache:
            param = lookup_symbol(op, name)
            assert isinstance(param, llm.ParamOp), "verified IR: llm.weight reads an llm.param"
            cache[name] = self._bind(param)
        return (cache[name],)

    def _bind(self, param: llm.ParamOp) -> np.ndarray:
        """The parameter's tensor (this rank's shard of each checkpoint tensor if sharded); a
        stacked one is its per-slice tensors stacked in row-major order of the stacked dims
        (layers, or layers x experts)."""
        shape, dtype = param.checkpoint_type.get_shape(), str(param.type.element_type)
        whole, index = shape, None
        if param.shard is not None:
            whole = param.shard.whole_shape(shape)
            index = param.shard.index(shape, self.rank, len(self.exchange.parts))
        slices = [
            self.weights.get(s, whole, dtype, index=index)
            for s in param.rank_sources(self.rank, len(self.exchange.parts))
        ]
        if not param.is_stacked:
            return slices[0]
        return np.stack(slices).reshape(param.type.get_shape())

    @impl(llm.LinearOp)
    def run_linear(self, interpreter: Interpreter, op: llm.LinearOp, args: tuple[Any, ...]):
        """A linear whose result only feeds all-reduces (a row-split linear) hands them its
        unrounded f32 accumulator, so that the sum over the ranks is rounded once, as the
        unsharded linear is (numerics' split-reduction convention)."""
        uses = op.result.uses
        if uses and all(isinstance(u.operation, llm.AllReduceOp) for u in uses):
            return (numerics.linear(*args, accumulate_only=True),)
        return _run_math(self, interpreter, op, args)

    @impl(llm.MoEOp)
    def run_moe(self, interpreter: Interpreter, op: llm.MoEOp, args: tuple[Any, ...]):
        """With the experts dealt over the ranks (`expert_shards`), this rank's experts only,
        from its first one on; its f32 sum goes to the all-reduce (rounded once there, as
        the unsharded block rounds its sum once)."""
        shards = llm.expert_shards_of(op)
        kwargs = {
            name: _python_value(getattr(op, name))
            for name in ("num_experts", "top_k", "normalize_top_k")
        }
        if shards == 1:
            return (numerics.moe(*args, **kwargs),)
        block = self.rank * shards // len(self.exchange.parts)
        held = tensor_shape(op.gate)[0]
        uses = op.result.uses
        reduced = bool(uses) and all(isinstance(u.operation, llm.AllReduceOp) for u in uses)
        return (numerics.moe(*args, **kwargs, expert_start=block * held, accumulate_only=reduced),)

    @impl(llm.KVCacheWriteOp)
    def run_kv_cache_write(
        self, interpreter: Interpreter, op: llm.KVCacheWriteOp, args: tuple[Any, ...]
    ):
        """Into this rank's rows of a cache dealt over `context_shards` ranks (value
        semantics: a copy; the program updates in place)."""
        shards = llm.context_shards_of(op)
        return (numerics.kv_cache_write(*args, row_offset=self.rank % shards, row_stride=shards),)

    @impl(llm.AttentionOp)
    def run_attention(self, interpreter: Interpreter, op: llm.AttentionOp, args: tuple[Any, ...]):
        """Over caches dealt over `context_shards` = k ranks (the k consecutive ranks of a
        group share its kv heads, each holding every k-th position): the group's queries are
        gathered, each rank attends its positions for all of them (flash-decoding partials),
        the partials are gathered and each rank combines those of its own query heads."""
        shards = llm.context_shards_of(op)
        kwargs = {
            name: _python_value(getattr(op, name))
            for name in ("num_heads", "num_kv_heads", "head_dim", "scale", "sliding_window")
        }
        if shards == 1:
            return (numerics.attention(*args, **kwargs),)
        query, k_cache, v_cache, positions = args
        member, group = self.rank % shards, self.rank - self.rank % shards

        def gather(dim: int) -> Callable[[list[Any]], np.ndarray]:
            return partial(_gather_group, start=group, count=shards, dim=dim)

        queries = self.exchange(self.rank, query, gather(1))
        heads = kwargs["num_heads"]
        kwargs["num_heads"] = heads * shards
        part = numerics.attention_partial(
            queries, k_cache, v_cache, positions, **kwargs, block_start=member, row_stride=shards
        )
        parts = self.exchange(self.rank, part[:, None], gather(1))
        out = numerics.attention_combine(
            parts, head_start=member * heads, heads=heads, out_dtype=_element_dtype(op.result.type)
        )
        return (out,)

    @impl(llm.AllReduceOp)
    def run_all_reduce(self, interpreter: Interpreter, op: llm.AllReduceOp, args: tuple[Any, ...]):
        dtype = _element_dtype(op.result.type)
        total = partial(numerics.all_reduce, reduction=op.reduction.data, out_dtype=dtype)
        return (self.exchange(self.rank, args[0], total),)

    @impl(llm.AllGatherOp)
    def run_all_gather(self, interpreter: Interpreter, op: llm.AllGatherOp, args: tuple[Any, ...]):
        gather = partial(numerics.all_gather, dim=op.dim.value.data)
        return (self.exchange(self.rank, args[0], gather),)


def _register_math_ops() -> None:
    """Every llm op with math in `numerics.OPS` (and no impl above) runs through `_run_math`."""
    for op in llm.LLM.operations:
        short = op.name.removeprefix("llm.")
        if short in numerics.OPS and not hasattr(LlmFunctions, f"run_{short}"):
            setattr(LlmFunctions, f"run_{short}", impl(op)(_run_math))
    register_impls(LlmFunctions)


_register_math_ops()


@register_impls
class DfkFunctions(InterpreterFunctions):
    """dfk ops: kernels as callables, launches, the pipelined loop, stacking."""

    @impl_callable(dfk.KernelOp)
    def call_kernel(self, interpreter: Interpreter, op: dfk.KernelOp, args: tuple[Any, ...]):
        return interpreter.run_ssacfg_region(op.body, args, op.sym_name.data)

    @impl_terminator(dfk.ReturnOp)
    def run_return(self, interpreter: Interpreter, op: dfk.ReturnOp, args: tuple[Any, ...]):
        return ReturnedValues(args), ()

    @impl(dfk.CallOp)
    def run_call(self, interpreter: Interpreter, op: dfk.CallOp, args: tuple[Any, ...]):
        kernel = lookup_symbol(op, op.callee.string_value())
        assert kernel is not None, "verified IR: the callee exists"
        return interpreter.call_op(kernel, args)

    @impl(dfk.LoopOp)
    def run_loop(self, interpreter: Interpreter, op: dfk.LoopOp, args: tuple[Any, ...]):
        nc, ni = len(op.carried), len(op.invariant)
        carried, invariant, stacked = args[:nc], args[nc : nc + ni], args[nc + ni :]
        outputs: list[list[np.ndarray]] = [[] for _ in op.yield_op.stacked]
        for i in range(op.trip_count):
            yielded = interpreter.run_ssacfg_region(
                op.body, (i, *carried, *invariant, *(s[i] for s in stacked)), "dfk.loop"
            )
            carried = yielded[:nc]
            for out, value in zip(outputs, yielded[nc:]):
                out.append(value)
        return (*carried, *(np.stack(out) for out in outputs))

    @impl_terminator(dfk.YieldOp)
    def run_yield(self, interpreter: Interpreter, op: dfk.YieldOp, args: tuple[Any, ...]):
        return ReturnedValues(args), ()

    @impl(dfk.StackOp)
    def run_stack(self, interpreter: Interpreter, op: dfk.StackOp, args: tuple[Any, ...]):
        return (np.stack(args),)

    @impl(dfk.SliceOp)
    def run_slice(self, interpreter: Interpreter, op: dfk.SliceOp, args: tuple[Any, ...]):
        return (args[0][op.index],)


def make_interpreter(
    module: ModuleOp, weights: WeightSource, rank: int = 0, exchange: _Exchange | None = None
) -> Interpreter:
    """An interpreter of rank `rank` of `module` (llm / dfk / func), parameters bound from
    `weights`. Without `exchange`, the module must run on one socket (a sharded module's
    collectives need every rank: use `Ranks`)."""
    exchange = exchange or _Exchange(1)
    sockets = llm.sockets_of(module)
    if len(exchange.parts) != sockets:
        raise ReferenceEngineError(
            f"module is sharded over {sockets} sockets ({llm.SOCKETS_ATTR}): its collectives "
            "need every rank (run it with Ranks or ReferenceEngine)"
        )
    interpreter = Interpreter(module)
    for functions in (
        FuncFunctions(),
        BuiltinFunctions(),
        DfkFunctions(),
        LlmFunctions(weights, rank, exchange),
    ):
        interpreter.register_implementations(functions)
    return interpreter


class Ranks:
    """One interpreter per rank of an SPMD module (one for an unsharded module), meeting at
    the collectives. `call(name, args)` runs function `name` on every rank, `args[r]` being
    rank r's arguments, and returns every rank's results."""

    def __init__(self, module: ModuleOp, weights: WeightSource):
        self.sockets = llm.sockets_of(module)
        self.exchange = _Exchange(self.sockets)
        self.interpreters = [
            make_interpreter(module, weights, rank, self.exchange) for rank in range(self.sockets)
        ]

    def call(self, name: str, args: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if self.sockets == 1:
            return [tuple(self.interpreters[0].call_op(name, args[0]))]
        results: list[Any] = [None] * self.sockets
        errors: list[BaseException] = []

        def run(rank: int) -> None:
            try:
                results[rank] = tuple(self.interpreters[rank].call_op(name, args[rank]))
            except BaseException as e:  # noqa: BLE001 - re-raised below, after every rank
                errors.append(e)
                self.exchange.barrier.abort()  # the other ranks stop waiting for this one

        threads = [threading.Thread(target=run, args=(r,)) for r in range(self.sockets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.exchange.barrier.reset()
            raise next(
                (e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0]
            )
        return results


def _shards(attrs: ArrayAttr | None, n: int) -> list[llm.ShardAttr | None]:
    """The `llm.shard` of each of `n` arguments / results (None where there is none)."""
    if attrs is None:
        return [None] * n
    return [_shard(d) for d in attrs.data]


def _shard(attrs: Attribute) -> llm.ShardAttr | None:
    """The `llm.shard` in one argument's / result's attribute dictionary, if any."""
    shard = attrs.data.get(llm.SHARD_ATTR) if isinstance(attrs, DictionaryAttr) else None
    if shard is not None and not isinstance(shard, llm.ShardAttr):
        raise ReferenceEngineError(f"'{llm.SHARD_ATTR}' must be an #llm.shard, got {shard}")
    return shard


class ReferenceEngine:
    """Runs decode steps of a module whose entry is `@decode_step` (docs/decode_step.md).

    `step(tokens, positions, k_cache, v_cache) -> (logits, next_tokens, k_cache, v_cache)`
    with the caches as returned by `new_caches()` or the previous step (never modified in
    place). Shapes and dtypes come from the entry's signature: `batch`, `context`, `vocab`.
    A sharded module runs on every rank; its caches are still passed and returned whole.
    """

    def __init__(self, module: ModuleOp, weights: WeightSource):
        entry = SymbolTable.lookup_symbol(module, ENTRY)
        if not isinstance(entry, func.FuncOp):
            raise ReferenceEngineError(f"module has no func.func @{ENTRY} entry")
        types = entry.function_type.inputs.data
        outputs = entry.function_type.outputs.data
        if len(types) != 4 or len(outputs) != 4:
            raise ReferenceEngineError(
                f"@{ENTRY} must take (tokens, positions, k_cache, v_cache) and return "
                "(logits, next_tokens, k_cache, v_cache)"
            )
        if not isa(types, tuple[TensorType, ...]) or not isa(outputs, tuple[TensorType, ...]):
            raise ReferenceEngineError(f"@{ENTRY} must take and return tensors")
        self.ranks = Ranks(module, weights)
        self._arg_shards = _shards(entry.arg_attrs, len(types))
        self._result_shards = _shards(entry.res_attrs, len(outputs))
        self._local_shapes = [t.get_shape() for t in types]
        self._arg_types = [
            (tuple(s.whole_shape(t.get_shape()) if s else t.get_shape()), _element_dtype(t))
            for t, s in zip(types, self._arg_shards)
        ]
        self.batch, self.vocab = outputs[0].get_shape()
        self.context = self._arg_types[2][0][3]

    def new_caches(self) -> tuple[np.ndarray, np.ndarray]:
        """Empty K and V caches `[layers, batch, kv_heads, context, head_dim]`."""
        k_cache, v_cache = (np.zeros(shape, dtype) for shape, dtype in self._arg_types[2:])
        return k_cache, v_cache

    def step(
        self,
        tokens: Sequence[int] | np.ndarray,
        positions: Sequence[int] | np.ndarray,
        k_cache: np.ndarray,
        v_cache: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One decode step: token `tokens[b]` at position `positions[b]` for each entry b."""
        args = []
        for value, (shape, dtype), what in zip(
            (tokens, positions, k_cache, v_cache),
            self._arg_types,
            ("tokens", "positions", "k_cache", "v_cache"),
        ):
            value = np.asarray(value)
            if np.issubdtype(dtype, np.integer):
                value = value.astype(dtype, copy=False)
            if value.shape != shape or value.dtype != dtype:
                raise ReferenceEngineError(
                    f"{what} is {value.dtype} {value.shape}; @{ENTRY} expects {dtype} {shape}"
                )
            args.append(value)
        n = self.ranks.sockets
        per_rank = [
            tuple(
                a[s.index(local, r, n)] if s else a
                for a, s, local in zip(args, self._arg_shards, self._local_shapes)
            )
            for r in range(n)
        ]
        results = self.ranks.call(ENTRY, per_rank)
        logits, next_tokens, updated_k_cache, updated_v_cache = (
            self._gather([res[j] for res in results], s) for j, s in enumerate(self._result_shards)
        )
        return logits, next_tokens, updated_k_cache, updated_v_cache

    def _gather(self, parts: list[np.ndarray], shard: llm.ShardAttr | None) -> np.ndarray:
        """The whole value from every rank's part; replicas must agree bit for bit."""
        n = self.ranks.sockets
        shape = parts[0].shape if shard is None else shard.whole_shape(parts[0].shape)
        whole = np.empty(shape, parts[0].dtype)
        placed = set()
        for rank, part in enumerate(parts):
            block = None if shard is None else shard.block(rank, n)
            place = (...,) if shard is None else shard.index(part.shape, rank, n)
            if block not in placed:
                whole[place] = part
                placed.add(block)
            elif not np.array_equal(_bits(whole[place]), _bits(part)):
                raise ReferenceEngineError(
                    f"rank {rank} disagrees with the other ranks holding the same values"
                )
        return whole


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)
