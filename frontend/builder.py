"""ModelConfig -> one decode step as `llm` IR, exactly as `docs/decode_step.md` describes it.

Ops are built directly (`Op.create`, no text parsing, no symbol lookups: every `llm.weight`
is made from the `ParamOp` object at hand), so a 126-layer model builds in about a second.
Which tensors exist and how they are named comes from `frontend.config` only; this module
decides the op sequence, the source locations and the stacking of MoE experts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

from xdsl.dialects import func
from xdsl.dialects.builtin import (
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    NameLoc,
    NoneAttr,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    bf16,
    f32,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from rdu_compiler.frontend.config import CHECKPOINT_NAMES, ConfigError, ModelConfig, TensorSpec
from rdu_compiler.rdu_dialect.dfk import SliceOp, StackOp, slice_type
from rdu_compiler.rdu_dialect.llm import (
    LAYER_ATTR,
    AddOp,
    ArgmaxOp,
    AttentionOp,
    EmbeddingOp,
    KVCacheWriteOp,
    LinearOp,
    MoEOp,
    MulOp,
    NestedSources,
    ParamOp,
    RMSNormOp,
    RopeOp,
    RopeScalingAttr,
    SiluOp,
    WeightOp,
)
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.numerics import DTYPES as ELEMENT_TYPES

__all__ = ["DTYPES", "MODEL_ATTR", "DEFAULT_CONTEXT", "default_context", "build_decode_step"]

DTYPES: dict[str, Attribute] = {"bf16": bf16, "f32": f32}
"""Data element types by their command-line name."""

MODEL_ATTR = "llm.model"
"""Module attribute naming the model (for reports)."""

DEFAULT_CONTEXT = 4096
"""Cache length used when none is given (the Kernel Looping paper's evaluation context),
capped by the model's `max_position_embeddings`."""


class _TrainedPositions(Protocol):
    """Anything that knows the positions a model was trained for (a config, a decode step
    read from an IR file)."""

    @property
    def max_position_embeddings(self) -> int: ...


def default_context(config: ModelConfig | _TrainedPositions) -> int:
    """`min(max_position_embeddings, 4096)`: long enough for the paper's figures, never longer
    than the positions the model was trained for."""
    return min(config.max_position_embeddings, DEFAULT_CONTEXT)


LARGEST_SYSTEM = "sn40l"
"""The hardware preset whose largest system (all its sockets, HBM and DDR) bounds what a decode
step may hold: a step that fits nowhere is refused before any IR is built."""


def check_step_fits(config: ModelConfig, batch: int, context: int, dtype: str) -> None:
    """Raise :class:`ConfigError` unless the parameters and KV caches of one decode step fit
    the memory of the largest :data:`LARGEST_SYSTEM` system. This also keeps every dimension
    far inside i64 (IR types) and every byte count meaningful (`--stats`)."""
    preset = get_preset(LARGEST_SYSTEM)
    capacity = preset.max_sockets * (preset.hbm_bytes + preset.ddr_bytes)
    cache = 2 * config.num_layers * batch * config.num_kv_heads * context * config.head_dim
    need = (config.num_parameters + cache) * ELEMENT_TYPES[dtype].itemsize
    if need > capacity:
        raise ConfigError(
            f"{config.name}: batch {batch}, context {context}, {dtype}: the parameters and KV "
            f"caches need {need / 2**40:.4g} TiB, more than the largest {preset.name} system "
            f"holds ({preset.max_sockets} sockets of HBM and DDR: {capacity / 2**40:.4g} TiB)"
        )


def _loc(name: str) -> NameLoc:
    return NameLoc(StringAttr(name), NoneAttr())


def _stacked_expert_name(config: ModelConfig, role: str, layer: int) -> str:
    """`model.layers.<i>.block_sparse_moe.experts.w1` from the per-expert template
    `...experts.{j}.w1.weight`: one stacked param per layer and role."""
    template = CHECKPOINT_NAMES[config.checkpoint_family][role]
    return template.replace(".{j}", "").removesuffix(".weight").format(i=layer)


class _StepBuilder:
    """Appends ops to the decode step's block; params go to the module body."""

    def __init__(self, config: ModelConfig, batch: int, element: Attribute):
        self.config = config
        self.batch = batch
        self.element = element
        self.params: list[Operation] = []
        self.body: list[Operation] = []
        self.attrs: dict[str, Attribute] = {}  # the current layer's {llm.layer = i}

    def tensor(self, *shape: int) -> TensorType:
        return TensorType(self.element, shape)

    def param(
        self, name: str, shape: Sequence[int], source: NestedSources | None = None
    ) -> ParamOp:
        op = ParamOp(name, self.tensor(*shape), name if source is None else source)
        op.location = _loc(name)
        self.params.append(op)
        return op

    def emit(
        self,
        cls: type[Operation],
        operands: Sequence[SSAValue],
        result_type: Attribute,
        where: str,
        hint: str,
        **properties: Attribute,
    ) -> SSAValue:
        op = cls.create(
            operands=operands,
            result_types=[result_type],
            properties=properties,
            attributes=self.attrs,
            location=_loc(where),
        )
        self.body.append(op)
        result = op.results[0]
        result.name_hint = hint
        return result

    def weight(self, param: ParamOp) -> SSAValue:
        """A read of `param`, named after its module (`%q_proj`, `%q_proj_bias`, `%w1`)."""
        name = param.sym_name.data
        *path, leaf = name.split(".")
        hint = {"weight": path[-1], "bias": f"{path[-1]}_bias"}.get(leaf, leaf)
        return self.emit(WeightOp, (), param.type, name, hint, param=SymbolRefAttr(param.sym_name))

    def linear(self, x: SSAValue, w: ParamOp, b: ParamOp | None, where: str, hint: str) -> SSAValue:
        operands = [x, self.weight(w)] + ([self.weight(b)] if b is not None else [])
        out = w.type.get_shape()[0]
        return self.emit(LinearOp, operands, self.tensor(self.batch, out), where, hint)

    def rms_norm(self, x: SSAValue, w: ParamOp, where: str, hint: str) -> SSAValue:
        eps = FloatAttr(self.config.rms_norm_eps, f32)
        return self.emit(RMSNormOp, [x, self.weight(w)], x.type, where, hint, eps=eps)


def _layer_params(s: _StepBuilder, specs: Sequence[TensorSpec], layer: int) -> dict[str, ParamOp]:
    """Role -> param for one layer; MoE experts become one stacked param per role."""
    params: dict[str, ParamOp] = {}
    experts: dict[str, list[TensorSpec]] = {}
    for spec in specs:
        if spec.expert is None:
            params[spec.role] = s.param(spec.name, spec.shape)
        else:
            experts.setdefault(spec.role, []).append(spec)
    for role, group in experts.items():
        name = _stacked_expert_name(s.config, role, layer)
        params[role] = s.param(name, (len(group), *group[0].shape), [t.name for t in group])
    return params


def _layer(
    s: _StepBuilder,
    i: int,
    p: dict[str, ParamOp],
    h: SSAValue,
    pos: SSAValue,
    k_cache: SSAValue,
    v_cache: SSAValue,
    window: int | None,
    rope_props: dict[str, Attribute],
) -> tuple[SSAValue, SSAValue, SSAValue]:
    """Layer `i` of the residual stream `h`: returns (h, new layer K cache, new V cache)."""
    cfg = s.config
    prefix = f"model.layers.{i}"
    attn = f"{prefix}.self_attn"

    layer_cache = slice_type(cast(TensorType, k_cache.type))
    index = IntegerAttr(i, i64)
    kc = s.emit(SliceOp, [k_cache], layer_cache, "kv_cache", "kc", index=index)
    vc = s.emit(SliceOp, [v_cache], layer_cache, "kv_cache", "vc", index=index)
    s.attrs = {LAYER_ATTR: IntegerAttr(i, i64)}

    x = s.rms_norm(h, p["input_norm"], f"{prefix}.input_layernorm", "x")
    q = s.linear(x, p["q_proj"], p.get("q_bias"), f"{attn}.q_proj", "q")
    k = s.linear(x, p["k_proj"], p.get("k_bias"), f"{attn}.k_proj", "k")
    v = s.linear(x, p["v_proj"], p.get("v_bias"), f"{attn}.v_proj", "v")
    if cfg.qk_norm:
        q = s.rms_norm(q, p["q_norm"], f"{attn}.q_norm", "q")
        k = s.rms_norm(k, p["k_norm"], f"{attn}.k_norm", "k")
    q = s.emit(RopeOp, [q, pos], q.type, f"{attn}.rotary_emb", "q", **rope_props)
    k = s.emit(RopeOp, [k, pos], k.type, f"{attn}.rotary_emb", "k", **rope_props)
    kc = s.emit(KVCacheWriteOp, [kc, k, pos], kc.type, attn, "kc")
    vc = s.emit(KVCacheWriteOp, [vc, v, pos], vc.type, attn, "vc")
    heads = {
        "num_heads": IntegerAttr(cfg.num_heads, i64),
        "num_kv_heads": IntegerAttr(cfg.num_kv_heads, i64),
        "head_dim": IntegerAttr(cfg.head_dim, i64),
    }
    if window is not None:
        heads["sliding_window"] = IntegerAttr(window, i64)
    a = s.emit(AttentionOp, [q, kc, vc, pos], q.type, attn, "attn", **heads)
    o = s.linear(a, p["o_proj"], p.get("o_bias"), f"{attn}.o_proj", "o")
    h = s.emit(AddOp, [h, o], h.type, prefix, "h")

    y = s.rms_norm(h, p["post_attn_norm"], f"{prefix}.post_attention_layernorm", "y")
    if cfg.is_moe:
        moe = f"{prefix}.block_sparse_moe"
        operands = [y] + [s.weight(p[r]) for r in ("router", "gate_proj", "up_proj", "down_proj")]
        props: dict[str, Attribute] = {
            "num_experts": IntegerAttr(cfg.num_experts, i64),
            "top_k": IntegerAttr(cfg.num_experts_per_tok, i64),
        }
        if cfg.norm_topk_prob:
            props["normalize_top_k"] = UnitAttr()
        d = s.emit(MoEOp, operands, y.type, moe, "moe", **props)
    else:
        mlp = f"{prefix}.mlp"
        g = s.linear(y, p["gate_proj"], p.get("gate_bias"), f"{mlp}.gate_proj", "g")
        u = s.linear(y, p["up_proj"], p.get("up_bias"), f"{mlp}.up_proj", "u")
        g = s.emit(SiluOp, [g], g.type, f"{mlp}.act_fn", "g")
        g = s.emit(MulOp, [g, u], g.type, mlp, "gu")
        d = s.linear(g, p["down_proj"], p.get("down_bias"), f"{mlp}.down_proj", "d")
    h = s.emit(AddOp, [h, d], h.type, prefix, "h")
    s.attrs = {}
    return h, kc, vc


def _rope_props(config: ModelConfig) -> dict[str, Attribute]:
    props: dict[str, Attribute] = {
        "head_dim": IntegerAttr(config.head_dim, i64),
        "theta": FloatAttr(config.rope_theta, f32),
    }
    r = config.rope_scaling
    if r is not None:
        fields = {
            "factor": r.factor,
            "low_freq_factor": r.low_freq_factor,
            "high_freq_factor": r.high_freq_factor,
            "original_max_position_embeddings": r.original_max_position_embeddings,
        }
        props["scaling"] = RopeScalingAttr.from_values(
            r.kind, **{k: v for k, v in fields.items() if v is not None}
        )
    return props


def build_decode_step(
    config: ModelConfig, *, batch: int = 1, context: int | None = None, dtype: str = "bf16"
) -> ModuleOp:
    """One decode step of `config` (see `docs/decode_step.md`).

    `batch` entries, each with its own position; KV caches `context` rows long (default
    :func:`default_context`); sliding windows that cover the whole cache are dropped
    (`ModelConfig.effective_windows`). Raises ValueError for a non-positive batch or context
    or an unknown dtype (callers validate user input first and say which option is wrong), and
    ConfigError for a step too large for any system (:func:`check_step_fits`).
    """
    if context is None:
        context = default_context(config)
    if batch < 1 or context < 1:
        raise ValueError(f"batch and context must be >= 1, got batch={batch}, context={context}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_step_fits(config, batch, context, dtype)
    cfg = config
    s = _StepBuilder(cfg, batch, DTYPES[dtype])
    ids = TensorType(i32, (batch,))
    cache = s.tensor(cfg.num_layers, batch, cfg.num_kv_heads, context, cfg.head_dim)
    logits_t = s.tensor(batch, cfg.vocab_size)
    step = func.FuncOp("decode_step", ([ids, ids, cache, cache], [logits_t, ids, cache, cache]))
    step.location = _loc("decode_step")
    block: Block = step.body.block
    for arg, hint in zip(block.args, ("tokens", "positions", "k_cache", "v_cache")):
        arg.name_hint = hint
    tokens, pos, k_cache, v_cache = block.args

    embed_spec, norm_spec, *head_spec = cfg.global_tensors()
    embed = s.param(embed_spec.name, embed_spec.shape)
    layer_params = [_layer_params(s, cfg.layer_tensors(i), i) for i in range(cfg.num_layers)]
    final_norm = s.param(norm_spec.name, norm_spec.shape)
    lm_head = s.param(head_spec[0].name, head_spec[0].shape) if head_spec else embed

    h = s.emit(
        EmbeddingOp,
        [s.weight(embed), tokens],
        s.tensor(batch, cfg.hidden_size),
        "model.embed_tokens",
        "h",
    )
    rope_props = _rope_props(cfg)
    new_k: list[SSAValue] = []
    new_v: list[SSAValue] = []
    for i, window in enumerate(cfg.effective_windows(context)):
        h, kc, vc = _layer(s, i, layer_params[i], h, pos, k_cache, v_cache, window, rope_props)
        new_k.append(kc)
        new_v.append(vc)
    hn = s.rms_norm(h, final_norm, "model.norm", "hn")
    logits = s.linear(hn, lm_head, None, "lm_head", "logits")
    next_tokens = s.emit(ArgmaxOp, [logits], ids, "lm_head", "next")
    k_out = s.emit(StackOp, new_k, cache, "kv_cache", "k_cache_out")
    v_out = s.emit(StackOp, new_v, cache, "kv_cache", "v_cache_out")
    ret = func.ReturnOp(logits, next_tokens, k_out, v_out)
    ret.location = _loc("decode_step")
    block.add_ops([*s.body, ret])

    module = ModuleOp(Region(Block([*s.params, step])))
    module.attributes[MODEL_ATTR] = StringAttr(cfg.name)
    return module
