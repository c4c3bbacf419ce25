"""`kernel-looping` on `func.call`s: the output is upstream MLIR (upstream `mlir-opt` verifies
it with no unregistered dialect), and it computes what the calls computed, on random inputs,
for generated chains (property-based: run length, operand kinds, period, and the ways a chain
breaks the rules). xDSL's interpreter runs func, scf and arith; tensor slices and the store
the chains use are implemented here on numpy arrays (xDSL 0.74 has no interpreter for them).
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_kernel_looping import BOUNDARIES, Chain
from xdsl.context import Context
from xdsl.dialects import arith, builtin, func, memref, scf, tensor
from xdsl.dialects.builtin import DYNAMIC_INDEX, ModuleOp
from xdsl.interpreter import Interpreter, InterpreterFunctions, impl, register_impls
from xdsl.interpreters.arith import ArithFunctions
from xdsl.interpreters.func import FuncFunctions
from xdsl.interpreters.scf import ScfFunctions
from xdsl.parser import Parser

from rdu_compiler.passes.kernel_looping import KernelLooping

LIT_FILE = Path(__file__).parents[1] / "filecheck" / "passes" / "kernel-looping-func-call.mlir"
UPSTREAM_DIALECTS = (builtin.Builtin, func.Func, arith.Arith, scf.Scf, tensor.Tensor, memref.MemRef)


def parse(text: str) -> ModuleOp:
    """Parses with upstream dialects only (ours are not needed, nor loaded)."""
    ctx = Context()
    for dialect in UPSTREAM_DIALECTS:
        ctx.load_dialect(dialect)
    module = Parser(ctx, text).parse_module()
    module.verify()
    return module


def loop(module: ModuleOp) -> ModuleOp:
    KernelLooping().apply(Context(), module)
    module.verify()
    return module


# ---------------------------------------------------------------------------------------
# Upstream mlir-opt verifies the output
# ---------------------------------------------------------------------------------------


def mlir_verify(mlir_opt: str, module: ModuleOp) -> None:
    """Upstream mlir-opt parses and verifies `module`, with no unregistered dialect allowed."""
    result = subprocess.run(
        [mlir_opt, "--verify-each"], input=str(module), capture_output=True, text=True
    )
    assert result.returncode == 0, f"mlir-opt refused:\n{result.stderr}\n{module}"


LIT_CASES = LIT_FILE.read_text().split("// -----")


@pytest.mark.parametrize("case", range(len(LIT_CASES)))
def test_lit_cases_verify_with_upstream_mlir_opt(case, mlir_opt):
    module = loop(parse(LIT_CASES[case]))
    assert any(isinstance(op, scf.ForOp) for op in module.walk()) or "@illegal" in str(module)
    mlir_verify(mlir_opt, module)


# ---------------------------------------------------------------------------------------
# Generated chains: semantics before and after
# ---------------------------------------------------------------------------------------


@dataclass
class FuncChain(Chain):
    """`Chain` of `test_kernel_looping` (same boundaries, same expected runs), written with
    `func.call`s of `func.func`s and upstream ops only."""

    sliced_b: bool = False
    """With `stacked_b`: the per-call operands are `tensor.extract_slice`s of one tensor at
    consecutive offsets from 1 (the loop reads that tensor; with period 2, every other
    slice) instead of separate arguments."""

    def text(self) -> str:
        n = len(self.boundaries) + 1
        t = "tensor<4xf32>"
        lines = [
            f"func.func private @f(%x: {t}, %b: {t}, %n: i32) -> ({t}, {t}) {{",
            f"  %s = arith.addf %x, %b : {t}",
            f"  %m = arith.mulf %s, %b : {t}",
            f"  func.return %s, %m : {t}, {t}",
            "}",
            f"func.func private @g(%x: {t}, %b: {t}, %n: i32) -> ({t}, {t}) {{",
            f"  %s = arith.mulf %x, %b : {t}",
            f"  %m = arith.addf %s, %b : {t}",
            f"  func.return %s, %m : {t}, {t}",
            "}",
        ]
        args = [f"%x0: {t}", *(f"%b{k}: {t}" for k in range(n)), *(f"%n{k}: i32" for k in range(n))]
        args += [f"%bs: tensor<{n + 1}x4xf32>", "%buf: memref<f32>", "%c: f32"]
        body, results = [], []
        call_type = f"({t}, {t}, i32) -> ({t}, {t})"
        x, scalar = "%x0", "%n0"
        for k in range(n):
            b = f"%b{k}" if self.stacked_b else "%b0"
            if self.stacked_b and self.sliced_b:
                body.append(
                    f"%s{k} = tensor.extract_slice %bs[{k + 1}, 0] [1, 4] [1, 1] : "
                    f"tensor<{n + 1}x4xf32> to {t}"
                )
                b = f"%s{k}"
            if k:
                boundary = self.boundaries[k - 1]
                x = "%x0" if boundary == "unthreaded" else f"%r{k - 1}#0"
                if boundary == "extra_use":
                    results.append(f"%r{k - 1}#0")
                elif boundary == "side_effect":
                    body.append("memref.store %c, %buf[] : memref<f32>")
                elif boundary == "computed":
                    body.append(f"%c{k} = arith.mulf %r{k - 1}#1, %r{k - 1}#1 : {t}")
                    b = f"%c{k}"
                elif boundary == "scalar":
                    scalar = f"%n{k}"
            callee = "g" if self.alternate and k % 2 else "f"
            body.append(f"%r{k}:2 = func.call @{callee}({x}, {b}, {scalar}) : {call_type}")
            if self.returned[k]:
                results.append(f"%r{k}#1")
        results.append(f"%r{n - 1}#0")
        types = ", ".join([t] * len(results))
        lines.append(f"func.func @step({', '.join(args)}) -> ({types}) {{")
        lines += [f"  {line}" for line in body]
        lines.append(f"  func.return {', '.join(results)} : {types}")
        lines.append("}")
        return "\n".join(lines)


@st.composite
def func_chains(draw) -> FuncChain:
    n = draw(st.integers(2, 7))
    return FuncChain(
        boundaries=draw(st.lists(st.sampled_from(BOUNDARIES), min_size=n - 1, max_size=n - 1)),
        stacked_b=draw(st.booleans()),
        returned=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        alternate=draw(st.booleans()),
        sliced_b=draw(st.booleans()),
    )


def _static(values, dynamic) -> list[int]:
    return [next(dynamic) if v == DYNAMIC_INDEX else v for v in values.get_values()]


def _window(op: tensor.ExtractSliceOp | tensor.InsertSliceOp, indices) -> tuple[slice, ...]:
    """The numpy index of the slice `op` describes (`indices`: its dynamic index operands)."""
    dynamic = iter(indices)
    offsets = _static(op.static_offsets, dynamic)
    sizes = _static(op.static_sizes, dynamic)
    strides = _static(op.static_strides, dynamic)
    return tuple(slice(o, o + s * d, d) for o, s, d in zip(offsets, sizes, strides, strict=True))


@register_impls
class NumpyTensorFunctions(InterpreterFunctions):
    """tensor.empty / extract_slice / insert_slice on numpy arrays, and a 0-d memref.store."""

    @impl(tensor.EmptyOp)
    def run_empty(self, interpreter: Interpreter, op: tensor.EmptyOp, args):
        shape = op.tensor.type.get_shape()
        return (np.full(shape, np.nan, np.float32),)  # NaN: a read of an unwritten entry shows

    @impl(tensor.ExtractSliceOp)
    def run_extract_slice(self, interpreter: Interpreter, op: tensor.ExtractSliceOp, args):
        source, *indices = args
        shape = op.result.type.get_shape()
        return (source[_window(op, indices)].reshape(shape).copy(),)

    @impl(tensor.InsertSliceOp)
    def run_insert_slice(self, interpreter: Interpreter, op: tensor.InsertSliceOp, args):
        source, dest, *indices = args
        window = _window(op, indices)
        result = dest.copy()
        result[window] = source.reshape(result[window].shape)
        return (result,)

    @impl(memref.StoreOp)
    def run_store(self, interpreter: Interpreter, op: memref.StoreOp, args):
        value, buffer = args
        buffer[()] = buffer[()] + value  # accumulates: the number of stores shows
        return ()


def run_step(module: ModuleOp, n: int) -> tuple:
    """@step on seeded random inputs; its results and the buffer the stores wrote."""
    rng = np.random.default_rng(0)
    interpreter = Interpreter(module)
    for functions in (FuncFunctions(), ScfFunctions(), ArithFunctions(), NumpyTensorFunctions()):
        interpreter.register_implementations(functions)
    tensors = [rng.uniform(-0.5, 0.5, 4).astype(np.float32) for _ in range(n + 1)]
    stacked = rng.uniform(-0.5, 0.5, (n + 1, 4)).astype(np.float32)
    buffer = np.zeros((), np.float32)
    results = interpreter.call_op("step", (*tensors, *range(n), stacked, buffer, 1.5))
    return (*results, buffer)


def step_ops(module: ModuleOp) -> list:
    step = next(
        op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "step"
    )
    return list(step.body.block.ops)


def constant(value) -> int:
    assert isinstance(value.owner, arith.ConstantOp)
    return value.owner.value.value.data


def trips(module: ModuleOp) -> list[int]:
    """Per call of @step, or loop of calls, in order: its trip count (1 for a call)."""
    return [
        len(range(constant(op.lb), constant(op.ub), constant(op.step)))
        if isinstance(op, scf.ForOp)
        else 1
        for op in step_ops(module)
        if isinstance(op, func.CallOp | scf.ForOp)
    ]


@given(func_chains())
@example(FuncChain(["ok"] * 3, stacked_b=False, returned=[False] * 4, alternate=False))
@example(FuncChain(["ok"] * 5, False, [True] + [False] * 5, alternate=True, sliced_b=False))
@example(FuncChain(["ok"] * 5, True, [False, True] * 3, alternate=True, sliced_b=True))
@example(FuncChain(["ok", "side_effect", "ok"], True, [True] * 4, alternate=False))
def test_generated_func_call_chains(chain):
    n = len(chain.boundaries) + 1
    module = parse(chain.text())
    expected = run_step(module, n)
    loop(module)
    assert all(
        op.dialect_name() in {"builtin", "func", "arith", "scf", "tensor", "memref"}
        for op in module.walk()
    )
    if not chain.alternate or set(chain.boundaries) <= {"ok"}:
        assert trips(module) == chain.expected_runs()
    for got, want in zip(run_step(module, n), expected, strict=True):
        assert np.array_equal(got, want)
    if (
        chain.stacked_b
        and chain.sliced_b
        and not {"computed", "unthreaded"} & set(chain.boundaries)
    ):
        # evenly spaced slices of one tensor are read from it: no stack is built
        assert not any(isinstance(op, tensor.InsertSliceOp) for op in step_ops(module))

    looped_once = str(module)
    assert str(loop(module)) == looped_once


# A fixed sample of the generated chains, also fed to upstream mlir-opt.
SAMPLE = [
    FuncChain(["ok"] * 3, stacked_b=True, returned=[True, False, True, False], alternate=False),
    FuncChain(["ok"] * 5, True, [False, True] * 3, alternate=True, sliced_b=True),
    FuncChain(["ok", "side_effect", "ok"], True, [True] * 4, alternate=False, sliced_b=True),
    FuncChain(["extra_use", "ok", "scalar", "ok"], False, [False] * 5, alternate=False),
    FuncChain(["computed", "ok", "unthreaded", "ok"], True, [True] * 5, alternate=False),
]


@pytest.mark.parametrize("chain", SAMPLE, ids=range(len(SAMPLE)))
def test_generated_chains_verify_with_upstream_mlir_opt(chain, mlir_opt):
    module = loop(parse(chain.text()))
    assert any(isinstance(op, scf.ForOp) for op in module.walk())
    mlir_verify(mlir_opt, module)
