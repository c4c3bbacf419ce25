"""Where a simulated step's time goes: per kernel, per op (as LLMCompass reports per op) and per
loop trip (one decoder layer per trip), from a timing run with its timeline
(``simulate(..., trace=True)``).

What bounds a kernel or an op, by the same rule for both, on the simulated timeline: the part
of its time the off-chip memory (HBM or DDR) was moving data is ``memory``; of the rest, the
part its units (for a kernel: any unit) did their own work is ``compute``; what remains
(launch, argument and program load, sync, pipeline fill and drain, waits for tiles or
collectives) is ``latency``. The largest of the three is what bounds it. Ops of
one kernel overlap in the pipeline, so their active times add up to more than the kernel's.

Simulator-side: no xDSL, no compiler. The step-level split of the time above the memory
roofline into causes is :func:`simulator.report.breakdown` (``time_breakdown``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rdu_compiler.simulator.program import Launch, Program
from rdu_compiler.simulator.report import _split, _union
from rdu_compiler.simulator.timing import StepTiming

__all__ = ["BOUNDS", "kernel_breakdown", "op_breakdown", "trip_times"]

BOUNDS = ("memory", "compute", "latency")

Intervals = list[tuple[float, float]]


def _overlap(spans: Iterable[tuple[float, float]], cover: Intervals) -> float:
    """Seconds of the union of ``spans`` inside ``cover`` (a union)."""
    inside, _ = _split(_union(spans), cover)
    return sum(b - a for a, b in inside)


def _parts(spans: Intervals, offchip: Intervals, compute: Intervals) -> tuple[float, float]:
    """(memory, compute) seconds of ``spans``: off-chip memory moving data; else compute."""
    memory = _overlap(spans, offchip)
    return memory, _overlap(spans, _union(offchip + compute)) - memory


def _bound(memory: float, compute: float, latency: float) -> str:
    return max(zip((memory, compute, latency), BOUNDS, strict=True))[1]


def _timeline(timing: StepTiming) -> tuple[Intervals, dict[str, Intervals]]:
    """The off-chip busy union (HBM or DDR) and each op's compute intervals."""
    if not timing.spans and timing.calls:
        raise ValueError("a breakdown needs the timeline: simulate(..., trace=True)")
    offchip = _union(timing.busy.get("hbm", []) + timing.busy.get("ddr", []))
    compute = {
        kind.removeprefix("compute:"): list(intervals)
        for kind, intervals in timing.activity.items()
        if kind.startswith("compute:")
    }
    return offchip, compute


def kernel_breakdown(program: Program, timing: StepTiming) -> list[dict[str, Any]]:
    """Per kernel, its calls summed: ``{"kernel", "calls", "trips", "launch_ms", "busy_ms",
    "sync_ms", "total_ms", "memory_ms", "compute_ms", "latency_ms", "bound"}`` in schedule
    order; ``total_ms`` (launch + busy + sync) = memory + compute + latency."""
    offchip, compute = _timeline(timing)
    every_op = [i for intervals in compute.values() for i in intervals]
    executions: dict[str, Intervals] = defaultdict(list)
    for s in timing.spans:
        if s.track == "kernel":
            executions[timing.calls[s.call].kernel].append((s.start, s.end))
    rows: dict[str, dict[str, Any]] = {}
    for c in timing.calls:
        row = rows.setdefault(
            c.kernel, {"kernel": c.kernel, **dict.fromkeys(("calls", "trips"), 0)}
        )
        row["calls"] += 1
        row["trips"] += c.trips
        for key, seconds in (
            ("launch_ms", c.launch_s),
            ("busy_ms", c.busy_s),
            ("sync_ms", c.sync_s),
        ):
            row[key] = row.get(key, 0.0) + seconds * 1e3
    for name, row in rows.items():
        memory, computing = _parts(executions[name], offchip, every_op)
        total = row["launch_ms"] + row["busy_ms"] + row["sync_ms"]
        latency = total - (memory + computing) * 1e3
        row.update(
            total_ms=total,
            memory_ms=memory * 1e3,
            compute_ms=computing * 1e3,
            latency_ms=latency,
            bound=_bound(memory * 1e3, computing * 1e3, latency),
        )
    return list(rows.values())


def op_breakdown(program: Program, timing: StepTiming) -> list[dict[str, Any]]:
    """Per op kind (``linear``, ``attention``, ``load``, ``all_reduce``, ...), over the step:
    ``{"op", "units", "active_ms", "memory_ms", "compute_ms", "latency_ms", "bound"}``, most
    active first. ``active_ms`` sums, over every call and trip, each unit group's time from its
    first tile to its last (ops overlap in the pipeline); of it, ``memory_ms`` while off-chip
    memory moved data, ``compute_ms`` (else) while the op's units did their own work, the rest
    ``latency_ms`` (waiting for tiles, fill and drain); ``units`` counts the op's unit groups in
    the program."""
    offchip, compute = _timeline(timing)
    launches = [s for s in program.schedule if isinstance(s, Launch)]
    units = {(k.name, u.id): u.op for k in program.kernels for sec in k.sections for u in sec.units}
    counts: dict[str, int] = defaultdict(int)
    for op in units.values():
        counts[op] += 1
    by_op: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in timing.spans:
        if s.call >= 0 and s.trip >= 0 and (launches[s.call].kernel, s.track) in units:
            by_op[s.name].append((s.start, s.end))
    rows = []
    for op, spans in by_op.items():
        active = memory = computing = 0.0
        own = _union(compute.get(op, []))
        for span in spans:  # each span alone: spans of one op overlap across unit groups
            active += span[1] - span[0]
            m, c = _parts([span], offchip, own)
            memory, computing = memory + m, computing + c
        latency = active - memory - computing
        rows.append(
            {
                "op": op,
                "units": counts[op],
                "active_ms": active * 1e3,
                "memory_ms": memory * 1e3,
                "compute_ms": computing * 1e3,
                "latency_ms": latency * 1e3,
                "bound": _bound(memory, computing, latency),
            }
        )
    return sorted(rows, key=lambda r: (-r["active_ms"], r["op"]))


def trip_times(program: Program, timing: StepTiming) -> list[dict[str, Any]]:
    """Every kernel execution of the step, one entry per loop trip (a looped kernel's trip is a
    layer; an unlooped layer kernel is one call of one trip), in time order: ``{"call",
    "kernel", "trip", "layers", "start_ms", "end_ms"}`` from the first to the last unit span of
    that trip."""
    _timeline(timing)
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
