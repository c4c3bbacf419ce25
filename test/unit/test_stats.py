"""passes.cost_model and `rdu-import --stats`: per-op costs against hand counts, whole-step
figures against the Kernel Looping paper's Table 1, MoE active vs total, batch/context scaling."""

from __future__ import annotations

import json

import pytest

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.passes.cost_model import STATS_KEYS, op_cost, step_stats, total_cost
from rdu_compiler.rdu_dialect.llm import AttentionOp, LinearOp, MoEOp
from rdu_compiler.tools.rdu_import import main as rdu_import

GiB = 2**30


def stats(name, **kw):
    return step_stats(build_decode_step(load_model_config(name), **kw))


def ops_of(module, cls):
    return [op for op in module.walk() if isinstance(op, cls)]


def test_table1_llama_3_1_8b():
    """Table 1, first row: 14.9 GB parameters, 0.5 GB KV, 15.4 GB/token (GiB), BF16, batch 1,
    4K context. FLOPs: the paper's 20 GFLOPs is rounded up; we count 2*m*n*k per linear plus
    attention QK/PV over 4096 rows: 15.0 + 2.1 = 17.2 GFLOPs, and do not tune to 20."""
    s = stats("llama-3.1-8b", batch=1, context=4096)
    assert s["param_bytes"] == 2 * 8_030_261_248
    assert s["param_bytes"] / GiB == pytest.approx(14.9, abs=0.1)
    assert s["kv_bytes"] == 32 * 2 * 8 * 128 * 4096 * 2  # exactly 0.5 GiB
    assert s["bytes_per_token"] / GiB == pytest.approx(15.4, abs=0.1)
    linear = 2 * (8_030_261_248 - 128256 * 4096 - 65 * 4096)  # all but embedding and norms
    attention = 32 * 2 * 2 * 32 * 128 * 4096
    assert s["flops_per_token"] == linear + attention
    assert 16.5e9 < s["flops_per_token"] < 17.5e9
    assert s["flops_per_byte"] == pytest.approx(s["flops_per_token"] / s["bytes_per_token"])
    # A step reads one embedding row instead of the whole table, plus the KV cache and rows.
    read = s["param_bytes"] - 128256 * 4096 * 2 + 4096 * 2 + s["kv_bytes"] + 32 * 2 * 1024 * 2
    assert s["bytes_read_per_token"] == read


def test_json_keys_and_types(capsys):
    assert rdu_import(["llama-3.1-8b", "--stats", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == list(STATS_KEYS)
    assert out["model"] == "llama-3.1-8b" and out["dtype"] == "bf16"
    assert (out["batch"], out["context"]) == (1, 4096)
    for key in (
        "param_bytes",
        "kv_bytes",
        "flops_per_token",
        "bytes_per_token",
        "bytes_read_per_token",
    ):
        assert type(out[key]) is int, key


def test_stats_table(capsys):
    assert rdu_import(["mixtral-8x7b", "--stats"]) == 0
    out = capsys.readouterr().out
    assert "86.991 GiB" in out and "93.406 GB" in out and "GFLOPs" in out
    assert "active" in out


def test_mixtral_active_vs_total():
    config = load_model_config("mixtral-8x7b")
    s = stats("mixtral-8x7b", batch=1, context=4096)
    assert s["param_bytes"] == 2 * config.num_parameters  # 46.7B parameters
    assert s["active_param_bytes"] == 2 * config.num_active_parameters  # 12.9B
    assert s["active_experts_per_layer"] == 2
    assert s["active_bytes_per_token"] == s["active_param_bytes"] + s["kv_bytes"]
    assert s["active_flops_per_token"] < s["flops_per_token"] / 3
    assert s["bytes_read_per_token"] < s["active_bytes_per_token"]  # 1 embedding row
    # Batch 8 x top-2 routes to (at most) all 8 experts: every expert is read.
    s8 = stats("mixtral-8x7b", batch=8, context=4096)
    assert s8["active_experts_per_layer"] == 8
    assert s8["active_bytes_per_token"] == s8["bytes_per_token"]
    assert s8["active_flops_per_token"] == s["active_flops_per_token"]


def test_batch_and_context_scaling():
    base = stats("llama-3.1-8b", batch=1, context=2048)
    b4 = stats("llama-3.1-8b", batch=4, context=2048)
    c4k = stats("llama-3.1-8b", batch=1, context=4096)
    # Per token: weights shared by the batch, KV per entry.
    assert b4["kv_bytes"] == 4 * base["kv_bytes"]
    assert b4["bytes_per_token"] == round((base["param_bytes"] + b4["kv_bytes"]) / 4)
    assert b4["flops_per_token"] == base["flops_per_token"]
    assert b4["flops_per_byte"] > 3 * base["flops_per_byte"]
    # Context: KV and attention grow linearly, nothing else.
    assert c4k["kv_bytes"] == 2 * base["kv_bytes"]
    assert c4k["flops_per_token"] - base["flops_per_token"] == 32 * 2 * 2 * 32 * 128 * 2048
    assert c4k["param_bytes"] == base["param_bytes"]


def test_sliding_window_caps_attended_rows():
    short = stats("mistral-7b", context=4096)
    long = stats("mistral-7b", context=8192)
    assert long["kv_bytes"] == 2 * short["kv_bytes"]  # the cache is allocated in full ...
    assert long["flops_per_token"] == short["flops_per_token"]  # ... but 4096 rows attended
    assert long["bytes_read_per_token"] == short["bytes_read_per_token"]


def test_tiny_llama_hand_count():
    """tiny-llama, batch 2, context 16: hidden 64, q 64, kv 32, mlp 128, vocab 256, tied."""
    module = build_decode_step(load_model_config("tiny-llama"), batch=2, context=16)
    q_proj = ops_of(module, LinearOp)[0]
    assert op_cost(q_proj).flops == 2 * 2 * 64 * 64
    assert op_cost(q_proj).weight_bytes == 64 * 64 * 2
    attention = op_cost(ops_of(module, AttentionOp)[0])
    assert attention.flops == 2 * 2 * 2 * 4 * 16 * 16  # QK and PV, 2 entries, 4 heads, 16 rows
    assert attention.kv_read_bytes == 2 * 2 * 2 * 16 * 16 * 2  # K+V, 2 entries, 2 kv heads
    layer_weights = 64 * 64 + 32 * 64 + 32 * 64 + 64 * 64 + 3 * 128 * 64  # 36864
    total = total_cost(module.walk())
    assert total.flops == 4 * (2 * 2 * layer_weights + attention.flops) + 2 * 2 * 256 * 64
    weights = 4 * (layer_weights + 2 * 64) + 2 * 64 + 64 + 256 * 64  # + 2 embedding rows
    kv = 4 * (attention.kv_read_bytes + 2 * 2 * 32 * 2)  # read + K/V rows written
    assert total.bytes_moved == 2 * weights + kv
    s = step_stats(module)
    assert s["flops_per_token"] == total.flops // 2
    assert s["bytes_read_per_token"] == (2 * weights + kv) // 2


def test_tiny_moe_and_window_op_costs():
    moe = ops_of(build_decode_step(load_model_config("tiny-mixtral"), batch=3, context=16), MoEOp)[
        0
    ]
    c = op_cost(moe)  # 4 experts, top-2, hidden 64, intermediate 128; 3 x 2 >= 4 experts read
    expert = 3 * 64 * 128
    assert c.flops == 2 * 3 * 4 * 64 + 3 * 2 * 2 * expert
    assert c.dense_flops == 2 * 3 * 4 * 64 + 3 * 4 * 2 * expert
    assert c.weight_bytes == c.dense_weight_bytes == 2 * (4 * 64 + 4 * expert)
    one = op_cost(
        ops_of(build_decode_step(load_model_config("tiny-mixtral"), context=16), MoEOp)[0]
    )
    assert one.weight_bytes == 2 * (4 * 64 + 2 * expert)  # batch 1: the top-2 experts only
    attention = ops_of(
        build_decode_step(load_model_config("tiny-mistral"), context=16), AttentionOp
    )[0]
    c = op_cost(attention)  # window 8 of a 16-row cache
    assert c.flops == 2 * 2 * 4 * 16 * 8
    assert c.kv_read_bytes == 2 * 2 * 8 * 16 * 2
