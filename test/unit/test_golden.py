"""The reference against Hugging Face transformers (float32, bf16-representable weights from the
seeded init): the fixtures of test/golden/make_golden.py, fed the same tokens and positions."""

from pathlib import Path

import numpy as np
import pytest
from logit_tolerance import BF16_ULPS, check_logits

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import list_presets, load_model_config
from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine
from rdu_compiler.simulator.weights import RandomWeights

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TINY = [p for p in list_presets() if p.startswith("tiny-")]


@pytest.mark.parametrize("preset", TINY)
def test_reference_matches_hf_golden(preset):
    path = GOLDEN / f"{preset}.npz"
    assert path.is_file(), f"no golden fixture {path}: run test/golden/make_golden.py"
    g = np.load(path, allow_pickle=False)
    tokens, positions, valid, golden = g["tokens"], g["positions"], g["valid"], g["logits"]
    steps, batch = tokens.shape
    ref = ReferenceEngine(
        build_decode_step(load_model_config(preset), batch=batch, context=steps),
        RandomWeights(int(g["seed"])),
    )
    k, v = ref.new_caches()
    for s in range(steps):
        # A padding step (HF masks it out) is fed at position 0: the entry's first real step
        # overwrites that cache row before anything reads it.
        logits, next_tokens, k, v = ref.step(tokens[s], np.maximum(positions[s], 0), k, v)
        rows = valid[s]
        check_logits(
            logits[rows], next_tokens[rows], golden[s][rows], BF16_ULPS, f"{preset} step {s}"
        )
