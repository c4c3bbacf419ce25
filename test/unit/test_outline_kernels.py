"""`outline-kernels`: structure of the outlined decode step, and the reference semantics
(logits, next tokens, KV caches) unchanged over several decode steps on every tiny preset."""

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import list_presets, load_model_config
from rdu_compiler.passes.outline_kernels import OutlineKernels
from rdu_compiler.rdu_dialect.dfk import CallOp, KernelOp
from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine
from rdu_compiler.rdu_dialect.llm import LAYER_ATTR
from rdu_compiler.simulator.weights import RandomWeights

TINY = [name for name in list_presets() if name.startswith("tiny-")]
STEPS = 3


def build(preset: str) -> ModuleOp:
    # Context 16 keeps the sliding windows of the tiny presets (8) smaller than the cache,
    # so alternating layers really differ.
    return build_decode_step(load_model_config(preset), batch=2, context=16)


def run_steps(module: ModuleOp, steps: int = STEPS) -> list[tuple[np.ndarray, ...]]:
    """Greedy decode steps, the two batch entries at different positions."""
    engine = ReferenceEngine(module, RandomWeights(seed=3))
    k, v = engine.new_caches()
    tokens, outputs = np.array([1, 2]), []
    for step in range(steps):
        logits, tokens, k, v = engine.step(tokens, [step, step + 2], k, v)
        outputs.append((logits, tokens, k, v))
    return outputs


def assert_same(expected, actual) -> None:
    for step, (want, got) in enumerate(zip(expected, actual, strict=True)):
        for what, a, b in zip(("logits", "next tokens", "k cache", "v cache"), want, got):
            assert np.array_equal(a, b), f"step {step}: {what} differ"


def entry_calls(module: ModuleOp) -> list[CallOp]:
    entry = next(op for op in module.ops if isinstance(op, func.FuncOp))
    return [op for op in entry.body.block.ops if isinstance(op, CallOp)]


@pytest.mark.parametrize("preset", TINY)
@pytest.mark.parametrize("policy", ["layer", "op"])
def test_outlining_preserves_reference_outputs(preset, policy):
    expected = run_steps(build(preset))
    module = build(preset)
    OutlineKernels(policy=policy).apply(Context(), module)
    module.verify()
    assert_same(expected, run_steps(module))


@pytest.mark.parametrize("preset", TINY)
def test_layer_policy_is_embed_layers_lm_head(preset):
    config = load_model_config(preset)
    module = build(preset)
    OutlineKernels().apply(Context(), module)
    calls = entry_calls(module)
    names = [c.callee.string_value() for c in calls]
    assert names[0] == "embed" and names[-1] == "lm_head"
    assert len(names) == config.num_layers + 2
    assert [c.attributes[LAYER_ATTR].value.data for c in calls[1:-1]] == list(
        range(config.num_layers)
    )
    kinds = set(names[1:-1])
    assert kinds <= {"decoder_layer", "decoder_layer_1"}
    # One kernel per kind of layer: identical layers share one symbol.
    assert len([op for op in module.ops if isinstance(op, KernelOp)]) == len(kinds) + 2
    # Weight reads stay in the caller: no kernel reads a parameter.
    for kernel in module.ops:
        if isinstance(kernel, KernelOp):
            assert not any(op.name == "llm.weight" for op in kernel.walk())


def test_alternating_layers_get_two_kernels():
    module = build("tiny-alternating")
    OutlineKernels().apply(Context(), module)
    names = [c.callee.string_value() for c in entry_calls(module)][1:-1]
    assert names == ["decoder_layer", "decoder_layer_1"] * (len(names) // 2)


@pytest.mark.parametrize("policy", ["layer", "op"])
def test_outlining_is_deterministic(policy):
    texts = []
    for _ in range(2):
        module = build("tiny-qwen3")
        OutlineKernels(policy=policy).apply(Context(), module)
        texts.append(str(module))
    assert texts[0] == texts[1]


def test_outlining_twice_changes_nothing():
    module = build("tiny-llama")
    OutlineKernels().apply(Context(), module)
    once = str(module)
    OutlineKernels().apply(Context(), module)
    assert str(module) == once
