"""The bf16 tolerance logits are compared with (reference vs an independent model, vs Hugging
Face, and later the simulator vs the reference).

Tolerance: per batch row, ``ulps`` bf16 ulps of that row's largest |logit|, i.e.
``ulps * 2**(floor(log2(max|logits|)) - 7)`` (bf16 keeps 8 significant bits). Why in ulps of the
row's largest logit: logits are stored in bf16, so one ulp at their scale is the resolution of the
result itself; an error anywhere upstream reaches the logits scaled by the layers' O(1) gains
(the seeded init keeps activations O(1)), so it shows as a few ulps at the logits' scale, not
relative to each (possibly tiny) logit. Two budgets:

* ``SAME_ROUNDING_ULPS = 2``: two implementations that round to bf16 at the same op boundaries
  differ only by float32 re-association inside an op, which now and then flips one rounding by
  one ulp; that propagates to at most about one ulp at the logits (measured: bit-identical
  on the test's token sequences, 1 ulp on others).
* ``BF16_ULPS = 4``: an implementation that rounds differently (HF in float32, a simulator that
  splits reductions): each of the ~60 ops of a 4-layer step adds up to half an ulp of relative
  error, mostly averaging out; measured worst case over the tiny presets 3.2 ulps (HF golden).

Bugs are far outside both: a missing sliding window, rope scaling, q/k/v bias or top-k changes the
logits by 50-140 ulps on the tiny presets.

Greedy tokens must agree wherever the row's top-2 margin exceeds the tolerance.
"""

import numpy as np

SAME_ROUNDING_ULPS = 2
BF16_ULPS = 4


def logit_tolerance(want: np.ndarray, ulps: float) -> np.ndarray:
    """Per row of ``want [B, V]``: ``ulps`` bf16 ulps of the row's largest |logit|."""
    top = np.max(np.abs(want), axis=-1)
    return ulps * np.exp2(np.floor(np.log2(np.maximum(top, 1e-30))) - 7)


def check_logits(got, got_tokens, want, ulps: float, what: str) -> float:
    """Assert ``got`` (with its greedy ``got_tokens``) agrees with ``want`` row by row; returns
    the max |difference|."""
    got = np.asarray(got, np.float32)
    want = np.asarray(want, np.float32)
    tol = logit_tolerance(want, ulps)
    diff = np.max(np.abs(got - want), axis=-1)
    bad = np.flatnonzero(~(diff <= tol))
    assert not bad.size, (
        f"{what}: row(s) {bad.tolist()} differ by {diff[bad].tolist()} > "
        f"tolerance {tol[bad].tolist()} ({ulps} bf16 ulps of the row max)"
    )
    top2 = np.sort(want, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > tol
    want_tokens = np.argmax(want, axis=-1)
    wrong = np.flatnonzero(clear & (np.asarray(got_tokens) != want_tokens))
    assert not wrong.size, (
        f"{what}: greedy tokens of row(s) {wrong.tolist()} differ "
        f"({np.asarray(got_tokens)[wrong].tolist()} vs "
        f"{want_tokens[wrong].tolist()}) although the top-2 margin "
        "exceeds the tolerance"
    )
    return float(diff.max())
