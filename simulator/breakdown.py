"""Where a simulated step's time goes: per kernel, per op (as LLMCompass reports per op) and per
loop trip (one decoder layer per trip), from a timing run with its timeline
(``simulate(..., trace=True)``).

What bounds a kernel or an op, by the same rule for both: the part of its time the off-chip
memory (HBM or DDR) was moving data is ``memory``; its own compute at the PCUs' rate is
``compute``; the rest (launch, argument and program load, sync, pipeline fill and drain, waits
for producers or collectives) is ``latency``. The largest of the three is what bounds it. Ops of
one kernel overlap in the pipeline, so their active times add up to more than the kernel's.

Simulator-side (stdlib only besides the simulator's own modules): no xDSL, no compiler.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rdu_compiler.simulator.hardware import HardwarePreset
from rdu_compiler.simulator.program import Launch, Pcu, Program
from rdu_compiler.simulator.timing import Span, StepTiming

__all__ = ["kernel_breakdown", "op_breakdown", "trip_times", "BOUNDS"]

BOUNDS = ("memory", "compute", "latency")
_OFFCHIP = ("hbm", "ddr")


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, non-overlapping union of intervals."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlap(spans: list[tuple[float, float]], busy: list[tuple[float, float]]) -> float:
    """Seconds of the union of ``spans`` during which ``busy`` (merged) intervals run."""
    total = 0.0
    for start, end in _merge(spans):
        for b0, b1 in busy:
            if b1 <= start:
                continue
            if b0 >= end:
                break
            total += min(end, b1) - max(start, b0)
    return total


def _bound(memory: float, compute: float, latency: float) -> str:
    return max(zip((memory, compute, latency), BOUNDS, strict=True))[1]


def _pcu_seconds(unit: Any, preset: HardwarePreset) -> float:
    """A PCU group's compute at its peak rate (the time model's own rate, systolic or SIMD)."""
    rate = unit.count * preset.pcu_lanes * 2 * preset.clock_hz
    if unit.mode == "systolic":
        rate *= preset.pcu_stages
    return unit.work.flops / rate


def _require_timeline(timing: StepTiming) -> None:
    if not timing.spans and timing.calls:
        raise ValueError("a breakdown needs the timeline: simulate(..., trace=True)")


def _offchip_busy(timing: StepTiming) -> list[tuple[float, float]]:
    return _merge((s.start, s.end) for s in timing.spans if s.track in _OFFCHIP)


def kernel_breakdown(
    program: Program, preset: HardwarePreset, timing: StepTiming
) -> list[dict[str, Any]]:
    """Per kernel, its calls summed: ``{"kernel", "calls", "trips", "total_ms", "launch_ms",
    "busy_ms", "sync_ms", "memory_ms", "compute_ms", "latency_ms", "bound"}`` in schedule
    order; ``total_ms`` (launch + busy + sync) = memory + compute + latency."""
    _require_timeline(timing)
    busy = _offchip_busy(timing)
    kernels = {k.name: k for k in program.kernels}
    rows: dict[str, dict[str, Any]] = {}
    executions: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in timing.spans:
        if s.track == "kernel":
            executions[timing.calls[s.call].kernel].append((s.start, s.end))
    for c in timing.calls:
        row = rows.setdefault(
            c.kernel,
            dict.fromkeys(("calls", "trips", "launch_ms", "busy_ms", "sync_ms", "compute_ms"), 0),
        )
        row["calls"] += 1
        row["trips"] += c.trips
        row["launch_ms"] += c.launch_s * 1e3
        row["busy_ms"] += c.busy_s * 1e3
        row["sync_ms"] += c.sync_s * 1e3
        kernel = kernels[c.kernel]
        row["compute_ms"] += (
            c.trips
            * 1e3
            * sum(
                max((_pcu_seconds(u, preset) for u in s.units if isinstance(u, Pcu)), default=0)
                for s in kernel.sections
            )
        )
    out = []
    for name, row in rows.items():
        total = row["launch_ms"] + row["busy_ms"] + row["sync_ms"]
        memory = _overlap(executions[name], busy) * 1e3
        compute = min(row["compute_ms"], row["busy_ms"] - memory)
        compute = max(compute, 0.0)
        latency = total - memory - compute
        out.append(
            {
                "kernel": name,
                **row,
                "total_ms": total,
                "memory_ms": memory,
                "compute_ms": compute,
                "latency_ms": latency,
                "bound": _bound(memory, compute, latency),
            }
        )
    return out


def op_breakdown(
    program: Program, preset: HardwarePreset, timing: StepTiming
) -> list[dict[str, Any]]:
    """Per op kind (``linear``, ``attention``, ``load``, ``all_reduce``, ...), over the step:
    ``{"op", "units", "active_ms", "memory_ms", "compute_ms", "latency_ms", "bound"}``, most
    active first. ``active_ms`` sums, over every call and trip, each unit group's time from its
    first tile to its last (ops overlap in the pipeline); ``units`` counts the unit groups of
    that kind in the program."""
    _require_timeline(timing)
    busy = _offchip_busy(timing)
    launches = [s for s in program.schedule if isinstance(s, Launch)]
    units = {
        (k.name, u.id): u for k in program.kernels for section in k.sections for u in section.units
    }
    counts: dict[str, int] = defaultdict(int)
    for u in units.values():
        counts[u.op] += 1
    by_op: dict[str, list[Span]] = defaultdict(list)
    for s in timing.spans:
        if s.call >= 0 and s.trip >= 0 and (launches[s.call].kernel, s.track) in units:
            by_op[s.name].append(s)
    rows = []
    for op, spans in by_op.items():
        active = memory = compute = 0.0
        for s in spans:
            unit = units[launches[s.call].kernel, s.track]
            duration = s.end - s.start
            active += duration
            on_memory = _overlap([(s.start, s.end)], busy)
            memory += on_memory
            if isinstance(unit, Pcu):
                compute += min(_pcu_seconds(unit, preset), duration - on_memory)
        compute = max(compute, 0.0)
        latency = active - memory - compute
        rows.append(
            {
                "op": op,
                "units": counts[op],
                "active_ms": active * 1e3,
                "memory_ms": memory * 1e3,
                "compute_ms": compute * 1e3,
                "latency_ms": latency * 1e3,
                "bound": _bound(memory, compute, latency),
            }
        )
    return sorted(rows, key=lambda r: (-r["active_ms"], r["op"]))


def trip_times(program: Program, timing: StepTiming) -> list[dict[str, Any]]:
    """Every kernel execution of the step, one entry per loop trip (a looped kernel's trip is a
    layer; an unlooped layer kernel is one call of one trip), in time order: ``{"call",
    "kernel", "trip", "layers", "start_ms", "end_ms"}`` from the first to the last unit span of
    that trip."""
    _require_timeline(timing)
    launches = [s for s in program.schedule if isinstance(s, Launch)]
    bounds: dict[tuple[int, int], list[float]] = {}
    for s in timing.spans:
        if s.call >= 0 and s.trip >= 0:
            b = bounds.setdefault((s.call, s.trip), [s.start, s.end])
            b[0], b[1] = min(b[0], s.start), max(b[1], s.end)
    rows = []
    for (call, trip), (start, end) in bounds.items():
        layers = list(launches[call].layers)
        trips = timing.calls[call].trips
        per = len(layers) // trips if layers else 0
        rows.append(
            {
                "call": timing.calls[call].label,
                "kernel": timing.calls[call].kernel,
                "trip": trip,
                "layers": layers[trip * per : (trip + 1) * per],
                "start_ms": start * 1e3,
                "end_ms": end * 1e3,
            }
        )
    return sorted(rows, key=lambda r: (r["start_ms"], r["call"], r["trip"]))
