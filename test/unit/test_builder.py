"""frontend.builder: the decode step of every preset follows docs/decode_step.md and verifies."""

from __future__ import annotations

import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import NameLoc

from rdu_compiler.frontend.builder import build_decode_step, default_context
from rdu_compiler.frontend.config import list_presets, load_model_config
from rdu_compiler.rdu_dialect.dfk import SliceOp, StackOp
from rdu_compiler.rdu_dialect.llm import AttentionOp, MoEOp, ParamOp, WeightOp, layer_of


def step_of(module) -> func.FuncOp:
    (step,) = [op for op in module.ops if isinstance(op, func.FuncOp)]
    return step


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_and_verifies(name):
    config = load_model_config(name)
    module = build_decode_step(config, context=min(64, default_context(config)))
    module.verify()
    params = [op for op in module.ops if isinstance(op, ParamOp)]
    # One param per checkpoint tensor (experts stacked), named by its source.
    assert sorted(n for p in params for n in p.flat_sources()) == sorted(
        t.name for t in config.checkpoint_tensors()
    )
    assert all(p.sym_name.data == p.source.data for p in params if not p.is_stacked)
    assert module.attributes["llm.model"].data == name


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mixtral", "tiny-qwen3"])
def test_layer_attribute_and_locations(name):
    """Ops of layer i carry llm.layer = i exactly when their location is in model.layers.i;
    the cache plumbing, embedding, final norm, LM head and argmax carry none."""
    module = build_decode_step(load_model_config(name), context=16)
    for op in step_of(module).body.block.ops:
        assert isinstance(op.location, NameLoc), op
        where = op.location.desc.data
        if where.startswith("model.layers."):
            assert layer_of(op) == int(where.split(".")[2]), (op.name, where)
        else:
            assert layer_of(op) is None, (op.name, where)
        if isinstance(op, (SliceOp, StackOp)):
            assert where == "kv_cache"


def test_signature_batch_context_dtype():
    config = load_model_config("tiny-qwen3")
    module = build_decode_step(config, batch=3, context=20, dtype="f32")
    module.verify()
    ft = step_of(module).function_type
    assert [str(t) for t in ft.inputs] == [
        "tensor<3xi32>",
        "tensor<3xi32>",
        "tensor<4x3x2x20x32xf32>",
        "tensor<4x3x2x20x32xf32>",
    ]
    assert [str(t) for t in ft.outputs] == [
        "tensor<3x256xf32>",
        "tensor<3xi32>",
        "tensor<4x3x2x20x32xf32>",
        "tensor<4x3x2x20x32xf32>",
    ]


def test_default_context_is_capped_by_max_positions():
    assert default_context(load_model_config("tiny-llama")) == 128
    assert default_context(load_model_config("llama-3.1-8b")) == 4096


def test_windows_follow_effective_windows():
    config = load_model_config("mistral-7b", layers=2)

    def windows(context):
        module = build_decode_step(config, context=context)
        return [
            op.sliding_window.value.data if op.sliding_window else None
            for op in step_of(module).walk()
            if isinstance(op, AttentionOp)
        ]

    assert windows(4096) == [None, None]  # the 4096 window covers the whole cache
    assert windows(8192) == [4096, 4096]


def test_moe_and_weight_reads():
    config = load_model_config("tiny-mixtral")
    module = build_decode_step(config, context=16)
    moes = [op for op in step_of(module).walk() if isinstance(op, MoEOp)]
    assert len(moes) == config.num_layers
    assert all(op.normalize_top_k is not None and op.top_k.value.data == 2 for op in moes)
    reads = [op for op in step_of(module).walk() if isinstance(op, WeightOp)]
    # Every param is read exactly once (untied model).
    assert len(reads) == len([op for op in module.ops if isinstance(op, ParamOp)])


@pytest.mark.parametrize("bad", [dict(batch=0), dict(context=0), dict(dtype="f16")])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        build_decode_step(load_model_config("tiny-llama"), **bad)
