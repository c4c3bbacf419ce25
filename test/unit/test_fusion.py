"""Pipeline fusion (`passes/fusion.py`): which elementwise ops run in a neighbour's units, and
what that changes in time (numerics: test_functional's teacher-forced runs and corrupted fused
ops; the program's `fused` validation: test_program)."""

from __future__ import annotations

import pytest
from xdsl.ir import Operation

from rdu_compiler.lowering.pipeline import compile_program, prepare_module
from rdu_compiler.passes import fusion
from rdu_compiler.passes.fusion import plan_fusions
from rdu_compiler.rdu_dialect import dfk, llm
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.timing import simulate

SN40L = get_preset("sn40l")


def _layer_body(sockets: int) -> list[Operation]:
    module = prepare_module("tiny-llama", sockets=sockets, batch=1, context=16)
    (loop,) = [op for op in module.walk() if isinstance(op, dfk.LoopOp)]
    return list(loop.body.ops)


def _names(ops) -> list[str]:
    return [op.name.removeprefix("llm.") for op in ops]


@pytest.mark.parametrize("sockets", [1, 2])
def test_a_llama_layer_fuses_rope_the_gated_mlp_and_the_residual_adds(sockets):
    plan = plan_fusions(_layer_body(sockets))
    by_anchor = {
        anchor.name.removeprefix("llm."): _names(ops)
        for anchor, ops in (*plan.prologues.items(), *plan.epilogues.items())
        if anchor.name != "llm.linear" or ops[0].name != "llm.silu"
    }
    gated = next(ops for anchor, ops in plan.epilogues.items() if ops[0].name == "llm.silu")
    assert _names(gated) == ["silu", "mul"]
    # the residual adds: into the all-reduces (sharded), into the o / down projections (not)
    residual = "all_reduce" if sockets > 1 else "linear"
    assert by_anchor == {"attention": ["rope"], "kv_cache_write": ["rope"], residual: ["add"]}
    adds = [op for op in plan.fused if isinstance(op, llm.AddOp)]
    assert len(adds) == 2 and all(plan.fused[op].operand == -1 for op in adds)
    ropes = {
        type(plan.fused[op].anchor): plan.fused[op].operand
        for op in plan.fused
        if isinstance(op, llm.RopeOp)
    }
    assert ropes == {llm.AttentionOp: 0, llm.KVCacheWriteOp: 1}


def test_a_value_used_twice_is_not_fused():
    """A rope whose result has a second use, or an add of one value to itself, keeps units of
    its own (a fused op's result exists only inside its anchor's pipeline)."""
    body = _layer_body(1)
    rope = next(op for op in body if isinstance(op, llm.RopeOp))
    twice = llm.AddOp.create(operands=[rope.results[0]] * 2, result_types=[rope.results[0].type])
    block = rope.parent_block()
    assert block is not None
    block.insert_op_after(twice, rope)
    assert fusion.fusion_of(rope) is None
    assert fusion.fusion_of(twice) is None


def _trip_spans(program, trip: int) -> dict[str, tuple[float, float]]:
    timing = simulate(program, SN40L, trace=True)
    return {s.track: (s.start, s.end) for s in timing.spans if s.trip == trip}


def test_fusion_shortens_a_path_bound_layer(monkeypatch):
    """llama-3.1-8b on 16 sockets with its kv heads' caches dealt over 2: without fusion the
    layer's 14 PCU hops and 4 collectives are longer than its HBM time; with it, shorter."""
    options = dict(sockets=16, kv_seq_split=2)
    fused = simulate(compile_program("llama-3.1-8b", **options), SN40L).step_s
    monkeypatch.setattr(fusion, "fusion_of", lambda op: None)
    unfused = simulate(compile_program("llama-3.1-8b", **options), SN40L).step_s
    assert fused < 0.92 * unfused


def test_a_fused_read_joins_the_pipeline_at_its_stage():
    """The gate projection's fused mul reads the up projection's block after the gate's own
    stages: it finishes no later than a hop after the up projection (it would finish a whole
    hop after it if the up projection's data had to cross the gate's pipeline too)."""
    program = compile_program("llama-3.1-8b", sockets=16, kv_seq_split=2)
    spans = _trip_spans(program, trip=10)
    hop = SN40L.pcu_stages * SN40L.stage_latency_s
    up, gate = spans["u"], spans["gu"]
    assert gate[1] - up[1] < hop / 2
