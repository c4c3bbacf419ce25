"""An independent numpy decode step, written from the Hugging Face modeling code (Llama, Mistral,
Qwen2, Qwen3, Mixtral), to check the reference interpreter against.

It shares no code with the reference: it reads the raw HF ``config.json`` fields itself (not
``frontend.config``), names weights itself, and does its own math (not ``simulator.numerics``);
only the weights (input data) come from the same source. Compute is float32 with a bf16
rounding after each step the reference treats as one op (the contract in
``simulator/numerics.py``): every linear (bias included), norm, rope, attention, silu, mul,
add; the MoE router logits, the k routing weights, each expert's ops, and the weighted sum.
Where HF eager itself rounds inside those steps (cos/sin tables, attention scores), this
model, like the reference, does not: the golden HF fixtures check that part.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import ml_dtypes
import numpy as np

GetWeight = Callable[[str, tuple[int, ...]], np.ndarray]


def bf16(x: np.ndarray) -> np.ndarray:
    """Round to bf16 (nearest even) and back to float32."""
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


class HFConfig:
    """The fields of a HF config.json this model uses, read the way transformers reads them."""

    def __init__(self, path: str):
        with open(path) as f:
            c = json.load(f)
        self.type = c["model_type"]
        self.vocab = c["vocab_size"]
        self.hidden = c["hidden_size"]
        self.inter = c["intermediate_size"]
        self.layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or self.hidden // self.heads
        self.eps = c["rms_norm_eps"]
        self.theta = c["rope_theta"]
        self.rope_scaling = c.get("rope_scaling")
        self.tied = c.get("tie_word_embeddings", False)
        # Qwen2 always has q/k/v biases (no o_proj bias); Llama / Qwen3 `attention_bias` covers
        # q, k, v and o.
        self.qkv_bias = self.type == "qwen2" or c.get("attention_bias", False)
        self.o_bias = self.type != "qwen2" and c.get("attention_bias", False)
        self.mlp_bias = c.get("mlp_bias", False)
        self.qk_norm = self.type == "qwen3"
        self.experts = c.get("num_local_experts", 0)
        self.top_k = c.get("num_experts_per_tok", 0)
        if self.type in ("mistral", "mixtral"):
            self.windows = [c.get("sliding_window")] * self.layers
        elif self.type in ("qwen2", "qwen3") and c.get("use_sliding_window"):
            kinds = c.get("layer_types") or [
                "sliding_attention" if i >= c["max_window_layers"] else "full_attention"
                for i in range(self.layers)
            ]
            self.windows = [
                c["sliding_window"] if k == "sliding_attention" else None for k in kinds
            ]
        else:
            self.windows = [None] * self.layers


def inv_freq(cfg: HFConfig) -> np.ndarray:
    """HF `_compute_default_rope_parameters` / `_compute_llama3_parameters` (float32)."""
    d = cfg.head_dim
    inv = 1.0 / (np.float32(cfg.theta) ** (np.arange(0, d, 2).astype(np.float32) / np.float32(d)))
    rs = cfg.rope_scaling
    kind = None if rs is None else rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return (inv / np.float32(rs["factor"])).astype(np.float32)
    if kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    assert kind in (None, "default"), kind
    return inv.astype(np.float32)


class IndependentModel:
    """Decode steps with its own KV cache (`[B, S, kv_heads, head_dim]` per layer)."""

    def __init__(self, config_path: str, get: GetWeight, batch: int, context: int):
        self.cfg = c = HFConfig(config_path)
        self.get = get
        self.k = [
            np.zeros((batch, context, c.kv_heads, c.head_dim), np.float32) for _ in range(c.layers)
        ]
        self.v = [np.zeros_like(k) for k in self.k]
        self.inv_freq = inv_freq(c)

    def w(self, name: str, *shape: int) -> np.ndarray:
        return np.asarray(self.get(name, shape), np.float32)

    def linear(self, x, prefix: str, n_out: int, n_in: int, bias: bool) -> np.ndarray:
        y = x @ self.w(f"{prefix}.weight", n_out, n_in).T
        if bias:
            y = y + self.w(f"{prefix}.bias", n_out)
        return bf16(y)

    def rms_norm(self, x, name: str, n: int) -> np.ndarray:
        """LlamaRMSNorm over the last axis of length n (x may be [..., groups, n])."""
        var = np.mean(x * x, axis=-1, keepdims=True)
        return bf16(x / np.sqrt(var + np.float32(self.cfg.eps)) * self.w(name, n))

    def rope(self, x, pos) -> np.ndarray:
        """x [B, heads, D]; HF apply_rotary_pos_emb (rotate_half) at positions pos [B]."""
        freqs = pos.astype(np.float32)[:, None] * self.inv_freq[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)[:, None, :]
        half = x.shape[-1] // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return bf16(x * np.cos(emb) + rotated * np.sin(emb))

    def mlp(self, x, prefix: str, names=("gate_proj", "up_proj", "down_proj"), bias=False):
        c = self.cfg
        g = self.linear(x, f"{prefix}.{names[0]}", c.inter, c.hidden, bias)
        u = self.linear(x, f"{prefix}.{names[1]}", c.inter, c.hidden, bias)
        act = bf16(g / (1 + np.exp(-g)))
        return self.linear(bf16(act * u), f"{prefix}.{names[2]}", c.hidden, c.inter, bias)

    def moe(self, x, prefix: str) -> np.ndarray:
        """MixtralSparseMoeBlock: softmax router, top-k, renormalized, weights in bf16."""
        c = self.cfg
        logits = self.linear(x, f"{prefix}.gate", c.experts, c.hidden, False)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs = e / e.sum(-1, keepdims=True)
        out = np.zeros_like(x)
        for b in range(x.shape[0]):
            top = np.argsort(-probs[b], kind="stable")[: c.top_k]
            weights = bf16(probs[b, top] / probs[b, top].sum())
            for wt, j in zip(weights, top):
                y = self.mlp(x[b : b + 1], f"{prefix}.experts.{j}", ("w1", "w3", "w2"))
                out[b] += wt * y[0]
        return bf16(out)

    def attention(self, i: int, x, pos) -> np.ndarray:
        c = self.cfg
        b, d, pre = x.shape[0], c.head_dim, f"model.layers.{i}.self_attn"
        q = self.linear(x, f"{pre}.q_proj", c.heads * d, c.hidden, c.qkv_bias)
        k = self.linear(x, f"{pre}.k_proj", c.kv_heads * d, c.hidden, c.qkv_bias)
        v = self.linear(x, f"{pre}.v_proj", c.kv_heads * d, c.hidden, c.qkv_bias)
        q, k, v = (t.reshape(b, -1, d) for t in (q, k, v))
        if c.qk_norm:
            q = self.rms_norm(q, f"{pre}.q_norm.weight", d)
            k = self.rms_norm(k, f"{pre}.k_norm.weight", d)
        q, k = self.rope(q, pos), self.rope(k, pos)
        out = np.zeros((b, c.heads, d), np.float32)
        group = c.heads // c.kv_heads
        window = c.windows[i]
        for e in range(b):
            p = int(pos[e])
            self.k[i][e, p], self.v[i][e, p] = k[e], v[e]
            t = np.arange(p + 1)
            keep = t if window is None else t[t > p - window]  # HF sliding mask
            for h in range(c.heads):
                keys = self.k[i][e, keep, h // group]  # repeat_kv
                vals = self.v[i][e, keep, h // group]
                s = keys @ q[e, h] / np.float32(math.sqrt(d))
                s = np.exp(s - s.max())
                out[e, h] = (s / s.sum()) @ vals
        return self.linear(
            bf16(out).reshape(b, -1), f"{pre}.o_proj", c.hidden, c.heads * d, c.o_bias
        )

    def step(self, tokens, positions) -> np.ndarray:
        """Logits [B, vocab] (bf16 values as float32) after feeding tokens at positions."""
        c = self.cfg
        pos = np.asarray(positions)
        h = self.w("model.embed_tokens.weight", c.vocab, c.hidden)[np.asarray(tokens)]
        for i in range(c.layers):
            pre = f"model.layers.{i}"
            x = self.rms_norm(h, f"{pre}.input_layernorm.weight", c.hidden)
            h = bf16(h + self.attention(i, x, pos))
            y = self.rms_norm(h, f"{pre}.post_attention_layernorm.weight", c.hidden)
            if c.experts:
                ffn = self.moe(y, f"{pre}.block_sparse_moe")
            else:
                ffn = self.mlp(y, f"{pre}.mlp", bias=c.mlp_bias)
            h = bf16(h + ffn)
        h = self.rms_norm(h, "model.norm.weight", c.hidden)
        head = "model.embed_tokens" if c.tied else "lm_head"
        return self.linear(h, head, c.vocab, c.hidden, False)
