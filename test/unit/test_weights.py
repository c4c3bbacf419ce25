"""Seeded init by name, safetensors loading (HF layout), weight sources and their errors."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdu_compiler.simulator import weights as W
from rdu_compiler.simulator.numerics import round_to

BF16 = np.dtype(ml_dtypes.bfloat16)


def bits(a):
    a = np.asarray(a)
    return a.view(np.uint16) if a.dtype == BF16 else a


def same(a, b):
    return np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(bits(a), bits(b))


# ------------------------------------------------------------------------------------------
# seeded init
# ------------------------------------------------------------------------------------------

NAMES = {
    "model.embed_tokens.weight": (50, 16),
    "model.layers.0.self_attn.q_proj.weight": (16, 16),
    "model.layers.0.self_attn.q_proj.bias": (16,),
    "model.layers.0.input_layernorm.weight": (16,),
    "model.layers.0.self_attn.q_norm.weight": (4,),
    "model.layers.1.mlp.down_proj.weight": (16, 40),
    "model.norm.weight": (16,),
    "lm_head.weight": (50, 16),
}


def test_init_independent_of_call_order():
    fwd = {n: W.init_weight(n, s, "bf16", seed=3) for n, s in NAMES.items()}
    rev = {n: W.init_weight(n, NAMES[n], "bf16", seed=3) for n in reversed(list(NAMES))}
    W.init_weight("something.else.weight", (7, 7), "f32", seed=3)  # interleaved call
    again = {n: W.init_weight(n, s, "bf16", seed=3) for n, s in NAMES.items()}
    for n in NAMES:
        assert same(fwd[n], rev[n]) and same(fwd[n], again[n])


def test_init_depends_on_name_seed_shape():
    a = W.init_weight("model.layers.0.mlp.up_proj.weight", (8, 8), "f32", 0)
    b = W.init_weight("model.layers.1.mlp.up_proj.weight", (8, 8), "f32", 0)
    c = W.init_weight("model.layers.0.mlp.up_proj.weight", (8, 8), "f32", 1)
    d = W.init_weight("model.layers.0.mlp.up_proj.weight", (4, 16), "f32", 0)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a.ravel(), d.ravel())


def test_init_dtype_is_rounded_f32():
    n, s = "model.layers.0.self_attn.k_proj.weight", (12, 8)
    f = W.init_weight(n, s, "f32", 5)
    b = W.init_weight(n, s, "bf16", 5)
    assert f.dtype == np.float32 and b.dtype == BF16
    assert same(b, f.astype(BF16))
    assert W.init_weight(n, s, np.float16, 5).dtype == np.float16
    with pytest.raises(W.WeightError, match="non-floating"):
        W.init_weight(n, s, "i32", 5)


def test_init_distributions():
    w = W.init_weight("model.layers.0.mlp.gate_proj.weight", (256, 400), "f32", 0)
    assert abs(w.std() - 1 / 20) < 0.002 and abs(w.mean()) < 0.002
    e = W.init_weight("model.embed_tokens.weight", (300, 64), "f32", 0)
    assert abs(e.std() - 1.0) < 0.03
    for name in (
        "model.norm.weight",
        "model.layers.2.post_attention_layernorm.weight",
        "model.layers.0.self_attn.k_norm.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.ln_f.weight",
    ):
        nw = W.init_weight(name, (2000,), "f32", 0)
        assert abs(nw.mean() - 1.0) < 0.02 and 0.05 < nw.std() < 0.15, name
    bias = W.init_weight("model.layers.0.self_attn.v_proj.bias", (2000,), "f32", 0)
    assert abs(bias.mean()) < 0.02 and 0.05 < bias.std() < 0.15
    assert W.init_std("model.layers.0.block_sparse_moe.experts.gate", (8, 32, 64))[1] == 1 / 8


def test_init_tiny_model_activations_stay_order_one():
    from rdu_compiler.simulator import numerics as N

    h = 32
    x = N.rms_norm(
        W.init_weight("model.embed_tokens.weight", (10, h), "f32", 0)[:4],
        W.init_weight("model.layers.0.input_layernorm.weight", (h,), "f32", 0),
    )
    for name in ("q_proj", "o_proj"):
        x = N.linear(x, W.init_weight(f"model.layers.0.self_attn.{name}.weight", (h, h), "f32", 0))
    assert 0.3 < x.std() < 3.0


# ------------------------------------------------------------------------------------------
# safetensors round trips
# ------------------------------------------------------------------------------------------


def sample_tensors():
    rng = np.random.default_rng(0)
    return {
        "model.embed_tokens.weight": rng.standard_normal((10, 8)).astype(np.float32).astype(BF16),
        "model.norm.weight": rng.standard_normal(8).astype(np.float32),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((6, 8)).astype(np.float16),
        "counts": np.arange(5, dtype=np.int32),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(2.5, np.float32),
    }


def check_all(ckpt, tensors):
    assert set(ckpt) == set(tensors) and len(ckpt) == len(tensors)
    for n, t in tensors.items():
        assert same(ckpt[n], t), n
        assert ckpt.shape(n) == t.shape and ckpt.dtype(n) == t.dtype


def test_single_file_roundtrip_and_safe_open_compat(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    t = sample_tensors()
    p = W.save_safetensors(tmp_path / "w.safetensors", t, metadata={"note": "x"})
    ck = W.load_safetensors(p)
    check_all(ck, t)
    assert ck.metadata["note"] == "x" and ck.file_of("counts") == p
    with safe_open(str(p), framework="numpy") as f:  # our files are real safetensors files
        assert same(f.get_tensor("model.embed_tokens.weight"), t["model.embed_tokens.weight"])
    save_file({k: v for k, v in t.items() if k != "scalar"}, str(tmp_path / "lib.safetensors"))
    check_all(
        W.load_safetensors(tmp_path / "lib.safetensors"),
        {k: v for k, v in t.items() if k != "scalar"},
    )


def test_raw_reader_matches_safe_open(tmp_path, monkeypatch):
    t = sample_tensors()
    p = W.save_safetensors(tmp_path / "w.safetensors", t)
    raw_calls = []
    real_raw = W._read_raw
    monkeypatch.setattr(
        W, "_read_raw", lambda h, n, i=None: raw_calls.append(n) or real_raw(h, n, i)
    )
    via_st = {n: W.load_safetensors(p)[n] for n in t}
    assert "model.embed_tokens.weight" not in raw_calls  # this safetensors reads bf16 itself
    monkeypatch.setattr(W, "_read_raw", real_raw)
    monkeypatch.setattr(W, "_USE_SAFE_OPEN", False)
    ck = W.load_safetensors(p)
    for n in t:
        assert same(ck[n], via_st[n]), n
    assert same(
        ck.read("model.embed_tokens.weight", (slice(2, 5), slice(None, None, 2))),
        t["model.embed_tokens.weight"][2:5, ::2],
    )


def test_slices_read_lazily(tmp_path):
    t = sample_tensors()
    ck = W.load_safetensors(W.save_safetensors(tmp_path / "w.safetensors", t))
    assert same(
        ck.read("model.embed_tokens.weight", (slice(3, 7),)), t["model.embed_tokens.weight"][3:7]
    )
    assert same(
        ck.read("model.layers.0.mlp.up_proj.weight", (slice(None), slice(4, 8))),
        t["model.layers.0.mlp.up_proj.weight"][:, 4:8],
    )


def test_model_folder_single_and_sharded(tmp_path):
    t = sample_tensors()
    folder = W.save_safetensors(tmp_path / "single", t)
    assert (folder / "model.safetensors").is_file()
    check_all(W.load_safetensors(folder), t)

    sharded = W.save_safetensors(tmp_path / "sharded", t, max_shard_bytes=100)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and all(s.startswith("model-0000") for s in shards)
    ck = W.load_safetensors(sharded)
    check_all(ck, t)
    assert ck.file_of("model.norm.weight").name == index["weight_map"]["model.norm.weight"]
    check_all(W.load_safetensors(sharded / "model.safetensors.index.json"), t)


@settings(max_examples=10)
@given(
    shapes=st.lists(st.lists(st.integers(0, 5), max_size=3), min_size=1, max_size=4),
    dt=st.sampled_from(["bf16", "f32", "f16"]),
)
def test_roundtrip_hypothesis(tmp_path_factory, shapes, dt):
    d = tmp_path_factory.mktemp("h")
    t = {
        f"t{i}": W.init_weight(f"t{i}.weight", s, dt, 0)
        if len(s) >= 1 and np.prod(s) > 0
        else np.zeros(s, dtype=round_to(np.zeros(1), dt).dtype)
        for i, s in enumerate(shapes)
    }
    check_all(W.load_safetensors(W.save_safetensors(d / "m", t, max_shard_bytes=64)), t)


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def test_error_missing_paths(tmp_path):
    with pytest.raises(W.WeightError, match="not found.*nope.safetensors"):
        W.load_safetensors(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(W.WeightError, match="no safetensors checkpoint in folder"):
        W.load_safetensors(tmp_path / "empty")


def test_error_corrupt_files(tmp_path):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\x01\x02\x03")
    with pytest.raises(W.WeightError, match="too short"):
        W.load_safetensors(p)
    p = tmp_path / "trunc_header.safetensors"
    p.write_bytes(struct.pack("<Q", 1000) + b'{"a":')
    with pytest.raises(W.WeightError, match="exceeds the file size"):
        W.load_safetensors(p)
    p = tmp_path / "badjson.safetensors"
    p.write_bytes(struct.pack("<Q", 8) + b"{not js}")
    with pytest.raises(W.WeightError, match="not valid JSON"):
        W.load_safetensors(p)
    good = W.save_safetensors(tmp_path / "good.safetensors", {"a": np.ones((4, 4), np.float32)})
    p = tmp_path / "trunc_data.safetensors"
    p.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(W.WeightError, match="tensor 'a'.*truncated"):
        W.load_safetensors(p)
    p = tmp_path / "baddtype.safetensors"
    h = json.dumps({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}).encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"\0")
    with pytest.raises(W.WeightError, match="unsupported dtype Q7"):
        W.load_safetensors(p)


def test_error_missing_tensor_names_file(tmp_path):
    p = W.save_safetensors(tmp_path / "w.safetensors", {"a": np.ones(2, np.float32)})
    with pytest.raises(
        W.WeightError, match=r"'model.norm.weight' not found in checkpoint .*w\.safetensors"
    ):
        W.load_safetensors(p)["model.norm.weight"]
    src = W.CheckpointWeights(p)
    with pytest.raises(W.WeightError, match="'b' not found"):
        src.get("b", (2,), "f32")
    assert src.has("a") and not src.has("b")


def test_error_shape_mismatch(tmp_path):
    p = W.save_safetensors(tmp_path / "w.safetensors", {"a": np.ones((2, 3), np.float32)})
    with pytest.raises(
        W.WeightError, match=r"'a' in .*w\.safetensors has shape \[2, 3\], expected \[3, 2\]"
    ):
        W.CheckpointWeights(p).get("a", (3, 2), "f32")


def test_error_sharded_index_problems(tmp_path):
    folder = W.save_safetensors(tmp_path / "m", sample_tensors(), max_shard_bytes=100)
    index_p = folder / "model.safetensors.index.json"
    index = json.loads(index_p.read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (folder / victim).rename(folder / "moved.bin")
    with pytest.raises(W.WeightError, match=f"shard file .*{victim}.*not found"):
        W.load_safetensors(folder)
    (folder / "moved.bin").rename(folder / victim)
    index["weight_map"]["ghost.weight"] = victim
    index_p.write_text(json.dumps(index))
    with pytest.raises(W.WeightError, match="'ghost.weight' is listed in the index"):
        W.load_safetensors(folder)
    index_p.write_text("{oops")
    with pytest.raises(W.WeightError, match="corrupt checkpoint index"):
        W.load_safetensors(folder)


# ------------------------------------------------------------------------------------------
# weight sources
# ------------------------------------------------------------------------------------------


def test_checkpoint_source_converts_f32_to_bf16_rne(tmp_path):
    vals = np.array([1 + 2**-8, 1 + 3 * 2**-8, -2.0 - 2**-7 - 2**-12, 3.14159], np.float32)
    p = W.save_safetensors(tmp_path / "m", {"w": vals.reshape(2, 2)})
    src = W.CheckpointWeights(p)
    got = src.get("w", (2, 2), "bf16")
    assert got.dtype == BF16 and same(got, vals.reshape(2, 2).astype(BF16))
    assert np.asarray(got, np.float64).ravel()[:2].tolist() == [1.0, 1 + 4 * 2**-8]
    assert same(src.get("w", (2, 2), "bf16", index=(slice(1, 2),)), got[1:2])
    assert src.get("w", None, "f32").dtype == np.float32
    assert "checkpoint" in src.describe()


def test_random_source_and_open_weights(tmp_path):
    src = W.open_weights(seed=7)
    assert isinstance(src, W.RandomWeights)
    n = "model.layers.0.self_attn.o_proj.weight"
    assert same(src.get(n, (8, 8), "bf16"), W.init_weight(n, (8, 8), "bf16", 7))
    assert same(
        src.get(n, (8, 8), "bf16", index=(slice(0, 4),)), W.init_weight(n, (8, 8), "bf16", 7)[:4]
    )
    with pytest.raises(W.WeightError, match="needs its shape"):
        src.get(n)
    assert W.open_weights().seed == 0
    p = W.save_safetensors(tmp_path / "c.safetensors", {n: np.zeros((8, 8), np.float32)})
    assert isinstance(W.open_weights(p), W.CheckpointWeights)
    with pytest.raises(W.WeightError, match="not both"):
        W.open_weights(p, seed=1)


def test_checkpoint_and_random_agree_when_checkpoint_is_saved_init(tmp_path):
    """A checkpoint written from the seeded init binds exactly the same bits."""
    t = {n: W.init_weight(n, s, "bf16", 11) for n, s in NAMES.items()}
    ck = W.open_weights(W.save_safetensors(tmp_path / "m", t, max_shard_bytes=500))
    rs = W.open_weights(seed=11)
    for n, s in NAMES.items():
        assert same(ck.get(n, s, "bf16"), rs.get(n, s, "bf16"))
