"""Each llm op's numpy math checked against an independent, straightforward formulation."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdu_compiler.simulator import numerics as N

BF16 = np.dtype(ml_dtypes.bfloat16)
BF16_RTOL = 2.0**-7  # one bf16 ulp, relative


def rnd(shape, seed=0, scale=1.0, dtype=np.float32):
    return (
        (np.random.default_rng(seed).standard_normal(shape) * scale)
        .astype(np.float32)
        .astype(dtype)
    )


def f64(a):
    return np.asarray(a).astype(np.float64)


def assert_bf16_close(got, want64, ulps=1.0):
    """got (bf16) within ``ulps`` bf16 ulps of the exact value want64."""
    assert np.asarray(got).dtype == BF16
    g = f64(got)
    tol = ulps * BF16_RTOL * np.maximum(np.abs(want64), 1e-30) + 1e-30
    assert np.all(np.abs(g - want64) <= tol), np.max(np.abs(g - want64) / tol)


# ------------------------------------------------------------------------------------------
# dtypes and rounding
# ------------------------------------------------------------------------------------------


def test_dtype_names_roundtrip():
    for name in ("bf16", "f16", "f32", "i32", "i64"):
        assert N.dtype_name(N.dtype_from_name(name)) == name
    assert N.dtype_from_name("bf16") == BF16
    assert N.dtype_from_name("bfloat16") == BF16
    assert N.dtype_from_name(np.float32) == np.float32
    assert N.dtype_from_name("i32") == np.int32
    with pytest.raises(ValueError, match="unknown dtype"):
        N.dtype_from_name("f8")


def test_round_to_bf16_is_round_to_nearest_even():
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 2**-8)], np.float32)
    got = f64(N.round_to(x, "bf16"))
    assert got.tolist() == [1.0, 1 + 4 * 2**-8, 1 + 2**-7, -1.0]
    assert N.round_to(x, "f32") is x or np.array_equal(N.round_to(x, "f32"), x)


def test_ops_round_once_not_per_operand():
    a = np.array([1.0], BF16)
    b = np.array([1.5 * 2**-8], BF16)  # exactly representable
    # exact sum 1.005859375 rounds to 1 + 2**-7 once; per-step rounding elsewhere would differ
    assert f64(N.add(a, b))[0] == 1 + 2**-7
    # mul computed in f32: (1 + 2**-7) * (1 + 2**-7) = 1 + 2**-6 + 2**-14 -> bf16 1 + 2**-6
    c = np.array([1 + 2**-7], BF16)
    assert f64(N.mul(c, c))[0] == 1 + 2**-6


def test_result_dtype_promotion():
    b = np.zeros(2, BF16)
    f = np.zeros(2, np.float32)
    assert N.add(b, b).dtype == BF16
    assert N.add(b, f).dtype == np.float32
    assert N.add(b, b, out_dtype="f32").dtype == np.float32
    assert N.add(np.zeros(2, np.float16), b).dtype == np.float32
    assert N.add(np.zeros(2), np.zeros(2)).dtype == np.float32  # f64 counts as f32


def test_to_f32():
    x = np.array([1.5, 2.25], BF16)
    assert N.to_f32(x).dtype == np.float32 and N.to_f32(x).tolist() == [1.5, 2.25]


# ------------------------------------------------------------------------------------------
# elementwise, norms
# ------------------------------------------------------------------------------------------


def test_embedding():
    table = rnd((10, 4), 1, dtype=BF16)
    out = N.embedding(table, np.array([3, 0, 3]))
    assert out.dtype == BF16 and out.shape == (3, 4)
    for i, t in enumerate([3, 0, 3]):
        assert np.array_equal(out[i].view(np.uint16), table[t].view(np.uint16))
    with pytest.raises(IndexError, match=r"\[10\].*vocab size 10"):
        N.embedding(table, [1, 10])


def rms_ref(x, w, eps):
    x, w = f64(x), f64(w)
    b, n = x.shape
    g = len(w)
    y = np.empty_like(x)
    for i in range(b):
        for s in range(0, n, g):
            seg = x[i, s : s + g]
            r = math.sqrt(sum(v * v for v in seg) / g + eps)
            for j in range(g):
                y[i, s + j] = seg[j] / r * w[j]
    return y


@pytest.mark.parametrize("n,g", [(16, 16), (24, 8), (12, 4)])
def test_rms_norm_groups(n, g):
    x = rnd((3, n), 2)
    w = 1 + 0.1 * rnd((g,), 3)
    got = N.rms_norm(x, w, eps=1e-5)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, rms_ref(x, w, 1e-5), rtol=2e-6, atol=1e-6)
    xb, wb = x.astype(BF16), w.astype(BF16)
    assert_bf16_close(N.rms_norm(xb, wb, eps=1e-5), rms_ref(xb, wb, 1e-5))


def test_rms_norm_per_head_differs_from_full():
    x = rnd((2, 8), 4)
    x[:, 4:] *= 10
    w = np.ones(4, np.float32)
    per_head = N.rms_norm(x, w, eps=1e-6)
    full = N.rms_norm(x, np.ones(8, np.float32), eps=1e-6)
    assert not np.allclose(per_head, full)
    with pytest.raises(ValueError, match="does not divide"):
        N.rms_norm(x, np.ones(3, np.float32))


def test_layer_norm():
    x = rnd((3, 10), 5, scale=3.0) + 2.0
    w, b = rnd((10,), 6), rnd((10,), 7)
    got = N.layer_norm(x, w, b, eps=1e-5)
    x64 = f64(x)
    want = np.array([[(v - r.mean()) / math.sqrt(r.var() + 1e-5) for v in r] for r in x64])
    want = want * f64(w) + f64(b)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        N.layer_norm(x, eps=1e-5), (want - f64(b)) / f64(w), rtol=1e-4, atol=1e-4
    )


def test_silu_gelu_softmax():
    x = np.concatenate([rnd((2, 50), 8, scale=3.0), np.array([[-200.0] * 50, [80.0] * 50])])
    x = x.astype(np.float32)
    with np.errstate(all="raise"):
        s = N.silu(x)
    want = np.vectorize(lambda v: v / (1 + math.exp(-v)) if v > -700 else 0.0)(f64(x))
    np.testing.assert_allclose(s, want, rtol=1e-6, atol=1e-30)
    g = N.gelu(x)
    gelu_ref = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    np.testing.assert_allclose(g, gelu_ref(f64(x)), rtol=1e-6, atol=1e-12)
    assert g[0][x[0] < -3].max() < 0  # no cancellation to -0.0 in the negative tail
    gt = N.gelu(x, approximate="tanh")
    tanh_ref = np.vectorize(
        lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    )
    np.testing.assert_allclose(gt, tanh_ref(f64(x)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        N.gelu(x, approximate="fast")
    sm = N.softmax(x[:2])
    for row, r in zip(sm, f64(x[:2])):
        e = [math.exp(v - max(r)) for v in r]
        np.testing.assert_allclose(row, [v / sum(e) for v in e], rtol=1e-5, atol=1e-9)
    assert N.silu(x.astype(BF16)).dtype == BF16


def test_argmax_ties_first_index():
    x = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, -1.0, 7.0, 7.0]], np.float32)
    got = N.argmax(x)
    assert got.dtype == np.int32 and got.tolist() == [1, 0, 2]
    # two values distinct in f32 but equal after bf16 rounding: first index wins
    xb = np.array([[1.0, 1.001, 1.0009]], np.float32).astype(BF16)
    assert N.argmax(xb).tolist() == [0]


def test_all_reduce_forms():
    parts = [rnd((2, 3), i) for i in range(4)]
    want = f64(parts[0]) + f64(parts[1]) + f64(parts[2]) + f64(parts[3])
    np.testing.assert_allclose(N.all_reduce(parts), want, rtol=1e-6)
    assert N.all_reduce(parts, out_dtype="bf16").dtype == BF16
    assert np.array_equal(
        N.all_reduce(*parts, out_dtype="bf16").view(np.uint16),
        N.all_reduce(parts, out_dtype="bf16").view(np.uint16),
    )
    assert np.array_equal(N.all_reduce(parts[0]), parts[0])
    with pytest.raises(ValueError):
        N.all_reduce([])
    with pytest.raises(ValueError, match="shapes differ"):
        N.all_reduce([parts[0], parts[0][:1]])
    with pytest.raises(ValueError, match="unsupported reduction"):
        N.all_reduce(parts, reduction="max")


def test_all_gather_concatenates_in_rank_order_exactly():
    parts = [rnd((2, 3), i) for i in range(4)]
    whole = N.all_gather(parts, dim=1)
    assert whole.shape == (2, 12) and whole.dtype == parts[0].dtype
    assert np.array_equal(whole.view(np.uint16), np.concatenate(parts, 1).view(np.uint16))
    assert np.array_equal(N.all_gather(*parts, dim=0), np.concatenate(parts, 0))
    with pytest.raises(ValueError, match="at least one part"):
        N.all_gather([], dim=0)
    with pytest.raises(ValueError, match="num_experts"):
        N.moe(
            parts[0],
            np.zeros((2, 3)),
            np.zeros((2, 4, 3)),
            np.zeros((2, 4, 3)),
            np.zeros((2, 3, 4)),
            top_k=1,
            normalize_top_k=False,
            num_experts=4,
        )


# ------------------------------------------------------------------------------------------
# linear
# ------------------------------------------------------------------------------------------


def test_linear_against_loops_and_bias():
    x, w, b = rnd((2, 5), 9), rnd((3, 5), 10), rnd((3,), 11)
    got = N.linear(x, w, b)
    want = np.array(
        [
            [sum(f64(x)[i, k] * f64(w)[o, k] for k in range(5)) + f64(b)[o] for o in range(3)]
            for i in range(2)
        ]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    xb, wb = x.astype(BF16), w.astype(BF16)
    got_b = N.linear(xb, wb)
    assert got_b.dtype == BF16
    exact = f64(xb) @ f64(wb).T
    assert_bf16_close(got_b, exact, ulps=0.5 + 1e-3)  # f32 accumulate, one rounding: <= half ulp
    acc = N.linear(xb, wb, accumulate_only=True)
    assert acc.dtype == np.float32
    assert np.array_equal(N.round_to(acc, "bf16").view(np.uint16), got_b.view(np.uint16))
    with pytest.raises(ValueError, match="in-features"):
        N.linear(x, w.T)


def test_linear_large_weight_chunked(monkeypatch):
    monkeypatch.setattr(N, "_LINEAR_CHUNK", 16)
    x, w = rnd((2, 8), 12, dtype=BF16), rnd((11, 8), 13, dtype=BF16)
    monkeypatch.setattr(N, "_LINEAR_CHUNK", 1 << 24)
    full = N.linear(x, w)
    monkeypatch.setattr(N, "_LINEAR_CHUNK", 16)
    assert np.array_equal(N.linear(x, w).view(np.uint16), full.view(np.uint16))


def test_linear_partial_sums_equal_full():
    rng = np.random.default_rng(14)
    # small integers: every f32 sum is exact, so the split result is bit-identical
    x = rng.integers(-4, 5, (3, 12)).astype(BF16)
    w = rng.integers(-4, 5, (5, 12)).astype(BF16)
    b = rng.integers(-4, 5, (5,)).astype(BF16)
    full = N.linear(x, w, b)
    splits = [(0, 5), (5, 6), (6, 12)]
    parts = [
        N.linear(x[:, a:c], w[:, a:c], b if i == 0 else None, accumulate_only=True)
        for i, (a, c) in enumerate(splits)
    ]
    assert np.array_equal(
        N.all_reduce(parts, out_dtype="bf16").view(np.uint16), full.view(np.uint16)
    )
    # random values: equal within bf16 tolerance (f32 re-association only)
    xr, wr = rnd((3, 64), 15, dtype=BF16), rnd((7, 64), 16, dtype=BF16)
    parts = [
        N.linear(xr[:, i : i + 16], wr[:, i : i + 16], accumulate_only=True)
        for i in range(0, 64, 16)
    ]
    assert_bf16_close(N.all_reduce(parts, out_dtype="bf16"), f64(xr) @ f64(wr).T, ulps=1)


@settings(max_examples=25)
@given(
    b=st.integers(1, 4),
    n_in=st.integers(1, 40),
    n_out=st.integers(1, 9),
    cuts=st.lists(st.integers(1, 39), max_size=3),
    seed=st.integers(0, 2**16),
)
def test_linear_split_hypothesis(b, n_in, n_out, cuts, seed):
    x, w = rnd((b, n_in), seed, dtype=BF16), rnd((n_out, n_in), seed + 1, dtype=BF16)
    edges = sorted({0, n_in, *[c for c in cuts if c < n_in]})
    parts = [N.linear(x[:, a:c], w[:, a:c], accumulate_only=True) for a, c in zip(edges, edges[1:])]
    np.testing.assert_allclose(
        N.all_reduce(parts), N.linear(x, w, out_dtype="f32"), rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------------------------------------------
# rope
# ------------------------------------------------------------------------------------------


def test_rope_inv_freq_default():
    inv = N.rope_inv_freq(8, 10000.0)
    assert inv.dtype == np.float32
    np.testing.assert_allclose(inv, [10000.0 ** (-2 * i / 8) for i in range(4)], rtol=1e-6)
    with pytest.raises(ValueError):
        N.rope_inv_freq(7, 10000.0)


def llama3_ref(freqs, factor, low, high, old):
    """Meta's published apply_scaling (llama/model.py), in float64."""
    lw, hw = old / low, old / high
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < hw:
            out.append(f)
        elif wl > lw:
            out.append(f / factor)
        else:
            s = (old / wl - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return out


def test_rope_llama3_hand_picked():
    sc = N.RopeScaling(
        "llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    )
    # head_dim 4: inv_freq = [1, theta**-0.5]; theta picks the band of the second frequency
    hi = N.rope_inv_freq(4, 1e4, sc)  # 0.01: wavelength 628 < 2048 -> unchanged
    np.testing.assert_allclose(hi, [1.0, 0.01], rtol=1e-6)
    lo = N.rope_inv_freq(4, 1e8, sc)  # 1e-4: wavelength 62832 > 8192 -> divided by 8
    np.testing.assert_allclose(lo, [1.0, 1.25e-5], rtol=1e-6)
    mid = N.rope_inv_freq(4, 1e6, sc)  # 1e-3: wavelength 6283 in (2048, 8192): smoothed
    # smooth = (8192 / 6283.185 - 1) / 3 = 0.1012657; 1e-3 * ((1 - s) / 8 + s) = 2.136075e-4
    np.testing.assert_allclose(mid, [1.0, 2.136075e-4], rtol=2e-6)


def test_rope_llama3_llama31_8b_table():
    sc = N.RopeScaling.from_hf(
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    )
    got = N.rope_inv_freq(128, 500000.0, sc)
    base = [500000.0 ** (-i / 128) for i in range(0, 128, 2)]
    np.testing.assert_allclose(got, llama3_ref(base, 8.0, 1.0, 4.0, 8192), rtol=2e-6)
    assert got[0] == 1.0 and got[-1] < base[-1]


def test_rope_linear_scaling_is_positions_over_factor():
    sc = N.RopeScaling("linear", factor=4.0)
    x = rnd((1, 16), 17)
    np.testing.assert_allclose(
        N.rope(x, [8], head_dim=8, theta=100.0, scaling=sc),
        N.rope(x, [2], head_dim=8, theta=100.0),
        rtol=1e-6,
        atol=1e-6,
    )
    as_ir_attr = {"kind": "linear", "factor": 4.0}  # RopeScaling(attr.kind, **attr.values())
    assert np.array_equal(
        N.rope(x, [8], head_dim=8, theta=100.0, scaling=as_ir_attr),
        N.rope(x, [8], head_dim=8, theta=100.0, scaling=sc),
    )
    assert N.RopeScaling.from_hf({"type": "linear", "factor": 2.0}) == N.RopeScaling("linear", 2.0)
    assert N.RopeScaling.from_hf(None) is None
    assert N.RopeScaling.from_hf({"rope_type": "default"}) is None
    with pytest.raises(ValueError, match="unsupported"):
        N.RopeScaling.from_hf({"rope_type": "yarn", "factor": 2.0})


def rope_ref_complex(x, pos, head_dim, theta, inv=None):
    """Rotate each (i, i + d/2) pair as the complex number x_i + j x_{i+d/2}."""
    x = f64(x)
    b, f = x.shape
    half = head_dim // 2
    if inv is None:
        inv = [theta ** (-2 * i / head_dim) for i in range(half)]
    y = np.empty_like(x)
    for e in range(b):
        for h in range(f // head_dim):
            o = h * head_dim
            for i in range(half):
                z = complex(x[e, o + i], x[e, o + i + half]) * complex(
                    math.cos(pos[e] * inv[i]), math.sin(pos[e] * inv[i])
                )
                y[e, o + i], y[e, o + i + half] = z.real, z.imag
    return y


def test_rope_matches_complex_rotation_per_entry_positions():
    x = rnd((3, 3 * 8), 18)
    pos = [0, 5, 37]
    got = N.rope(x, np.array(pos), head_dim=8, theta=10000.0)
    np.testing.assert_allclose(got, rope_ref_complex(x, pos, 8, 10000.0), rtol=1e-5, atol=2e-5)
    assert np.array_equal(got[0], x[0])  # position 0 is the identity
    xb = x.astype(BF16)
    gb = N.rope(xb, pos, head_dim=8, theta=10000.0)
    assert gb.dtype == BF16
    np.testing.assert_allclose(
        f64(gb), rope_ref_complex(xb, pos, 8, 10000.0), rtol=BF16_RTOL, atol=1e-2
    )


def test_rope_with_llama3_scaling_uses_scaled_freqs():
    sc = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    x = rnd((2, 16), 19)
    inv = N.rope_inv_freq(16, 10000.0, sc)
    got = N.rope(x, [3, 200], head_dim=16, theta=10000.0, scaling=sc)
    np.testing.assert_allclose(
        got, rope_ref_complex(x, [3, 200], 16, None, inv=f64(inv)), rtol=1e-4, atol=1e-4
    )
    assert not np.allclose(got, N.rope(x, [3, 200], head_dim=16, theta=10000.0))


# ------------------------------------------------------------------------------------------
# kv cache and attention
# ------------------------------------------------------------------------------------------


def test_kv_cache_write_inplace_and_copy():
    cache = np.zeros((2, 3, 6, 4), BF16)
    new = rnd((2, 12), 20)
    pos = [1, 5]
    out = N.kv_cache_write(cache, new, pos)
    assert out is not cache and not np.any(f64(cache))  # copying form leaves input alone
    same = N.kv_cache_write_(cache, new, pos)
    assert same is cache  # in-place form aliases
    assert np.array_equal(out.view(np.uint16), cache.view(np.uint16))
    for b in range(2):
        for h in range(3):
            for s in range(6):
                want = (
                    new[b, h * 4 : (h + 1) * 4].astype(BF16) if s == pos[b] else np.zeros(4, BF16)
                )
                assert np.array_equal(cache[b, h, s].view(np.uint16), want.view(np.uint16))
    # works on a slice of a stacked [layers, ...] cache, writing through to the stack
    stacked = np.zeros((4, 2, 3, 6, 4), np.float32)
    N.kv_cache_write_(stacked[2], new, pos)
    assert np.count_nonzero(stacked[2]) == np.count_nonzero(new) and not stacked[[0, 1, 3]].any()
    assert N.kv_cache_write(stacked[1], new, pos, inplace=True) is not None and stacked[1].any()
    with pytest.raises(IndexError, match="max_context 6"):
        N.kv_cache_write(cache, new, [0, 6])
    with pytest.raises(ValueError, match="expected"):
        N.kv_cache_write(cache, new[:, :8], pos)


def attention_ref(q, kc, vc, pos, nh, kvh, d, scale=None, window=None):
    """Per-head loops over the WHOLE cache with an explicit mask, float64."""
    q, kc, vc = f64(q), f64(kc), f64(vc)
    b, _, s, _ = kc.shape
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = np.zeros((b, nh * d))
    for e in range(b):
        for h in range(nh):
            kv = h // (nh // kvh)
            qh = q[e, h * d : (h + 1) * d]
            scores = []
            for t in range(s):
                visible = t <= pos[e] and (window is None or t > pos[e] - window)
                scores.append(float(qh @ kc[e, kv, t]) * scale if visible else -math.inf)
            m = max(scores)
            p = [math.exp(v - m) if v != -math.inf else 0.0 for v in scores]
            z = sum(p)
            out[e, h * d : (h + 1) * d] = sum(p[t] / z * vc[e, kv, t] for t in range(s))
    return out


def make_attn(b, kvh, g, d, s, seed, dtype=np.float32):
    nh = kvh * g
    return (
        rnd((b, nh * d), seed, dtype=dtype),
        rnd((b, kvh, s, d), seed + 1, dtype=dtype),
        rnd((b, kvh, s, d), seed + 2, dtype=dtype),
        nh,
    )


def test_attention_gqa_per_entry_positions():
    q, kc, vc, nh = make_attn(3, 2, 3, 8, 10, 21)
    pos = [0, 4, 9]
    got = N.attention(q, kc, vc, pos, num_heads=nh, num_kv_heads=2, head_dim=8)
    np.testing.assert_allclose(got, attention_ref(q, kc, vc, pos, nh, 2, 8), rtol=1e-5, atol=1e-6)
    # pos 0 attends only row 0: output of head h is v[kv(h), 0]
    for h in range(nh):
        np.testing.assert_allclose(got[0, h * 8 : (h + 1) * 8], vc[0, h // 3, 0], rtol=1e-6)


def test_attention_gqa_grouping_is_contiguous():
    b, kvh, g, d, s = 1, 2, 2, 4, 3
    q = np.ones((b, kvh * g * d), np.float32)
    kc = np.zeros((b, kvh, s, d), np.float32)
    vc = np.zeros((b, kvh, s, d), np.float32)
    vc[0, 0] = 1.0
    vc[0, 1] = 2.0
    got = N.attention(q, kc, vc, [2], num_heads=4, num_kv_heads=2, head_dim=4)
    # heads 0,1 -> kv head 0 ; heads 2,3 -> kv head 1 (h // group, not h % kv_heads)
    assert got.reshape(4, 4)[:, 0].tolist() == [1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("pos", [0, 2, 3, 4, 5, 9])
def test_attention_sliding_window_edges(pos):
    window = 4
    q, kc, vc, nh = make_attn(1, 1, 2, 4, 10, 22)
    got = N.attention(
        q, kc, vc, [pos], num_heads=nh, num_kv_heads=1, head_dim=4, sliding_window=window
    )
    want = attention_ref(q, kc, vc, [pos], nh, 1, 4, window=window)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # rows outside [pos - window + 1, pos] do not matter
    kc2, vc2 = kc.copy(), vc.copy()
    outside = [t for t in range(10) if not (pos - window < t <= pos)]
    kc2[:, :, outside] = 1e3
    vc2[:, :, outside] = -1e3
    got2 = N.attention(
        q, kc2, vc2, [pos], num_heads=nh, num_kv_heads=1, head_dim=4, sliding_window=window
    )
    assert np.array_equal(got, got2)
    if pos >= window:  # the first row inside the window matters
        kc3 = kc.copy()
        kc3[:, :, pos - window + 1] += 1.0
        assert not np.array_equal(
            got,
            N.attention(
                q, kc3, vc, [pos], num_heads=nh, num_kv_heads=1, head_dim=4, sliding_window=window
            ),
        )


def test_attention_window_mixed_batch_scale_and_bf16():
    q, kc, vc, nh = make_attn(2, 2, 2, 8, 12, 23, dtype=BF16)
    pos = [3, 11]
    got = N.attention(
        q, kc, vc, pos, num_heads=nh, num_kv_heads=2, head_dim=8, scale=0.3, sliding_window=4
    )
    assert got.dtype == BF16
    want = attention_ref(q, kc, vc, pos, nh, 2, 8, scale=0.3, window=4)
    np.testing.assert_allclose(f64(got), want, rtol=BF16_RTOL, atol=2e-3)
    with pytest.raises(ValueError, match="multiple"):
        N.attention(q, kc, vc, pos, num_heads=3, num_kv_heads=2, head_dim=8)
    with pytest.raises(IndexError):
        N.attention(q, kc, vc, [3, 12], num_heads=nh, num_kv_heads=2, head_dim=8)


@given(
    b=st.integers(1, 3),
    kvh=st.integers(1, 3),
    g=st.integers(1, 3),
    d=st.sampled_from([2, 4, 8]),
    s=st.integers(1, 9),
    window=st.none() | st.integers(1, 10),
    data=st.data(),
)
def test_attention_hypothesis(b, kvh, g, d, s, window, data):
    pos = data.draw(st.lists(st.integers(0, s - 1), min_size=b, max_size=b))
    q, kc, vc, nh = make_attn(b, kvh, g, d, s, data.draw(st.integers(0, 1000)))
    got = N.attention(
        q, kc, vc, pos, num_heads=nh, num_kv_heads=kvh, head_dim=d, sliding_window=window
    )
    np.testing.assert_allclose(
        got, attention_ref(q, kc, vc, pos, nh, kvh, d, window=window), rtol=1e-4, atol=1e-5
    )


# ------------------------------------------------------------------------------------------
# mixture of experts
# ------------------------------------------------------------------------------------------


def moe_ref(x, router, gate, up, down, top_k, normalize):
    """Straightforward per-entry loops in float64 (storage f32 in the tests that use it)."""
    x, router, gate, up, down = map(f64, (x, router, gate, up, down))
    out = np.zeros_like(x)
    chosen = []
    for e in range(x.shape[0]):
        logits = [float(router[j] @ x[e]) for j in range(router.shape[0])]
        m = max(logits)
        p = [math.exp(v - m) for v in logits]
        p = [v / sum(p) for v in p]
        order = sorted(range(len(p)), key=lambda j: (-p[j], j))[:top_k]
        ws = [p[j] for j in order]
        if normalize:
            ws = [w / sum(ws) for w in ws]
        chosen.append(order)
        for j, w in zip(order, ws):
            g = gate[j] @ x[e]
            h = g / (1 + np.exp(-g)) * (up[j] @ x[e])
            out[e] += w * (down[j] @ h)
    return out, chosen


def moe_weights(e, h, i, seed, dtype=np.float32):
    return (
        rnd((e, i, h), seed, 0.5, dtype),
        rnd((e, i, h), seed + 1, 0.5, dtype),
        rnd((e, h, i), seed + 2, 0.5, dtype),
    )


def test_moe_forced_routing():
    e, h, i = 4, 8, 6
    gate, up, down = moe_weights(e, h, i, 24)
    x = np.zeros((3, h), np.float32)
    x[0, 0] = x[1, 1] = x[2, 2] = 1.0
    router = np.zeros((e, h), np.float32)
    router[2, 0], router[0, 0] = 9.0, 8.0  # entry 0 -> experts 2 then 0
    router[3, 1], router[1, 1] = 9.0, 8.0  # entry 1 -> 3, 1
    router[1, 2], router[3, 2] = 9.0, 8.5  # entry 2 -> 1, 3
    sel = N.moe_selected_experts(x, router, top_k=2)
    assert sel.tolist() == [[2, 0], [3, 1], [1, 3]]
    for norm in (True, False):
        got = N.moe(x, router, gate, up, down, top_k=2, normalize_top_k=norm)
        want, chosen = moe_ref(x, router, gate, up, down, 2, norm)
        assert chosen == sel.tolist()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    _, w = N.moe_route(x, router, top_k=2, normalize_top_k=True)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    _, w = N.moe_route(x, router, top_k=2, normalize_top_k=False)
    assert np.all(w.sum(-1) < 1.0)


@pytest.mark.parametrize("blocks", [1, 2, 3, 6])
def test_moe_split_over_intermediate_blocks_equals_moe(blocks):
    """moe_partial over blocks of the intermediate dim, merged by moe_combine, is moe (f32
    partial sums re-associate only; on these inputs bit-identical)."""
    e, h, i = 4, 8, 6
    gate, up, down = moe_weights(e, h, i, 31, BF16)
    x, router = rnd((3, h), 32, dtype=BF16), rnd((e, h), 33, dtype=BF16)
    kw = {"top_k": 2, "normalize_top_k": True}
    n = i // blocks
    parts = np.stack(
        [
            N.moe_partial(
                x, router, gate[:, j : j + n], up[:, j : j + n], down[:, :, j : j + n], **kw
            )
            for j in range(0, i, n)
        ],
        axis=1,
    )
    assert parts.dtype == np.float32 and parts.shape == (3, blocks, 2, h)
    got = N.moe_combine(x, router, parts, **kw)
    assert np.array_equal(f64(got), f64(N.moe(x, router, gate, up, down, **kw)))


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("rows", [1, 2, 4, 8])
def test_attention_split_over_context_blocks_equals_attention(rows, window):
    """attention_partial over context blocks, merged by attention_combine, is attention: rows
    after each entry's position and before its window are masked per block, wholly masked
    blocks drop out."""
    b, kvh, s, d, nh = 3, 2, 8, 4, 4
    q = rnd((b, nh * d), 41, dtype=BF16)
    k, v = rnd((b, kvh, s, d), 42, dtype=BF16), rnd((b, kvh, s, d), 43, dtype=BF16)
    pos = np.array([0, 3, 7])
    kw = {"num_heads": nh, "num_kv_heads": kvh, "head_dim": d, "sliding_window": window}
    parts = np.stack(
        [
            N.attention_partial(
                q, k[:, :, j : j + rows], v[:, :, j : j + rows], pos, **kw, block_start=j
            )
            for j in range(0, s, rows)
        ],
        axis=1,
    )
    got = N.attention_combine(parts)
    want = N.attention(q, k, v, pos, **kw)
    assert got.dtype == BF16
    np.testing.assert_allclose(f64(got), f64(want), rtol=2**-7, atol=1e-6)
    # a block wholly after every position contributes nothing
    assert np.all(np.isneginf(parts[0, 1:, :, d]))


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("stride", [2, 4])
def test_attention_over_interleaved_caches_equals_attention(stride, window):
    """A cache dealt over `stride` sockets (position p on socket p % stride, at row
    p // stride): each socket writes only the new rows whose position it holds, its
    attention_partial blocks (row_stride = stride) see only those positions, and the
    combined partials of all sockets (and of several blocks per socket) are attention."""
    b, kvh, s, d, nh = 3, 2, 8, 4, 4
    q = rnd((b, nh * d), 51, dtype=BF16)
    k, v = rnd((b, kvh, s, d), 52, dtype=BF16), rnd((b, kvh, s, d), 53, dtype=BF16)
    pos = np.array([0, 5, 7])
    new = rnd((b, kvh * d), 54, dtype=BF16)
    whole_k = N.kv_cache_write(k, new, pos)
    kw = {"num_heads": nh, "num_kv_heads": kvh, "head_dim": d, "sliding_window": window}
    rows = s // stride
    parts = []
    for socket in range(stride):
        local_k = N.kv_cache_write(
            k[:, :, socket::stride], new, pos, row_offset=socket, row_stride=stride
        )
        assert np.array_equal(f64(local_k), f64(whole_k[:, :, socket::stride]))
        local_v = v[:, :, socket::stride]
        for j in range(0, rows, 1):  # one row per block: some blocks wholly masked
            parts.append(
                N.attention_partial(
                    q,
                    local_k[:, :, j : j + 1],
                    local_v[:, :, j : j + 1],
                    pos,
                    **kw,
                    block_start=socket + j * stride,
                    row_stride=stride,
                )
            )
    got = N.attention_combine(np.stack(parts, axis=1))
    want = N.attention(q, whole_k, v, pos, **kw)
    np.testing.assert_allclose(f64(got), f64(want), rtol=2**-7, atol=1e-6)
    # each socket merges its blocks into one partial first (what it sends its group)
    merged = [
        N.attention_merge(np.stack(parts[i * rows : (i + 1) * rows], axis=1)) for i in range(stride)
    ]
    assert merged[0].shape == (b, 1, nh, d + 2) and merged[0].dtype == np.float32
    again = N.attention_combine(np.concatenate(merged, axis=1))
    np.testing.assert_allclose(f64(again), f64(want), rtol=2**-7, atol=1e-6)
    with pytest.raises(IndexError, match="max_context 8"):
        N.kv_cache_write(k[:, :, ::stride], new, [0, 1, 8], row_offset=0, row_stride=stride)


def test_moe_ties_pick_lower_index():
    e, h = 5, 4
    router = np.zeros((e, h), np.float32)
    router[[1, 3, 4], 0] = 2.0  # experts 1, 3, 4 tie for the top
    x = np.array([[1.0, 0, 0, 0]], np.float32)
    assert N.moe_selected_experts(x, router, top_k=2).tolist() == [[1, 3]]
    assert N.moe_selected_experts(np.zeros((1, h), np.float32), router, top_k=3).tolist() == [
        [0, 1, 2]
    ]


def test_moe_single_expert_equals_dense_mlp_bf16():
    e, h, i = 3, 8, 12
    gate, up, down = moe_weights(e, h, i, 25, BF16)
    x = rnd((2, h), 26, dtype=BF16)
    router = np.zeros((e, h), BF16)
    router[1, :] = 1.0
    x = np.abs(f64(x)).astype(np.float32).astype(BF16)  # positive: logit of expert 1 wins
    got = N.moe(x, router, gate, up, down, top_k=1, normalize_top_k=True, num_experts=3)
    dense = N.linear(N.mul(N.silu(N.linear(x, gate[1])), N.linear(x, up[1])), down[1])
    assert got.dtype == BF16
    assert np.array_equal(got.view(np.uint16), dense.view(np.uint16))


@settings(max_examples=15)
@given(b=st.integers(1, 4), e=st.integers(1, 6), k=st.integers(1, 6), seed=st.integers(0, 999))
def test_moe_hypothesis(b, e, k, seed):
    k = min(k, e)
    h, i = 6, 5
    gate, up, down = moe_weights(e, h, i, seed)
    x, router = rnd((b, h), seed + 3), rnd((e, h), seed + 4)
    got = N.moe(x, router, gate, up, down, top_k=k, normalize_top_k=True)
    want, chosen = moe_ref(x, router, gate, up, down, k, True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# dispatch
# ------------------------------------------------------------------------------------------


def test_ops_table():
    names = {
        "embedding",
        "rms_norm",
        "layer_norm",
        "linear",
        "rope",
        "kv_cache_write",
        "attention",
        "attention_partial",
        "attention_combine",
        "attention_merge",
        "silu",
        "gelu",
        "add",
        "mul",
        "softmax",
        "argmax",
        "moe",
        "moe_partial",
        "moe_combine",
        "all_reduce",
        "all_gather",
    }
    assert set(N.OPS) == names and all(callable(f) for f in N.OPS.values())
    x = rnd((2, 4), 27)
    assert np.array_equal(N.OPS["add"](x, x), N.add(x, x))
    assert np.array_equal(N.OPS["all_reduce"](x, x, out_dtype="f32"), N.add(x, x))
    assert N.OPS["rms_norm"](x, np.ones(4, np.float32), eps=1e-6).shape == (2, 4)


def test_no_compiler_imports():
    import ast
    import pathlib

    from rdu_compiler import simulator

    root = pathlib.Path(simulator.__file__).parent
    for fname in ("numerics.py", "weights.py"):
        tree = ast.parse((root / fname).read_text())
        mods = set()
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:  # our own modules by layer (rdu_compiler.<layer>), others by root
                parts = name.split(".")
                mods.add(".".join(parts[:2]) if parts[0] == "rdu_compiler" else parts[0])
        allowed = {
            "numpy",
            "ml_dtypes",
            "safetensors",
            "rdu_compiler.simulator",
            "__future__",
            "math",
            "dataclasses",
            "typing",
            "hashlib",
            "json",
            "os",
            "re",
            "struct",
            "abc",
            "collections",
            "pathlib",
        }
        assert mods <= allowed, (fname, mods - allowed)
