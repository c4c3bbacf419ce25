"""The lowering enforces its contract (docs/lowering.md, "What the lowering relies on"): a
decode step that verifies but is not shaped as the frontend shapes it is either compiled to a
program that computes what the reference computes, or refused with a located one-line message.

The two miscompiles of issue 9 (a permuted K-cache stack, the old V cache returned) are
refused through `rdu-opt` with `file:line:col`; a seeded generator then mutates tiny decode
steps in ways the frontend never does (permuted or swapped stacks, stale caches or stale
slices returned, one result returned twice, an input returned as an output, the old cache
read after its update, a skip connection across layers, a layer reading another layer's
cache, loop bodies capturing kernel arguments) and checks each case either way, the
functional simulator against the llm-level reference with teacher forcing."""

from __future__ import annotations

import random
import re
from functools import cache
from io import StringIO

import numpy as np
import pytest
from logit_tolerance import SAME_ROUNDING_ULPS, check_logits
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.printer import Printer
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.lowering.emit_program import build_program
from rdu_compiler.lowering.pipeline import pipeline_passes
from rdu_compiler.rdu_dialect import dfk, llm
from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine
from rdu_compiler.simulator.functional import FunctionalSimulator
from rdu_compiler.simulator.program import validate_program
from rdu_compiler.simulator.weights import RandomWeights
from rdu_compiler.tools import rdu_opt

CONTEXT, STEPS, SEED = 8, 3, 3
REPR = re.compile(r"<[A-Za-z_.]+[\[ (]|object at 0x|\bSSAValue\b|\bOpResult\b|BlockArgument\[")


def _rdu_opt(tmp_path, capsys, text: str, *args: str) -> tuple[int, str, str]:
    """rdu-opt in process on `text` (as file step.mlir): exit status, stdout, stderr."""
    path = tmp_path / "step.mlir"
    path.write_text(text)
    status = rdu_opt.main([str(path), *args])
    out, err = capsys.readouterr()
    return status, out, err


@cache
def _imported() -> str:
    """`rdu-import tiny-llama --context 8`."""
    text = StringIO()
    module = build_decode_step(load_model_config("tiny-llama"), context=CONTEXT)
    Printer(stream=text).print_op(module)
    return text.getvalue() + "\n"


@pytest.mark.parametrize(
    "old, new, line_of, says",
    [
        (
            "dfk.stack %kc_1, %kc_3, %kc_5, %kc_7",
            "dfk.stack %kc_3, %kc_1, %kc_5, %kc_7",
            "func.return",
            "held in k_cache[1], k_cache[0], k_cache[2], k_cache[3]",
        ),
        (
            "func.return %logits, %next, %k_cache_out, %v_cache_out",
            "func.return %logits, %next, %k_cache_out, %v_cache",
            "func.return",
            "reads %v_cache, but the launch of @decoder_layer.looped",
        ),
    ],
    ids=["permuted-k-stack", "stale-v-cache"],
)
def test_issue_9_miscompiles_are_refused_with_file_line_col(
    tmp_path, capsys, old, new, line_of, says
):
    text = _imported()
    assert old in text
    edited = text.replace(old, new)
    line = next(i for i, t in enumerate(edited.splitlines(), 1) if line_of in t)
    status, out, err = _rdu_opt(tmp_path, capsys, edited, "-p", "rdu-pipeline", "-t", "rdu-program")
    assert status == 1 and not out
    message = err.strip()
    assert "\n" not in message and not REPR.search(message)
    assert f"lower-dfk-to-rdu: {tmp_path / 'step.mlir'}:{line}:5: " in message
    assert says in message


def test_old_cache_read_after_its_update_is_refused_at_the_reading_op(tmp_path, capsys):
    """Inside a kernel: layer 0's attention reads the cache slice its kv_cache_write has
    already overwritten in place."""
    text = _imported()
    old = "llm.attention %q_1, %kc_1, %vc_1"
    assert old in text
    edited = text.replace(old, "llm.attention %q_1, %kc, %vc_1")
    line = next(i for i, t in enumerate(edited.splitlines(), 1) if "%q_1, %kc, %vc_1" in t)
    status, _, err = _rdu_opt(tmp_path, capsys, edited, "-p", "rdu-pipeline{kernel-looping=false}")
    assert status == 1
    message = err.strip()
    assert f"step.mlir:{line}:" in message and "updated it in place" in message
    assert "\n" not in message and not REPR.search(message)


# -- the differential test -------------------------------------------------------------------


def _step(module) -> func.FuncOp:
    return next(op for op in module.ops if isinstance(op, func.FuncOp))


def _ops(module, kind) -> list:
    return [op for op in _step(module).body.block.ops if isinstance(op, kind)]


def _caches(module) -> tuple[list, list]:
    """Per layer, the (old slice, updated slice) pairs of K and of V."""
    writes = _ops(module, llm.KVCacheWriteOp)
    k = [(w.cache, w.results[0]) for w in writes[0::2]]
    v = [(w.cache, w.results[0]) for w in writes[1::2]]
    return k, v


def _permute_stack(module, rng: random.Random) -> str:
    stack = _ops(module, dfk.StackOp)[rng.randrange(2)]
    inputs = list(stack.inputs)
    order = list(range(len(inputs)))
    while order == sorted(order):
        rng.shuffle(order)
    for i, j in enumerate(order):
        stack.operands[i] = inputs[j]
    return f"permuted stack {order}"


def _stale_cache_returned(module, rng: random.Random) -> str:
    ret = _step(module).body.block.last_op
    which = 2 + rng.randrange(2)
    ret.operands[which] = _step(module).body.block.args[which]
    return f"old cache returned as result {which}"


def _stale_slice_stacked(module, rng: random.Random) -> str:
    k, v = _caches(module)
    kind = rng.randrange(2)
    layer = rng.randrange(len(k))
    stack = _ops(module, dfk.StackOp)[kind]
    stack.operands[layer] = (k, v)[kind][layer][0]
    return f"old slice of layer {layer} stacked"


def _returned_twice(module, rng: random.Random) -> str:
    ret = _step(module).body.block.last_op
    src = 2 + rng.randrange(2)
    ret.operands[5 - src] = ret.operands[src]
    return f"cache result {src} returned twice"


def _input_as_output(module, rng: random.Random) -> str:
    ret = _step(module).body.block.last_op
    ret.operands[1] = _step(module).body.block.args[rng.randrange(2)]
    return "an input returned as next_token"


def _old_cache_read_after_write(module, rng: random.Random) -> str:
    k, _ = _caches(module)
    layer = rng.randrange(len(k))
    old, new = k[layer]
    attention = next(u.operation for u in new.uses if isinstance(u.operation, llm.AttentionOp))
    attention.operands[1] = old
    return f"layer {layer} attends over its old K cache"


def _other_layers_cache(module, rng: random.Random) -> str:
    k, _ = _caches(module)
    layer = 1 + rng.randrange(len(k) - 1)
    attention = next(
        u.operation for u in k[layer][1].uses if isinstance(u.operation, llm.AttentionOp)
    )
    attention.operands[1] = k[layer - 1][1]
    return f"layer {layer} attends over layer {layer - 1}'s updated K cache"


def _skip_connection(module, rng: random.Random) -> str:
    norms = _ops(module, llm.RMSNormOp)
    final = norms[-1]
    residuals = [
        a.results[0]
        for a in _ops(module, llm.AddOp)
        if a.results[0].type == final.input.type and a.results[0] is not final.input
    ]
    final.operands[0] = rng.choice(residuals[:-1])
    return "the final norm reads an earlier layer's residual stream"


# a lowering that makes no copies must refuse these (the program would compute something else)
MUST_REFUSE = {
    "_permute_stack",
    "_stale_cache_returned",
    "_returned_twice",
    "_input_as_output",
    "_old_cache_read_after_write",
}
# and has every reason to compile these (no buffer is read after its update); the others
# depend on the case (a stale slice of a cache whose update no kernel stores is right; a skip
# connection over the residual stream gets fresh buffers unlooped, and is refused looped, where
# the hardware loop carries the stream in place)
MUST_COMPUTE = {"_other_layers_cache"}

LLM_MUTATIONS = [
    _permute_stack,
    _stale_cache_returned,
    _stale_slice_stacked,
    _returned_twice,
    _input_as_output,
    _old_cache_read_after_write,
    _other_layers_cache,
    _skip_connection,
]


def _capture_invariants(module, rng: random.Random) -> str:
    """dfk level: loop bodies read the kernel argument instead of the invariant block
    argument (a capture; the same value every trip, so semantics are unchanged)."""
    loops = [op for op in module.walk() if isinstance(op, dfk.LoopOp)]
    captured = 0
    for loop in loops:
        for operand, arg in zip(loop.invariant, loop.invariant_args, strict=True):
            arg.replace_all_uses_with(operand)
            captured += 1
    return f"{captured} invariant(s) captured by loop bodies"


CASES = 16
PRESETS = ("tiny-llama", "tiny-alternating", "tiny-qwen2")


def _generate(case: int) -> tuple[str, str, bool, list, bool]:
    rng = random.Random(SEED * 1000 + case)
    preset = PRESETS[case % len(PRESETS)]
    fusion = rng.choice(("layer", "layer", "op"))
    looped = rng.random() < 0.75
    mutations = rng.sample(LLM_MUTATIONS, rng.choice((1, 1, 2)))
    capture = looped and fusion == "layer" and rng.random() < 0.5
    return preset, fusion, looped, mutations, capture


def _run_reference(module, fed: list[int]) -> list[np.ndarray]:
    engine = ReferenceEngine(module, RandomWeights(SEED))
    k_cache, v_cache = engine.new_caches()
    out = []
    for position, token in enumerate(fed):
        logits, _, k_cache, v_cache = engine.step(
            np.full(1, token, np.int32), np.full(1, position, np.int32), k_cache, v_cache
        )
        out.append(logits)
    return out


@pytest.mark.parametrize("case", range(CASES))
def test_non_frontend_decode_steps_are_refused_or_computed_right(case):
    preset, fusion, looped, mutations, capture = _generate(case)
    rng = random.Random(case)
    module = build_decode_step(load_model_config(preset), batch=1, context=CONTEXT)
    what = [mutate(module, rng) for mutate in mutations]
    names = {mutate.__name__ for mutate in mutations}
    module.verify()
    fed = [3 + 7 * i for i in range(STEPS)]  # teacher forcing: distinct tokens
    want = _run_reference(module.clone(), fed)
    passes = pipeline_passes(kernel_looping=looped, fusion=fusion)
    label = f"case {case}: {preset} fusion={fusion} looped={looped}: {'; '.join(what)}"
    try:
        for p in passes[:-1]:
            p.apply(Context(), module)
        if capture:
            what.append(_capture_invariants(module, rng))
            module.verify()
        passes[-1].apply(Context(), module)
    except PassFailedException as error:
        message = str(error)
        assert "\n" not in message and not REPR.search(message), f"{label}: {message}"
        assert re.search(r"'[a-z_]+\.[a-z_]+'|:\d+:\d+", message), f"{label}: not located"
        assert not names <= MUST_COMPUTE, f"{label}: refused: {message}"
        return
    program = build_program(module)
    validate_program(program)
    sim = FunctionalSimulator(program, RandomWeights(SEED))
    for position, (token, logits) in enumerate(zip(fed, want, strict=True)):
        got, tokens = sim.decode(np.full(1, token, np.int32), np.full(1, position, np.int32))
        check_logits(got, tokens, logits, SAME_ROUNDING_ULPS, f"{label}, step {position}")
    assert not names & MUST_REFUSE, f"{label}: compiled, and computed the same"


@pytest.mark.parametrize("looped", [False, True], ids=["unlooped", "looped"])
def test_skip_connection_over_the_residual_stream(looped):
    """The final norm reads layer 0's output: no layer call may update the residual stream in
    place, so the unlooped program gives every layer fresh buffers (and computes the same);
    the looped kernel carries the stream in place and is refused, at the loop."""
    module = build_decode_step(load_model_config("tiny-llama"), batch=1, context=CONTEXT)
    norms = _ops(module, llm.RMSNormOp)
    residuals = [a for a in _ops(module, llm.AddOp) if a.results[0].type == norms[-1].input.type]
    norms[-1].operands[0] = residuals[1].results[0]  # layer 0's output (its second add)
    fed = [3 + 7 * i for i in range(STEPS)]
    want = _run_reference(module.clone(), fed)
    passes = pipeline_passes(kernel_looping=looped)
    if looped:
        with pytest.raises(PassFailedException, match="'dfk.loop'.*carries"):
            for p in passes:
                p.apply(Context(), module)
        return
    for p in passes:
        p.apply(Context(), module)
    sim = FunctionalSimulator(build_program(module), RandomWeights(SEED))
    for position, (token, logits) in enumerate(zip(fed, want, strict=True)):
        got, tokens = sim.decode(np.full(1, token, np.int32), np.full(1, position, np.int32))
        check_logits(got, tokens, logits, SAME_ROUNDING_ULPS, f"skip connection, step {position}")
