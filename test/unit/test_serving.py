"""The serving simulation (simulator/serving.py) on small traces with known answers: step and
switch arithmetic, the two cache policies, prefetch on the router's decision, the copy's
slowdown of overlapping steps, and the synthetic trace's determinism."""

from __future__ import annotations

import json

import pytest

from rdu_compiler.simulator.request_trace import (
    LengthRange,
    TraceError,
    read_jsonl_trace,
    synthetic_trace,
)
from rdu_compiler.simulator.serving import (
    ExpertCache,
    NodeModel,
    Request,
    Router,
    ServingError,
    StepTime,
    simulate_serving,
)

MS = 1e-3


def node(
    experts=3, cache_experts=2, switch_ms=50.0, step_ms=1.0, slowdown=1.0, batch=1, router=None
):
    return NodeModel(
        name="test",
        batch=batch,
        cache_bytes=cache_experts * 100,
        expert_arch=("a",) * experts,
        expert_bytes=(100,) * experts,
        step_s={"a": StepTime(step_ms * MS, 0.0)},
        step_bytes={"a": StepTime(10.0, 1.0)},
        switch_s={"a": switch_ms * MS},
        copy_tier="ddr",
        copy_slowdown=slowdown,
        router=router or Router(),
    )


def sequential(experts, gap_s=10.0, prompt=2, output=2):
    """Requests far enough apart that each is served alone, in order."""
    return [Request(i, i * gap_s, e, prompt, output) for i, e in enumerate(experts)]


def test_step_time_is_affine_and_sums_in_closed_form():
    step = StepTime.through([(1, 2.0), (5, 6.0)])
    assert (step.base, step.per_row) == (1.0, 1.0)
    assert step.sum(1, 4) == sum(step.at(n) for n in range(1, 5)) == 14.0
    assert step.sum(3, 2) == 0.0
    assert StepTime.through([(7, 3.0)]).sum(1, 10) == 30.0


def test_one_request_times_add_up():
    router = Router(cost_s=2 * MS)
    out = simulate_serving(node(router=router), [Request(0, 0.0, 0, 3, 4)])
    # routed at 2 ms, loaded 2..52 ms, 6 steps of 1 ms (3 prompt + 3 more outputs)
    assert out["request_ms_p50"] == pytest.approx(2 + 50 + 6)
    assert out["ttft_ms_p50"] == pytest.approx(2 + 50 + 3)
    assert out["tpot_ms_p50"] == pytest.approx(1.0)
    assert (out["switches"], out["switch_ms_mean"], out["hbm_hit_rate"]) == (1, 50.0, 0.0)
    assert out["switch_stall_ms_total"] == pytest.approx(50.0)
    assert out["bytes_per_tier"] == {
        "ddr": {"read": 100},
        "hbm": {"read": sum(10 + n for n in range(1, 7)), "written": 100},
    }


def test_lru_and_popularity_evict_differently():
    # cache of 2; experts 0 0 0 1 2 0 1.  LRU: 2 evicts 0, then 0 evicts 1, 1 evicts 2 (5 loads).
    # popularity: 2 evicts 1 (routed once, 0 three times), 0 hits, 1 evicts 2 (4 loads).
    trace = sequential([0, 0, 0, 1, 2, 0, 1])
    lru = simulate_serving(node(), trace, policy="lru")
    popular = simulate_serving(node(), trace, policy="popularity")
    assert (lru["switches"], popular["switches"]) == (5, 4)
    assert lru["hbm_hit_rate"] == pytest.approx(2 / 7)
    assert popular["hbm_hit_rate"] == pytest.approx(3 / 7)


def test_cache_victims_respect_protection_and_capacity():
    cache = ExpertCache(200, (100, 100, 100), "lru")
    cache.load(0, [], 0.0)
    cache.load(1, [], 0.0)
    cache.served(1)
    cache.served(0)
    assert cache.victims(2, set()) == [1]
    assert cache.victims(2, {1}) == [0]
    assert cache.victims(2, {0, 1}) is None
    with pytest.raises(ServingError, match="unknown cache policy"):
        ExpertCache(1, (1,), "fifo")


def test_prefetch_on_the_routers_decision_hides_the_switch():
    # r0 (expert 0) loads 0..50 ms and decodes 100 steps (50..150 ms); r1 (expert 1) is routed
    # at 1 ms. On demand its load waits for the batch (150..200) and it ends at 300 ms;
    # prefetched, the copy engine loads it 50..100 ms, under r0's decode: it ends at 250 ms.
    trace = [Request(0, 0.0, 0, 1, 100), Request(1, 1 * MS, 1, 1, 100)]
    demand = simulate_serving(node(), trace, prefetch=False)
    ahead = simulate_serving(node(), trace, prefetch=True)
    assert demand["request_ms_max"] == pytest.approx(300 - 1)
    assert ahead["request_ms_max"] == pytest.approx(250 - 1)
    assert demand["switches"] == ahead["switches"] == 2
    assert ahead["switch_stall_ms_total"] == pytest.approx(50.0)
    assert demand["switch_stall_ms_total"] == pytest.approx(100.0)


def test_a_copy_under_decode_slows_it_by_the_slowdown():
    # as above, with the overlapping 50 ms of copy making r0's steps 1.5x slower meanwhile:
    # r0's 100 ms stretch to 125 ms; r1 starts at 175 ms, ends at 275 ms
    trace = [Request(0, 0.0, 0, 1, 100), Request(1, 1 * MS, 1, 1, 100)]
    out = simulate_serving(node(slowdown=1.5), trace, prefetch=True)
    assert out["request_ms_p50"] == pytest.approx((175 + 274) / 2)
    assert out["request_ms_max"] == pytest.approx(275 - 1)


def test_a_batch_serves_waiting_requests_of_one_expert_together():
    trace = [Request(0, 0.0, 0, 1, 10), Request(1, 0.0, 0, 1, 5), Request(2, 0.0, 1, 1, 5)]
    out = simulate_serving(node(batch=2), trace)
    assert out["batches"] == 2 and out["switches"] == 2
    # batch of r0 and r1: load 50 ms, 10 steps; r2: load 60..110, 5 steps
    assert out["request_ms_max"] == pytest.approx(115)


def test_router_on_the_node_occupies_it():
    router = Router(step=StepTime(0.5 * MS, 0.0), on_node=True)
    out = simulate_serving(node(router=router), [Request(0, 0.0, 0, 4, 1)])
    # routing 4 x 0.5 ms on the node, then the load (50) and 4 steps
    assert out["request_ms_p50"] == pytest.approx(2 + 50 + 4)
    assert out["router_ms_mean"] == pytest.approx(2.0)


def test_an_expert_larger_than_the_cache_is_refused():
    with pytest.raises(ServingError, match="does not fit"):
        simulate_serving(node(cache_experts=0), [Request(0, 0.0, 0, 1, 1)])


def test_synthetic_trace_is_seeded_and_zipf_shaped():
    def make(seed):
        return synthetic_trace(
            requests=2000,
            experts=10,
            arrival_rate=4.0,
            zipf=1.2,
            prompt=LengthRange(8, 16),
            output=LengthRange(1, 4),
            seed=seed,
        )

    a, b, c = make(1), make(1), make(2)
    assert a == b and a != c
    counts = [sum(r.expert == e for r in a) for e in range(10)]
    assert counts[0] > counts[1] > counts[4] > counts[9] > 0
    assert all(8 <= r.prompt_tokens <= 16 and 1 <= r.output_tokens <= 4 for r in a)
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(a, a[1:]))
    assert a[-1].arrival_s == pytest.approx(2000 / 4.0, rel=0.1)


def test_a_longer_synthetic_trace_starts_with_the_shorter_one():
    """`rdu-serve --requests 2N --seed S` serves the requests of `--requests N --seed S` first."""

    def make(requests):
        return synthetic_trace(
            requests=requests,
            experts=150,
            arrival_rate=1.0,
            zipf=1.0,
            prompt=LengthRange(16, 256),
            output=LengthRange(16, 256),
            seed=3,
        )

    longer = make(400)
    for n in (1, 7, 200):
        assert make(n) == longer[:n]


def test_jsonl_trace_reads_names_and_reports_bad_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [
        {"arrival_s": 1.0, "expert": "b", "prompt_tokens": 2, "output_tokens": 3},
        {"arrival_s": 0.5, "expert": 0, "prompt_tokens": 1, "output_tokens": 1, "prompt": [7]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    requests, prompts = read_jsonl_trace(str(path), ["a", "b"])
    assert [(r.id, r.arrival_s, r.expert) for r in requests] == [(0, 0.5, 0), (1, 1.0, 1)]
    assert prompts == {0: [7]}
    path.write_text(json.dumps(lines[0]) + "\n" + '{"arrival_s": 1, "expert": "z"}\n')
    with pytest.raises(TraceError, match=r"t.jsonl:2: missing 'prompt_tokens'"):
        read_jsonl_trace(str(path), ["a", "b"])
    path.write_text('{"arrival_s": 1, "expert": "z", "prompt_tokens": 1, "output_tokens": 1}\n')
    with pytest.raises(TraceError, match=r"t.jsonl:1: expert \"z\" is neither a name"):
        read_jsonl_trace(str(path), ["a", "b"])


def test_serving_imports_nothing_of_xdsl_or_the_compiler():
    import subprocess
    import sys

    code = (
        "import rdu_compiler.simulator.serving, rdu_compiler.simulator.request_trace, sys; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'xdsl' or m.split('.')[:2] in "
        "(['rdu_compiler', p] for p in "
        "('rdu_dialect', 'passes', 'lowering', 'frontend', 'tools'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_demand_load_spares_experts_waiting_requests_want():
    # cache of 2; r0 (e0) and r1 (e1) are served, r2 (e2) and r3 (e0) wait meanwhile. LRU's
    # victim for e2 would be e0, but r3 wants it: e1 goes, and r3 hits (3 loads, not 4).
    trace = [Request(i, i * MS, e, 1, 10) for i, e in enumerate([0, 1, 2, 0])]
    out = simulate_serving(node(), trace, policy="lru")
    assert out["switches"] == 3 and out["hbm_hit_rate"] == pytest.approx(1 / 4)


def test_a_copy_slows_steps_by_its_share_of_hbm_at_most_twice():
    from rdu_compiler.simulator.serving import overlap_slowdown

    assert overlap_slowdown(1.8, 0.2) == pytest.approx(1.8 / 1.6)
    assert overlap_slowdown(1.0, 0.9) == overlap_slowdown(1.0, 5.0) == 2.0
    assert overlap_slowdown(1.0, 0.0) == 1.0
