"""Reports of a timing simulation: figures per token, per kernel call, a table for people, a dict
for JSON, and a Chrome / Perfetto trace.

Definitions (per decode step, i.e. per token of every batch entry):

* ``ms_per_token``: the step's wall time; ``tokens_per_s``: batch / step time.
* ``offchip_bytes``: HBM + DDR bytes moved by all sockets (the AGCU transfers' work);
  ``achieved_bandwidth`` = that / step time; ``bandwidth_fraction_of_peak`` divides by the HBM
  peak of all sockets (``sockets x hbm_bandwidth``).
* ``roofline_bytes``: what the step must move off-chip for the *unsharded* model - the bytes
  of the program's transfers (its work: one embedding row, the weights, the attended KV rows, the
  new rows), each counted once however many sockets hold a copy (a replicated tensor's bytes
  once, a shard replicated over ``socket_group`` sockets once per group), so replication shows
  up as lost efficiency; ``roofline_ms`` = that / (sockets x HBM peak); ``roofline_fraction``
  = roofline time / step time. ``paper_bytes_per_token`` is the Kernel Looping paper's
  convention (every parameter byte plus the whole KV cache), for comparison.
* ``weight_bytes_loaded`` (active) vs ``param_bytes`` (total): for mixture-of-experts models
  the difference is the experts not read. Routing assumption: the simulator moves exactly the
  bytes the program's work states, i.e. the lowering's choice of active experts.
* per call: ``launch`` (launch + Argument Load + Program Load), ``sync`` (until the completion
  is seen), ``busy`` (kernel execution including pipeline fill and drain, and the Program Loads
  between the sections of a split kernel: every trip in a loop); launch + sync totals are the
  GPU literature's "kernel launch and queuing time". ``program_load`` is every Program Load of
  the call (the one at launch and those between sections).
* ``pcu_busy_fraction``: PCU-seconds of compute / (PCUs x step); ``pcu_occupied_fraction`` and
  ``pmu_occupied_fraction``: unit-seconds between a unit group's start and finish (in the
  pipeline, possibly waiting on data) / (units x step).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import msgspec

from rdu_compiler.simulator.hardware import HardwarePreset
from rdu_compiler.simulator.numerics import bytes_of
from rdu_compiler.simulator.program import COLLECTIVES, Agcu, Launch, Pcu, Program, Tensor
from rdu_compiler.simulator.timing import StepTiming, pcu_flops_per_s

__all__ = ["Bounds", "bounds", "chrome_trace", "format_table", "summarize"]

TIERS = ("hbm", "ddr")


def _transfers(program: Program) -> Iterator[tuple[str, int, Tensor]]:
    """Every off-chip transfer of one socket's step: (op, bytes, the tensor it touches)."""
    tensors = {t.name: t for t in program.tensors}
    kernels = {k.name: k for k in program.kernels}
    for launch in (s for s in program.schedule if isinstance(s, Launch)):
        kernel = kernels[launch.kernel]
        trips = kernel.loop.trips if kernel.loop is not None else 1
        bound = {b.param: [tensors[v.tensor] for v in b.tensors] for b in launch.bindings}
        for unit in (u for s in kernel.sections for u in s.units if isinstance(u, Agcu)):
            if unit.op in COLLECTIVES:
                continue
            param = unit.write.name if unit.op == "store" else unit.reads[0].name
            nbytes = {
                "load": unit.work.bytes_read,
                "store": unit.work.bytes_written,
                "copy": unit.work.bytes_read + unit.work.bytes_written,
            }[unit.op]
            views = bound[param]
            for trip in range(trips):
                yield unit.op, nbytes, views[trip if len(views) == trips else 0]


def _held_by(tensor: Tensor, tensors: dict[str, Tensor], sockets: int) -> int:
    """How many sockets hold the same contents as this socket's copy of ``tensor``: all of
    them when no source is sharded (replicated weights, the residual stream), else the
    ``socket_group`` of its shards."""
    if tensor.aliases is not None:
        tensor = tensors[tensor.aliases]
    sharded = [s for s in tensor.sources if s.socket_step is not None and any(s.socket_step)]
    return max(s.socket_group for s in sharded) if sharded else sockets


class Bounds(msgspec.Struct, frozen=True, kw_only=True):
    """Lower bounds of one socket's step time, from the program alone (no simulation).

    ``tier_bytes``: the bytes this socket's transfers move, per tier; ``unique_bytes``: its
    share of them with replicated copies counted once (a tensor every socket holds counts
    ``1 / sockets`` here); ``flops``: the FLOPs of its PCUs; ``peak_flops``: the PCU array's
    systolic peak (``pcus x lanes x stages x 2 x clock``, the fastest the time model computes).
    Seconds: ``memory_s`` (the memory roofline: unique bytes over each tier's nominal
    bandwidth, the slowest tier), ``memory_at_efficiency_s`` (the same at each tier's
    achievable efficiency), ``transfer_s`` (all bytes this socket moves, replicas included,
    at nominal bandwidth: what no simulation can beat), ``compute_s`` (FLOPs at peak)."""

    tier_bytes: dict[str, float]
    unique_bytes: dict[str, float]
    flops: float
    peak_flops: float
    memory_s: float
    memory_at_efficiency_s: float
    transfer_s: float
    compute_s: float


def bounds(program: Program, preset: HardwarePreset) -> Bounds:
    """The :class:`Bounds` of ``program`` on ``preset``."""
    n = program.sockets
    tensors = {t.name: t for t in program.tensors}
    moved = dict.fromkeys(TIERS, 0.0)
    unique = dict.fromkeys(TIERS, 0.0)
    for _, nbytes, tensor in _transfers(program):
        moved[tensor.tier] += nbytes
        unique[tensor.tier] += nbytes / _held_by(tensor, tensors, n)
    kernels = {k.name: k for k in program.kernels}
    flops = 0.0
    for launch in (s for s in program.schedule if isinstance(s, Launch)):
        kernel = kernels[launch.kernel]
        trips = kernel.loop.trips if kernel.loop is not None else 1
        flops += trips * sum(
            u.work.flops for sec in kernel.sections for u in sec.units if isinstance(u, Pcu)
        )
    rate = {"hbm": preset.hbm_bandwidth, "ddr": preset.ddr_bandwidth}
    efficiency = {"hbm": preset.hbm_efficiency, "ddr": preset.ddr_efficiency}
    peak = pcu_flops_per_s(preset, preset.pcus)
    return Bounds(
        tier_bytes=moved,
        unique_bytes=unique,
        flops=flops,
        peak_flops=peak,
        memory_s=max(unique[t] / rate[t] for t in TIERS),
        memory_at_efficiency_s=max(unique[t] / (rate[t] * efficiency[t]) for t in TIERS),
        transfer_s=max(moved[t] / rate[t] for t in TIERS),
        compute_s=flops / peak,
    )


def summarize(program: Program, preset: HardwarePreset, timing: StepTiming) -> dict[str, Any]:
    """The figures of one simulated step, as plain JSON-ready values."""
    step = timing.step_s
    n = program.sockets
    offchip = (timing.bytes["hbm"] + timing.bytes["ddr"]) * n
    peak = n * preset.hbm_bandwidth
    param_bytes = sum(bytes_of(v.shape, v.dtype) for v in program.values if v.role == "param")
    kv_bytes = sum(bytes_of(v.shape, v.dtype) for v in program.values if v.role == "state")
    tensors = {t.name: t for t in program.tensors}
    transfers = list(_transfers(program))
    roofline_bytes = sum(nbytes * n / _held_by(t, tensors, n) for _, nbytes, t in transfers)
    roofline_s = roofline_bytes / peak
    launch_sync = sum(c.launch_s + c.sync_s for c in timing.calls)
    moe = any(u.op == "moe" for k in program.kernels for s in k.sections for u in s.units)
    calls = [
        {
            "label": c.label,
            "kernel": c.kernel,
            "layers": c.layers,
            "trips": c.trips,
            "sections": c.sections,
            "launch_ms": c.launch_s * 1e3,
            "program_load_ms": c.program_load_s * 1e3,
            "busy_ms": c.busy_s * 1e3,
            "sync_ms": c.sync_s * 1e3,
        }
        for c in timing.calls
    ]
    return {
        "model": program.model,
        "hardware": preset.name,
        "sockets": n,
        "launch_mode": program.launch_mode,
        "batch": program.batch,
        "context": program.context,
        "ms_per_token": step * 1e3,
        "tokens_per_s": program.batch / step if step > 0 else None,
        "launches_per_token": len(timing.calls),
        "launch_and_sync_ms_per_token": launch_sync * 1e3,
        "busy_ms_per_token": sum(c.busy_s for c in timing.calls) * 1e3,
        "offchip_bytes": offchip,
        "hbm_bytes": timing.bytes["hbm"] * n,
        "ddr_bytes": timing.bytes["ddr"] * n,
        "p2p_bytes": timing.bytes["p2p"] * n,
        "achieved_bandwidth": offchip / step if step > 0 else 0.0,
        "bandwidth_fraction_of_peak": offchip / step / peak if step > 0 else 0.0,
        "hbm_busy_fraction": timing.channel_busy_s["hbm"] / step if step > 0 else 0.0,
        "param_bytes": param_bytes,
        "kv_bytes": kv_bytes,
        "weight_bytes_loaded": n
        * sum(nbytes for op, nbytes, t in transfers if op == "load" and t.kind == "weight"),
        "paper_bytes_per_token": param_bytes + kv_bytes,
        "roofline_bytes": roofline_bytes,
        "roofline_ms": roofline_s * 1e3,
        "roofline_fraction": roofline_s / step if step > 0 else 0.0,
        "pcu_busy_fraction": timing.pcu_busy_s / (preset.pcus * step) if step > 0 else 0.0,
        "pcu_occupied_fraction": timing.pcu_occupied_s / (preset.pcus * step) if step else 0.0,
        "pmu_occupied_fraction": timing.pmu_occupied_s / (preset.pmus * step) if step else 0.0,
        "moe_routing": (
            "the bytes the program's work states (the lowering's active experts)" if moe else None
        ),
        "simulated_events": timing.events,
        "overrides": {
            k: getattr(preset, k) for k, p in preset.provenance.items() if p.origin == "override"
        },
        "calls": calls,
    }


def _si(x: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def format_table(summary: dict[str, Any]) -> str:
    """A human-readable report: headline figures, then launch / sync / busy per kernel."""
    s = summary
    lines = [
        f"{s['model']} on {s['sockets']} x {s['hardware']} ({s['launch_mode']} launch), "
        f"batch {s['batch']}, context {s['context']}",
        f"  {s['ms_per_token']:.3f} ms/token, "
        + ("n/a" if s["tokens_per_s"] is None else f"{s['tokens_per_s']:.1f}")
        + " tokens/s",
        f"  off-chip {_si(s['offchip_bytes'], 'B')}/token at {_si(s['achieved_bandwidth'], 'B/s')}"
        f": {s['bandwidth_fraction_of_peak']:.1%} of HBM peak",
        f"  roofline {s['roofline_ms']:.3f} ms ({_si(s['roofline_bytes'], 'B')}/token "
        f"unsharded): {s['roofline_fraction']:.1%} of roofline",
        f"  launches {s['launches_per_token']}, launch + sync "
        f"{s['launch_and_sync_ms_per_token']:.3f} ms/token",
        f"  PCUs busy {s['pcu_busy_fraction']:.1%}, occupied {s['pcu_occupied_fraction']:.1%}; "
        f"PMUs occupied {s['pmu_occupied_fraction']:.1%}",
    ]
    if s["moe_routing"]:
        lines.append(
            f"  weights loaded {_si(s['weight_bytes_loaded'], 'B')} of "
            f"{_si(s['param_bytes'], 'B')}; MoE routing: {s['moe_routing']}"
        )
    keys = ("launch_ms", "sync_ms", "busy_ms", "program_load_ms")
    by_kernel: dict[str, list[float]] = defaultdict(lambda: [0] * (1 + len(keys)))
    for c in s["calls"]:
        row = by_kernel[c["kernel"]]
        row[0] += 1
        for i, key in enumerate(keys, 1):
            row[i] += c[key]
    width = max(len("kernel"), *(len(k) for k in by_kernel))
    lines.append(
        f"  {'kernel':<{width}} {'calls':>6} {'launch ms':>10} {'sync ms':>10} "
        f"{'busy ms':>10}  (program loads ms, in launch / busy)"
    )
    for kernel, (calls, launch, sync, busy, loads) in by_kernel.items():
        lines.append(
            f"  {kernel:<{width}} {calls:>6} {launch:>10.4f} {sync:>10.4f} "
            f"{busy:>10.4f}  ({loads:.4f})"
        )
    return "\n".join(lines)


def chrome_trace(program: Program, timing: StepTiming) -> dict[str, Any]:
    """Trace events (Chrome JSON trace format, opened by Perfetto and chrome://tracing): one
    track per host, kernel, memory channel and unit group of one socket (all sockets are
    symmetric); unit spans name the unit, the kernel call and the layer / trip."""
    launches = [s for s in program.schedule if isinstance(s, Launch)]

    def layer(call: int, trip: int) -> list[int]:
        layers = launches[call].layers
        trips = timing.calls[call].trips
        per = len(layers) // trips if layers else 0
        return layers[trip * per : (trip + 1) * per]

    tracks: dict[str, int] = {}
    events: list[dict[str, Any]] = []
    trips: dict[tuple[int, int], list[float]] = {}
    for span in timing.spans:
        tid = tracks.setdefault(span.track, len(tracks) + 1)
        args: dict[str, Any] = {}
        if span.call >= 0:
            args["call"] = timing.calls[span.call].label
        if span.trip >= 0:
            args.update(trip=span.trip, layers=layer(span.call, span.trip))
            bounds = trips.setdefault((span.call, span.trip), [span.start, span.end])
            bounds[0], bounds[1] = min(bounds[0], span.start), max(bounds[1], span.end)
        events.append(
            {
                "name": span.name
                if span.track in ("host", "kernel", "hbm", "ddr", "p2p")
                else span.track,
                "cat": span.name,
                "ph": "X",
                "pid": 1,
                "tid": tid,
                "ts": span.start * 1e6,
                "dur": (span.end - span.start) * 1e6,
                "args": args,
            }
        )
    tid = tracks.setdefault("layers", len(tracks) + 1)
    for (call, trip), (start, end) in sorted(trips.items()):
        label = timing.calls[call].label
        names = layer(call, trip)
        name = (
            label
            if timing.calls[call].trips == 1
            else f"{label}: layer {', '.join(map(str, names))} (trip {trip})"
        )
        events.append(
            {
                "name": name,
                "cat": "trip",
                "ph": "X",
                "pid": 1,
                "tid": tid,
                "ts": start * 1e6,
                "dur": (end - start) * 1e6,
                "args": {"call": label, "trip": trip, "layers": names},
            }
        )
    meta = [
        {
            "name": "process_name",
            "ph": "M",
            "pid": 1,
            "args": {"name": f"{program.model}: socket 0 of {program.sockets} (symmetric)"},
        }
    ]
    meta += [
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": t, "args": {"name": name}}
        for name, t in tracks.items()
    ]
    return {"traceEvents": meta + events, "displayTimeUnit": "ns"}
