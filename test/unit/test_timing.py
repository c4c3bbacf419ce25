"""Timing simulation sanity that cannot pass by accident, on programs of the default pipeline:
bandwidth, sockets and context move the time as the bytes say; the gain of kernel looping
comes from per-call costs, fill / drain and prefetch, and vanishes without all three; the
trace names kernels and layers and shows the memory idle between unlooped layers."""

from __future__ import annotations

import json
from collections import defaultdict

import msgspec
import pytest
from compiled import compiled
from toy_program import build_toy

from rdu_compiler.lowering.lower_dfk_to_rdu import Mapping
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.program import ProgramError, compiled_hardware
from rdu_compiler.simulator.report import (
    CAUSES,
    breakdown,
    chrome_trace,
    format_table,
    summarize,
)
from rdu_compiler.simulator.timing import SimulationError, simulate

SN40L = get_preset("sn40l")
PER_CALL = dict(
    launch_software_s=0,
    launch_hardware_s=0,
    argument_load_s=0,
    program_load_s=0,
    sync_software_s=0,
    sync_hardware_s=0,
)
KV_ROW = 8 * 128 * 2  # llama-3.1-8b: bytes of one position of one layer's K (or V) cache


def step_ms(program, preset=SN40L) -> float:
    """The step time of `program` on `preset` (a what-if on figures other than SN40L's)."""
    return simulate(program, preset, what_if=True).step_s * 1e3


def without_prefetch(program):
    return msgspec.structs.replace(
        program,
        kernels=[
            msgspec.structs.replace(k, loop=msgspec.structs.replace(k.loop, prefetch=0))
            if k.loop is not None
            else k
            for k in program.kernels
        ],
    )


def test_doubling_hbm_bandwidth_speeds_a_memory_bound_step():
    program = compiled("llama-3.1-8b", context=4096)
    base = summarize(program, SN40L, simulate(program, SN40L))
    assert base["bandwidth_fraction_of_peak"] > 0.8  # memory-bound
    fast = step_ms(program, SN40L.replace(hbm_bandwidth=2 * SN40L.hbm_bandwidth))
    assert fast < 0.6 * base["ms_per_token"]
    # ... and doubling the FLOP rate (a faster clock) barely moves it
    assert (
        step_ms(program, SN40L.replace(clock_hz=2 * SN40L.clock_hz)) > 0.95 * base["ms_per_token"]
    )


@pytest.mark.parametrize("looped", [True, False])
def test_more_sockets_shorten_each_layer(looped):
    per_layer = []
    for sockets in (1, 2, 4, 8):
        timing = simulate(
            compiled("llama-3.1-8b", sockets=sockets, looped=looped, context=4096), SN40L
        )
        layers = [c for c in timing.calls if c.layers]
        per_layer.append(sum(c.busy_s for c in layers) / sum(len(c.layers) for c in layers))
    assert all(b < 0.75 * a for a, b in zip(per_layer, per_layer[1:])), per_layer


def test_a_larger_context_adds_kv_traffic():
    short, long = (compiled("llama-3.1-8b", context=c) for c in (1024, 4096))
    a, b = (summarize(p, SN40L, simulate(p, SN40L)) for p in (short, long))
    added = 32 * 2 * KV_ROW * (4096 - 1024)  # every layer reads K and V over the longer context
    assert b["offchip_bytes"] - a["offchip_bytes"] == pytest.approx(added, rel=1e-3)
    rate = SN40L.hbm_bandwidth * SN40L.hbm_efficiency
    assert b["ms_per_token"] - a["ms_per_token"] == pytest.approx(added / rate * 1e3, rel=0.25)


@pytest.mark.parametrize(
    "model, sockets, sources",
    [
        ("llama-3.1-8b", 1, ("per-call costs", "fill / drain", "prefetch")),
        # Here prefetch only fills the 4 MiB the lowering stages per weight stream during a
        # layer's tail, so the drain it could hide is mostly not hidden: without fill / drain both
        # programs shrink by about the same time per layer and the speedup grows instead.
        ("llama-3.1-70b", 16, ("per-call costs", "prefetch")),
    ],
)
def test_looping_gain_comes_from_calls_fill_drain_and_prefetch(model, sockets, sources):
    """The speedup of kernel looping (unlooped / looped time): each of its sources switched
    off alone shrinks it and leaves part of it; per-call costs, fill / drain and prefetch all
    off, looped and unlooped take the same time."""
    looped = compiled(model, sockets=sockets, context=4096)
    unlooped = compiled(model, sockets=sockets, looped=False, context=4096)

    def speedup(preset, prefetch=True):
        program = looped if prefetch else without_prefetch(looped)
        return step_ms(unlooped, preset) / step_ms(program, preset)

    full = speedup(SN40L)
    partial = {
        "per-call costs": speedup(SN40L.replace(**PER_CALL)),
        "fill / drain": speedup(SN40L.replace(stage_latency_s=0)),
        "prefetch": speedup(SN40L, prefetch=False),
    }
    for what in sources:
        assert 1.005 < partial[what] < full - 0.005, (what, partial[what], full)
    bare = SN40L.replace(stage_latency_s=0, **PER_CALL)
    assert speedup(bare, prefetch=False) == pytest.approx(1, abs=0.01)


def test_the_loop_streams_next_trip_loads_during_attention_and_all_reduce():
    """The pipelined loop's own gain, with every per-call cost at zero: loads of layer t + 1
    stage into the loop's reserved buffers while layer t's attention and its all-reduces
    leave HBM idle, so the next layer's linears find
    their weights on chip. Unlooped, each layer's loads wait for its launch; without the
    reservation (prefetch 0) the loop is back to unlooped time."""
    preset = SN40L.replace(**PER_CALL)
    # the loop alone (an LM head in the loop's launch would stream beside it too)
    looped = compiled("llama-3.1-8b", sockets=8, single_launch=False, context=4096)
    unlooped = compiled("llama-3.1-8b", sockets=8, looped=False, context=4096)
    timing = simulate(looped, preset, trace=True, what_if=True)
    plain = simulate(unlooped, preset, what_if=True)
    assert timing.step_s < 0.9 * plain.step_s
    assert step_ms(without_prefetch(looped), preset) == pytest.approx(plain.step_s * 1e3, rel=0.01)
    overlap, idle = breakdown(looped, preset, timing).causes, breakdown(unlooped, preset, plain)
    assert overlap["memory_idle_collectives"] < 0.5 * idle.causes["memory_idle_collectives"]
    # the allocation keeps compute from idling HBM in both (attention over context blocks)
    assert overlap["memory_idle_compute"] <= idle.causes["memory_idle_compute"] < 1e-6
    # the mechanism itself: layer t + 1's weight loads run before layer t's attention ends
    spans = [s for s in timing.spans if s.call == 1]
    attention_end = {s.trip: s.end for s in spans if s.name == "attention_combine"}
    early = {
        s.track
        for s in spans
        if s.name == "load" and s.trip > 0 and s.start < attention_end[s.trip - 1]
    }
    assert {"ld.q_proj", "ld.gate_proj", "ld.down_proj"} <= early


@pytest.mark.parametrize("looped", [True, False])
def test_the_time_breakdown_adds_up_to_the_gap_above_the_memory_roofline(looped):
    # the fixed mapping of old (attention on one PCU per socket, 64 KiB tiles staged per weight
    # PCU) at a context long enough that HBM idles behind attention and the breakdown names it
    old = Mapping(attention_par=1, matmul_par=64, tile_bytes=65536)
    program = compiled("llama-3.1-8b", sockets=8, looped=looped, context=16384, mapping=old)
    s = summarize(program, SN40L, simulate(program, SN40L))
    causes = s["time_breakdown"]
    assert list(causes) == list(CAUSES) and all(v >= 0 for v in causes.values())
    assert sum(causes.values()) == pytest.approx(s["ms_per_token"] - s["memory_roofline_ms"])
    calls = s["calls"]
    assert causes["sync"] == pytest.approx(sum(c["sync_ms"] for c in calls))
    assert causes["launch"] + causes["argument_load"] + causes["program_load"] == pytest.approx(
        sum(c["launch_ms"] for c in calls)
    )
    assert s["memory_idle_compute_by_op"]["attention"] > 0
    assert s["roofline_ms"] == max(s["memory_roofline_ms"], s["compute_roofline_ms"])
    assert s["roofline_fraction"] == pytest.approx(s["roofline_ms"] / s["ms_per_token"])
    assert s["memory_roofline_ms"] < s["memory_roofline_at_efficiency_ms"] < s["ms_per_token"]
    assert "idle while collectives run" in format_table(s)


def test_hardware_launch_cuts_launch_and_sync():
    soft, hard = (
        summarize(p, SN40L, simulate(p, SN40L))
        for p in (
            compiled("llama-3.1-8b", looped=False, context=4096),
            compiled("llama-3.1-8b", looped=False, context=4096, launch="hardware"),
        )
    )
    assert hard["launch_and_sync_ms_per_token"] < 0.5 * soft["launch_and_sync_ms_per_token"]
    assert hard["ms_per_token"] < soft["ms_per_token"]


def test_split_kernels_reload_every_trip():
    """A layer kernel split into sections reconfigures the chip between them, every trip. In
    one launch with the embedding and the LM head, those two join the configurations of the
    loop's first and last sections: no Program Load more."""
    program = compiled(
        "tiny-llama",
        context=64,
        hw_overrides="pcus=200,pmus=200",
        mapping=Mapping(matmul_par=64),
        single_launch=False,
    )
    small = compiled_hardware(program)  # timed on the figures it was compiled for
    layer = program.kernels[1]
    trips, sections = layer.loop.trips, len(layer.sections)
    assert sections > 1
    timing = simulate(program)
    call = timing.calls[1]
    assert call.program_load_s == pytest.approx(trips * sections * small.program_load_s)
    assert call.busy_s > (trips * sections - 1) * small.program_load_s
    cheap = simulate(program, small.replace(program_load_s=0), what_if=True).calls[1]
    assert call.busy_s - cheap.busy_s == pytest.approx(
        (trips * sections - 1) * small.program_load_s, rel=1e-6
    )
    s = summarize(program, small, timing)
    assert s["calls"][1]["program_load_ms"] == pytest.approx(call.program_load_s * 1e3)
    one = compiled(
        "tiny-llama", context=64, hw_overrides="pcus=200,pmus=200", mapping=Mapping(matmul_par=64)
    )
    (kernel,) = one.kernels
    assert len(kernel.sections) == sections + 2
    assert len(kernel.configurations()) == sections
    (merged,) = simulate(one).calls
    assert merged.program_load_s == pytest.approx(trips * sections * small.program_load_s)


def test_70b_on_16_sockets_simulates_all_80_trips():
    """Simulation speed is a benchmark (bench/engine_speed.py, bench/decode_timing.py)."""
    program = compiled("llama-3.1-70b", sockets=16, context=4096)
    timing = simulate(program, SN40L)
    (call,) = timing.calls  # the embedding, 80 trips of the layer and the LM head
    assert call.trips == 80


def test_report_figures_are_consistent():
    program = compiled("llama-3.1-8b", sockets=8, looped=False, context=4096)
    timing = simulate(program, SN40L)
    s = summarize(program, SN40L, timing)
    assert s["launches_per_token"] == 34 and len(s["calls"]) == 34
    assert s["ms_per_token"] == pytest.approx(
        sum(c["launch_ms"] + c["busy_ms"] + c["sync_ms"] for c in s["calls"])
    )
    assert s["tokens_per_s"] == pytest.approx(1e3 / s["ms_per_token"])
    assert s["achieved_bandwidth"] == pytest.approx(s["offchip_bytes"] / s["ms_per_token"] * 1e3)
    # replicated bytes (norms, the residual stream, the LM head if replicated) are moved but
    # not counted by the roofline: it is below the fraction of peak
    assert s["roofline_bytes"] < s["offchip_bytes"]
    assert s["roofline_fraction"] < s["bandwidth_fraction_of_peak"]
    assert 0 < s["pcu_busy_fraction"] <= s["pcu_occupied_fraction"] <= 1
    assert "decoder_layer" in format_table(s)


def test_moe_reports_active_and_total_bytes():
    program = compiled("mixtral-8x7b", context=4096)
    s = summarize(program, SN40L, simulate(program, SN40L))
    assert s["moe_routing"] and s["weight_bytes_loaded"] < 0.5 * s["param_bytes"]


def test_trace_names_kernels_and_layers_and_shows_the_gaps():
    unlooped = compiled("llama-3.1-8b", sockets=8, looped=False, context=4096)
    timing = simulate(unlooped, SN40L, trace=True)
    trace = json.loads(json.dumps(chrome_trace(unlooped, SN40L, timing)))
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = {e["name"] for e in spans}
    assert {"layer 0", "layer 31", "launch", "sync"} <= names
    assert any(e["args"].get("layers") == [5] and e["name"] == "x" for e in spans)
    tracks = {
        e["args"]["name"]: e["tid"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    hbm = sorted((e["ts"], e["ts"] + e["dur"]) for e in spans if e["tid"] == tracks["hbm"])
    gaps = [b[0] - a[1] for a, b in zip(hbm, hbm[1:])]
    per_call = (SN40L.launch_software_s + SN40L.argument_load_s + SN40L.sync_software_s) * 1e6
    assert sum(g >= per_call for g in gaps) >= 31  # memory idle at every layer boundary
    looped = compiled("llama-3.1-8b", sockets=8, context=4096)
    trace = chrome_trace(looped, SN40L, simulate(looped, SN40L, trace=True))
    names = {e.get("name") for e in trace["traceEvents"]}
    assert "embed, layers 0-31, lm_head: layer 7 (trip 7)" in names


def test_the_trace_nests_marks_idle_causes_and_counts_bandwidth_and_buffers():
    """Complete events on one track nest (loop trips and a load's overlapping trips are
    async spans, every begin with its end); the memory's idle intervals carry the causes the
    breakdown counts; counters for HBM, DDR and P2P bandwidth and staged bytes."""
    looped = compiled("llama-3.1-8b", sockets=8, context=4096)
    timing = simulate(looped, SN40L, trace=True)
    events = json.loads(json.dumps(chrome_trace(looped, SN40L, timing)))["traceEvents"]
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    for tid in tracks:
        spans = sorted(
            ((e["ts"], e["ts"] + e["dur"]) for e in events if e["ph"] == "X" and e["tid"] == tid),
            key=lambda s: (s[0], -s[1]),
        )
        stack: list[float] = []
        for start, end in spans:
            while stack and stack[-1] <= start + 1e-6:
                stack.pop()
            assert not stack or end <= stack[-1] + 1e-6, tracks[tid]
            stack.append(end)
    begins = {(e["cat"], e["id"]): e["ts"] for e in events if e["ph"] == "b"}
    ends = {(e["cat"], e["id"]): e["ts"] for e in events if e["ph"] == "e"}
    assert begins.keys() == ends.keys() and all(ends[k] >= begins[k] for k in begins)
    trips = [e for e in events if e["ph"] == "b" and e["cat"] == "trip"]
    assert "embed, layers 0-31, lm_head: layer 7 (trip 7)" in {e["name"] for e in trips}
    loads = [e for e in events if e["ph"] == "b" and e["cat"] == "ld.gate_proj"]
    assert len(loads) == 32  # trips overlap on this unit: async
    idle = defaultdict(float)
    for e in events:
        if e["ph"] == "X" and tracks[e["tid"]] == "hbm idle":
            idle[e["args"]["cause"]] += e["dur"] * 1e-6
    causes = breakdown(looped, SN40L, timing).causes
    for cause in ("sync", "memory_idle_compute", "memory_idle_collectives", "fill_drain"):
        assert idle[cause] == pytest.approx(causes[cause], rel=1e-6, abs=1e-12), cause
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert counters == {
        "HBM bandwidth (B/s)",
        "DDR bandwidth (B/s)",
        "P2P bandwidth (B/s)",
        "staged in buffers (B)",
    }
    staged = [e["args"]["value"] for e in events if e["name"] == "staged in buffers (B)"]
    assert max(staged) > 0 and staged[-1] == pytest.approx(0, abs=1)


def test_the_vocab_parallel_lm_head_shortens_with_sockets():
    """Each socket reads `1 / N` of the LM head and computes `vocab / N` logits; the logits'
    all-gather is a few hundred KB of P2P traffic, so the head's time keeps shrinking."""
    head = []
    for sockets in (1, 2, 4, 8, 16):
        program = compiled("llama-3.1-8b", sockets=sockets, single_launch=False, context=4096)
        timing = simulate(program, SN40L)
        head.append(next(c.busy_s for c in timing.calls if c.kernel == "lm_head"))
    assert all(b < 0.6 * a for a, b in zip(head, head[1:])), head


def test_one_launch_runs_prologue_loop_and_epilogue_in_order():
    """The toy step as one launch (embedding, looped layers and head in one kernel): one
    launch, Argument Load and sync, and no Program Load when the three parts are configured
    together (the chip holds the step's only configuration). Their data orders them: trip 0
    loads the residual stream after the embedding stored it, the head after the last trip
    did; the head's weights stream in while the layers run. In three configurations, a
    Program Load at launch and between the parts, and each part starts after the previous
    one ended."""
    per_call = SN40L.launch_software_s + SN40L.argument_load_s + SN40L.sync_software_s
    three = simulate(build_toy(looped=True), SN40L)
    for together in (True, False):
        timing = simulate(build_toy(looped=True, one_launch=together), SN40L, trace=True)
        (call,) = timing.calls
        loads = 0 if together else 3
        assert call.program_load_s == pytest.approx(loads * SN40L.program_load_s)
        assert timing.step_s == pytest.approx(call.launch_s + call.busy_s + SN40L.sync_software_s)
        # the parts' own work takes no longer than in three launches (plus the Program
        # Loads between three configurations)
        between = 0 if together else 2 * SN40L.program_load_s
        assert call.busy_s <= sum(c.busy_s for c in three.calls) + between + 1e-12
        span = {(s.track, s.trip): s for s in timing.spans}
        assert span["embed.st_h", -1].end <= span["ld_h", 0].start
        assert span["st_h", 1].end <= span["head.ld_h", -1].start
        head_weights = span["head.ld_lm", -1].start
        if together:
            assert head_weights < span["st_h", 1].start
        else:
            assert head_weights >= span["st_h", 1].end + SN40L.program_load_s
            assert span["ld_norm", 0].start >= span["embed.st_h", -1].end
    one = simulate(build_toy(looped=True, one_launch=True), SN40L)
    assert three.step_s - one.step_s == pytest.approx(
        2 * per_call + 3 * SN40L.program_load_s, rel=1e-3
    )


def test_timed_on_the_hardware_it_was_compiled_for_unless_asked():
    """A program is timed on the hardware it records (`compiled_hardware`, the default):
    another preset is refused, naming both, unless the caller says it is a what-if, which is
    then checked for fit like any program on that hardware."""
    program = build_toy(looped=True)
    assert simulate(program).step_s == simulate(program, SN40L).step_s
    faster = SN40L.replace(hbm_bandwidth=3.6e12)
    with pytest.raises(SimulationError) as refused:
        simulate(program, faster)
    assert str(refused.value) == (
        "the program was compiled for sn40l, not for sn40l with hbm_bandwidth=3600000000000.0: "
        "timing it on other hardware is a what-if (simulate(..., what_if=True), "
        "rdu-sim --hw-override)"
    )
    assert simulate(program, faster, what_if=True).step_s < simulate(program).step_s
    with pytest.raises(ProgramError, match="needs 7 but sn40l with pcus=4 has 4"):
        simulate(program, SN40L.replace(pcus=4), what_if=True)
    recorded = msgspec.structs.replace(program, hardware_overrides={"hbm_bandwidth": 3.6e12})
    assert simulate(recorded, faster).step_s == simulate(program, faster, what_if=True).step_s
    with pytest.raises(SimulationError, match="compiled for sn40l with hbm_bandwidth="):
        simulate(recorded, SN40L)
