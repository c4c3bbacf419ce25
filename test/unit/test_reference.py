"""The reference interpreter on built decode steps: against an independent numpy model on every
tiny preset, and weight binding from a safetensors checkpoint."""

import re

import numpy as np
import pytest
from independent_model import IndependentModel
from logit_tolerance import SAME_ROUNDING_ULPS, check_logits

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import list_presets, load_model_config, preset_path
from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine
from rdu_compiler.simulator.weights import (
    CheckpointWeights,
    RandomWeights,
    WeightError,
    save_safetensors,
)

TINY = [p for p in list_presets() if p.startswith("tiny-")]
CONTEXT = 16  # > the sliding windows of 8, so they really slide
STEPS = 14
PROMPT_STEPS = 6  # teacher-forced random tokens, then the reference's greedy tokens
LAG = 4  # entry 1 sits LAG positions behind entry 0 (at position 0 until then)


def positions(step: int) -> list[int]:
    return [step, max(0, step - LAG)]


def engine(preset: str, weights, batch: int = 2) -> ReferenceEngine:
    return ReferenceEngine(
        build_decode_step(load_model_config(preset), batch=batch, context=CONTEXT), weights
    )


@pytest.mark.parametrize("preset", TINY)
def test_reference_matches_independent_model(preset):
    weights = RandomWeights(0)
    ref = engine(preset, weights)
    ind = IndependentModel(preset_path(preset), weights.get, 2, CONTEXT)
    k, v = ref.new_caches()
    tokens = np.random.default_rng(7).integers(0, ref.vocab, size=(PROMPT_STEPS, 2))
    fed = tokens[0]
    for step in range(STEPS):
        logits, next_tokens, k, v = ref.step(fed, positions(step), k, v)
        want = ind.step(fed, positions(step))
        check_logits(logits, next_tokens, want, SAME_ROUNDING_ULPS, f"{preset} step {step}")
        fed = tokens[step + 1] if step + 1 < PROMPT_STEPS else next_tokens


def test_step_leaves_its_inputs_alone_and_writes_one_row_per_entry():
    ref = engine("tiny-mistral", RandomWeights(0))
    k, v = ref.new_caches()
    _, _, k1, v1 = ref.step([3, 4], [5, 2], k, v)
    assert not k.any() and not v.any()
    rows = {tuple(i) for i in np.argwhere(k1.any(axis=(2, 4)))}  # (layer, entry, row)
    assert rows == {(layer, b, p) for layer in range(4) for b, p in ((0, 5), (1, 2))}


def test_checkpoint_weights_give_the_seeded_logits(tmp_path):
    """A checkpoint written from the seeded init (HF names; Mixtral experts per expert, bound
    into stacked params) gives bit-identical logits."""
    preset = "tiny-mixtral"
    seeded = RandomWeights(0)
    tensors = {
        t.name: seeded.get(t.name, t.shape) for t in load_model_config(preset).checkpoint_tensors()
    }
    folder = save_safetensors(tmp_path / "ckpt", tensors)
    from_seed, from_file = engine(preset, seeded), engine(preset, CheckpointWeights(folder))
    caches = [from_seed.new_caches(), from_file.new_caches()]
    for step in range(3):
        outs = [
            e.step([9, 17], positions(step), *c) for e, c in zip((from_seed, from_file), caches)
        ]
        caches = [o[2:] for o in outs]
        np.testing.assert_array_equal(outs[0][0].view(np.uint16), outs[1][0].view(np.uint16))


def test_missing_checkpoint_tensor_is_named(tmp_path):
    preset = "tiny-mixtral"
    missing = "model.layers.1.block_sparse_moe.experts.2.w3.weight"
    seeded = RandomWeights(0)
    tensors = {
        t.name: seeded.get(t.name, t.shape)
        for t in load_model_config(preset).checkpoint_tensors()
        if t.name != missing
    }
    ref = engine(preset, CheckpointWeights(save_safetensors(tmp_path / "m.safetensors", tensors)))
    with pytest.raises(WeightError, match=re.escape(f"tensor '{missing}' not found")):
        ref.step([1, 2], [0, 0], *ref.new_caches())
