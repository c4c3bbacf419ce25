"""The GPU-node baseline (simulator/gpu_node.py): provenance of every figure, the ANCHORS.md
values exact, the decode and switch models on hand-computed cases, and their invariants."""

from __future__ import annotations

import math

import pytest

from rdu_compiler.simulator.gpu_node import GPU_NODES, DecodeWorkload, GpuNode, get_gpu_node
from rdu_compiler.simulator.hardware import PresetError
from rdu_compiler.simulator.timing import SimulationError

# ANCHORS.md, "GPU nodes (public specifications)" and "GPU decode, measured"
ANCHORED = {
    "dgx-h100": {
        "gpus": 8,
        "hbm_bytes_per_gpu": 80e9,
        "hbm_bandwidth": 3.35e12,
        "nvlink_bandwidth": 900e9,
        "host_bytes": 2e12,
        "pcie_bandwidth": 55.2e9,
        "launch_gap_s": 0.35e-6,
    },
    "dgx-a100": {
        "gpus": 8,
        "hbm_bytes_per_gpu": 80e9,
        "hbm_bandwidth": 2.0e12,
        "nvlink_bandwidth": 600e9,
        "launch_gap_s": 0.35e-6,
    },
}


def workload(**changes) -> DecodeWorkload:
    figures = {
        "weight_bytes": 8 * 10**9,
        "kv_bytes_per_step": 2 * 10**9,
        "flops_per_step": 1e12,
        "kernels_per_step": 100,
        "batch": 1,
        "all_reduce_bytes_per_step": 10**6,
        "all_reduces_per_step": 10,
        "tensor_parallel": 4,
    }
    return DecodeWorkload(**(figures | changes))


@pytest.fixture
def round_node() -> GpuNode:
    """Round figures, so the expected times are easy to compute by hand."""
    return GPU_NODES["dgx-h100"].replace(
        hbm_bandwidth=1e12,
        decode_efficiency=0.5,
        peak_bf16_flops=1e15,
        launch_gap_s=1e-6,
        all_reduce_latency_s=1e-5,
        nvlink_bandwidth=400e9,
        nvlink_efficiency=0.5,
    )


def test_nodes_and_provenance():
    assert sorted(GPU_NODES) == ["dgx-a100", "dgx-h100"]
    for name, node in GPU_NODES.items():
        assert node.name == name and get_gpu_node(name) is node
        assert set(node.provenance) == set(GpuNode.figures())
        for figure in GpuNode.figures():
            prov = node.provenance[figure]
            assert prov.origin in ("source", "parameter") and prov.note.strip(), figure
            if prov.origin == "parameter":
                assert "calibrate or sweep" in prov.note, figure
        for figure, value in ANCHORED[name].items():
            assert getattr(node, figure) == value, (name, figure)
            assert "ANCHORS.md" in node.provenance[figure].note, (name, figure)
        assert node.hbm_bytes == 8 * 80 * 10**9
    # the decode efficiency is the H200 measurement with the launch gaps taken out
    assert GPU_NODES["dgx-h100"].decode_efficiency == pytest.approx(0.588 / 0.95)
    # Gen4 x16 at the fraction of nominal measured on Gen5 (55.2 of 64 GB/s)
    assert GPU_NODES["dgx-a100"].pcie_bandwidth == pytest.approx(32e9 * 55.2 / 64)
    with pytest.raises(PresetError, match="unknown GPU node dgx-b200; known: dgx-a100, dgx-h100"):
        get_gpu_node("dgx-b200")


def test_decode_step_memory_bound(round_node):
    step = round_node.decode_step(workload())
    # (8 + 2) GB / 4 GPUs at 1 TB/s x 0.5
    assert step.memory_s == pytest.approx(5e-3)
    assert step.compute_s == pytest.approx(1e12 / 4 / 1e15)
    assert step.launch_gaps_s == pytest.approx(100 * 1e-6)
    # 10 x 10 us, plus the ring: 2 x 3/4 x 1 MB over 400 GB/s / 2 x 0.5 = 100 GB/s one way
    assert step.all_reduce_s == pytest.approx(1e-4 + 1.5e-5)
    assert step.step_s == pytest.approx(5e-3 + 1e-4 + 1.15e-4)
    assert round_node.decode_step_s(workload()) == step.step_s
    assert step.memory_roofline_s == pytest.approx(2.5e-3)
    assert step.roofline_s == pytest.approx(2.5e-3)


def test_decode_step_compute_bound(round_node):
    step = round_node.decode_step(workload(flops_per_step=4e13))
    assert step.compute_s == pytest.approx(1e-2) and step.compute_s > step.memory_s
    assert step.roofline_s == pytest.approx(1e-2)
    assert step.step_s == pytest.approx(1e-2 + 1e-4 + 1.15e-4)


def test_one_gpu_has_no_all_reduce(round_node):
    one = workload(tensor_parallel=1, all_reduce_bytes_per_step=0, all_reduces_per_step=0)
    step = round_node.decode_step(one)
    assert step.all_reduce_s == 0
    assert step.step_s == pytest.approx(10e9 / 0.5e12 + 100e-6)


def test_more_gpus_are_faster_but_not_linearly(round_node):
    times = [
        round_node.decode_step_s(
            workload(
                tensor_parallel=tp,
                all_reduces_per_step=10 * (tp > 1),
                all_reduce_bytes_per_step=10**6 * (tp > 1),
            )
        )
        for tp in (1, 2, 4, 8)
    ]
    assert times == sorted(times, reverse=True)
    assert times[0] / times[3] < 8


def test_switch_from_host(round_node):
    h100, a100 = GPU_NODES["dgx-h100"], GPU_NODES["dgx-a100"]
    # ANCHORS: a 13.48 GB expert reached one GPU in 244 ms at 55.2 GB/s
    assert h100.host_to_hbm_s(13.48e9, gpus=1) == pytest.approx(0.2442, abs=5e-4)
    assert h100.host_to_hbm_s(13.48e9) == pytest.approx(13.48e9 / (8 * 55.2e9))
    assert a100.host_to_hbm_s(13.48e9) == pytest.approx(13.48e9 / (8 * 27.6e9))
    assert h100.host_to_hbm_s(0) == 0
    capped = h100.replace(host_to_gpus_bandwidth=100e9)
    assert capped.host_to_hbm_s(1e11) == pytest.approx(1.0)
    assert capped.host_to_hbm_s(1e10, gpus=1) == pytest.approx(1e10 / 55.2e9)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"weight_bytes": 0}, "weight_bytes must be a finite number >= 1, got 0"),
        ({"kv_bytes_per_step": -1}, "kv_bytes_per_step must be a finite number >= 0, got -1"),
        ({"flops_per_step": math.nan}, "flops_per_step must be a finite number >= 0, got nan"),
        ({"flops_per_step": math.inf}, "flops_per_step must be a finite number >= 0, got inf"),
        ({"kernels_per_step": 0}, "kernels_per_step must be a finite number >= 1, got 0"),
        ({"batch": True}, "batch must be a finite number >= 1, got True"),
        ({"tensor_parallel": "8"}, "tensor_parallel must be a finite number >= 1, got str"),
        ({"tensor_parallel": 1}, "10 all-reduces at tensor-parallel degree 1"),
        ({"all_reduces_per_step": 0}, "0 all-reduces moving 1000000 bytes"),
        ({"all_reduce_bytes_per_step": 0}, "10 all-reduces moving 0 bytes"),
    ],
)
def test_bad_workload(changes, message):
    with pytest.raises(SimulationError, match=f"^decode workload: {message}"):
        workload(**changes)


def test_invariants(round_node):
    with pytest.raises(SimulationError, match="tensor-parallel degree 16 needs 16 GPUs; .* has 8"):
        round_node.decode_step(workload(tensor_parallel=16))
    # an efficiency above 1 would beat the spec bandwidth: refused, not reported
    fast = round_node.replace(decode_efficiency=1.5)
    with pytest.raises(SimulationError, match=r"below its roofline of 0.0025 s \(decode_eff"):
        fast.decode_step_s(workload())
    assert round_node.replace(decode_efficiency=1.0).decode_step(workload()).memory_s == (
        pytest.approx(2.5e-3)
    )
    with pytest.raises(SimulationError, match="does not fit the HBM of 8 GPU"):
        round_node.host_to_hbm_s(641e9)
    with pytest.raises(SimulationError, match="does not fit the HBM of 1 GPU"):
        round_node.host_to_hbm_s(81e9, gpus=1)
    for gpus in (0, 9, 2.0):
        with pytest.raises(SimulationError, match=f"a switch onto {gpus} GPUs"):
            round_node.host_to_hbm_s(1e9, gpus=gpus)
    for nbytes in (-1, math.nan):
        with pytest.raises(SimulationError, match="switch: nbytes must be a finite number"):
            round_node.host_to_hbm_s(nbytes)


def test_every_step_is_above_its_rooflines():
    """Property: on both nodes, for workloads across five orders of magnitude, the step is
    never below the spec-bandwidth or peak-compute roofline."""
    for node in GPU_NODES.values():
        for scale in (1e-3, 1e-1, 1, 10, 100):
            for tp in (1, 2, 8):
                w = workload(
                    weight_bytes=int(8e9 * scale),
                    flops_per_step=1e12 * scale * scale,
                    tensor_parallel=tp,
                    all_reduces_per_step=10 * (tp > 1),
                    all_reduce_bytes_per_step=10**6 * (tp > 1),
                )
                step = node.decode_step(w)
                assert step.step_s >= (w.weight_bytes + w.kv_bytes_per_step) / tp / (
                    node.hbm_bandwidth
                )
                assert step.step_s >= w.flops_per_step / tp / node.peak_bf16_flops


def test_bad_node_figures():
    node = GPU_NODES["dgx-h100"]
    with pytest.raises(PresetError, match="hardware parameter hbm_bandwidth: Expected `float` >"):
        node.replace(hbm_bandwidth=0.0)
    with pytest.raises(PresetError, match="launch_gap_s: Expected `float` >= 0.0, got nan"):
        node.replace(launch_gap_s=math.nan)
    with pytest.raises(
        PresetError, match="hardware parameter launch_gap_s: inf is not a finite number"
    ):
        node.replace(launch_gap_s=math.inf)
    with pytest.raises(PresetError, match="unknown GPU node figure hbm_bandwith "):
        node.replace(hbm_bandwith=1e12)
    replaced = node.replace(all_reduce_latency_s=1e-5)
    assert replaced.provenance["all_reduce_latency_s"].origin == "override"
    assert "5e-06" in replaced.provenance["all_reduce_latency_s"].note
