"""GPU-node baseline: what a decode step and a model switch cost on a DGX H100 or DGX A100, from
a workload's bytes, FLOPs and kernel count (an analytic model, not a simulation of kernels).

Simulator-side contract code (stdlib, msgspec and the simulator's own modules; never xDSL,
never the compiler): ``rdu-run --gpu`` and ``rdu-serve``'s baselines call it with figures the
compiler computed. Every figure of a node carries its provenance like the RDU presets of
:mod:`simulator.hardware` (``source``: ANCHORS.md or a vendor's specification, cited;
``parameter``: no source gives it, the note says how it was chosen; ``override``: changed by
the user). Units are SI: bytes, bytes/s, s, FLOP/s. Figures are per GPU unless named ``node``.

**Decode step** (:meth:`GpuNode.decode_step`): kernel per op on ``tensor_parallel`` GPUs
(Megatron-style: every GPU reads ``1 / tensor_parallel`` of the weights and of the KV cache and
does that share of the FLOPs, and launches every kernel of the step), one after the other::

    busy       = max(bytes / tp / (hbm_bandwidth x decode_efficiency),
                     flops / tp / peak_bf16_flops)
    launch     = kernels_per_step x launch_gap_s
    all_reduce = all_reduces_per_step x all_reduce_latency_s
                 + 2 (tp - 1) / tp x all_reduce_bytes_per_step / one_way_link
    one_way_link = nvlink_bandwidth / 2 x nvlink_efficiency
    step       = busy + launch + all_reduce

``decode_efficiency`` is the fraction of spec HBM bandwidth the kernels of a decode step
achieve while they run, measured on one H200 (ANCHORS "GPU decode, measured": torch.compile +
CUDA graph, Llama-3.1-8B shape, batch 1: 58.8% of spec over the whole step at 95% GPU busy,
so 0.588 / 0.95 = 61.9% while kernels run; the gaps between kernels are charged separately at
the measured ~0.35 us each). That batch-1 measurement calibrates it, so it is not a prediction;
the batch-8 measurement (6.4 ms, 62.9%) is left out as a check (docs/gpu_baseline.md). The
all-reduces sit on the critical path (tensor-parallel decode waits for each), as a ring over
NVLink (each GPU sends and receives ``2 (tp - 1) / tp`` of the payload, one direction of its
links being half the bidirectional ``nvlink_bandwidth``). Not modelled: weights or KV heads
replicated across GPUs (none for the Llama 3.1 shapes at tp 8), compute below peak, overlap
of kernels.

**Switch** (:meth:`GpuNode.host_to_hbm_s`): a model's weights copied from pinned host memory
into the HBM of the GPUs that serve it, all GPUs loading in parallel over their own PCIe link at
the achievable ``pcie_bandwidth``, capped by ``host_to_gpus_bandwidth`` for the node.

**Invariants** (:class:`simulator.timing.SimulationError`): a workload's figures are finite
and in range (positive where a step cannot do without them), a step uses no more GPUs than the
node has, a switch moves no more than the GPUs' HBM holds, and no step is below the memory
(spec bandwidth) or compute (peak) roofline or infinite - the roofline check catches an
override such as ``decode_efficiency=1.5``. A bad node figure raises
:class:`simulator.hardware.PresetError`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from rdu_compiler.simulator.hardware import (
    PresetError,
    Provenance,
    build_figures,
    check_figures,
    replaced_fields,
)
from rdu_compiler.simulator.timing import SimulationError

__all__ = [
    "GPU_NODES",
    "DecodeWorkload",
    "GpuNode",
    "GpuStep",
    "get_gpu_node",
]

Positive = Annotated[int, Meta(ge=1)]
Rate = Annotated[float, Meta(gt=0)]
Latency = Annotated[float, Meta(ge=0)]


class GpuNode(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU node (SI units; per GPU unless the name says node), with provenance."""

    name: str
    gpus: Positive
    hbm_bytes_per_gpu: Positive
    hbm_bandwidth: Rate
    peak_bf16_flops: Rate
    decode_efficiency: Rate
    launch_gap_s: Latency
    nvlink_bandwidth: Rate
    nvlink_efficiency: Rate
    all_reduce_latency_s: Latency
    host_bytes: Positive
    pcie_bandwidth: Rate
    host_to_gpus_bandwidth: Rate
    provenance: dict[str, Provenance]

    def __post_init__(self) -> None:
        check_figures(self, self.figures())

    @classmethod
    def figures(cls) -> tuple[str, ...]:
        """Names of the figures (every field but ``name`` and ``provenance``), in order."""
        return tuple(f for f in cls.__struct_fields__ if f not in ("name", "provenance"))

    @property
    def hbm_bytes(self) -> int:
        """HBM of the whole node (every GPU's)."""
        return self.gpus * self.hbm_bytes_per_gpu

    def replace(self, **changes: Any) -> GpuNode:
        """A copy with some figures changed (each marked ``override``), checked like a preset."""
        for key in changes:
            if key not in self.figures():
                close = difflib.get_close_matches(key, self.figures(), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise PresetError(f"unknown GPU node figure {key}{hint}")
        return build_figures(GpuNode, replaced_fields(self, changes))

    def decode_step(self, workload: DecodeWorkload) -> GpuStep:
        """One decode step of ``workload`` on this node, split into its terms (the model is
        the module docstring's)."""
        tp = workload.tensor_parallel
        if tp > self.gpus:
            raise SimulationError(
                f"tensor-parallel degree {tp} needs {tp} GPUs; {self.name} has {self.gpus}"
            )
        bytes_per_gpu = (workload.weight_bytes + workload.kv_bytes_per_step) / tp
        flops_per_gpu = workload.flops_per_step / tp
        memory_s = bytes_per_gpu / (self.hbm_bandwidth * self.decode_efficiency)
        compute_s = flops_per_gpu / self.peak_bf16_flops
        link = self.nvlink_bandwidth / 2 * self.nvlink_efficiency  # one direction
        ring = 2 * (tp - 1) / tp * workload.all_reduce_bytes_per_step / link
        step = GpuStep(
            memory_s=memory_s,
            compute_s=compute_s,
            launch_gaps_s=workload.kernels_per_step * self.launch_gap_s,
            all_reduce_s=workload.all_reduces_per_step * self.all_reduce_latency_s + ring,
            memory_roofline_s=bytes_per_gpu / self.hbm_bandwidth,
            compute_roofline_s=compute_s,
        )
        if not math.isfinite(step.step_s) or step.step_s < step.roofline_s * (1 - 1e-12):
            raise SimulationError(
                f"{self.name}: a decode step of {step.step_s:.6g} s is below its roofline of "
                f"{step.roofline_s:.6g} s (decode_efficiency {self.decode_efficiency:g} above 1?)"
            )
        return step

    def decode_step_s(self, workload: DecodeWorkload) -> float:
        """Seconds of one decode step of ``workload`` (:meth:`decode_step`'s total)."""
        return self.decode_step(workload).step_s

    def host_to_hbm_s(self, nbytes: float, gpus: int | None = None) -> float:
        """Seconds to copy ``nbytes`` of weights from pinned host memory into the HBM of
        ``gpus`` GPUs (default: all of the node's), each loading its share in parallel."""
        gpus = self.gpus if gpus is None else gpus
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= self.gpus:
            raise SimulationError(f"{self.name}: a switch onto {gpus} GPUs (it has {self.gpus})")
        _check_number("switch", "nbytes", nbytes, 0)
        if nbytes > gpus * self.hbm_bytes_per_gpu:
            raise SimulationError(
                f"{self.name}: a switch of {nbytes:.4g} bytes does not fit the HBM of {gpus} "
                f"GPU(s) ({gpus * self.hbm_bytes_per_gpu:.4g} bytes)"
            )
        return nbytes / min(gpus * self.pcie_bandwidth, self.host_to_gpus_bandwidth)


class GpuStep(msgspec.Struct, frozen=True, kw_only=True):
    """A decode step's time on a GPU node, by term (seconds): ``memory_s`` / ``compute_s``
    (the kernels' busy time is the larger), ``launch_gaps_s``, ``all_reduce_s``; and the
    rooflines no step can beat (``memory_roofline_s`` at spec bandwidth, ``compute_roofline_s``
    at peak)."""

    memory_s: float
    compute_s: float
    launch_gaps_s: float
    all_reduce_s: float
    memory_roofline_s: float
    compute_roofline_s: float

    @property
    def step_s(self) -> float:
        return max(self.memory_s, self.compute_s) + self.launch_gaps_s + self.all_reduce_s

    @property
    def roofline_s(self) -> float:
        return max(self.memory_roofline_s, self.compute_roofline_s)


@dataclass(frozen=True, kw_only=True)
class DecodeWorkload:
    """One decode step of a model, as a GPU node would run it (whole-model figures, not one
    GPU's share).

    ``weight_bytes``: the weight bytes the step reads (every weight of a dense model but the
    embedding table, of which it reads one row per entry); ``kv_bytes_per_step``: KV-cache
    bytes read and written; ``flops_per_step``; ``kernels_per_step``: kernels each GPU launches
    (one per op, the all-reduces included); ``batch``; ``all_reduce_bytes_per_step``: the
    payloads (one GPU's tensor) of the step's all-reduces, summed, and
    ``all_reduces_per_step`` their number (both 0 at ``tensor_parallel`` 1)."""

    weight_bytes: int
    kv_bytes_per_step: int
    flops_per_step: float
    kernels_per_step: int
    batch: int
    all_reduce_bytes_per_step: int
    all_reduces_per_step: int
    tensor_parallel: int

    def __post_init__(self) -> None:
        minimum = {"weight_bytes": 1, "kernels_per_step": 1, "batch": 1, "tensor_parallel": 1}
        for field in fields(self):
            value = getattr(self, field.name)
            _check_number("decode workload", field.name, value, minimum.get(field.name, 0))
        if self.tensor_parallel == 1 and self.all_reduces_per_step:
            raise SimulationError(
                f"decode workload: {self.all_reduces_per_step} all-reduces at tensor-parallel "
                "degree 1 (one GPU has nothing to reduce with)"
            )
        if (self.all_reduces_per_step == 0) != (self.all_reduce_bytes_per_step == 0):
            raise SimulationError(
                f"decode workload: {self.all_reduces_per_step} all-reduces moving "
                f"{self.all_reduce_bytes_per_step} bytes (both zero or both positive)"
            )


def _check_number(what: str, key: str, value: Any, minimum: float) -> None:
    """A finite real number (not a bool) of at least ``minimum``, else a one-line error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        shown = value if isinstance(value, int | float) else type(value).__name__
        raise SimulationError(f"{what}: {key} must be a finite number >= {minimum}, got {shown}")


# ----------------------------------------------------------------------------------------------
# DGX H100, DGX A100
# ----------------------------------------------------------------------------------------------

_NODES_ANCHOR = "ANCHORS.md, GPU nodes (public specifications)"
_MEASURED = "ANCHORS.md, GPU decode, measured (one H200, torch.compile + CUDA graph)"
_HOST_COPY = "ANCHORS.md, GPU nodes, measured here (2 x H200 on one host)"


def _source(note: str) -> Provenance:
    return Provenance(origin="source", note=note)


def _parameter(note: str) -> Provenance:
    return Provenance(origin="parameter", note=f"{note} A parameter: calibrate or sweep it.")


_GPUS_PER_NODE = _source(f"{_NODES_ANCHOR}: 8 GPUs per DGX.")
_DECODE_EFFICIENCY = (
    0.588 / 0.95,
    _source(
        f"{_MEASURED}: Llama-3.1-8B shape, batch 1, 4,096 tokens: 58.8% of spec bandwidth over "
        "the step with the GPU busy 95% of it, so 0.588 / 0.95 = 61.9% while kernels run (the "
        "gaps are launch_gap_s). Measured on an H200 (HBM3e), assumed the same on H100 and A100; "
        "it calibrates the batch-1 step, so that step is no prediction."
    ),
)
_LAUNCH_GAP = (
    0.35e-6,
    _source(f"{_MEASURED}: with CUDA graphs the gaps between kernels are about 0.35 us each."),
)
_ALL_REDUCE_LATENCY = (
    5e-6,
    _parameter(
        "No source in ANCHORS gives a small-message all-reduce latency on one NVLink node. "
        "5 us per all-reduce (launch, the GPUs' barrier, one NVLink hop) is an assumption of the "
        "order of NCCL's and serving engines' one-node figures; decode all-reduces carry a few "
        "kB, so this, not the bandwidth, sets their time."
    ),
)
_HBM_80GB = (80 * 10**9, _source(f"{_NODES_ANCHOR}: 80 GB HBM per GPU (decimal GB)."))
_HOST_2TB = 2 * 10**12

_DGX_H100: dict[str, tuple[int | float, Provenance]] = {
    "gpus": (8, _GPUS_PER_NODE),
    "hbm_bytes_per_gpu": _HBM_80GB,
    "hbm_bandwidth": (3.35e12, _source(f"{_NODES_ANCHOR}: H100 SXM5 HBM3 at 3.35 TB/s.")),
    "peak_bf16_flops": (
        989e12,
        _source(
            "NVIDIA H100 Tensor Core GPU datasheet, SXM: BF16 Tensor Core 1,979 TFLOPS with "
            "sparsity, half that dense (989 TFLOPS); not in ANCHORS.md."
        ),
    ),
    "decode_efficiency": _DECODE_EFFICIENCY,
    "launch_gap_s": _LAUNCH_GAP,
    "nvlink_bandwidth": (
        900e9,
        _source(f"{_NODES_ANCHOR}: NVLink 4 at 900 GB/s per GPU (both directions together)."),
    ),
    "nvlink_efficiency": (
        343.5e9 / 450e9,
        _source(
            f"{_HOST_COPY}: GPU -> GPU over NVLink 343.5 GB/s, of 450 GB/s one way (NVLink 4, "
            "as on H100): 76%."
        ),
    ),
    "all_reduce_latency_s": _ALL_REDUCE_LATENCY,
    "host_bytes": (_HOST_2TB, _source(f"{_NODES_ANCHOR}: DGX H100, 2 TB host memory.")),
    "pcie_bandwidth": (
        55.2e9,
        _source(
            f"{_HOST_COPY}: pinned host memory -> one GPU at 55.2 GB/s on PCIe Gen5 x16 (86% of "
            "the 64 GB/s nominal), the link an H100 SXM5 has too."
        ),
    ),
    "host_to_gpus_bandwidth": (
        8 * 55.2e9,
        _parameter(
            f"{_HOST_COPY}: two GPUs loading at once reached 109.3 GB/s, twice one GPU's (no "
            "host-side contention at 2). 8 x 55.2 GB/s assumes none at 8 either; PCIe switches "
            "shared by GPUs or the host's DRAM could cap it lower."
        ),
    ),
}

_DGX_A100: dict[str, tuple[int | float, Provenance]] = {
    "gpus": (8, _GPUS_PER_NODE),
    "hbm_bytes_per_gpu": _HBM_80GB,
    "hbm_bandwidth": (2.0e12, _source(f"{_NODES_ANCHOR}: A100 SXM4 HBM2e at about 2.0 TB/s.")),
    "peak_bf16_flops": (
        312e12,
        _source(
            "NVIDIA A100 Tensor Core GPU datasheet, SXM: BF16 Tensor Core 312 TFLOPS dense "
            "(624 with sparsity); not in ANCHORS.md."
        ),
    ),
    "decode_efficiency": _DECODE_EFFICIENCY,
    "launch_gap_s": _LAUNCH_GAP,
    "nvlink_bandwidth": (
        600e9,
        _source(f"{_NODES_ANCHOR}: NVLink 3 at 600 GB/s per GPU (both directions together)."),
    ),
    "nvlink_efficiency": (
        343.5e9 / 450e9,
        _parameter(
            f"{_HOST_COPY}: NVLink 4 carried 76% of its one-way rate; the same fraction is "
            "assumed for NVLink 3."
        ),
    ),
    "all_reduce_latency_s": _ALL_REDUCE_LATENCY,
    "host_bytes": (
        _HOST_2TB,
        _source(
            f"{_NODES_ANCHOR}: DGX A100 (80 GB), 1-2 TB host memory; 2 TB, the upper end, as "
            "the DGX H100 has (host memory only bounds how many models a node keeps)."
        ),
    ),
    "pcie_bandwidth": (
        32e9 * 55.2 / 64,
        _parameter(
            f"{_NODES_ANCHOR}: PCIe Gen4 x16, 32 GB/s nominal; at the 86% of nominal measured "
            f"on Gen5 ({_HOST_COPY}: 55.2 of 64 GB/s, pinned) that is 27.6 GB/s."
        ),
    ),
    "host_to_gpus_bandwidth": (
        8 * 32e9 * 55.2 / 64,
        _parameter(
            "8 x pcie_bandwidth: no host-side contention assumed (measured absent at 2 GPUs on "
            "an H200 host); PCIe switches shared by GPUs or the host's DRAM could cap it lower."
        ),
    ),
}


def _node(name: str, figures: dict[str, tuple[int | float, Provenance]]) -> GpuNode:
    return build_figures(
        GpuNode,
        {
            "name": name,
            **{key: value for key, (value, _) in figures.items()},
            "provenance": {key: prov for key, (_, prov) in figures.items()},
        },
    )


GPU_NODES: dict[str, GpuNode] = {
    "dgx-a100": _node("dgx-a100", _DGX_A100),
    "dgx-h100": _node("dgx-h100", _DGX_H100),
}
"""The built-in GPU nodes by name."""


def get_gpu_node(name: str) -> GpuNode:
    """The built-in node ``name`` (``dgx-h100``, ``dgx-a100``)."""
    try:
        return GPU_NODES[name]
    except KeyError:
        raise PresetError(f"unknown GPU node {name}; known: {', '.join(GPU_NODES)}") from None
