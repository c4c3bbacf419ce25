"""Reference semantics of the `llm` and `dfk` dialects on xDSL's interpreter framework.

Any module whose entry is `func.func @decode_step` (docs/decode_step.md), at the llm level or
after outlining into `dfk` kernels and kernel looping, runs here; "semantics are preserved by
every pass" is checked by running the module before and after and comparing.

The math of every llm op is `simulator.numerics.OPS[short name]` (bf16 storage, f32 compute,
one rounding per op): this file only binds values to it. Operands go positionally in IR order
and properties as keywords of the same names, so an llm op whose math is in `OPS` needs no code
here. What this file adds is what the numerics cannot know: parameter binding by checkpoint
name, the dfk control structure (kernels, calls, the pipelined loop, stacking), and the
single-socket meaning of `llm.all_reduce`.

Values are numpy arrays (bf16 as `ml_dtypes.bfloat16`), token ids / positions int32 arrays, the
loop's induction variable a Python int. Everything is value-semantic: `llm.kv_cache_write` uses
the copying form, so a cache passed in is never modified (the aliasing the IR promises is a
buffer-reuse licence for lowering, not a meaning).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, StringAttr, TensorType, UnitAttr
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
from xdsl.traits import SymbolTable

from rdu_dialect import dfk, llm
from rdu_dialect.symbols import lookup_symbol
from simulator import numerics
from simulator.weights import WeightSource

__all__ = [
    "ENTRY",
    "SOCKETS_ATTR",
    "DfkFunctions",
    "LlmFunctions",
    "ReferenceEngine",
    "ReferenceEngineError",
    "check_single_socket",
    "make_interpreter",
]

SOCKETS_ATTR = "llm.sockets"
"""Module attribute (i64) the sharding pass stamps: how many sockets run the SPMD program.
Absent or 1 means one socket."""

ENTRY = "decode_step"
"""The entry function a decode-step module must have (docs/decode_step.md)."""


class ReferenceEngineError(Exception):
    """A module or input the reference cannot run (a user-facing message, not a bug)."""


def check_single_socket(module: ModuleOp) -> None:
    """Refuses a module sharded over more than one socket: the reference cannot run the
    per-rank shards yet, and nothing may pretend to execute a sharded module."""
    attr = module.attributes.get(SOCKETS_ATTR)
    n = attr.value.data if isinstance(attr, IntegerAttr) else 1
    if n > 1:
        raise ReferenceEngineError(
            f"module is sharded over {n} sockets ({SOCKETS_ATTR}): the reference runs sharded "
            "(SPMD) modules, every rank plus the all-reduces, only once sharding lands; "
            "not supported until then"
        )


def _element_dtype(t: Attribute) -> np.dtype:
    assert isinstance(t, TensorType)
    return numerics.dtype_from_name(str(t.element_type))


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
        return numerics.RopeScaling(attr.kind.data, **attr.values())
    raise NotImplementedError(f"no Python value for property {attr}")


def _run_math(
    self: InterpreterFunctions, interpreter: Interpreter, op: Operation, args: tuple[Any, ...]
) -> tuple[Any, ...]:
    """Any llm op whose math is `numerics.OPS[name]`: operands positionally, properties by
    name (an absent optional one as None, which each numerics function reads as its default)."""
    kwargs = {
        name: _python_value(getattr(op, name))
        for name in type(op).get_irdl_definition().properties
    }
    return (numerics.OPS[op.name.removeprefix("llm.")](*args, **kwargs),)


class LlmFunctions(InterpreterFunctions):
    """llm ops. Parameters come from `weights` by checkpoint name, each bound once per
    interpreter (cached by parameter symbol), so repeated decode steps read them once."""

    def __init__(self, weights: WeightSource):
        self.weights = weights

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
        """The parameter's tensor; a stacked one is its per-slice checkpoint tensors stacked
        in row-major order of the stacked dims (layers, or layers x experts)."""
        shape, dtype = param.checkpoint_type.get_shape(), str(param.type.element_type)
        slices = [self.weights.get(s, shape, dtype) for s in param.flat_sources()]
        if not param.is_stacked:
            return slices[0]
        return np.stack(slices).reshape(param.type.get_shape())

    @impl(llm.AllReduceOp)
    def run_all_reduce(
        self, interpreter: Interpreter, op: llm.AllReduceOp, args: tuple[Any, ...]
    ):
        """One socket: the sum over the single rank (numerics' all_reduce of one part)."""
        check_single_socket(interpreter.module)
        return _run_math(self, interpreter, op, args)


def _register_math_ops() -> None:
    """Every llm op with math in `numerics.OPS` (and no impl above) runs through `_run_math`."""
    for op in llm.LLM.operations:
        short = op.name.removeprefix("llm.")
        if short in numerics.OPS and op is not llm.AllReduceOp:
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


def make_interpreter(module: ModuleOp, weights: WeightSource) -> Interpreter:
    """An interpreter for llm / dfk / func modules with parameters bound from `weights`."""
    interpreter = Interpreter(module)
    for functions in (FuncFunctions(), BuiltinFunctions(), DfkFunctions(), LlmFunctions(weights)):
        interpreter.register_implementations(functions)
    return interpreter


class ReferenceEngine:
    """Runs decode steps of a module whose entry is `@decode_step` (docs/decode_step.md).

    `step(tokens, positions, k_cache, v_cache) -> (logits, next_tokens, k_cache, v_cache)`
    with the caches as returned by `new_caches()` or the previous step (never modified in
    place). Shapes and dtypes come from the entry's signature: `batch`, `context`, `vocab`.
    """

    def __init__(self, module: ModuleOp, weights: WeightSource):
        check_single_socket(module)
        entry = SymbolTable.lookup_symbol(module, ENTRY)
        if not isinstance(entry, func.FuncOp):
            raise ReferenceEngineError(f"module has no func.func @{ENTRY} entry")
        types = entry.function_type.inputs.data
        if len(types) != 4 or len(entry.function_type.outputs.data) != 4:
            raise ReferenceEngineError(
                f"@{ENTRY} must take (tokens, positions, k_cache, v_cache) and return "
                "(logits, next_tokens, k_cache, v_cache)"
            )
        self.entry = entry
        self.interpreter = make_interpreter(module, weights)
        self._arg_types = [(tuple(t.get_shape()), _element_dtype(t)) for t in types]
        self.batch, self.vocab = entry.function_type.outputs.data[0].get_shape()
        self.context = self._arg_types[2][0][3]

    def new_caches(self) -> tuple[np.ndarray, np.ndarray]:
        """Empty K and V caches `[layers, batch, kv_heads, context, head_dim]`."""
        return tuple(np.zeros(shape, dtype) for shape, dtype in self._arg_types[2:])

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
        return tuple(self.interpreter.call_op(self.entry, tuple(args)))
