"""Expert parallelism (`moe=expert`): the experts dealt over the sockets, each socket binding
its own experts' checkpoint tensors (`Source.sockets`) and computing them from its first one
on (`expert_start` per socket), the all-reduce after the block adding the sockets' sums.
Functional equality with the reference at 1, 2 and 4 sockets, looped and unlooped; a wrong
binding or a broken cross-socket combine is caught; the IR, the refusals and the timing
figures (the busiest socket's bytes, the unsharded step's share on the roofline)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import numpy as np
import pytest
from compiled import compiled
from logit_tolerance import BF16_ULPS, logit_tolerance
from test_functional import (
    BATCH,
    CONTEXT,
    FEATURES,
    PROMPT,
    SEED,
    STEPS,
    check_teacher_forced,
    reference_run,
)
from test_shard_tensor_parallel import _matches as matches
from test_shard_tensor_parallel import apply, build, run
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.lowering.lower_dfk_to_rdu import Mapping
from rdu_compiler.passes.kernel_looping import KernelLooping
from rdu_compiler.passes.outline_kernels import OutlineKernels
from rdu_compiler.passes.shard_tensor_parallel import ShardTensorParallel
from rdu_compiler.rdu_dialect import llm
from rdu_compiler.simulator.functional import FunctionalSimulator
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.program import load_program
from rdu_compiler.simulator.report import summarize
from rdu_compiler.simulator.timing import simulate
from rdu_compiler.simulator.weights import RandomWeights

PRESET = "tiny-mixtral"  # 4 experts, top 2: the only tiny MoE preset
# 2 experts, top 2: on 4 sockets each expert is split over 2 (they deal its intermediate rows)
TWO_EXPERTS = str(Path(__file__).parent / "configs" / "tiny-mixtral-2x.json")
EXACT = Mapping(collective_dtype="f32")  # the sockets' f32 sums are rounded once


def expert(sockets: int) -> ShardTensorParallel:
    return ShardTensorParallel(sockets=sockets, moe="expert")


@pytest.mark.parametrize("looped", [True, False], ids=["looped", "unlooped"])
@pytest.mark.parametrize("sockets", [1, 2, 4])
@pytest.mark.parametrize("model", [PRESET, TWO_EXPERTS], ids=["4-experts", "2-experts"])
def test_reference_of_dealt_experts_equals_unsharded(model, sockets, looped):
    """Top 2: each entry's two experts sum in one order on any split, so the f32 sums the
    ranks hand the all-reduce give the unsharded answer within bf16 tolerance (here, on
    these weights, bit for bit)."""
    passes = [OutlineKernels(), *([KernelLooping()] if looped else []), expert(sockets)]
    module = apply(build(model), *passes)
    moes = [op for op in module.walk() if isinstance(op, llm.MoEOp)]
    experts = moes[0].num_experts.value.data
    assert all(llm.expert_shards_of(op) == min(sockets, experts) for op in moes)
    matches(run(module), run(build(model)), f"{model} moe=expert x{sockets}")


@pytest.mark.parametrize("mapping", [None, FEATURES, EXACT], ids=["default", "features", "f32"])
@pytest.mark.parametrize("looped", [True, False], ids=["looped", "unlooped"])
@pytest.mark.parametrize("sockets", [1, 2, 4])
def test_functional_matches_reference(sockets, looped, mapping):
    """Real tokens routed on every socket: each computes the routed experts it holds."""
    program = compiled(
        PRESET,
        sockets=sockets,
        looped=looped,
        batch=BATCH,
        context=CONTEXT,
        mapping=mapping,
        moe="expert",
    )
    check_teacher_forced(program, PRESET, sockets)


@pytest.mark.parametrize("looped", [True, False], ids=["looped", "unlooped"])
@pytest.mark.parametrize("sockets", [1, 2, 4])
def test_functional_matches_reference_with_fewer_experts_than_sockets(sockets, looped):
    """2 experts: one per socket on 2 sockets; on 4, each expert's sources on its 2 sockets,
    which deal its intermediate rows (`interleave`), each socket computing its half."""
    program = compiled(
        TWO_EXPERTS, sockets=sockets, looped=looped, batch=BATCH, context=CONTEXT, moe="expert"
    )
    if sockets == 4:
        w1 = next(
            t for t in program.tensors if t.name.endswith("0.block_sparse_moe.experts.w1.weight")
        )
        assert [(s.sockets, s.interleave) for s in w1.sources] == [
            ([0, 1], [2, 1]),
            ([2, 3], [2, 1]),
        ]
    check_teacher_forced(program, TWO_EXPERTS, sockets)


def _rotate_expert_sockets(unit_or_program: dict) -> None:
    """Every gate-projection tensor's experts bound one socket further on (socket s holds
    the expert meant for s - 1)."""
    n = unit_or_program["sockets"]
    for tensor in unit_or_program["tensors"]:
        if tensor["name"].endswith("experts.w1.weight"):
            for source in tensor["sources"]:
                source["sockets"] = [(s + 1) % n for s in source["sockets"]]


def _corrupt_program(program, mutate) -> object:
    builtins = msgspec.to_builtins(program)
    mutate(builtins)
    return load_program(msgspec.json.encode(builtins))


def _unit(builtins: dict, unit_id: str) -> dict:
    units = [u for k in builtins["kernels"] for s in k["sections"] for u in s["units"]]
    return next(u for u in units if u["id"] == unit_id)


@pytest.mark.parametrize(
    "mutate",
    [
        # every socket thinks it holds the first experts
        lambda p: _unit(p, "moe.part")["attr_by_socket"].update(expert_start=[0, 0, 0, 0]),
        # the gate projections' experts bound to the wrong sockets
        _rotate_expert_sockets,
        # no cross-socket sum: each socket keeps its own experts' share (the all-reduce after
        # the experts, the residual add fused into it, writes `h_2`)
        lambda p: _unit(p, "h_2").update(op="all_gather", attrs={"dim": 0, "group": 1}),
    ],
    ids=["expert-start", "expert-binding", "no-cross-socket-sum"],
)
def test_wrong_binding_or_combine_gives_a_mismatch(mutate):
    """The good program is within the bf16 tolerance of the reference at every step (its
    expert blocks over PCUs reorder sums); the corrupted one is off by more than twice the
    tolerance in some batch row at some step."""
    program = compiled(PRESET, sockets=4, batch=BATCH, context=CONTEXT, moe="expert")
    bad = _corrupt_program(program, mutate)
    fed, want = reference_run(PRESET)
    sims = [FunctionalSimulator(p, RandomWeights(SEED)) for p in (program, bad)]
    worst = [0.0, 0.0]  # the largest error over the tolerance, good and bad program
    for position in range(len(PROMPT) + STEPS - 1):
        tol = logit_tolerance(want[position].astype(np.float32), BF16_ULPS)
        for i, sim in enumerate(sims):
            got = sim.decode(
                np.full(BATCH, fed[position], np.int32), np.full(BATCH, position, np.int32)
            )[0]
            error = np.abs(got.astype(np.float32) - want[position].astype(np.float32))
            worst[i] = max(worst[i], float((error.max(axis=-1) / tol).max()))
    assert worst[0] <= 1 < 2 < worst[1], worst


def test_refused_when_experts_do_not_divide_the_sockets():
    config = dataclasses.replace(load_model_config(PRESET), name="tiny-mixtral-3", num_experts=3)
    module = build_decode_step(config, batch=1, context=8)
    with pytest.raises(
        PassFailedException, match=r"moe=expert deals the 3 experts .*\(use moe=tensor\)"
    ):
        apply(module, OutlineKernels(), expert(2))
    with pytest.raises(PassFailedException, match="moe must be tensor or expert, got 'both'"):
        apply(build(PRESET), ShardTensorParallel(sockets=2, moe="both"))


def _timing(moe: str, batch: int) -> dict:
    program = compiled(PRESET, sockets=4, batch=batch, context=CONTEXT, moe=moe)
    preset = get_preset("sn40l")
    return summarize(program, preset, simulate(program, preset))


def test_timing_counts_the_busiest_socket_against_the_unsharded_roofline():
    """Batch 1, top 2 of 4 experts on 4 sockets: the busiest socket reads its one expert
    whole (tensor mode: a quarter of the two routed ones); both modes have the same roofline
    (the unsharded step's bytes), so the dealt experts' extra reads are lost efficiency (on
    this tiny model the launch costs hide it; bench/moe_expert_parallel.py measures
    Mixtral)."""
    tensor, dealt = _timing("tensor", 1), _timing("expert", 1)
    assert dealt["roofline_bytes"] == tensor["roofline_bytes"]
    assert dealt["hbm_bytes"] > tensor["hbm_bytes"] >= tensor["roofline_bytes"]
    assert "busiest" in dealt["moe_routing"] and "busiest" not in tensor["moe_routing"]


def test_rdu_tune_searches_moe_from_a_space_file():
    """`moe` is no default knob (tuner.NOT_SEARCHED) but a space file may search it, and a
    trial compiles with its value (the prepared module is kept per sharding option)."""
    from rdu_compiler.lowering.pipeline import RduPipeline
    from rdu_compiler.tools import tuner

    assert "moe" not in {k.name for k in tuner.default_space()}
    knobs, _ = tuner.parse_space({"moe": {"values": ["tensor", "expert"]}}, "space.yaml")
    assert knobs[0].values == ("tensor", "expert")
    with pytest.raises(tuner.TuneError, match="knob moe"):
        tuner.parse_space({"moe": "both"}, "space.yaml")
    problem = tuner.Problem(
        PRESET, 1, CONTEXT, None, RduPipeline(sockets=4), tuple(knobs),
        (tuner.Objective("hbm_bytes", "minimize"),),
    )  # fmt: skip
    evaluator = tuner.Evaluator(problem)
    measured = {
        moe: evaluator.evaluate(problem.pipeline({"moe": moe})).objectives
        for moe in ("tensor", "expert")
    }
    for moe, objectives in measured.items():
        assert objectives == {"hbm_bytes": _timing(moe, 1)["hbm_bytes"]}, moe
