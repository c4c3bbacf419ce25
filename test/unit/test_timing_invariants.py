"""Invariants of the timing engine: every simulation finishes every unit of every launch or
fails with a message naming what waits on what; the engine makes progress for every parameter
value validation accepts, and validation refuses nonsense naming the parameter; a step is never
shorter than its memory and compute bounds. Property-based over the hand-written toy programs
(looped or not, 1-4 sockets, 1-4 layers, prefetch depths) and the preset's unsourced
parameters over twelve orders of magnitude."""

from __future__ import annotations

import json
import math

import msgspec
import pytest
from compiled import compiled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toy_program import build_toy

from rdu_compiler.simulator import timing
from rdu_compiler.simulator.hardware import TOPOLOGIES, HardwarePreset, PresetError, get_preset
from rdu_compiler.simulator.program import Launch, encode_program
from rdu_compiler.simulator.report import bounds, summarize
from rdu_compiler.simulator.timing import SimulationError, collective_plan, simulate

SN40L = get_preset("sn40l")
FIELDS = {f.name: f.type for f in msgspec.structs.fields(HardwarePreset)}


def with_prefetch(program, prefetch):
    return msgspec.structs.replace(
        program,
        kernels=[
            msgspec.structs.replace(k, loop=msgspec.structs.replace(k.loop, prefetch=prefetch))
            if k.loop is not None
            else k
            for k in program.kernels
        ],
    )


@st.composite
def parameter_values(draw):
    """A few unsourced parameters, each scaled by 10^-6 .. 10^6 (efficiencies drawn in
    (0, 1], integers rounded, at least 1)."""
    names = draw(st.lists(st.sampled_from(SN40L.parameters()), unique=True, max_size=4))
    changes = {}
    for name in names:
        if name == "p2p_topology":
            changes[name] = draw(st.sampled_from(TOPOLOGIES))
            continue
        if name.endswith("_efficiency"):
            changes[name] = draw(st.floats(1e-6, 1.0))
            continue
        scale = 10 ** draw(st.floats(-6, 6))
        value = getattr(SN40L, name) * scale
        changes[name] = max(1, round(value)) if isinstance(getattr(SN40L, name), int) else value
    return changes


def _orders_moved(name, value):
    """How many orders of magnitude a drawn parameter is from the preset's value."""
    default = getattr(SN40L, name)
    if isinstance(default, str):
        return 0.0
    return abs(math.log10(value / default))


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    looped=st.booleans(),
    one_launch=st.sampled_from([None, True, False]),
    sockets=st.sampled_from([1, 2, 4]),
    layers=st.integers(1, 4),
    prefetch=st.integers(0, 3),
    changes=parameter_values(),
)
def test_every_simulation_finishes_above_its_bounds(
    looped, one_launch, sockets, layers, prefetch, changes
):
    """(``one_launch``, looped only: the embedding, the loop and the head as one launch,
    configured together or not.)"""
    one_launch = one_launch if looped else None
    program = build_toy(looped=looped, sockets=sockets, layers=layers, one_launch=one_launch)
    if looped:
        program = with_prefetch(program, prefetch)
    preset = SN40L.replace(**changes)
    try:
        result = simulate(program, preset, what_if=True)
    except SimulationError as refusal:
        # A step past the engine's horizon is refused, not reported; that may only happen for a
        # parameter moved by three orders of magnitude or more from the preset.
        assert str(refusal).startswith("simulated time passes"), refusal
        assert any(_orders_moved(name, value) >= 3 for name, value in changes.items())
        return
    launches = [s for s in program.schedule if isinstance(s, Launch)]
    assert [c.kernel for c in result.calls] == [launch.kernel for launch in launches]
    assert all(c.busy_s >= 0 and c.launch_s >= 0 for c in result.calls)
    bound = bounds(program, preset)
    slack = 1 + 1e-9
    assert result.step_s * slack >= bound.transfer_s >= bound.memory_s
    assert result.step_s * slack >= bound.compute_s
    summary = summarize(program, preset, result)
    json.dumps(summary, allow_nan=False)
    gap = summary["ms_per_token"] - summary["memory_roofline_ms"]
    assert sum(summary["time_breakdown"].values()) == pytest.approx(gap, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    "name, value",
    [
        (name, value)
        for name in ("p2p_bandwidth", "clock_hz", "hbm_bandwidth", "hbm_efficiency")
        for value in (0.0, -1.0, math.inf, -math.inf, math.nan)
    ]
    + [("stage_latency_s", v) for v in (-1e-9, math.inf, math.nan)],
)
def test_nonsense_parameters_are_refused_by_name(name, value):
    with pytest.raises(PresetError, match=f"hardware parameter {name}"):
        SN40L.replace(**{name: value})


def test_huge_p2p_bandwidth_does_not_livelock():
    """A transfer's remaining bytes can fall below what the clock's float resolves; each
    completion still ends its transfer (1e18 B/s livelocked before)."""
    program = compiled("llama-3.1-8b", sockets=8, context=4096)
    fast = simulate(program, SN40L.replace(p2p_bandwidth=1e18), what_if=True)
    base = simulate(program, SN40L)
    assert fast.step_s < base.step_s and fast.events < 2 * base.events


@pytest.mark.parametrize("op", ["all_reduce", "all_gather"])
def test_collectives_cross_every_link_and_pick_the_faster_algorithm(op):
    """One-shot sends N-1 blocks; two-shot (switch) and ring move less, two-shot after two
    latencies, ring after one per step: the larger block goes two-shot over a switch and ring
    over a ring (all-reduce only), links divide the time of the bytes, a ring topology allows
    only ring algorithms."""
    n, small, large = 16, 8 * 1024, 64 * 1024 * 1024
    latency, moved = collective_plan(SN40L, op, n, small)
    assert (latency, moved) == (SN40L.p2p_latency_s, (n - 1) * small)  # one-shot
    latency, moved = collective_plan(SN40L, op, n, large)
    ring = SN40L.replace(p2p_topology="ring")
    ring_latency, ring_moved = collective_plan(ring, op, n, large)
    if op == "all_reduce":
        assert moved == ring_moved == pytest.approx(2 * (n - 1) * large / n)
        assert (latency, ring_latency) == (
            2 * SN40L.p2p_latency_s,
            2 * (n - 1) * ring.p2p_latency_s,
        )
    else:
        assert moved == ring_moved == (n - 1) * large
        assert (latency, ring_latency) == (SN40L.p2p_latency_s, (n - 1) * ring.p2p_latency_s)
    assert collective_plan(ring, op, n, small)[0] > SN40L.p2p_latency_s
    assert collective_plan(SN40L, op, 1, large) == (0.0, 0.0)
    program = build_toy(looped=True, sockets=4, layers=2)
    times = [simulate(program, SN40L.replace(p2p_links=k), what_if=True).step_s for k in (1, 4)]
    p2p = simulate(program, SN40L).bytes["p2p"]
    assert times[0] - times[1] == pytest.approx(p2p / SN40L.p2p_bandwidth * 3 / 4, rel=0.05)


def test_a_rate_too_small_to_finish_is_refused():
    with pytest.raises(SimulationError, match="a hardware rate too small"):
        simulate(build_toy(looped=True), SN40L.replace(clock_hz=1e-300), what_if=True)


def test_large_batches_on_several_sockets_finish_every_launch():
    """Batch 33 on 2 sockets: the residual stream is larger than its loads' stream credits,
    and its second reader (the residual add) waits behind an all-reduce that waits on the
    first reader; it used to stall silently after the first launch."""
    program = compiled("llama-3.1-8b", sockets=2, looped=False, batch=33, context=4096)
    result = simulate(program, SN40L)
    assert len(result.calls) == 34
    assert result.step_s >= bounds(program, SN40L).transfer_s


def test_a_stall_names_kernel_unit_trip_and_what_it_waits_on(monkeypatch, capsys, tmp_path):
    """A collective that never completes (forced) leaves the launch unfinished: the run fails
    with the waiting chain instead of a report."""
    monkeypatch.setattr(timing._KernelRun, "_collective", lambda self, inst: None)
    program = build_toy(looped=True, sockets=2, layers=2)
    with pytest.raises(SimulationError) as info:
        simulate(program, SN40L)
    message = str(info.value)
    assert "kernel 'layer.looped'" in message and "cannot finish" in message
    assert "unit 'all_reduce' (all_reduce) of trip 0 waits for its own work" in message
    assert "\n" not in message

    from rdu_compiler.tools.rdu_sim import main

    path = tmp_path / "toy.json"
    path.write_bytes(encode_program(program))
    assert main([str(path), "--json"]) == 1
    out, err = capsys.readouterr()
    assert not out and err.startswith("rdu-sim: error: kernel 'layer.looped'")
