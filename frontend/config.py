"""Model configuration: a Hugging Face ``config.json`` (or a preset) -> a typed, validated
``ModelConfig``.

This module is the single place that knows how HF config fields are spelled and what
transformers makes of them. Everything downstream (the llm IR builder, the weight loader, the
stats) reads the normalized :class:`ModelConfig` and its helpers, never a raw dict.

Stdlib only, on purpose: no numpy, no xDSL, nothing downstream.

Normalization rules (what transformers does, checked against its sources):

* Architecture comes from ``model_type`` (or, when absent, ``architectures[0]``):
  llama, mistral, qwen2, qwen3, mixtral.
* ``head_dim``: the config's ``head_dim`` when present and not null, else ``hidden_size //
  num_attention_heads`` (which must divide), except Qwen3 whose config class defaults it to 128.
* ``num_key_value_heads``: an explicit ``null`` means ``num_attention_heads`` (HF backward
  compatibility). A *missing* key is only accepted for Llama (same meaning); the other config
  classes default it to a model-specific number, so we require it.
* Per-layer sliding windows (``layer_windows``, ``None`` = full causal attention; a window ``w``
  means the query at position ``p`` sees keys at positions ``p-w+1 .. p``, i.e. HF's mask
  ``kv_idx > q_idx - w``):
    - llama: always full (no sliding fields exist).
    - mistral, mixtral: ``sliding_window`` (null = full) applies to *every* layer; a missing key
      takes the HF class default (Mistral 4096, Mixtral null). transformers ignores
      ``layer_types`` for these classes, so a config that sets it is refused rather than
      silently misread.
    - qwen2, qwen3: the window size is ``sliding_window`` only if ``use_sliding_window`` is true
      (else no layer slides, whatever ``layer_types`` says). Which layers slide is ``layer_types``
      when given (``"sliding_attention"`` / ``"full_attention"``), else layers
      ``i >= max_window_layers``.
* ``rope_scaling`` (or v5 ``rope_parameters``): ``rope_type``/legacy ``type`` "default" or absent
  -> ``None``; "llama3" and "linear" are supported; anything else is refused.
* Biases: ``attention_bias`` means q/k/v projections carry a bias (Qwen2: always; Llama, Qwen3:
  the ``attention_bias`` field); ``o_proj_bias`` is separate because Qwen2 has q/k/v bias but no
  o_proj bias, while Llama/Qwen3 ``attention_bias`` covers all four. ``mlp_bias`` is Llama's field.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ARCHITECTURES",
    "ConfigError",
    "RopeScaling",
    "LayerKind",
    "TensorSpec",
    "ModelConfig",
    "CHECKPOINT_NAMES",
    "GLOBAL_CHECKPOINT_NAMES",
    "checkpoint_name",
    "load_model_config",
    "parse_hf_config",
    "read_config_dict",
    "list_presets",
    "preset_path",
]

ARCHITECTURES: tuple[str, ...] = ("llama", "mistral", "qwen2", "qwen3", "mixtral")

# HF `architectures` class names -> our architecture names.
_HF_CLASSES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "MixtralForCausalLM": "mixtral",
}

_SUPPORTED_DTYPES = ("bfloat16", "float16", "float32")
_SUPPORTED_ACTS = ("silu",)
_SUPPORTED_ROPE = ("llama3", "linear")


class ConfigError(Exception):
    """A model configuration that cannot be used. The message names the source and the field."""


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. Only the fields its ``kind`` uses are set; the others are None.

    * ``linear``: positions divided by ``factor`` (equivalently every inverse frequency).
    * ``llama3``: per-frequency: wavelengths shorter than ``original / high_freq_factor`` are
      kept, longer than ``original / low_freq_factor`` divided by ``factor``, smooth in between.
    """

    kind: Literal["llama3", "linear"]
    factor: float
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None


@dataclass(frozen=True)
class LayerKind:
    """Everything that determines a decoder layer's computation and weight shapes.

    Two layers with equal kinds are the same kernel with different weights (the outliner
    groups by this). Hashable.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    window: int | None
    attention_bias: bool
    o_proj_bias: bool
    qk_norm: bool
    intermediate_size: int
    mlp_bias: bool
    num_experts: int
    num_experts_per_tok: int

    @property
    def is_sliding(self) -> bool:
        return self.window is not None

    @property
    def label(self) -> str:
        """Short, stable name for kernel naming: ``full`` or ``sliding<W>``."""
        return "full" if self.window is None else f"sliding{self.window}"


@dataclass(frozen=True)
class TensorSpec:
    """One checkpoint tensor: its HF name, shape (HF layout, linear weights ``[out, in]``), role.

    ``role`` is one of the keys of :data:`CHECKPOINT_NAMES` tables (``q_proj``, ``q_bias``,
    ``input_norm``, ``gate_proj``, ``router``, ...) or of :data:`GLOBAL_CHECKPOINT_NAMES`.
    ``layer``/``expert`` are set for per-layer / per-expert tensors.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    layer: int | None = None
    expert: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# --------------------------------------------------------------------------------------------
# Checkpoint naming: ONE table per architecture family (shared by the IR builder and the loader)
# --------------------------------------------------------------------------------------------

_ATTN_NAMES: dict[str, str] = {
    "input_norm": "model.layers.{i}.input_layernorm.weight",
    "q_proj": "model.layers.{i}.self_attn.q_proj.weight",
    "k_proj": "model.layers.{i}.self_attn.k_proj.weight",
    "v_proj": "model.layers.{i}.self_attn.v_proj.weight",
    "o_proj": "model.layers.{i}.self_attn.o_proj.weight",
    "q_bias": "model.layers.{i}.self_attn.q_proj.bias",
    "k_bias": "model.layers.{i}.self_attn.k_proj.bias",
    "v_bias": "model.layers.{i}.self_attn.v_proj.bias",
    "o_bias": "model.layers.{i}.self_attn.o_proj.bias",
    "q_norm": "model.layers.{i}.self_attn.q_norm.weight",
    "k_norm": "model.layers.{i}.self_attn.k_norm.weight",
    "post_attn_norm": "model.layers.{i}.post_attention_layernorm.weight",
}

#: Per-layer tensor names by checkpoint family. ``{i}`` is the layer, ``{j}`` the expert.
CHECKPOINT_NAMES: dict[str, dict[str, str]] = {
    # Llama, Mistral, Qwen2, Qwen3: dense SiLU-gated MLP.
    "dense": {
        **_ATTN_NAMES,
        "gate_proj": "model.layers.{i}.mlp.gate_proj.weight",
        "up_proj": "model.layers.{i}.mlp.up_proj.weight",
        "down_proj": "model.layers.{i}.mlp.down_proj.weight",
        "gate_bias": "model.layers.{i}.mlp.gate_proj.bias",
        "up_bias": "model.layers.{i}.mlp.up_proj.bias",
        "down_bias": "model.layers.{i}.mlp.down_proj.bias",
    },
    # Mixtral: router + experts, w1 = gate, w3 = up, w2 = down.
    "mixtral_moe": {
        **_ATTN_NAMES,
        "router": "model.layers.{i}.block_sparse_moe.gate.weight",
        "gate_proj": "model.layers.{i}.block_sparse_moe.experts.{j}.w1.weight",
        "up_proj": "model.layers.{i}.block_sparse_moe.experts.{j}.w3.weight",
        "down_proj": "model.layers.{i}.block_sparse_moe.experts.{j}.w2.weight",
    },
}

#: Model-level tensor names (all families).
GLOBAL_CHECKPOINT_NAMES: dict[str, str] = {
    "embed": "model.embed_tokens.weight",
    "final_norm": "model.norm.weight",
    "lm_head": "lm_head.weight",
}

_FAMILY: dict[str, str] = {
    "llama": "dense",
    "mistral": "dense",
    "qwen2": "dense",
    "qwen3": "dense",
    "mixtral": "mixtral_moe",
}


def checkpoint_name(
    architecture: str, role: str, layer: int | None = None, expert: int | None = None
) -> str:
    """The HF checkpoint name of one tensor (no check that the model has it: see
    :meth:`ModelConfig.layer_tensors` for what exists)."""
    if role in GLOBAL_CHECKPOINT_NAMES:
        return GLOBAL_CHECKPOINT_NAMES[role]
    table = CHECKPOINT_NAMES[_FAMILY[architecture]]
    if role not in table:
        raise KeyError(f"{architecture} checkpoints have no per-layer tensor role {role!r}")
    template = table[role]
    if layer is None:
        raise KeyError(f"role {role!r} is per-layer: give a layer index")
    if "{j}" in template and expert is None:
        raise KeyError(f"role {role!r} is per-expert: give an expert index")
    return template.format(i=layer, j=expert)


# --------------------------------------------------------------------------------------------
# ModelConfig
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """A normalized, validated decoder-only LLM configuration (see the module docstring)."""

    name: str
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # per expert for MoE
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    tie_word_embeddings: bool
    attention_bias: bool  # q/k/v projections have a bias
    o_proj_bias: bool
    mlp_bias: bool
    layer_windows: tuple[int | None, ...]
    qk_norm: bool
    num_experts: int  # 0 for dense models
    num_experts_per_tok: int  # 0 for dense models
    norm_topk_prob: bool
    max_position_embeddings: int
    dtype: str = "bfloat16"
    hidden_act: str = "silu"
    source: str = field(default="<direct>", compare=False)

    def __post_init__(self) -> None:
        src = self.source

        def err(fld: str, msg: str) -> ConfigError:
            return ConfigError(f"{src}: {fld}: {msg}")

        if self.architecture not in ARCHITECTURES:
            raise err(
                "architecture",
                f"unsupported {self.architecture!r}; supported: {', '.join(ARCHITECTURES)}",
            )
        for fld, hf in (
            ("vocab_size", "vocab_size"),
            ("hidden_size", "hidden_size"),
            ("intermediate_size", "intermediate_size"),
            ("num_layers", "num_hidden_layers"),
            ("num_heads", "num_attention_heads"),
            ("num_kv_heads", "num_key_value_heads"),
            ("head_dim", "head_dim"),
            ("max_position_embeddings", "max_position_embeddings"),
        ):
            v = getattr(self, fld)
            if type(v) is not int:
                raise err(hf, f"expected an integer, got {type(v).__name__} {v!r}")
            if v <= 0:
                raise err(hf, f"must be positive, got {v}")
        for fld in ("rms_norm_eps", "rope_theta"):
            v = getattr(self, fld)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise err(fld, f"expected a finite number, got {v!r}")
            if v <= 0:
                raise err(fld, f"must be positive, got {v}")
        if self.num_heads % self.num_kv_heads != 0:
            raise err(
                "num_key_value_heads",
                f"num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})",
            )
        if self.head_dim % 2 != 0:
            raise err("head_dim", f"must be even for rotary embeddings, got {self.head_dim}")
        if self.hidden_act not in _SUPPORTED_ACTS:
            raise err(
                "hidden_act",
                f"unsupported activation {self.hidden_act!r} (the gated MLP supports only "
                f"{', '.join(_SUPPORTED_ACTS)})",
            )
        if self.dtype not in _SUPPORTED_DTYPES:
            raise err(
                "torch_dtype",
                f"unsupported dtype {self.dtype!r}; supported: {', '.join(_SUPPORTED_DTYPES)}",
            )
        if not isinstance(self.layer_windows, tuple) or len(self.layer_windows) != self.num_layers:
            raise err(
                "layer_windows",
                f"need one entry per layer ({self.num_layers}), got {self.layer_windows!r}",
            )
        for i, w in enumerate(self.layer_windows):
            if w is not None and (type(w) is not int or w <= 0):
                raise err(
                    "sliding_window", f"layer {i}: window must be a positive integer, got {w!r}"
                )
        if self.architecture == "mixtral":
            if self.num_experts <= 0:
                raise err("num_local_experts", f"must be positive, got {self.num_experts}")
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                raise err(
                    "num_experts_per_tok",
                    f"must be in 1..num_local_experts ({self.num_experts}), "
                    f"got {self.num_experts_per_tok}",
                )
        elif self.num_experts != 0 or self.num_experts_per_tok != 0:
            raise err("num_local_experts", f"{self.architecture} is a dense architecture")

    # -- derived sizes -----------------------------------------------------------------------

    @property
    def q_dim(self) -> int:
        """Width of the q projection output (``num_heads * head_dim``; may differ from hidden)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the k (and v) projection outputs (``num_kv_heads * head_dim``)."""
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def checkpoint_family(self) -> str:
        """The :data:`CHECKPOINT_NAMES` key of this model's architecture."""
        return _FAMILY[self.architecture]

    def effective_windows(self, context: int) -> tuple[int | None, ...]:
        """``layer_windows`` with windows that cover a whole ``context``-long cache made None
        (a window >= context masks nothing)."""
        return tuple(None if w is None or w >= context else w for w in self.layer_windows)

    # -- layer structure ---------------------------------------------------------------------

    def layer_kind(self, i: int) -> LayerKind:
        self._check_layer(i)
        return LayerKind(
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            window=self.layer_windows[i],
            attention_bias=self.attention_bias,
            o_proj_bias=self.o_proj_bias,
            qk_norm=self.qk_norm,
            intermediate_size=self.intermediate_size,
            mlp_bias=self.mlp_bias,
            num_experts=self.num_experts,
            num_experts_per_tok=self.num_experts_per_tok,
        )

    @property
    def layer_kinds(self) -> tuple[LayerKind, ...]:
        """One hashable description per layer; identical layers compare equal."""
        return tuple(self.layer_kind(i) for i in range(self.num_layers))

    # -- checkpoint tensors ------------------------------------------------------------------

    def _check_layer(self, i: int) -> None:
        if not 0 <= i < self.num_layers:
            raise IndexError(f"layer {i} out of range for {self.num_layers} layers")

    def layer_tensors(self, i: int) -> tuple[TensorSpec, ...]:
        """The checkpoint tensors of decoder layer ``i``, in a stable order."""
        self._check_layer(i)
        arch = self.architecture
        h, q, kv, d, f = (
            self.hidden_size,
            self.q_dim,
            self.kv_dim,
            self.head_dim,
            self.intermediate_size,
        )

        def t(role: str, shape: tuple[int, ...], expert: int | None = None) -> TensorSpec:
            return TensorSpec(checkpoint_name(arch, role, i, expert), shape, role, i, expert)

        out = [
            t("input_norm", (h,)),
            t("q_proj", (q, h)),
            t("k_proj", (kv, h)),
            t("v_proj", (kv, h)),
        ]
        if self.attention_bias:
            out += [t("q_bias", (q,)), t("k_bias", (kv,)), t("v_bias", (kv,))]
        if self.qk_norm:
            out += [t("q_norm", (d,)), t("k_norm", (d,))]
        out.append(t("o_proj", (h, q)))
        if self.o_proj_bias:
            out.append(t("o_bias", (h,)))
        out.append(t("post_attn_norm", (h,)))
        if self.is_moe:
            out.append(t("router", (self.num_experts, h)))
            for j in range(self.num_experts):
                out += [
                    t("gate_proj", (f, h), j),
                    t("up_proj", (f, h), j),
                    t("down_proj", (h, f), j),
                ]
        else:
            out += [t("gate_proj", (f, h)), t("up_proj", (f, h)), t("down_proj", (h, f))]
            if self.mlp_bias:
                out += [t("gate_bias", (f,)), t("up_bias", (f,)), t("down_bias", (h,))]
        return tuple(out)

    def layer_tensor_names(self, i: int) -> dict[str, str]:
        """Role -> checkpoint name for layer ``i`` (MoE expert roles keyed ``gate_proj.{j}``)."""
        return {
            (s.role if s.expert is None else f"{s.role}.{s.expert}"): s.name
            for s in self.layer_tensors(i)
        }

    def global_tensors(self) -> tuple[TensorSpec, ...]:
        """Embedding, final norm and (unless tied to the embedding) the LM head."""
        v, h = self.vocab_size, self.hidden_size
        out = [
            TensorSpec(GLOBAL_CHECKPOINT_NAMES["embed"], (v, h), "embed"),
            TensorSpec(GLOBAL_CHECKPOINT_NAMES["final_norm"], (h,), "final_norm"),
        ]
        if not self.tie_word_embeddings:
            out.append(TensorSpec(GLOBAL_CHECKPOINT_NAMES["lm_head"], (v, h), "lm_head"))
        return tuple(out)

    @property
    def lm_head_name(self) -> str:
        """The checkpoint tensor the LM head reads (the embedding when tied)."""
        return GLOBAL_CHECKPOINT_NAMES["embed" if self.tie_word_embeddings else "lm_head"]

    def checkpoint_tensors(self) -> tuple[TensorSpec, ...]:
        """Every tensor of the checkpoint: embedding, layers 0..N-1, final norm, LM head."""
        g = self.global_tensors()
        layers = tuple(s for i in range(self.num_layers) for s in self.layer_tensors(i))
        return (g[0],) + layers + g[1:]

    @property
    def num_parameters(self) -> int:
        """Total parameter count (tied embeddings counted once; all experts)."""
        return sum(s.numel for s in self.checkpoint_tensors())

    @property
    def num_active_parameters(self) -> int:
        """Parameters one token touches: for MoE only ``num_experts_per_tok`` experts."""
        if not self.is_moe:
            return self.num_parameters
        per_expert = 3 * self.hidden_size * self.intermediate_size
        inactive = (self.num_experts - self.num_experts_per_tok) * per_expert * self.num_layers
        return self.num_parameters - inactive


# --------------------------------------------------------------------------------------------
# Parsing an HF config dict
# --------------------------------------------------------------------------------------------

_MISSING = object()

MAX_LAYERS = 1024
"""The most decoder layers a config may declare or keep. Published decoder-only LLMs have a
few hundred at most (Llama 3.1 405B: 126), and building the IR costs about 12 ms a layer, so a
larger count is a mistake in the config, not a model (10^4 layers took two minutes)."""

F32_MAX = 3.4028234663852886e38
"""The largest finite f32: config floats (rope theta and scaling, norm epsilons) become f32
attributes in the IR."""

MAX_EXPERTS = 1024
"""The most experts an MoE layer may have: published MoE models have a few hundred at most
(DeepSeek-V3: 256), and the IR holds a parameter per expert and layer."""

# HF config-class defaults for the optional fields we read (transformers' configuration_*.py).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        hidden_act="silu",
    ),
    "mistral": dict(
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        max_position_embeddings=4096 * 32,
        tie_word_embeddings=False,
        hidden_act="silu",
        sliding_window=4096,
    ),
    "mixtral": dict(
        rms_norm_eps=1e-5,
        rope_theta=1e6,
        max_position_embeddings=4096 * 32,
        tie_word_embeddings=False,
        hidden_act="silu",
        sliding_window=None,
        num_local_experts=8,
        num_experts_per_tok=2,
    ),
    "qwen2": dict(
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        hidden_act="silu",
        sliding_window=4096,
        use_sliding_window=False,
        max_window_layers=28,
    ),
}
_DEFAULTS["qwen3"] = dict(_DEFAULTS["qwen2"], head_dim=128)  # Qwen3Config: Qwen2's and head_dim

_LAYER_TYPES = ("sliding_attention", "full_attention")


class _Reader:
    """Typed access to a config dict, with errors naming the source and field."""

    def __init__(self, d: Mapping[str, Any], source: str) -> None:
        self.d = d
        self.source = source

    def error(self, fld: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {fld}: {msg}")

    def _get(self, key: str, default: Any) -> Any:
        v = self.d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise self.error(key, "missing required field")
            return default
        return v

    def _type_error(self, key: str, want: str, v: Any) -> ConfigError:
        return self.error(key, f"expected {want}, got {type(v).__name__} {v!r}")

    def int(
        self, key: str, default: Any = _MISSING, *, nullable: bool = False, positive: bool = True
    ) -> Any:
        v = self._get(key, default)
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._type_error(key, "an integer", v)
        if positive and v <= 0:
            raise self.error(key, f"must be positive, got {v}")
        if not positive and v < 0:
            raise self.error(key, f"must be non-negative, got {v}")
        return v

    def float(self, key: str, default: Any = _MISSING, *, positive: bool = True) -> float:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._type_error(key, "a number", v)
        if not math.isfinite(v):
            raise self.error(key, f"must be finite, got {v!r}")
        if abs(v) > F32_MAX:  # the IR keeps these as f32 attributes
            raise self.error(key, f"must fit a 32-bit float (at most {F32_MAX:.8g}), got {v!r}")
        if positive and v <= 0:
            raise self.error(key, f"must be positive, got {v}")
        return float(v)

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise self._type_error(key, "true or false", v)
        return v

    def str(self, key: str, default: Any = _MISSING) -> Any:
        v = self._get(key, default)
        if v is None and default is None:
            return None
        if not isinstance(v, str):
            raise self._type_error(key, "a string", v)
        return v


def _architecture(r: _Reader) -> str:
    mt = r.d.get("model_type")
    archs = r.d.get("architectures")
    supported = (
        f"supported model_type values: {', '.join(ARCHITECTURES)} "
        f"(architectures: {', '.join(_HF_CLASSES)})"
    )
    if archs is not None:
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs) or not archs:
            raise r._type_error("architectures", "a non-empty list of strings", archs)
    if mt is not None:
        if not isinstance(mt, str):
            raise r._type_error("model_type", "a string", mt)
        if mt not in ARCHITECTURES:
            raise r.error("model_type", f"unsupported model type {mt!r}; {supported}")
        if archs is not None:
            bad = [a for a in archs if a in _HF_CLASSES and _HF_CLASSES[a] != mt]
            if bad:
                raise r.error(
                    "architectures",
                    f"{bad[0]} contradicts model_type {mt!r} (expected {_cls_for(mt)})",
                )
            unknown = [a for a in archs if a not in _HF_CLASSES]
            if unknown:
                raise r.error(
                    "architectures",
                    f"unsupported head class {unknown[0]!r} (only causal LMs); {supported}",
                )
        return mt
    if archs is None:
        raise r.error("model_type", f"missing required field (and no architectures); {supported}")
    if archs[0] not in _HF_CLASSES:
        raise r.error("architectures", f"unsupported architecture {archs[0]!r}; {supported}")
    return _HF_CLASSES[archs[0]]


def _cls_for(arch: str) -> str:
    return next(c for c, a in _HF_CLASSES.items() if a == arch)


def _rope(r: _Reader, defaults: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, rope_scaling) from ``rope_theta``/``rope_scaling`` or v5 ``rope_parameters``."""
    params = r.d.get("rope_parameters")
    key = "rope_scaling"
    if params is not None:
        if not isinstance(params, dict):
            raise r._type_error("rope_parameters", "an object", params)
        if "rope_theta" not in params and all(isinstance(v, dict) for v in params.values()):
            raise r.error("rope_parameters", "per-layer-type rope parameters are not supported")
        key = "rope_parameters"
        scaling = params
        theta_src = params if "rope_theta" in params else r.d
        theta = _Reader(theta_src, r.source).float("rope_theta", defaults["rope_theta"])
    else:
        scaling = r.d.get("rope_scaling")
        theta = r.float("rope_theta", defaults["rope_theta"])
    if scaling is None:
        return theta, None
    if not isinstance(scaling, dict):
        raise r._type_error(key, "an object or null", scaling)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return theta, None
    if kind not in _SUPPORTED_ROPE:
        raise r.error(
            key,
            f"unsupported rope scaling type {kind!r}; supported: default, "
            f"{', '.join(_SUPPORTED_ROPE)}",
        )
    s = _Reader(scaling, f"{r.source}: {key}")
    factor = s.float("factor")
    if kind == "linear":
        return theta, RopeScaling("linear", factor)
    low = s.float("low_freq_factor")
    high = s.float("high_freq_factor")
    orig = s.int("original_max_position_embeddings")
    if high <= low:
        raise s.error("high_freq_factor", f"must exceed low_freq_factor ({low}), got {high}")
    return theta, RopeScaling("llama3", factor, low, high, orig)


def _windows(
    r: _Reader, arch: str, defaults: Mapping[str, Any], n_cfg: int, n: int
) -> tuple[int | None, ...]:
    """Per-layer windows for ``n`` layers of a model whose config declares ``n_cfg``."""
    layer_types = r.d.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types):
            raise r._type_error("layer_types", "a list of strings", layer_types)
        if arch in ("llama", "mistral", "mixtral"):
            raise r.error(
                "layer_types",
                f"transformers ignores layer_types for model_type {arch!r} (every layer "
                f"uses the same attention); remove it, or use model_type qwen2 or qwen3 for "
                f"per-layer sliding/full attention",
            )
        for i, t in enumerate(layer_types):
            if t not in _LAYER_TYPES:
                raise r.error(
                    "layer_types",
                    f"entry {i} is {t!r}; supported: {', '.join(_LAYER_TYPES)}",
                )
        if len(layer_types) != n_cfg:
            raise r.error(
                "layer_types",
                f"has {len(layer_types)} entries but num_hidden_layers is {n_cfg}",
            )

    if arch == "llama":
        return (None,) * n
    if arch in ("mistral", "mixtral"):
        w = r.int("sliding_window", defaults["sliding_window"], nullable=True)
        return (w,) * n
    # qwen2 / qwen3
    use = r.bool("use_sliding_window", defaults["use_sliding_window"])
    w = r.int("sliding_window", defaults["sliding_window"], nullable=True)
    mwl = r.int("max_window_layers", defaults["max_window_layers"], positive=False)
    if not use or w is None:
        return (None,) * n
    if layer_types is None:
        return tuple(w if i >= mwl else None for i in range(n))
    pattern = [w if t == "sliding_attention" else None for t in layer_types]
    if n <= len(pattern):
        return tuple(pattern[:n])
    # Extending past the declared layers: repeat the pattern's smallest period.
    period = next(
        p
        for p in range(1, len(pattern) + 1)
        if all(pattern[i] == pattern[i % p] for i in range(len(pattern)))
    )
    return tuple(pattern[i % period] for i in range(n))


def parse_hf_config(
    d: Mapping[str, Any],
    *,
    source: str = "<config>",
    name: str | None = None,
    layers: int | None = None,
) -> ModelConfig:
    """Normalize a Hugging Face config dict. ``layers`` overrides ``num_hidden_layers``."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: expected a JSON object at top level, got {type(d).__name__}")
    r = _Reader(d, source)
    arch = _architecture(r)
    defaults = _DEFAULTS[arch]

    if d.get("quantization_config") is not None:
        raise r.error("quantization_config", "quantized checkpoints are not supported")

    vocab = r.int("vocab_size")
    hidden = r.int("hidden_size")
    inter = r.int("intermediate_size")
    n_cfg = r.int("num_hidden_layers")
    heads = r.int("num_attention_heads")
    if "num_key_value_heads" not in d and arch != "llama":
        raise r.error("num_key_value_heads", "missing required field")
    kv = r.int("num_key_value_heads", None, nullable=True)
    if kv is None:
        kv = heads
    head_dim = r.int("head_dim", defaults.get("head_dim"), nullable=True)
    if head_dim is None:
        if hidden % heads != 0:
            raise r.error(
                "num_attention_heads",
                f"hidden_size ({hidden}) is not divisible by num_attention_heads ({heads}) "
                f"and head_dim is not given",
            )
        head_dim = hidden // heads
    if heads % kv != 0:
        raise r.error(
            "num_key_value_heads",
            f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv})",
        )

    if layers is not None:
        if isinstance(layers, bool) or not isinstance(layers, int) or layers <= 0:
            raise ConfigError(f"{source}: layers: must be a positive integer, got {layers!r}")
    for key, count in (("num_hidden_layers", n_cfg), ("layers", layers)):
        if count is not None and count > MAX_LAYERS:
            raise ConfigError(
                f"{source}: {key}: {count} decoder layers; at most {MAX_LAYERS} are supported"
            )
    n = n_cfg if layers is None else layers

    act = r.str("hidden_act", defaults["hidden_act"])
    if act not in _SUPPORTED_ACTS:
        raise r.error(
            "hidden_act",
            f"unsupported activation {act!r} (the gated MLP supports only "
            f"{', '.join(_SUPPORTED_ACTS)})",
        )
    dtype_key = "dtype" if d.get("dtype") is not None else "torch_dtype"
    dtype = r.str(dtype_key, None) or "bfloat16"
    if dtype not in _SUPPORTED_DTYPES:
        raise r.error(
            dtype_key, f"unsupported dtype {dtype!r}; supported: {', '.join(_SUPPORTED_DTYPES)}"
        )

    theta, scaling = _rope(r, defaults)

    if arch == "qwen2":
        attn_bias, o_bias, mlp_bias = True, False, False
    elif arch in ("llama", "qwen3"):
        attn_bias = r.bool("attention_bias", False)
        o_bias = attn_bias
        mlp_bias = r.bool("mlp_bias", False) if arch == "llama" else False
    else:  # mistral, mixtral: no biases
        attn_bias = o_bias = mlp_bias = False

    if arch == "mixtral":
        n_exp = r.int("num_local_experts", defaults["num_local_experts"])
        topk = r.int("num_experts_per_tok", defaults["num_experts_per_tok"])
        if n_exp > MAX_EXPERTS:
            raise r.error(
                "num_local_experts", f"{n_exp} experts; at most {MAX_EXPERTS} are supported"
            )
        if topk > n_exp:
            raise r.error(
                "num_experts_per_tok",
                f"{topk} exceeds num_local_experts ({n_exp})",
            )
    else:
        n_exp = topk = 0

    windows = _windows(r, arch, defaults, n_cfg, n)

    if name is None:
        name = source
    return ModelConfig(
        name=name,
        architecture=arch,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=n,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        rms_norm_eps=r.float("rms_norm_eps", defaults["rms_norm_eps"]),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_word_embeddings=r.bool("tie_word_embeddings", defaults["tie_word_embeddings"]),
        attention_bias=attn_bias,
        o_proj_bias=o_bias,
        mlp_bias=mlp_bias,
        layer_windows=windows,
        qk_norm=(arch == "qwen3"),
        num_experts=n_exp,
        num_experts_per_tok=topk,
        norm_topk_prob=(arch == "mixtral"),
        max_position_embeddings=r.int(
            "max_position_embeddings", defaults["max_position_embeddings"]
        ),
        dtype=dtype,
        hidden_act=act,
        source=source,
    )


# --------------------------------------------------------------------------------------------
# Presets and files
# --------------------------------------------------------------------------------------------


def _preset_dir():
    return resources.files(__package__ or "rdu_compiler.frontend").joinpath("presets")


def list_presets() -> list[str]:
    """Names of the bundled presets, sorted."""
    return sorted(
        p.name[: -len(".json")]
        for p in _preset_dir().iterdir()
        if p.name.endswith(".json") and p.is_file()
    )


def preset_path(name: str) -> str:
    """The bundled ``config.json`` of a preset (raises ConfigError for unknown names)."""
    key = name.strip().lower()
    if key in list_presets():
        return str(_preset_dir().joinpath(f"{key}.json"))
    known = list_presets()
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"preset {name!r}: unknown preset, and no such file or folder.{hint} "
        f"Known presets: {', '.join(known)}"
    )


def _resolve(spec: str | os.PathLike[str]) -> tuple[Path, str, str]:
    """(config.json path, source label for messages, model name)."""
    s = os.fspath(spec)
    if not s:
        raise ConfigError("model spec: empty (give a preset name, a config.json or a model folder)")
    if s.strip().lower() in list_presets():
        key = s.strip().lower()
        p = Path(preset_path(key))
        return p, f"preset {key!r} ({p})", key
    p = Path(s).expanduser()
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.is_file():
            raise ConfigError(f"{p}: model folder has no config.json")
        return cfg, str(cfg), p.resolve().name
    if p.exists():
        return p, str(p), (p.resolve().parent.name if p.name == "config.json" else p.stem)
    looks_like_path = os.sep in s or "/" in s or s.endswith(".json")
    if looks_like_path:
        raise ConfigError(f"{s}: no such file or folder")
    preset_path(s)  # raises the unknown-preset message
    raise AssertionError("unreachable")


def _read_json(path: Path, source: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{source}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{source}: JSON nested too deeply to be a model config") from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise ConfigError(f"{source}: unreadable JSON: {e}") from None


def read_config_dict(spec: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw HF config dict behind a spec (preset name, config.json, or model folder), e.g.
    for ``transformers.AutoConfig.for_model(**read_config_dict("tiny-llama"))``."""
    path, source, _ = _resolve(spec)
    d = _read_json(path, source)
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a JSON object at top level, got {type(d).__name__}")
    return d


def load_model_config(spec: str | os.PathLike[str], *, layers: int | None = None) -> ModelConfig:
    """Load a model configuration.

    ``spec`` is a preset name (see :func:`list_presets`), a path to a HF ``config.json``, or a
    model folder containing one (a preset name wins over a same-named relative folder: write
    ``./name`` for the folder). ``layers`` replaces ``num_hidden_layers`` (the model's first
    ``layers`` layers, with their windows; past the declared count an explicit ``layer_types``
    pattern repeats with its period). Raises :class:`ConfigError`.
    """
    path, source, name = _resolve(spec)
    d = _read_json(path, source)
    return parse_hf_config(d, source=source, name=name, layers=layers)
