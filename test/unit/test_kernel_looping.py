"""`kernel-looping` (pass and canonicalization): reference semantics unchanged on every tiny
preset, idempotence and determinism, and property-based tests over generated call chains,
including illegal ones that must not be looped."""

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_outline_kernels import TINY, assert_same, build, entry_calls, run_steps
from xdsl.context import Context
from xdsl.dialects import builtin, func
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser
from xdsl.transforms.canonicalize import CanonicalizePass

from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.lowering.emit_program import build_program
from rdu_compiler.lowering.lower_dfk_to_rdu import LowerDfkToRdu
from rdu_compiler.passes.kernel_looping import DisableKernelLooping, KernelLooping
from rdu_compiler.passes.outline_kernels import OutlineKernels
from rdu_compiler.rdu_dialect.dfk import DFK, CallOp, KernelOp, LoopOp
from rdu_compiler.rdu_dialect.interpreter import make_interpreter
from rdu_compiler.rdu_dialect.llm import LLM, ParamOp
from rdu_compiler.simulator.program import encode_program
from rdu_compiler.simulator.weights import RandomWeights

PIPELINES = {
    "outline-kernels,kernel-looping": [OutlineKernels(), KernelLooping()],
    "outline-kernels,canonicalize": [OutlineKernels(), CanonicalizePass()],
    "outline-kernels,kernel-looping,canonicalize": [
        OutlineKernels(),
        KernelLooping(),
        CanonicalizePass(),
    ],
}


def apply(module: ModuleOp, passes) -> ModuleOp:
    for p in passes:
        p.apply(Context(), module)
    module.verify()
    return module


@pytest.mark.parametrize("preset", TINY)
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_looping_preserves_reference_outputs(preset, pipeline):
    expected = run_steps(build(preset))
    assert_same(expected, run_steps(apply(build(preset), PIPELINES[pipeline])))


def looped_calls(module: ModuleOp) -> list[tuple[str, int]]:
    """(callee, trip count or 1) of each call of the entry, in order."""
    kernels = {op.sym_name.data: op for op in module.ops if isinstance(op, KernelOp)}
    result = []
    for call in entry_calls(module):
        kernel = kernels[call.callee.string_value()]
        loops = [op for op in kernel.body.block.ops if isinstance(op, LoopOp)]
        result.append((kernel.sym_name.data, loops[0].trip_count if loops else 1))
    return result


def test_llama_step_is_embed_one_looped_call_lm_head():
    layers = load_model_config("tiny-llama").num_layers
    module = apply(build("tiny-llama"), PIPELINES["outline-kernels,kernel-looping"])
    assert looped_calls(module) == [
        ("embed", 1),
        ("decoder_layer.looped", layers),
        ("lm_head", 1),
    ]
    params = {op.sym_name.data: op for op in module.ops if isinstance(op, ParamOp)}
    stacked = params[f"model.layers.0_to_{layers - 1}.input_layernorm.weight"]
    # Stacked by layout: slice i is layer i's checkpoint tensor; the per-layer params are gone.
    assert [s.data for s in stacked.source.data] == [
        f"model.layers.{i}.input_layernorm.weight" for i in range(layers)
    ]
    assert not any(name.startswith("model.layers.0.") for name in params)
    loop = next(op for op in module.walk() if isinstance(op, LoopOp))
    assert (len(loop.carried), len(loop.invariant), loop.pipeline_depth) == (1, 1, 2)


def test_mixtral_experts_stack_into_layers_by_experts():
    module = apply(build("tiny-mixtral"), PIPELINES["outline-kernels,kernel-looping"])
    nested = [op for op in module.ops if isinstance(op, ParamOp) and op.stack_depth == 2]
    assert nested, "the per-layer stacked expert weights become one layers x experts param"


def test_alternating_layers_loop_with_period_two():
    layers = load_model_config("tiny-alternating").num_layers
    module = apply(build("tiny-alternating"), PIPELINES["outline-kernels,kernel-looping"])
    assert looped_calls(module) == [
        ("embed", 1),
        ("decoder_layer.decoder_layer_1.looped", layers // 2),
        ("lm_head", 1),
    ]


def test_disable_kernel_looping_holds_under_canonicalize():
    module = apply(
        build("tiny-llama"), [OutlineKernels(), DisableKernelLooping(), CanonicalizePass()]
    )
    assert not any(isinstance(op, LoopOp) for op in module.walk())


def test_canonicalize_stays_local_and_lowers_as_the_pass_does():
    """The dfk.call canonicalization adds the looped kernel and the stacked parameters but
    erases no symbol; the explicit pass erases what it made unused. What canonicalize leaves
    is dead: both modules lower to the same program."""
    canonical = apply(build("tiny-llama"), [OutlineKernels(), CanonicalizePass()])
    explicit = apply(build("tiny-llama"), PIPELINES["outline-kernels,kernel-looping"])

    def symbols(module: ModuleOp) -> set[str]:
        return {op.sym_name.data for op in module.ops if isinstance(op, KernelOp | ParamOp)}

    left = symbols(canonical) - symbols(explicit)
    assert symbols(explicit) < symbols(canonical)
    assert "decoder_layer" in left
    assert "model.layers.0.input_layernorm.weight" in left
    programs = [
        encode_program(build_program(apply(m, [LowerDfkToRdu()]))) for m in (canonical, explicit)
    ]
    assert programs[0] == programs[1]


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-alternating", "tiny-mixtral"])
def test_looping_is_idempotent_and_deterministic(preset):
    first = str(apply(build(preset), PIPELINES["outline-kernels,kernel-looping"]))
    module = apply(build(preset), PIPELINES["outline-kernels,kernel-looping"])
    assert str(module) == first
    assert str(apply(module, [KernelLooping(), CanonicalizePass()])) == first


# ---------------------------------------------------------------------------------------
# Generated call chains
# ---------------------------------------------------------------------------------------

BOUNDARIES = ("ok", "extra_use", "side_effect", "computed", "scalar", "unthreaded")
"""What lies between two consecutive calls: nothing wrong, or one way to break the rules:
- extra_use: the threaded value is also returned (rule 1);
- side_effect: a `func.call` between them (rule 3);
- computed: the next call's second operand is computed from this call's second result
  (rule 1: the loop could not build it in advance);
- scalar: the next call takes another `i32` (a varying operand that cannot be stacked,
  rule 2);
- unthreaded: the next call does not take this call's result (the threading changes)."""


@dataclass
class Chain:
    """A generated decode-step-like chain of calls, each taking the previous one's result."""

    boundaries: list[str]
    stacked_b: bool
    """Whether the second operand differs per call (stacked) or is one value (invariant)."""
    returned: list[bool]
    """Per call: whether its second result is returned (a stacked output used outside)."""
    alternate: bool
    """Whether the calls alternate between two kernels @f and @g (period 2) or all call @f."""

    def text(self) -> str:
        n = len(self.boundaries) + 1
        lines = [
            "func.func @sync() {",
            "  func.return",
            "}",
            "dfk.kernel @f(%x: tensor<4xf32>, %b: tensor<4xf32>, %n: i32)"
            " -> (tensor<4xf32>, tensor<4xf32>) {",
            "  %s = llm.add %x, %b : tensor<4xf32>",
            "  %m = llm.mul %s, %b : tensor<4xf32>",
            "  dfk.return %s, %m : tensor<4xf32>, tensor<4xf32>",
            "}",
            "dfk.kernel @g(%x: tensor<4xf32>, %b: tensor<4xf32>, %n: i32)"
            " -> (tensor<4xf32>, tensor<4xf32>) {",
            "  %s = llm.mul %x, %b : tensor<4xf32>",
            "  %m = llm.add %s, %b : tensor<4xf32>",
            "  dfk.return %s, %m : tensor<4xf32>, tensor<4xf32>",
            "}",
        ]
        args = ["%x0: tensor<4xf32>"]
        args += [f"%b{k}: tensor<4xf32>" for k in range(n)]
        args += [f"%n{k}: i32" for k in range(n)]
        body, results = [], []
        x, b, scalar = "%x0", "%b0", "%n0"
        call_type = "(tensor<4xf32>, tensor<4xf32>, i32) -> (tensor<4xf32>, tensor<4xf32>)"
        for k in range(n):
            if k:
                boundary = self.boundaries[k - 1]
                x = "%x0" if boundary == "unthreaded" else f"%r{k - 1}#0"
                b = f"%b{k}" if self.stacked_b else "%b0"
                if boundary == "extra_use":
                    results.append(f"%r{k - 1}#0")
                elif boundary == "side_effect":
                    body.append("func.call @sync() : () -> ()")
                elif boundary == "computed":
                    body.append(f"%c{k} = llm.mul %r{k - 1}#1, %r{k - 1}#1 : tensor<4xf32>")
                    b = f"%c{k}"
                elif boundary == "scalar":
                    scalar = f"%n{k}"
            callee = "g" if self.alternate and k % 2 else "f"
            body.append(f"%r{k}:2 = dfk.call @{callee}({x}, {b}, {scalar}) : {call_type}")
            if self.returned[k]:
                results.append(f"%r{k}#1")
        results.append(f"%r{n - 1}#0")
        types = ", ".join(["tensor<4xf32>"] * len(results))
        lines.append(f"func.func @step({', '.join(args)}) -> ({types}) {{")
        lines += [f"  {line}" for line in body]
        lines.append(f"  func.return {', '.join(results)} : {types}")
        lines.append("}")
        return "\n".join(lines)

    def expected_runs(self) -> list[int]:
        """Lengths of the runs the rules allow, in order (the greedy split the pass makes:
        a run's threading is that of its first pair of calls). For alternating calls, only
        when nothing breaks a rule: one loop over the pairs of calls."""
        if self.alternate:
            n = len(self.boundaries) + 1
            return [n // 2] + [1] * (n % 2) if n >= 4 else [1] * n
        runs, threading = [1], None
        for boundary in self.boundaries:
            pair = "unthreaded" if boundary == "unthreaded" else "threaded"
            legal = boundary in ("ok", "unthreaded") and threading in (None, pair)
            if legal:
                runs[-1] += 1
                threading = pair
            else:
                runs.append(1)
                threading = None
        return runs


@st.composite
def chains(draw) -> Chain:
    n = draw(st.integers(2, 7))
    return Chain(
        boundaries=draw(st.lists(st.sampled_from(BOUNDARIES), min_size=n - 1, max_size=n - 1)),
        stacked_b=draw(st.booleans()),
        returned=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        alternate=draw(st.booleans()),
    )


def parse(text: str) -> ModuleOp:
    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, LLM, DFK):
        ctx.load_dialect(dialect)
    module = Parser(ctx, text).parse_module()
    module.verify()
    return module


def run_chain(module: ModuleOp, n: int) -> tuple:
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-0.5, 0.5, 4).astype(np.float32) for _ in range(n + 1)]
    interpreter = make_interpreter(module, RandomWeights())
    step = next(
        op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "step"
    )
    return interpreter.call_op(step, (*inputs, *range(n)))


@given(chains())
@example(Chain(["ok"] * 5, stacked_b=True, returned=[True] + [False] * 5, alternate=True))
@example(Chain(["ok"] * 4, stacked_b=False, returned=[False] * 5, alternate=False))
def test_generated_chains(chain):
    n = len(chain.boundaries) + 1
    module = parse(chain.text())
    expected = run_chain(module, n)
    KernelLooping().apply(Context(), module)
    module.verify()

    calls = [op for op in module.walk() if isinstance(op, CallOp)]
    kernels = {op.sym_name.data: op for op in module.ops if isinstance(op, KernelOp)}
    trips = []
    for call in calls:
        kernel = kernels[call.callee.string_value()]
        loops = [op for op in kernel.body.block.ops if isinstance(op, LoopOp)]
        trips.append(loops[0].trip_count if loops else 1)
    if not chain.alternate or set(chain.boundaries) <= {"ok"}:
        assert trips == chain.expected_runs()

    for got, want in zip(run_chain(module, n), expected, strict=True):
        assert np.array_equal(got, want)

    looped_once = str(module)
    KernelLooping().apply(Context(), module)
    assert str(module) == looped_once
