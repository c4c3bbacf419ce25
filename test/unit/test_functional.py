"""Functional simulation: the program's units on real numbers equal the llm-level reference
(teacher forcing, every tiny preset, 1 / 2 / 4 sockets, with and without kernel looping,
kernels per layer and per op), a corrupted tile offset gives a wrong answer, and a model too
large for this machine is refused with the memory it needs."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import msgspec
import numpy as np
import pytest
from compiled import compiled
from logit_tolerance import BF16_ULPS, SAME_ROUNDING_ULPS, check_logits, logit_tolerance
from toy_program import B, build_toy, reference, toy_data

from rdu_compiler.lowering.lower_dfk_to_rdu import Mapping
from rdu_compiler.simulator import numerics as N
from rdu_compiler.simulator.functional import FunctionalError, FunctionalSimulator, memory_needed
from rdu_compiler.simulator.program import load_program
from rdu_compiler.simulator.weights import RandomWeights

TINY = [
    "tiny-llama",
    "tiny-mistral",
    "tiny-mixtral",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-alternating",
]
BATCH, CONTEXT, PROMPT, STEPS = 2, 16, [5, 17], 5
SEED = 1


def f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


# -- the hand-written toy program (no lowering involved) ------------------------------------


@pytest.mark.parametrize(
    "looped, one_launch", [(False, None), (True, None), (True, True), (True, False)]
)
@pytest.mark.parametrize("sockets", [1, 2, 4])
def test_toy_program_equals_direct_numerics(looped, one_launch, sockets):
    """(``one_launch``: the embedding, the loop and the head as one launch.)"""
    data = toy_data()
    want = reference(data)
    program = build_toy(looped=looped, sockets=sockets, one_launch=one_launch)
    sim = FunctionalSimulator(program, RandomWeights(0))
    got = sim.step({"tokens": data["tokens"], "positions": data["positions"]})
    assert np.array_equal(f32(got["logits"]), f32(want["logits"]))
    assert np.array_equal(got["next_token"], want["next_token"])
    cache = sim.state()["k_cache"]
    assert np.array_equal(f32(cache), f32(want["k_cache"]))
    # the cache is updated in place in every socket's buffer (the alias shares it)
    for memory in sim.memory:
        assert memory["k_cache.out"] is memory["k_cache"]
        assert np.count_nonzero(f32(memory["k_cache"])) == 2 * B * 16


def test_toy_corrupted_tile_offset():
    data = toy_data()
    builtins = msgspec.to_builtins(build_toy(looped=True))
    up = next(u for u in builtins["kernels"][1]["sections"][0]["units"] if u["id"] == "up")
    up["reads"][1]["step"] = [0, 0]  # both PCUs read the first half of the weight
    bad = FunctionalSimulator(load_program(msgspec.json.encode(builtins)), RandomWeights(0))
    got = bad.step({"tokens": data["tokens"], "positions": data["positions"]})
    assert not np.allclose(f32(got["logits"]), f32(reference(data)["logits"]), atol=2e-2)


# -- lowered programs vs the llm-level reference -------------------------------------------


@cache
def reference_run(preset: str) -> tuple[list[int], list[np.ndarray]]:
    """The reference's tokens (prompt, then its greedy tokens) and logits at every step."""
    from rdu_compiler.frontend.builder import build_decode_step
    from rdu_compiler.frontend.config import load_model_config
    from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine

    module = build_decode_step(load_model_config(preset), batch=BATCH, context=CONTEXT)
    engine = ReferenceEngine(module, RandomWeights(SEED))
    k_cache, v_cache = engine.new_caches()
    fed, logits = list(PROMPT), []
    for position in range(len(PROMPT) + STEPS - 1):
        out, next_tokens, k_cache, v_cache = engine.step(
            np.full(BATCH, fed[position], np.int32),
            np.full(BATCH, position, np.int32),
            k_cache,
            v_cache,
        )
        logits.append(out)
        if position + 1 >= len(fed):
            fed.append(int(next_tokens[0]))
    return fed, logits


@pytest.mark.parametrize("fusion", ["layer", "op"])
@pytest.mark.parametrize("looped", [True, False], ids=["looped", "unlooped"])
@pytest.mark.parametrize("sockets", [1, 2, 4])
@pytest.mark.parametrize("preset", TINY)
def test_matches_reference_with_teacher_forcing(preset, sockets, looped, fusion):
    """`fusion=op` loops runs of one-op kernels inside a layer (the k and v projections),
    whose per-trip results come out stacked and are read back through `dfk.slice`."""
    program = compiled(
        preset, sockets=sockets, looped=looped, batch=BATCH, context=CONTEXT, fusion=fusion
    )
    check_teacher_forced(program, preset, sockets)


def check_teacher_forced(program, preset: str, sockets: int) -> None:
    """The program's logits at every step of `preset`'s teacher-forced reference run (its
    tokens fed) match the reference's: exactly where one socket rounds as the reference does,
    within bf16 ulps where sharding reorders reductions."""
    fed, want = reference_run(preset)
    sim = FunctionalSimulator(program, RandomWeights(SEED))
    ulps = SAME_ROUNDING_ULPS if sockets == 1 else BF16_ULPS
    for position, logits in enumerate(want):
        got, tokens = sim.decode(
            np.full(BATCH, fed[position], np.int32), np.full(BATCH, position, np.int32)
        )
        check_logits(got, tokens, logits, ulps, f"{preset} x{sockets} step {position}")


# Every mapping feature at once, on shapes the tiny presets have: attention split over context
# blocks (flash-decoding partials and their combine stage), experts split over PCUs (partial
# down projections and their combine stage).
FEATURES = Mapping(attention_par=4, matmul_par=4)


@pytest.mark.parametrize("looped", [True, False], ids=["looped", "unlooped"])
@pytest.mark.parametrize("sockets", [1, 2, 4])
@pytest.mark.parametrize("preset", TINY)
def test_mapping_features_match_reference(preset, sockets, looped):
    program = compiled(
        preset, sockets=sockets, looped=looped, batch=BATCH, context=CONTEXT, mapping=FEATURES
    )
    counts = {u.op: u.count for k in program.kernels for s in k.sections for u in s.units}
    assert counts["attention_partial"] > 1 and "attention_combine" in counts
    assert preset != "tiny-mixtral" or counts["moe_partial"] > 1 and "moe_combine" in counts
    check_teacher_forced(program, preset, sockets)


@pytest.mark.parametrize("sockets", [2, 4])
@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2"])
def test_collective_dtype_f32_is_exact_and_bf16_halves_the_links(preset, sockets):
    """`collective-dtype=f32` hands the all-reduces the f32 accumulators: the logits equal the
    sharded reference's bit for bit. `bf16` (what `auto` is for a bf16 model) rounds the
    partials first: half the bytes on the links, within the bf16 tolerance (4 ulps)."""
    fed, want = reference_run(preset)
    programs = {
        dtype: compiled(
            preset,
            sockets=sockets,
            batch=BATCH,
            context=CONTEXT,
            mapping=Mapping(collective_dtype=dtype),
        )
        for dtype in ("f32", "bf16", "auto")
    }

    def reduced_bytes(program) -> int:
        units = [u for k in program.kernels for s in k.sections for u in s.units]
        return sum(u.work.bytes_read for u in units if u.op == "all_reduce")

    assert reduced_bytes(programs["bf16"]) * 2 == reduced_bytes(programs["f32"])
    assert reduced_bytes(programs["auto"]) == reduced_bytes(programs["bf16"])
    sims = {d: FunctionalSimulator(programs[d], RandomWeights(SEED)) for d in ("f32", "bf16")}
    for position, logits in enumerate(want):
        token, at = np.full(BATCH, fed[position], np.int32), np.full(BATCH, position, np.int32)
        exact, _ = sims["f32"].decode(token, at)
        assert np.array_equal(f32(exact), f32(logits))
        got, tokens = sims["bf16"].decode(token, at)
        check_logits(got, tokens, logits, BF16_ULPS, f"{preset} x{sockets} step {position}")


# KV heads fewer than sockets, each kv head's cache dealt along the sequence over `split` of
# the sockets sharing it (forced: at these contexts the cost model replicates): the tiny
# presets' 2 kv heads on 4 sockets, and one-kv-head variants (test/unit/configs) on 2 and 4,
# over all (4 of 4) or some (2 of 4) of the sockets sharing the head; one of them with
# several context blocks per socket as well.
CONFIGS = Path(__file__).parent / "configs"
MQA = [str(CONFIGS / "tiny-llama-mqa.json"), str(CONFIGS / "tiny-mistral-mqa.json")]
DEALT = [
    *((preset, 4, 2, None) for preset in TINY),
    *((model, n, k, None) for model in MQA for n, k in ((2, 2), (4, 4), (4, 2))),
    (MQA[1], 2, 2, FEATURES),
]


@pytest.mark.parametrize("looped", [True, False], ids=["looped", "unlooped"])
@pytest.mark.parametrize(
    "model, sockets, split, mapping",
    DEALT,
    ids=[f"{Path(m).stem}-x{n}-dealt{k}{'-blocks' if f else ''}" for m, n, k, f in DEALT],
)
def test_caches_dealt_along_the_sequence_match_reference(model, sockets, split, mapping, looped):
    fed, want = reference_run(model)
    program = compiled(
        model,
        sockets=sockets,
        looped=looped,
        batch=BATCH,
        context=CONTEXT,
        mapping=mapping,
        kv_seq_split=split,
    )
    units = [u for k in program.kernels for s in k.sections for u in s.units]
    gathers = {u.attrs.get("group") for u in units if u.op == "all_gather"}
    assert split in gathers and any(u.op == "attention_partial" for u in units)
    # several blocks per socket are merged into the one partial the socket sends
    assert mapping is None or any(u.op == "attention_merge" for u in units)
    sim = FunctionalSimulator(program, RandomWeights(SEED))
    for position, logits in enumerate(want):
        got, tokens = sim.decode(
            np.full(BATCH, fed[position], np.int32), np.full(BATCH, position, np.int32)
        )
        check_logits(got, tokens, logits, BF16_ULPS, f"{model} x{sockets} step {position}")


def corrupt(program, unit_id: str, mutate) -> object:
    """The program with one unit's JSON changed (still a valid program)."""
    builtins = msgspec.to_builtins(program)
    units = [u for k in builtins["kernels"] for s in k["sections"] for u in s["units"]]
    mutate(next(u for u in units if u["id"] == unit_id))
    return load_program(msgspec.json.encode(builtins))


@pytest.mark.parametrize(
    "unit_id, mutate",
    [
        # every AGCU loading the gate projection reads the first tile of rows
        ("ld.gate_proj", lambda u: u["reads"][0].update(step=[0, 0])),
        # the PCUs of the gate projection (silu and the mul by the up projection fused into
        # them: unit `gu`) read weight tiles offset by half a tile
        ("gu", lambda u: u["reads"][1].update(step=[u["reads"][1]["step"][0] // 2, 0])),
        # the fused mul reads the up projection's first block in every unit
        ("gu", lambda u: u["fused"][1]["reads"][0].update(step=[0, 0])),
        # the down projection forgets its fused residual add (an all-reduce's on 2 sockets)
        ("h_2", lambda u: u.update(fused=[])),
    ],
    ids=["agcu-load-step", "pcu-tile-offset", "fused-read-step", "fused-add-dropped"],
)
def test_corrupted_tile_offset_gives_a_mismatch(unit_id, mutate):
    program = compiled("tiny-llama", batch=BATCH, context=CONTEXT)
    _assert_mismatch("tiny-llama", program, corrupt(program, unit_id, mutate), steps=1)


@pytest.mark.parametrize("unit_id", ["attn.part", "kc.ld"])
def test_fused_rope_is_run(unit_id):
    """The query's rope runs in the attention's partials, the key's in the KV write (at
    position 0 rope is the identity: the second step shows it)."""
    program = compiled("tiny-llama", batch=BATCH, context=CONTEXT)

    def drop_rope(unit):
        assert [f["op"] for f in unit["fused"]] == ["rope"]
        unit["fused"] = []

    _assert_mismatch("tiny-llama", program, corrupt(program, unit_id, drop_rope), steps=2, factor=1)


def _assert_mismatch(preset: str, program, bad, steps: int, factor: float = 10) -> None:
    """`program` matches the reference over `steps` steps; `bad` is off by more than `factor`
    times the tolerance at the last, in every batch row."""
    fed, want = reference_run(preset)
    sims = [FunctionalSimulator(p, RandomWeights(SEED)) for p in (program, bad)]
    for position in range(steps):
        got = [
            sim.decode(np.full(BATCH, fed[position], np.int32), np.full(BATCH, position, np.int32))[
                0
            ]
            for sim in sims
        ]
    assert np.array_equal(f32(got[0]), f32(want[steps - 1]))
    tol = logit_tolerance(f32(want[steps - 1]), BF16_ULPS)
    assert (np.abs(f32(got[1]) - f32(want[steps - 1])).max(axis=-1) > factor * tol).all()


@pytest.mark.parametrize(
    "preset, unit_id, mutate",
    [
        # every partial attends the first context block's rows (its cache read does not step)
        ("tiny-llama", "attn.part", lambda u: u["reads"][1].update(step=[0, 0, 0, 0])),
        # the partials think their blocks start one block later (masking the wrong rows)
        (
            "tiny-llama",
            "attn.part",
            lambda u: u["attr_step"].update(block_start=2 * u["attr_step"]["block_start"]),
        ),
        # the combine merges only the first block's partials
        ("tiny-llama", "attn", lambda u: u["reads"][0]["ranges"].__setitem__(1, [0, 1])),
        # every expert block reads the first block of the down projection's columns
        ("tiny-mixtral", "moe.part", lambda u: u["reads"][4].update(step=[0, 0, 0])),
        # the combine sums only the first block's partial down projections
        ("tiny-mixtral", "moe", lambda u: u["reads"][2]["ranges"].__setitem__(1, [0, 1])),
    ],
    ids=[
        "partial-cache-step",
        "partial-block-start",
        "combine-blocks",
        "moe-partial-step",
        "moe-combine-blocks",
    ],
)
def test_corrupted_split_gives_a_mismatch(preset, unit_id, mutate):
    """The combine stages (attention over context blocks, experts over PCUs) and their
    partials: a wrong offset or block count changes the answer."""
    program = compiled(preset, batch=BATCH, context=CONTEXT, mapping=FEATURES)
    # positions 0 .. 5 reach the second block of 4 rows: two of six rows go astray
    bad = corrupt(program, unit_id, mutate)
    _assert_mismatch(preset, program, bad, steps=len(PROMPT) + STEPS - 1, factor=2)


@pytest.mark.parametrize(
    "unit_id, mutate",
    [
        # the combine merges only this socket's partials, not the other socket's
        ("attn", lambda u: u["reads"][0]["ranges"].__setitem__(1, [0, 1])),
        # every socket combines the heads of the group's first socket
        ("attn", lambda u: u["attr_by_socket"].update(head_start=[0, 0])),
        # both sockets' partials take their rows for the even positions
        ("attn.part", lambda u: u["attr_by_socket"].update(block_start=[0, 0])),
        # both sockets write the new rows of the even positions
        ("kc.ld", lambda u: u["attr_by_socket"].update(row_offset=[0, 0])),
    ],
    ids=["combine-own-partials", "combine-heads", "partial-positions", "write-positions"],
)
def test_corrupted_cross_socket_combine_gives_a_mismatch(unit_id, mutate):
    """A cache dealt along the sequence over 2 sockets: the cross-socket combine and the
    per-socket positions, each wrong in one way, change the answer."""
    exact = Mapping(collective_dtype="f32")  # the good program equals the reference exactly
    program = compiled(
        MQA[0], sockets=2, batch=BATCH, context=CONTEXT, mapping=exact, kv_seq_split=2
    )
    bad = corrupt(program, unit_id, mutate)
    _assert_mismatch(MQA[0], program, bad, steps=len(PROMPT) + STEPS - 1, factor=2)


@pytest.mark.parametrize("looped", [True, False], ids=["looped", "unlooped"])
def test_kernels_split_into_sections_compute_the_same(looped):
    """A chip with 150 PCUs / PMUs: the layer kernel is split into sections that pass data
    through HBM scratch tensors; the numbers do not change."""
    split = compiled(
        "tiny-llama",
        looped=looped,
        batch=BATCH,
        context=CONTEXT,
        hw_overrides="pcus=150,pmus=150",
        mapping=Mapping(matmul_par=64),
    )
    assert max(len(k.sections) for k in split.kernels) > 1
    whole = compiled("tiny-llama", looped=looped, batch=BATCH, context=CONTEXT)
    sims = [FunctionalSimulator(p, RandomWeights(SEED)) for p in (whole, split)]
    fed, _ = reference_run("tiny-llama")
    for position in range(3):
        a, b = (
            s.decode(np.full(BATCH, fed[position], np.int32), np.full(BATCH, position, np.int32))[0]
            for s in sims
        )
        assert np.array_equal(f32(a), f32(b))


# -- memory --------------------------------------------------------------------------------


def test_refuses_a_model_too_large_for_this_machine():
    program = compiled("llama-3.1-70b", sockets=16, context=4096)
    # Random init draws each param value whole (in f32) before cutting out its blocks.
    need = memory_needed(program, whole_values=True)
    assert need > memory_needed(program)
    assert need > 16 * 140e9 / 16  # every socket's share of 141 GB of weights, and more
    with pytest.raises(FunctionalError) as error:
        FunctionalSimulator(program, RandomWeights(0))
    message = str(error.value)
    assert f"needs about {need / 2**30:.1f} GiB" in message and "available" in message
    assert "time it instead (drop --functional)" in message


def test_memory_estimate_counts_every_socket():
    one, four = (
        memory_needed(compiled("tiny-llama", sockets=s, batch=BATCH, context=CONTEXT))
        for s in (1, 4)
    )
    assert one < four
    with pytest.raises(FunctionalError, match="needs about") as error:
        FunctionalSimulator(
            compiled("tiny-llama", batch=BATCH, context=CONTEXT),
            RandomWeights(0),
            available_bytes=one,
        )
    # Says what it may use (the margin of what is available), so the refusal reads as one.
    usable = f"more than the {0.7 * one / 2**30:.1f} GiB it may use (70% of the"
    assert usable in str(error.value)


def test_missing_or_misshapen_inputs():
    sim = FunctionalSimulator(
        compiled("tiny-llama", batch=BATCH, context=CONTEXT), RandomWeights(0)
    )
    with pytest.raises(FunctionalError, match="missing step inputs: positions"):
        sim.step({"tokens": np.zeros(BATCH, np.int32)})
    with pytest.raises(FunctionalError, match=r"input 'tokens' has shape \[3\]"):
        sim.step({"tokens": np.zeros(3, np.int32), "positions": np.zeros(BATCH, np.int32)})


def test_dtype_of_outputs():
    sim = FunctionalSimulator(
        compiled("tiny-llama", batch=BATCH, context=CONTEXT), RandomWeights(0)
    )
    logits, tokens = sim.decode(np.zeros(BATCH, np.int32), np.zeros(BATCH, np.int32))
    assert logits.dtype == N.BF16 and tokens.dtype == np.int32


# An LM head whose staging, sized as if alone on the chip, does not fit beside the loop's two
# sets of staging on a 2 MiB SRAM (1 MiB on 2 sockets, where the head is half as large): the
# lowering sizes it for what the loop leaves, so it shares the loop's configuration (no
# Program Load in the step), and still computes the reference.
WIDE_VOCAB = str(CONFIGS / "tiny-llama-wide-vocab.json")


@pytest.mark.parametrize("sockets", [1, 2])
def test_lm_head_sized_to_share_the_loop_matches_reference(sockets):
    sram = 2097152 // sockets
    shared = compiled(
        WIDE_VOCAB, sockets=sockets, batch=BATCH, context=CONTEXT, hw_overrides=f"sram_bytes={sram}"
    )
    (kernel,) = shared.kernels
    assert [s.configured_with_previous for s in kernel.sections] == [False, True, True]
    loop = kernel.sections[1].resources.sram_bytes * (1 + kernel.loop.prefetch)
    assert kernel.sections[2].resources.sram_bytes <= sram - loop
    check_teacher_forced(shared, WIDE_VOCAB, sockets)
