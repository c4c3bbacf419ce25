"""`lower-dfk-to-rdu`, `-t rdu-program` and the default pipeline: every tiny preset compiles to
a valid program at 1, 2 and 4 sockets, the bytes are deterministic, looping changes only the
schedule, weights spill to DDR when HBM is full (405B on one socket), and kernels split into
sections still compute exactly what the reference does.

(The functional check of ordinary programs against the reference is the simulator's, in
`test_functional.py`; here only what the sections add is run.)"""

import re
from typing import Any

import msgspec
import numpy as np
import pytest
from xdsl.context import Context
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import list_presets, load_model_config
from rdu_compiler.lowering.allocation import PACE
from rdu_compiler.lowering.lower_dfk_to_rdu import LowerDfkToRdu, Mapping
from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine
from rdu_compiler.simulator.functional import FunctionalSimulator
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.program import (
    Agcu,
    Kernel,
    Launch,
    Program,
    ProgramError,
    encode_program,
    validate_program,
)
from rdu_compiler.simulator.weights import RandomWeights

TINY = [p for p in list_presets() if p.startswith("tiny-")]


@pytest.mark.parametrize("sockets", [1, 2, 4])
@pytest.mark.parametrize("preset", TINY)
def test_every_tiny_preset_compiles(preset, sockets):
    for looped in (True, False):
        validate_program(compile_program(preset, sockets=sockets, kernel_looping=looped, batch=2))


def test_compile_api_takes_a_name_a_config_or_a_module():
    config = load_model_config("tiny-llama")
    by_name = compile_program("tiny-llama", batch=3, context=64)
    assert by_name == compile_program(config, batch=3, context=64)
    assert by_name == compile_program(build_decode_step(config, batch=3, context=64))
    assert (by_name.batch, by_name.context) == (3, 64)


def test_fusion_per_op_compiles():
    program = compile_program("tiny-llama", fusion="op", kernel_looping=False)
    validate_program(program)
    assert len(program.kernels) > 10


def test_stacked_results_of_a_loop_are_written_trip_by_trip():
    """With one-op kernels, kernel looping loops the k and v projections of a layer: the
    result comes out stacked and is taken apart by `dfk.slice`. Its param is a stacked param
    of the loop, bound to one activation tensor with a leading dimension of the trip count,
    whose slices later launches read; the launch belongs to the layer of the calls it
    replaced, once per trip. (Its numbers: `test_functional.py`, `fusion=op`.)"""
    program = compile_program("tiny-llama", fusion="op")
    (kernel, *_) = [k for k in program.kernels if k.loop and k.name.startswith("linear")]
    (result,) = {u.write.name for sec in kernel.sections for u in sec.units if u.op == "store"}
    assert result in kernel.loop.stacked
    launch = next(s for s in _launches(program) if s.kernel == kernel.name)
    (view,) = next(b.tensors for b in launch.bindings if b.param == result)
    tensor = next(t for t in program.tensors if t.name == view.tensor)
    param = next(p for p in kernel.params if p.name == result)
    assert view.index == [] and tensor.shape == [kernel.loop.trips, *param.shape]
    read = [
        v.index
        for s in _launches(program)
        for b in s.bindings
        for v in b.tensors
        if v.tensor == tensor.name and s is not launch
    ]
    assert sorted(read) == [[i] for i in range(kernel.loop.trips)]
    assert (launch.label, launch.layers) == ("layer 0", [0] * kernel.loop.trips)


@pytest.mark.parametrize(
    "preset, sockets, split", [("tiny-llama", 1, -1), ("tiny-mixtral", 2, -1), ("tiny-qwen2", 4, 2)]
)
def test_same_input_gives_identical_bytes(preset, sockets, split):
    first, second = (
        encode_program(compile_program(preset, sockets=sockets, kv_seq_split=split))
        for _ in range(2)
    )
    assert first == second


def test_looping_changes_only_the_schedule_of_caches_dealt_along_the_sequence():
    """The dealt attention's units (query and partial gathers, per-socket positions) are
    the same in the looped and unlooped programs."""
    looped, flat = (
        compile_program(
            "tiny-llama", sockets=4, kernel_looping=k, kv_seq_split=2, single_launch=False
        )
        for k in (True, False)
    )
    body, layer = _layer_kernel(looped), _layer_kernel(flat)
    assert (body.params, body.sections) == (layer.params, layer.sections)
    assert any(u.attrs.get("group") == 2 for s in body.sections for u in s.units)


def test_summary_shows_how_shared_kv_heads_are_held(capsys):
    """`summary=true` says whether kv heads shared by several sockets are replicated or dealt
    along the sequence, with the cost model's figures; `kv-seq-split` overrides the choice."""
    from rdu_compiler.lowering.pipeline import prepare_module

    for split, how in ((-1, "replicated"), (2, "dealt along the sequence over 2")):
        module = prepare_module("tiny-llama", sockets=4, context=16, kv_seq_split=split)
        LowerDfkToRdu(summary=True).apply(Context(), module)
        err = capsys.readouterr().err
        assert f"KV caches: each kv head shared by 2 sockets, {how} (cost model" in err
        assert re.search(r"replicated [0-9.]+ us, dealt over 2 [0-9.]+ us", err)


def test_summary_costs_every_layer_of_an_unlooped_step(capsys):
    """The cost model's figures in the summary are per step: an unlooped step, whose layers
    all call one kernel, costs as many layers as the looped step's trips (each call counted)."""
    from rdu_compiler.lowering.pipeline import prepare_module

    figures = []
    for looping in (True, False):
        module = prepare_module(
            "tiny-llama", sockets=4, context=16, kernel_looping=looping, kv_seq_split=2
        )
        LowerDfkToRdu(summary=True).apply(Context(), module)
        err = capsys.readouterr().err
        found = re.search(r"replicated ([0-9.]+) us, dealt over 2 ([0-9.]+) us", err)
        assert found is not None, err
        figures.append(tuple(float(x) for x in found.groups()))
    looped, unlooped = figures
    assert unlooped == pytest.approx(looped, rel=0.05)


def _layer_kernel(program: Program) -> Kernel:
    (kernel,) = [k for k in program.kernels if k.name.startswith("decoder_layer")]
    return kernel


def _launches(program: Program) -> list[Launch]:
    return [s for s in program.schedule if isinstance(s, Launch)]


@pytest.mark.parametrize("sockets", [1, 2])
@pytest.mark.parametrize("preset", [p for p in TINY if p != "tiny-alternating"])
def test_looping_changes_only_the_schedule(preset, sockets):
    """Same params, sections, units and work; the looped kernel adds a loop whose stacked
    params are bound, trip by trip, to what the unlooped launches bind; same tensors."""
    looped = compile_program(preset, sockets=sockets, kernel_looping=True, single_launch=False)
    flat = compile_program(preset, sockets=sockets, kernel_looping=False)
    body, layer = _layer_kernel(looped), _layer_kernel(flat)
    assert body.loop is not None and layer.loop is None
    assert (body.params, body.sections) == (layer.params, layer.sections)
    assert sorted(looped.tensors, key=lambda t: t.name) == sorted(
        flat.tensors, key=lambda t: t.name
    )
    per_layer = [s for s in _launches(flat) if s.kernel == layer.name]
    (loop_launch,) = [s for s in _launches(looped) if s.kernel == body.name]
    assert loop_launch.layers == [layer for s in per_layer for layer in s.layers]
    for binding in loop_launch.bindings:
        views = [b.tensors for s in per_layer for b in s.bindings if b.param == binding.param]
        if binding.param in body.loop.stacked and len(binding.tensors) > 1:
            assert binding.tensors == [v for vs in views for v in vs]
        elif binding.param in body.loop.stacked:  # one stacked view: the whole KV cache
            assert [v.index for vs in views for v in vs] == [[i] for i in range(len(views))]
        else:
            assert all(vs == binding.tensors for vs in views)


def _resolved(kernel: Kernel, launch: Launch, prefix: str) -> list[Any]:
    """What `kernel`'s sections compute, names aside: units with `prefix` taken off their
    ids, accesses to params as the views the launch binds them to."""
    views = {b.param: [(v.tensor, tuple(v.index)) for v in b.tensors] for b in launch.bindings}

    def access(a: Any) -> Any:
        return (views.get(a.name, a.name), a.ranges, a.step)

    def rest(unit: Any) -> dict[str, Any]:
        fields = msgspec.to_builtins(unit).items()
        return {k: v for k, v in fields if k not in ("id", "reads", "write")}

    return [
        (
            section.resources,
            [(b.shape, b.dtype) for b in section.buffers],
            [
                (
                    u.id.removeprefix(prefix),
                    rest(u),
                    [access(a) for a in u.reads],
                    access(u.write),
                )
                for u in section.units
            ],
            [
                (s.producer.removeprefix(prefix), s.consumer.removeprefix(prefix), s.bytes)
                for s in section.streams
            ],
        )
        for section in kernel.sections
    ]


@pytest.mark.parametrize(
    "preset, sockets", [("tiny-llama", 2), ("tiny-mixtral", 1), ("tiny-alternating", 2)]
)
def test_one_launch_keeps_every_part_as_mapped(preset, sockets):
    """`single-launch` (the default) makes the looped step one launch whose kernel runs the
    embedding's sections, the loop, and the LM head's sections: each part computes what its
    own kernel computes in three launches (the same units, work and resources on the same
    views), only ids get the part's kernel as prefix; tensors are the same."""
    three = compile_program(preset, sockets=sockets, single_launch=False)
    one = compile_program(preset, sockets=sockets)
    (launch,) = _launches(one)
    (kernel,) = one.kernels
    assert kernel.name == "+".join(s.kernel for s in _launches(three))
    assert launch.label == ", ".join(s.label for s in _launches(three))
    assert (one.tensors, one.values) == (three.tensors, three.values)
    kernels = {k.name: k for k in three.kernels}
    want = []
    for part in _launches(three):
        own = kernels[part.kernel]
        want += _resolved(own, part, "" if own.loop is not None else f"{own.name}.")
        if own.loop is not None:
            assert kernel.loop is not None and (kernel.loop.trips, kernel.loop.prefetch) == (
                own.loop.trips,
                own.loop.prefetch,
            )
            assert launch.layers == part.layers
    got = []
    for s, section in enumerate(kernel.sections):
        prefix = "" if s in kernel.looped_sections() else section.units[0].id.split(".")[0] + "."
        got += _resolved(msgspec.structs.replace(kernel, sections=[section]), launch, prefix)
    assert got == want


def test_strided_cache_slices_of_a_period_2_loop_are_views():
    """tiny-alternating loops its layers in periods of two kinds (A B A B): each kind's cache
    slices are every other layer, stacked by a `dfk.stack` that cannot fold back into the
    cache. The lowering binds them as per-trip views of the cache tensor (no copy), the updated
    slices to the cache's alias at the same indices, and moves exactly the cache bytes the
    unlooped program moves (the rows attended, the new rows written)."""
    caches = ("k_cache", "v_cache")
    looped, flat = (compile_program("tiny-alternating", kernel_looping=k) for k in (True, False))
    (launch,) = [s for s in _launches(looped) if ".looped" in s.kernel]
    kernel = next(k for k in looped.kernels if k.name == launch.kernel)
    views = {
        b.param: b.tensors
        for b in launch.bindings
        if b.tensors[0].tensor.removesuffix(".out") in caches
    }
    assert len(views) == 8 and set(views) <= set(kernel.loop.stacked)  # k, v x in, out x kind
    for param, (first, second) in views.items():
        cache = "k_cache" if param.startswith("k") else "v_cache"
        assert (
            first.tensor == second.tensor == (f"{cache}.out" if param.endswith("_out") else cache)
        )
        assert second.index == [first.index[0] + 2]

    def cache_bytes(program: Program) -> int:
        kernels, total = {k.name: k for k in program.kernels}, 0
        for s in _launches(program):
            k = kernels[s.kernel]
            params = {
                b.param for b in s.bindings if b.tensors[0].tensor.removesuffix(".out") in caches
            }
            total += sum(
                k.runs(i) * (u.work.bytes_read + u.work.bytes_written)
                for i, sec in enumerate(k.sections)
                for u in sec.units
                if isinstance(u, Agcu) and {u.write.name, *(a.name for a in u.reads)} & params
            )
        return total

    assert cache_bytes(looped) == cache_bytes(flat)


@pytest.mark.parametrize("looped", [True, False])
def test_405b_on_one_socket_spills_weights_to_ddr(looped):
    program = compile_program("llama-3.1-405b", kernel_looping=looped)
    sn40l = get_preset("sn40l")
    used = {
        tier: sum(
            np.prod(t.shape) * 2 for t in program.tensors if t.tier == tier and t.aliases is None
        )
        for tier in ("hbm", "ddr")
    }
    assert used["ddr"] > 700e9 and 0.9 * sn40l.hbm_bytes < used["hbm"] <= sn40l.hbm_bytes
    assert all(t.tier == "hbm" for t in program.tensors if t.kind != "weight")


def test_placement_does_not_depend_on_looping():
    tiers = [
        {
            t.name: t.tier
            for t in compile_program(
                "tiny-llama", kernel_looping=looped, hw_overrides="hbm_bytes=150000"
            ).tensors
        }
        for looped in (True, False)
    ]
    assert tiers[0] == tiers[1] and set(tiers[0].values()) == {"hbm", "ddr"}


def test_a_model_that_fits_neither_memory_fails():
    with pytest.raises(PassFailedException, match="does not fit: weights and KV caches need"):
        compile_program("tiny-llama", hw_overrides="hbm_bytes=100000,ddr_bytes=1000")


def test_fits_are_checked_against_the_overridden_hardware():
    """A chip of 4000 PMUs holds a layer of llama-3.2-1b in one section, which sn40l's 1040
    cannot: the program validates against the hardware it was compiled for, and records it."""
    program = compile_program(
        "llama-3.2-1b", layers=1, context=64, hw_overrides="pcus=4000,pmus=4000"
    )
    assert max(s.resources.pmus for k in program.kernels for s in k.sections) > 1040
    assert (program.hardware, program.hardware_overrides) == ("sn40l", {"pcus": 4000, "pmus": 4000})
    with pytest.raises(ProgramError, match="needs .* but sn40l has 1040 per socket"):
        validate_program(program, get_preset("sn40l"))


@pytest.mark.parametrize("looped", [True, False])
@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-mixtral"])
def test_sections_compute_what_the_reference_does(preset, looped):
    """A chip of 200 PCUs / PMUs splits the layer into sections (data crossing them through
    scratch tensors; looped, the embedding and the LM head in the same launch around them);
    the program still matches the reference exactly."""
    program = compile_program(
        preset,
        kernel_looping=looped,
        batch=2,
        hw_overrides="pcus=200,pmus=200",
        mapping=Mapping(matmul_par=64),
    )
    layer = next(k for k in program.kernels if "decoder_layer" in k.name)
    assert len(layer.looped_sections() if looped else layer.sections) > 1
    ref = ReferenceEngine(build_decode_step(load_model_config(preset), batch=2), RandomWeights(0))
    sim = FunctionalSimulator(program, RandomWeights(0))
    k_cache, v_cache = ref.new_caches()
    for step, tokens in enumerate([[1, 5], [7, 3], [2, 9]]):
        positions = [step, step + 1]
        logits, _, k_cache, v_cache = ref.step(tokens, positions, k_cache, v_cache)
        np.testing.assert_array_equal(sim.decode(tokens, positions)[0], logits)


def test_mapping_knobs_change_the_splits():
    wide, narrow = (
        _layer_kernel(
            compile_program("tiny-llama", single_launch=False, mapping=Mapping(matmul_par=k))
        )
        for k in (64, 2)
    )
    counts = [{u.id: u.count for u in k.sections[0].units} for k in (wide, narrow)]
    assert counts[0]["q"] == 64 and counts[1]["q"] == 2
    assert msgspec.structs.replace(wide, sections=[]) == msgspec.structs.replace(
        narrow, sections=[]
    )


def test_a_compute_bound_layer_keeps_attention_at_the_pace_of_its_kv_rows():
    """70B at batch 80 on 16 sockets wants more PCUs than the chip has. The KV rows stream
    while attention runs (they are not staged ahead), so attention keeps the PCUs that consume
    them at twice the HBM rate (`PACE`); the linears beside it (same segment, between two
    all-reduces) need only keep pace with it, and the MLP's linears share the rest."""
    preset = get_preset("sn40l")
    program = compile_program(
        "llama-3.1-70b", sockets=16, batch=80, layers=2, context=4096, single_launch=False
    )
    (looped,) = [k for k in program.kernels if k.name == "decoder_layer.looped"]
    count = {u.id: u.count for s in looped.sections for u in s.units}
    vector_rate = preset.pcu_lanes * 4 * preset.clock_hz  # on-chip bytes per PCU per second
    hbm = preset.hbm_bandwidth * preset.hbm_efficiency
    assert count["attn.part"] * vector_rate * PACE >= hbm
    assert count["q"] < count["gu"] and count["o"] < count["d"]
    assert all(s.resources.pcus <= preset.pcus for s in looped.sections)
