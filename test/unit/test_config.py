"""frontend.config: presets, HF config.json parsing, normalization and error messages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rdu_compiler.frontend.config import (
    ARCHITECTURES,
    CHECKPOINT_NAMES,
    ConfigError,
    LayerKind,
    ModelConfig,
    RopeScaling,
    checkpoint_name,
    list_presets,
    load_model_config,
    parse_hf_config,
    read_config_dict,
)

PUBLIC = [
    "llama-2-7b",
    "llama-3.2-1b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "mistral-7b",
    "mixtral-8x7b",
    "qwen2.5-7b",
]
TINY = [
    "tiny-llama",
    "tiny-mistral",
    "tiny-qwen2",
    "tiny-mixtral",
    "tiny-qwen3",
    "tiny-alternating",
]


def write(tmp_path: Path, d, name: str = "config.json") -> Path:
    p = tmp_path / name
    p.write_text(d if isinstance(d, str) else json.dumps(d))
    return p


def tiny_dict(name: str = "tiny-llama", **changes) -> dict:
    d = read_config_dict(name)
    for k, v in changes.items():
        if v is DELETE:
            d.pop(k, None)
        else:
            d[k] = v
    return d


DELETE = object()


def load_err(tmp_path: Path, d, **kw) -> str:
    p = write(tmp_path, d)
    with pytest.raises(ConfigError) as ei:
        load_model_config(str(p), **kw)
    msg = str(ei.value)
    assert str(p) in msg  # every file error names its source
    return msg


# ------------------------------------------------------------------------------------------
# presets
# ------------------------------------------------------------------------------------------


def test_list_presets():
    assert list_presets() == sorted(PUBLIC + TINY)


@pytest.mark.parametrize("name", PUBLIC + TINY)
def test_every_preset_loads(name):
    c = load_model_config(name)
    assert c.name == name
    assert c.architecture in ARCHITECTURES
    assert len(c.layer_windows) == c.num_layers == len(c.layer_kinds)
    # Llama 2 was published in float16 (its config says so); steps compute in --dtype anyway
    assert c.hidden_act == "silu" and c.dtype == ("float16" if name == "llama-2-7b" else "bfloat16")
    hash(c)  # frozen, hashable
    # the preset is HF-shaped: model_type + architectures present
    d = read_config_dict(name)
    assert d["model_type"] == c.architecture and len(d["architectures"]) == 1


# preset, layers, hidden, interm, heads, kv heads, head dim, vocab, rope theta (ANCHORS table)
ANCHORS = [
    ("llama-2-7b", 32, 4096, 11008, 32, 32, 128, 32000, 10000.0),
    ("llama-3.2-1b", 16, 2048, 8192, 32, 8, 64, 128256, 500000.0),
    ("llama-3.1-8b", 32, 4096, 14336, 32, 8, 128, 128256, 500000.0),
    ("llama-3.1-70b", 80, 8192, 28672, 64, 8, 128, 128256, 500000.0),
    ("llama-3.1-405b", 126, 16384, 53248, 128, 8, 128, 128256, 500000.0),
    ("mistral-7b", 32, 4096, 14336, 32, 8, 128, 32000, 10000.0),
    ("mixtral-8x7b", 32, 4096, 14336, 32, 8, 128, 32000, 1e6),
    ("qwen2.5-7b", 28, 3584, 18944, 28, 4, 128, 152064, 1e6),
]


@pytest.mark.parametrize("row", ANCHORS, ids=[r[0] for r in ANCHORS])
def test_public_presets_match_anchors(row):
    name, layers, hidden, inter, heads, kv, hd, vocab, theta = row
    c = load_model_config(name)
    assert (
        c.num_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size,
        c.rope_theta,
    ) == (layers, hidden, inter, heads, kv, hd, vocab, theta)


def test_llama_details():
    c1 = load_model_config("llama-3.2-1b")
    assert c1.tie_word_embeddings
    assert c1.rope_scaling == RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)
    assert c1.lm_head_name == "model.embed_tokens.weight"
    assert "lm_head.weight" not in {t.name for t in c1.checkpoint_tensors()}
    for name in ("llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b"):
        c = load_model_config(name)
        assert c.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
        assert c.rms_norm_eps == 1e-5 and not c.tie_word_embeddings
        assert c.max_position_embeddings == 131072
        assert not (c.attention_bias or c.o_proj_bias or c.mlp_bias or c.qk_norm or c.is_moe)
        assert c.layer_windows == (None,) * c.num_layers
        assert len(set(c.layer_kinds)) == 1


def test_parameter_counts_match_published_totals():
    # ANCHORS: "8.03e9 params"; other totals from the model cards.
    assert load_model_config("llama-3.1-8b").num_parameters == 8_030_261_248
    assert load_model_config("llama-3.2-1b").num_parameters == 1_235_814_400
    # ANCHORS (GPU side): one Llama-2-7B-shaped bf16 expert is 13.48 GB in 291 tensors
    llama2 = load_model_config("llama-2-7b")
    assert (llama2.num_parameters * 2, len(llama2.checkpoint_tensors())) == (13_476_831_232, 291)
    assert round(load_model_config("llama-3.1-70b").num_parameters / 1e9, 1) == 70.6
    assert round(load_model_config("llama-3.1-405b").num_parameters / 1e9, 1) == 405.9
    assert round(load_model_config("mistral-7b").num_parameters / 1e9, 2) == 7.24
    mx = load_model_config("mixtral-8x7b")
    assert round(mx.num_parameters / 1e9, 1) == 46.7
    assert round(mx.num_active_parameters / 1e9, 1) == 12.9
    assert round(load_model_config("qwen2.5-7b").num_parameters / 1e9, 2) == 7.62


def test_llama8b_kv_bytes_anchor():
    # ANCHORS: 32 layers x 2 x 8 KV heads x 128 x 4096 x 2 bytes = 0.5 GiB
    c = load_model_config("llama-3.1-8b")
    assert c.num_layers * 2 * c.kv_dim * 4096 * 2 == 2**29


def test_mistral_qwen_mixtral_details():
    m = load_model_config("mistral-7b")
    assert m.layer_windows == (4096,) * 32 and m.max_position_embeddings == 32768
    assert m.rms_norm_eps == 1e-5
    mx = load_model_config("mixtral-8x7b")
    assert (mx.num_experts, mx.num_experts_per_tok, mx.norm_topk_prob) == (8, 2, True)
    assert mx.is_moe and mx.layer_windows == (None,) * 32
    q = load_model_config("qwen2.5-7b")
    assert q.attention_bias and not q.o_proj_bias and not q.tie_word_embeddings
    assert q.rms_norm_eps == 1e-6 and q.layer_windows == (None,) * 28
    assert q.q_dim == 3584 and q.kv_dim == 512


def test_tiny_presets():
    t = load_model_config("tiny-llama")
    assert (t.hidden_size, t.num_heads, t.num_kv_heads, t.head_dim, t.vocab_size) == (
        64,
        4,
        2,
        16,
        256,
    )
    assert t.rope_scaling.kind == "llama3" and t.tie_word_embeddings
    assert load_model_config("tiny-mistral").layer_windows == (8, 8, 8, 8)
    q2 = load_model_config("tiny-qwen2")
    assert q2.attention_bias and not q2.tie_word_embeddings
    mx = load_model_config("tiny-mixtral")
    assert (mx.num_experts, mx.num_experts_per_tok) == (4, 2)
    q3 = load_model_config("tiny-qwen3")
    assert q3.qk_norm and q3.head_dim == 32 and q3.q_dim == 128 != q3.hidden_size
    alt = load_model_config("tiny-alternating")
    assert alt.layer_windows == (8, None, 8, None)
    k = alt.layer_kinds
    assert k[0] == k[2] != k[1] == k[3]
    assert (k[0].label, k[1].label) == ("sliding8", "full")
    # tiny: all parameters well under a million
    assert all(load_model_config(n).num_parameters < 1_000_000 for n in TINY)


def test_preset_names_are_case_insensitive():
    assert load_model_config("Llama-3.1-8B") == load_model_config("llama-3.1-8b")


# ------------------------------------------------------------------------------------------
# file and folder forms, layers override
# ------------------------------------------------------------------------------------------


def test_config_json_path_and_folder(tmp_path):
    folder = tmp_path / "My-Model"
    folder.mkdir()
    write(folder, read_config_dict("llama-3.1-8b"))
    by_file = load_model_config(str(folder / "config.json"))
    by_folder = load_model_config(folder)
    assert by_file == by_folder
    assert by_file.name == by_folder.name == "My-Model"
    assert str(folder / "config.json") in by_file.source
    # equal to the preset in every field but the name
    assert dataclasses.replace(by_file, name="llama-3.1-8b") == load_model_config("llama-3.1-8b")


def test_other_json_file_name(tmp_path):
    p = write(tmp_path, read_config_dict("tiny-qwen2"), name="qwen.json")
    assert load_model_config(p).name == "qwen"


def test_layers_override():
    c = load_model_config("llama-3.1-8b", layers=2)
    assert c.num_layers == 2 and len(c.layer_windows) == 2 and len(c.layer_kinds) == 2
    assert {t.layer for t in c.checkpoint_tensors()} == {None, 0, 1}
    assert load_model_config("mistral-7b", layers=3).layer_windows == (4096,) * 3
    assert load_model_config("tiny-mistral", layers=6).layer_windows == (8,) * 6
    # explicit layer_types: first N layers; past the declared count, the pattern repeats
    assert load_model_config("tiny-alternating", layers=3).layer_windows == (8, None, 8)
    assert load_model_config("tiny-alternating", layers=1).layer_windows == (8,)
    assert load_model_config("tiny-alternating", layers=6).layer_windows == (8, None) * 3


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "4"])
def test_layers_override_invalid(bad):
    with pytest.raises(ConfigError, match=r"preset 'tiny-llama'.*layers: must be a positive"):
        load_model_config("tiny-llama", layers=bad)


# ------------------------------------------------------------------------------------------
# layer_windows semantics (as transformers interprets each field)
# ------------------------------------------------------------------------------------------


def _windows(**changes):
    return parse_hf_config(tiny_dict(**changes)).layer_windows


def test_windows_mistral():
    base = dict(model_type="mistral", architectures=["MistralForCausalLM"])
    assert _windows(**base, sliding_window=8) == (8,) * 4
    assert _windows(**base, sliding_window=None) == (None,) * 4
    # missing -> MistralConfig default 4096 on every layer
    assert _windows(**base, sliding_window=DELETE) == (4096,) * 4
    # mixtral: default null
    mx = dict(model_type="mixtral", architectures=["MixtralForCausalLM"])
    assert _windows(**mx, sliding_window=DELETE) == (None,) * 4
    assert _windows(**mx, sliding_window=16) == (16,) * 4


def test_windows_llama_ignores_sliding_fields():
    assert _windows(sliding_window=8, use_sliding_window=True) == (None,) * 4


def test_windows_qwen2():
    q = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], layer_types=DELETE)
    # use_sliding_window false (Qwen2.5-7B): no layer slides, whatever sliding_window says
    assert (
        _windows(**q, use_sliding_window=False, sliding_window=8, max_window_layers=0)
        == (None,) * 4
    )
    # missing use_sliding_window -> False
    assert _windows(**q, use_sliding_window=DELETE, sliding_window=8) == (None,) * 4
    # layers i >= max_window_layers slide
    assert _windows(**q, use_sliding_window=True, sliding_window=8, max_window_layers=2) == (
        None,
        None,
        8,
        8,
    )
    assert _windows(**q, use_sliding_window=True, sliding_window=8, max_window_layers=0) == (8,) * 4
    assert (
        _windows(**q, use_sliding_window=True, sliding_window=8, max_window_layers=28)
        == (None,) * 4
    )
    # sliding_window null with use_sliding_window: nothing to slide with
    assert (
        _windows(**q, use_sliding_window=True, sliding_window=None, max_window_layers=0)
        == (None,) * 4
    )


def test_windows_layer_types():
    q = dict(
        model_type="qwen2",
        architectures=["Qwen2ForCausalLM"],
        use_sliding_window=True,
        sliding_window=8,
        max_window_layers=0,
    )
    lt = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    assert _windows(**q, layer_types=lt) == (None, 8, 8, None)  # overrides max_window_layers
    # layer_types is ignored when use_sliding_window is false (config.sliding_window = None)
    assert _windows(**{**q, "use_sliding_window": False}, layer_types=lt) == (None,) * 4
    q3 = dict(q, model_type="qwen3", architectures=["Qwen3ForCausalLM"])
    assert _windows(**q3, layer_types=lt) == (None, 8, 8, None)


def test_layer_types_errors(tmp_path):
    q = dict(
        model_type="qwen2",
        architectures=["Qwen2ForCausalLM"],
        use_sliding_window=True,
        sliding_window=8,
    )
    msg = load_err(tmp_path, tiny_dict(**q, layer_types=["full_attention"] * 3))
    assert "layer_types" in msg and "3 entries" in msg and "num_hidden_layers is 4" in msg
    msg = load_err(tmp_path, tiny_dict(**q, layer_types=["chunked_attention"] * 4))
    assert "layer_types" in msg and "'chunked_attention'" in msg
    msg = load_err(
        tmp_path,
        tiny_dict(
            model_type="mistral",
            architectures=["MistralForCausalLM"],
            layer_types=["full_attention"] * 4,
        ),
    )
    assert "layer_types" in msg and "ignores" in msg


def test_effective_windows():
    c = load_model_config("mistral-7b")
    assert c.effective_windows(4096) == (None,) * 32
    assert c.effective_windows(8192) == (4096,) * 32


# ------------------------------------------------------------------------------------------
# checkpoint names and shapes
# ------------------------------------------------------------------------------------------


def test_dense_checkpoint_names():
    c = load_model_config("llama-3.1-8b")
    names = c.layer_tensor_names(3)
    assert names == {
        "input_norm": "model.layers.3.input_layernorm.weight",
        "q_proj": "model.layers.3.self_attn.q_proj.weight",
        "k_proj": "model.layers.3.self_attn.k_proj.weight",
        "v_proj": "model.layers.3.self_attn.v_proj.weight",
        "o_proj": "model.layers.3.self_attn.o_proj.weight",
        "post_attn_norm": "model.layers.3.post_attention_layernorm.weight",
        "gate_proj": "model.layers.3.mlp.gate_proj.weight",
        "up_proj": "model.layers.3.mlp.up_proj.weight",
        "down_proj": "model.layers.3.mlp.down_proj.weight",
    }
    shapes = {t.role: t.shape for t in c.layer_tensors(0)}
    assert shapes["q_proj"] == (4096, 4096) and shapes["k_proj"] == (1024, 4096)
    assert shapes["gate_proj"] == (14336, 4096) and shapes["down_proj"] == (4096, 14336)
    g = {t.role: t for t in c.global_tensors()}
    assert g["embed"].name == "model.embed_tokens.weight" and g["embed"].shape == (128256, 4096)
    assert g["final_norm"].name == "model.norm.weight"
    assert g["lm_head"].name == "lm_head.weight" == c.lm_head_name
    allt = c.checkpoint_tensors()
    assert allt[0].role == "embed" and allt[-1].role == "lm_head"
    assert len({t.name for t in allt}) == len(allt) == 2 + 9 * 32 + 1


def test_qwen_checkpoint_names():
    q2 = load_model_config("tiny-qwen2").layer_tensors(1)
    biases = {t.role: (t.name, t.shape) for t in q2 if t.role.endswith("_bias")}
    assert biases == {
        "q_bias": ("model.layers.1.self_attn.q_proj.bias", (64,)),
        "k_bias": ("model.layers.1.self_attn.k_proj.bias", (32,)),
        "v_bias": ("model.layers.1.self_attn.v_proj.bias", (32,)),
    }
    q3 = load_model_config("tiny-qwen3")
    t = {s.role: s for s in q3.layer_tensors(0)}
    assert t["q_norm"].name == "model.layers.0.self_attn.q_norm.weight" and t["q_norm"].shape == (
        32,
    )
    assert t["k_norm"].name == "model.layers.0.self_attn.k_norm.weight"
    assert t["q_proj"].shape == (128, 64) and t["o_proj"].shape == (64, 128)
    assert not any(r.endswith("_bias") for r in t)
    assert "lm_head.weight" not in {s.name for s in q3.checkpoint_tensors()}


def test_mixtral_checkpoint_names():
    c = load_model_config("tiny-mixtral")
    n = c.layer_tensor_names(2)
    assert n["router"] == "model.layers.2.block_sparse_moe.gate.weight"
    assert n["gate_proj.3"] == "model.layers.2.block_sparse_moe.experts.3.w1.weight"
    assert n["up_proj.3"] == "model.layers.2.block_sparse_moe.experts.3.w3.weight"
    assert n["down_proj.3"] == "model.layers.2.block_sparse_moe.experts.3.w2.weight"
    assert not any("mlp." in v for v in n.values())
    shapes = {(t.role, t.expert): t.shape for t in c.layer_tensors(0)}
    assert shapes[("router", None)] == (4, 64)
    assert shapes[("gate_proj", 0)] == (128, 64) and shapes[("down_proj", 0)] == (64, 128)


def test_llama_biases_follow_fields():
    c = parse_hf_config(tiny_dict(attention_bias=True, mlp_bias=True))
    roles = {t.role for t in c.layer_tensors(0)}
    assert {"q_bias", "k_bias", "v_bias", "o_bias", "gate_bias", "up_bias", "down_bias"} <= roles


def test_checkpoint_name_function_is_the_table():
    assert checkpoint_name("qwen2", "q_bias", 5) == "model.layers.5.self_attn.q_proj.bias"
    assert checkpoint_name("mixtral", "down_proj", 1, 7) == (
        "model.layers.1.block_sparse_moe.experts.7.w2.weight"
    )
    assert checkpoint_name("llama", "embed") == "model.embed_tokens.weight"
    assert set(CHECKPOINT_NAMES) == {"dense", "mixtral_moe"}
    with pytest.raises(KeyError):
        checkpoint_name("llama", "router", 0)
    with pytest.raises(KeyError):
        checkpoint_name("mixtral", "gate_proj", 0)  # needs an expert


def test_layer_kinds_group_identical_layers():
    c = load_model_config("llama-3.1-8b")
    kinds = c.layer_kinds
    assert len(set(kinds)) == 1 and isinstance(kinds[0], LayerKind)
    assert kinds[0].window is None and not kinds[0].is_sliding
    other = load_model_config("mistral-7b").layer_kinds[0]
    assert other != kinds[0] and other.label == "sliding4096"


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"],
)
def test_missing_required_field(tmp_path, key):
    msg = load_err(tmp_path, tiny_dict(**{key: DELETE}))
    assert f"{key}: missing required field" in msg


def test_missing_kv_heads(tmp_path):
    # Llama: missing means MHA (HF default None -> num_attention_heads)
    assert parse_hf_config(tiny_dict(num_key_value_heads=DELETE)).num_kv_heads == 4
    assert parse_hf_config(tiny_dict(num_key_value_heads=None)).num_kv_heads == 4
    # others: the HF class default is model-specific, so we require it
    msg = load_err(tmp_path, tiny_dict("tiny-mistral", num_key_value_heads=DELETE))
    assert "num_key_value_heads: missing required field" in msg


@pytest.mark.parametrize(
    "key,value,want",
    [
        ("hidden_size", "64", "expected an integer, got str '64'"),
        ("num_hidden_layers", 4.0, "expected an integer, got float 4.0"),
        ("vocab_size", True, "expected an integer, got bool True"),
        ("rms_norm_eps", "1e-5", "expected a number, got str '1e-5'"),
        ("tie_word_embeddings", "false", "expected true or false, got str 'false'"),
        ("hidden_act", 3, "expected a string, got int 3"),
    ],
)
def test_wrong_type(tmp_path, key, value, want):
    msg = load_err(tmp_path, tiny_dict(**{key: value}))
    assert f"{key}: {want}" in msg


@pytest.mark.parametrize(
    "key",
    [
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "vocab_size",
        "num_attention_heads",
        "max_position_embeddings",
    ],
)
def test_non_positive_sizes(tmp_path, key):
    for v in (0, -4):
        msg = load_err(tmp_path, tiny_dict(**{key: v}))
        assert f"{key}: must be positive, got {v}" in msg


def test_non_positive_floats(tmp_path):
    assert "rms_norm_eps: must be positive" in load_err(tmp_path, tiny_dict(rms_norm_eps=0))
    assert "rope_theta: must be positive" in load_err(tmp_path, tiny_dict(rope_theta=-1.0))


def test_unsupported_model_type(tmp_path):
    msg = load_err(tmp_path, tiny_dict(model_type="gpt2", architectures=DELETE))
    assert "model_type: unsupported model type 'gpt2'" in msg
    for a in ARCHITECTURES:
        assert a in msg
    msg = load_err(tmp_path, tiny_dict(model_type=DELETE, architectures=["GPT2LMHeadModel"]))
    assert "architectures: unsupported architecture 'GPT2LMHeadModel'" in msg
    assert "LlamaForCausalLM" in msg
    msg = load_err(tmp_path, tiny_dict(model_type=DELETE, architectures=DELETE))
    assert "model_type: missing required field" in msg
    msg = load_err(tmp_path, tiny_dict(architectures=["MistralForCausalLM"]))
    assert "architectures" in msg and "contradicts model_type 'llama'" in msg
    msg = load_err(tmp_path, tiny_dict(architectures=["LlamaForSequenceClassification"]))
    assert "architectures" in msg and "LlamaForSequenceClassification" in msg


def test_architecture_from_architectures_only():
    c = parse_hf_config(tiny_dict("tiny-qwen2", model_type=DELETE))
    assert c.architecture == "qwen2"


def test_inconsistent_heads(tmp_path):
    msg = load_err(tmp_path, tiny_dict(num_key_value_heads=3))
    assert "num_key_value_heads" in msg and "(4) is not a multiple of" in msg and "(3)" in msg
    msg = load_err(
        tmp_path, tiny_dict(head_dim=DELETE, num_attention_heads=6, num_key_value_heads=2)
    )
    assert "num_attention_heads" in msg and "hidden_size (64) is not divisible" in msg
    # with an explicit head_dim, hidden need not divide
    assert parse_hf_config(tiny_dict(num_attention_heads=6, num_key_value_heads=2)).q_dim == 96
    msg = load_err(tmp_path, tiny_dict(head_dim=15))
    assert "head_dim: must be even" in msg


def test_head_dim_defaults():
    assert parse_hf_config(tiny_dict(head_dim=DELETE)).head_dim == 16  # hidden / heads
    assert parse_hf_config(tiny_dict(head_dim=None)).head_dim == 16
    # Qwen3Config defaults head_dim to 128
    assert parse_hf_config(tiny_dict("tiny-qwen3", head_dim=DELETE)).head_dim == 128


def test_rope_scaling(tmp_path):
    lin = parse_hf_config(tiny_dict(rope_scaling={"type": "linear", "factor": 2.0}))
    assert lin.rope_scaling == RopeScaling("linear", 2.0)
    assert lin.rope_scaling.low_freq_factor is None
    assert parse_hf_config(tiny_dict(rope_scaling={"rope_type": "default"})).rope_scaling is None
    msg = load_err(tmp_path, tiny_dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}))
    assert "rope_scaling: unsupported rope scaling type 'yarn'" in msg
    assert "llama3" in msg and "linear" in msg
    msg = load_err(tmp_path, tiny_dict(rope_scaling={"rope_type": "dynamic", "factor": 4.0}))
    assert "'dynamic'" in msg
    msg = load_err(tmp_path, tiny_dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}))
    assert "rope_scaling" in msg and "low_freq_factor: missing required field" in msg
    msg = load_err(
        tmp_path,
        tiny_dict(
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 4.0,
                "high_freq_factor": 1.0,
                "original_max_position_embeddings": 32,
            }
        ),
    )
    assert "high_freq_factor: must exceed low_freq_factor" in msg
    msg = load_err(tmp_path, tiny_dict(rope_scaling="llama3"))
    assert "rope_scaling: expected an object or null" in msg


def test_rope_parameters_v5_form():
    d = tiny_dict(
        rope_scaling=DELETE,
        rope_theta=DELETE,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    c = parse_hf_config(d)
    assert c.rope_theta == 500000.0
    assert c.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    d = tiny_dict(
        rope_scaling=DELETE,
        rope_theta=DELETE,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    )
    c = parse_hf_config(d)
    assert c.rope_theta == 1e6 and c.rope_scaling is None


def test_hidden_act_refused(tmp_path):
    msg = load_err(tmp_path, tiny_dict(hidden_act="gelu"))
    assert "hidden_act: unsupported activation 'gelu'" in msg


def test_dtype(tmp_path):
    assert parse_hf_config(tiny_dict(torch_dtype="float32")).dtype == "float32"
    assert parse_hf_config(tiny_dict(torch_dtype=DELETE, dtype="float16")).dtype == "float16"
    assert parse_hf_config(tiny_dict(torch_dtype=DELETE)).dtype == "bfloat16"
    assert "torch_dtype: unsupported dtype 'int8'" in load_err(
        tmp_path, tiny_dict(torch_dtype="int8")
    )


def test_moe_errors(tmp_path):
    msg = load_err(tmp_path, tiny_dict("tiny-mixtral", num_experts_per_tok=5))
    assert "num_experts_per_tok: 5 exceeds num_local_experts (4)" in msg
    msg = load_err(tmp_path, tiny_dict("tiny-mixtral", num_local_experts=0))
    assert "num_local_experts: must be positive" in msg


def test_quantized_refused(tmp_path):
    msg = load_err(tmp_path, tiny_dict(quantization_config={"quant_method": "fbgemm_fp8"}))
    assert "quantization_config" in msg


def test_invalid_json(tmp_path):
    msg = load_err(tmp_path, '{\n  "vocab_size": 256,\n  "hidden_size": 64,,\n}')
    assert "invalid JSON at line 3 column 21"  # the second comma in msg
    msg = load_err(tmp_path, "[1, 2]")
    assert "expected a JSON object" in msg


def test_unreadable_file(tmp_path):
    p = tmp_path / "config.json"
    p.mkdir()  # a folder named config.json: a folder with no readable config.json file
    with pytest.raises(ConfigError) as ei:
        load_model_config(tmp_path)
    assert str(tmp_path) in str(ei.value)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(ConfigError, match=r"bad\.json.*UTF-8"):
        load_model_config(bad)


def test_missing_paths(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_model_config(str(tmp_path / "nope" / "config.json"))
    with pytest.raises(ConfigError, match="model folder has no config.json"):
        load_model_config(tmp_path)


def test_unknown_preset():
    with pytest.raises(ConfigError) as ei:
        load_model_config("llama-3.1-7b")
    msg = str(ei.value)
    assert "preset 'llama-3.1-7b'" in msg and "unknown preset" in msg
    assert (
        "Did you mean: " in msg and "llama-3.1-8b" in msg.split("Did you mean: ")[1].split("?")[0]
    )
    assert "Known presets: " + ", ".join(list_presets()) in msg
    with pytest.raises(ConfigError) as ei:
        load_model_config("zzzz")
    assert "Did you mean" not in str(ei.value) and "tiny-llama" in str(ei.value)


def test_direct_construction_is_validated():
    c = load_model_config("tiny-llama")
    with pytest.raises(ConfigError, match="layer_windows"):
        dataclasses.replace(c, num_layers=3)
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        dataclasses.replace(c, num_kv_heads=3)
    with pytest.raises(ConfigError, match="architecture"):
        dataclasses.replace(c, architecture="gpt2")
    with pytest.raises(ConfigError, match="num_local_experts"):
        dataclasses.replace(c, num_experts=4, num_experts_per_tok=2)
    assert isinstance(c, ModelConfig)
