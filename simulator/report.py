"""Reports of a timing simulation: figures per token, per kernel call, a table for people, a dict
for JSON, and a Chrome / Perfetto trace.

Definitions (one vocabulary with rdu-run and the docs): a *step* is one decode step of every
batch entry; *TPOT* (time per output token of one sequence) is the step time; *tokens/s* counts
every sequence; *per token* means per step / batch. The JSON keys keep their names: those ending
in ``_per_token`` are per step (each sequence gets one token per step).

* ``ms_per_token``: the step's wall time (TPOT); ``tokens_per_s``: batch / step time.
* ``offchip_bytes``: HBM + DDR bytes moved by all sockets (the AGCU transfers' work);
  ``achieved_bandwidth`` = that / step time; ``bandwidth_fraction_of_peak`` divides by the HBM
  peak of all sockets (``sockets x hbm_bandwidth``).
* ``roofline_bytes``: what the step must move off-chip for the *unsharded* model - the bytes
  of the program's transfers (its work: one embedding row, the weights, the attended KV rows, the
  new rows), each counted once however many sockets hold a copy (a replicated tensor's bytes
  once, a shard replicated over ``socket_group`` sockets once per group), so replication shows
  up as lost efficiency. Rooflines (:class:`Bounds`): ``memory_roofline_ms`` = each socket's
  share of those bytes over its tier's nominal bandwidth (the slowest tier: HBM, or DDR for
  weights placed there), ``memory_roofline_at_efficiency_ms`` the same at the tiers'
  achievable efficiency, ``compute_roofline_ms`` = FLOPs over the PCUs' peak; ``roofline_ms``
  = the larger of the nominal memory and the compute rooflines, ``roofline_fraction`` =
  roofline_ms / step time. ``paper_roofline_ms``: the Kernel Looping paper's convention (every
  parameter byte plus the whole KV cache, ``paper_bytes_per_token``, over all sockets' HBM
  peak), for comparison.
* ``time_breakdown``: the step time above the memory roofline split into causes, ms per step
  (:class:`Breakdown`; they add up to ``ms_per_token - memory_roofline_ms``), and
  ``memory_idle_compute_by_op`` the compute-bound ops behind ``memory_idle_compute``.
* ``weight_bytes_loaded`` (active) vs ``param_bytes`` (total): for mixture-of-experts models
  the difference is the experts not read. Routing assumption: the simulator moves exactly the
  bytes the program's work states, i.e. the lowering's choice of active experts; with the
  experts dealt over the sockets, the busiest socket's (``moe_routing`` says which), while
  the roofline counts the transfers' ``roofline_bytes``, a socket's share of the unsharded
  step's routed experts.
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

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from rdu_compiler.simulator.hardware import HardwarePreset, pcu_flops_per_s
from rdu_compiler.simulator.numerics import bytes_of
from rdu_compiler.simulator.program import COLLECTIVES, Agcu, Launch, Pcu, Program, Tensor
from rdu_compiler.simulator.timing import StepTiming

__all__ = [
    "CAUSES",
    "Bounds",
    "Breakdown",
    "bounds",
    "breakdown",
    "chrome_trace",
    "format_table",
    "summarize",
]

TIERS = ("hbm", "ddr")


def _transfers(program: Program) -> Iterator[tuple[str, int, Tensor, int | None]]:
    """Every off-chip transfer of one socket's step: (op, bytes, the tensor it touches, its
    ``roofline_bytes`` if the program states them)."""
    tensors = {t.name: t for t in program.tensors}
    kernels = {k.name: k for k in program.kernels}
    for launch in (s for s in program.schedule if isinstance(s, Launch)):
        kernel = kernels[launch.kernel]
        trips = kernel.trips
        bound = {b.param: [tensors[v.tensor] for v in b.tensors] for b in launch.bindings}
        for s, section in enumerate(kernel.sections):
            for unit in (u for u in section.units if isinstance(u, Agcu)):
                if unit.op in COLLECTIVES:
                    continue
                param = unit.write.name if unit.op == "store" else unit.reads[0].name
                nbytes = {
                    "load": unit.work.bytes_read,
                    "store": unit.work.bytes_written,
                    "copy": unit.work.bytes_read + unit.work.bytes_written,
                }[unit.op]
                views = bound[param]
                for trip in range(kernel.runs(s)):
                    view = views[trip if len(views) == trips else 0]
                    yield unit.op, nbytes, view, unit.work.roofline_bytes


def _held_by(tensor: Tensor, tensors: dict[str, Tensor], sockets: int) -> int:
    """How many sockets hold the same contents as this socket's copy of ``tensor``: all of
    them when no source is sharded (replicated weights, the residual stream), else the
    ``socket_group`` of its shards (or the ``sockets`` a source is limited to), less the
    sockets among which a shard's rows are dealt (``interleave``: a KV cache dealt along the
    sequence)."""
    if tensor.aliases is not None:
        tensor = tensors[tensor.aliases]
    sharded = [
        len(s.sockets)
        if s.sockets is not None
        else s.socket_group
        if s.socket_step is not None and any(s.socket_step)
        else sockets
        for s in tensor.sources
        if s.sockets is not None
        or s.interleave is not None
        or (s.socket_step is not None and any(s.socket_step))
    ]
    dealt = [math.prod(s.interleave) for s in tensor.sources if s.interleave is not None]
    return max(sharded) // max(dealt, default=1) if sharded else sockets


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
    moved: dict[str, float] = dict.fromkeys(TIERS, 0.0)
    unique: dict[str, float] = dict.fromkeys(TIERS, 0.0)
    for _, nbytes, tensor, required in _transfers(program):
        moved[tensor.tier] += nbytes
        unique[tensor.tier] += (
            nbytes / _held_by(tensor, tensors, n) if required is None else required
        )
    kernels = {k.name: k for k in program.kernels}
    flops = 0.0
    for launch in (s for s in program.schedule if isinstance(s, Launch)):
        kernel = kernels[launch.kernel]
        flops += sum(
            kernel.runs(s) * u.work.flops
            for s, sec in enumerate(kernel.sections)
            for u in sec.units
            if isinstance(u, Pcu)
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


# -- where the time goes ----------------------------------------------------------------------

CAUSES = (
    "launch",
    "argument_load",
    "program_load",
    "sync",
    "memory_idle_compute",
    "memory_idle_collectives",
    "fill_drain",
    "bandwidth_below_nominal",
    "replicated_traffic",
    "other",
)
"""The causes of :func:`breakdown`, in the order the report lists them."""


class Breakdown(msgspec.Struct, frozen=True, kw_only=True):
    """One socket's step time above the memory roofline, split into :data:`CAUSES` (seconds,
    adding up to ``step - memory roofline``), on the timeline of ``tier``, the memory tier
    that sets the roofline (HBM unless DDR's share is slower):

    * ``launch`` / ``argument_load`` / ``program_load`` / ``sync``: the memory idle while the
      host launches, loads a configuration (at launch or between sections) or arguments, or
      waits to see a kernel finish;
    * ``memory_idle_compute``: idle while compute-bound units work (``compute_by_op`` names
      them: attention, ...); ``memory_idle_collectives``: idle while an all-reduce or
      all-gather runs; ``fill_drain``: idle while tiles cross the pipeline's stages;
    * ``bandwidth_below_nominal``: the tier's bytes at its achievable efficiency rather than
      nominal, and idle while only the other tier's (slower) transfers run;
    * ``replicated_traffic``: bytes this socket moves beyond its share of the unsharded
      model's (copies every socket reads), at nominal bandwidth;
    * ``other``: idle that none of the above explains.

    Idle time is attributed in that order of precedence (host first) when causes overlap.
    ``idle`` lists the idle intervals with their cause (for the trace)."""

    tier: str
    roofline_s: float
    step_s: float
    causes: dict[str, float]
    compute_by_op: dict[str, float]
    idle: list[tuple[float, float, str]]


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        elif b > a:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _split(
    pieces: list[tuple[float, float]], cover: list[tuple[float, float]]
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """``pieces`` (sorted, disjoint) split into the parts inside ``cover`` (a union) and the
    parts outside it."""
    inside: list[tuple[float, float]] = []
    outside: list[tuple[float, float]] = []
    j = 0
    for a, b in pieces:
        while j < len(cover) and cover[j][1] <= a:
            j += 1
        k, at = j, a
        while k < len(cover) and cover[k][0] < b:
            lo, hi = max(cover[k][0], at), min(cover[k][1], b)
            if lo > at:
                outside.append((at, lo))
            if hi > lo:
                inside.append((lo, hi))
            at = max(at, hi)
            k += 1
        if at < b:
            outside.append((at, b))
    return inside, outside


def breakdown(program: Program, preset: HardwarePreset, timing: StepTiming) -> Breakdown:
    """Where one socket's step time above the memory roofline goes (:class:`Breakdown`)."""
    bound = bounds(program, preset)
    rate = {"hbm": preset.hbm_bandwidth, "ddr": preset.ddr_bandwidth}
    efficiency = {"hbm": preset.hbm_efficiency, "ddr": preset.ddr_efficiency}
    tier = max(TIERS, key=lambda t: bound.unique_bytes[t] / rate[t])
    other_tier = next(t for t in TIERS if t != tier)
    step = timing.step_s
    busy = _union(timing.busy[tier])
    idle, at = [], 0.0
    for a, b in busy:
        if a > at:
            idle.append((at, a))
        at = max(at, b)
    if step > at:
        idle.append((at, step))
    activity = timing.activity
    ops = sorted(
        (k.removeprefix("compute:") for k in activity if k.startswith("compute:")),
        key=lambda op: (-sum(b - a for a, b in activity[f"compute:{op}"]), op),
    )
    order: list[tuple[str, list[tuple[float, float]]]] = [
        (kind, activity.get(kind, [])) for kind in ("launch", "argument_load", "program_load")
    ]
    order += [
        ("sync", activity.get("sync", [])),
        ("bandwidth_below_nominal", timing.busy[other_tier]),
        ("memory_idle_collectives", activity.get("collective", [])),
        *((f"compute:{op}", activity[f"compute:{op}"]) for op in ops),
        ("fill_drain", activity.get("hop", [])),
    ]
    causes: dict[str, float] = dict.fromkeys(CAUSES, 0.0)
    by_op: dict[str, float] = {}
    marked: list[tuple[float, float, str]] = []
    for kind, intervals in order:
        inside, idle = _split(idle, _union(intervals))
        took = sum(b - a for a, b in inside)
        if kind.startswith("compute:"):
            by_op[kind.removeprefix("compute:")] = took
            kind = "memory_idle_compute"
        causes[kind] += took
        marked += [(a, b, kind) for a, b in inside]
    causes["other"] = sum(b - a for a, b in idle)
    marked += [(a, b, "other") for a, b in idle]
    moved, unique = bound.tier_bytes[tier], bound.unique_bytes[tier]
    causes["bandwidth_below_nominal"] += moved / rate[tier] * (1 / efficiency[tier] - 1)
    causes["replicated_traffic"] = (moved - unique) / rate[tier]
    return Breakdown(
        tier=tier,
        roofline_s=bound.memory_s,
        step_s=step,
        causes=causes,
        compute_by_op={op: t for op, t in by_op.items() if t > 0},
        idle=sorted(marked),
    )


def summarize(program: Program, preset: HardwarePreset, timing: StepTiming) -> dict[str, Any]:
    """The figures of one simulated step, as plain JSON-ready values."""
    step = timing.step_s
    n = program.sockets
    offchip = (timing.bytes["hbm"] + timing.bytes["ddr"]) * n
    peak = n * preset.hbm_bandwidth
    param_bytes = sum(bytes_of(v.shape, v.dtype) for v in program.values if v.role == "param")
    kv_bytes = sum(bytes_of(v.shape, v.dtype) for v in program.values if v.role == "state")
    transfers = list(_transfers(program))
    bound = bounds(program, preset)
    split = breakdown(program, preset, timing)
    roofline_s = max(bound.memory_s, bound.compute_s)
    launch_sync = sum(c.launch_s + c.sync_s for c in timing.calls)
    units = [u for k in program.kernels for s in k.sections for u in s.units]
    moe = any(u.op in ("moe", "moe_partial") for u in units)
    dealt = any("expert_start" in getattr(u, "attr_by_socket", {}) for u in units)
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
        * sum(nbytes for op, nbytes, t, _ in transfers if op == "load" and t.kind == "weight"),
        "paper_bytes_per_token": param_bytes + kv_bytes,
        "roofline_bytes": sum(bound.unique_bytes.values()) * n,
        "memory_roofline_ms": bound.memory_s * 1e3,
        "memory_roofline_at_efficiency_ms": bound.memory_at_efficiency_s * 1e3,
        "compute_roofline_ms": bound.compute_s * 1e3,
        "roofline_ms": roofline_s * 1e3,
        "roofline_fraction": roofline_s / step if step > 0 else 0.0,
        "paper_roofline_ms": (param_bytes + kv_bytes) / peak * 1e3,
        "roofline_tier": split.tier,
        "time_breakdown": {cause: t * 1e3 for cause, t in split.causes.items()},
        "memory_idle_compute_by_op": {op: t * 1e3 for op, t in split.compute_by_op.items()},
        "pcu_busy_fraction": timing.pcu_busy_s / (preset.pcus * step) if step > 0 else 0.0,
        "pcu_occupied_fraction": timing.pcu_occupied_s / (preset.pcus * step) if step else 0.0,
        "pmu_occupied_fraction": timing.pmu_occupied_s / (preset.pmus * step) if step else 0.0,
        "moe_routing": (
            None
            if not moe
            else "experts dealt over the sockets: every socket simulated as the busiest, "
            "reading its experts routed by any token (the work's bytes); the roofline counts "
            "its share of the unsharded step's routed experts"
            if dealt
            else "the bytes the program's work states (the lowering's active experts)"
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


_CAUSE_LABELS = {
    "launch": "launch",
    "argument_load": "argument load",
    "program_load": "program load",
    "sync": "sync",
    "memory_idle_compute": "idle while compute-bound units run",
    "memory_idle_collectives": "idle while collectives run",
    "fill_drain": "pipeline fill and drain",
    "bandwidth_below_nominal": "bandwidth below nominal",
    "replicated_traffic": "replicated traffic",
    "other": "other",
}


def format_table(summary: dict[str, Any]) -> str:
    """A human-readable report: headline figures, then launch / sync / busy per kernel."""
    s = summary
    lines = [
        f"{s['model']} on {s['sockets']} x {s['hardware']} ({s['launch_mode']} launch), "
        f"batch {s['batch']}, context {s['context']}",
        f"  TPOT {s['ms_per_token']:.3f} ms (the step time), "
        + ("n/a" if s["tokens_per_s"] is None else f"{s['tokens_per_s']:.1f}")
        + f" tokens/s over {s['batch']} sequence(s)",
        f"  off-chip {_si(s['offchip_bytes'], 'B')}/step "
        f"({_si(s['offchip_bytes'] / s['batch'], 'B')}/token) at "
        f"{_si(s['achieved_bandwidth'], 'B/s')}: {s['bandwidth_fraction_of_peak']:.1%} of HBM peak",
        f"  roofline {s['roofline_ms']:.3f} ms: {s['roofline_fraction']:.1%} of roofline",
        f"    memory {s['memory_roofline_ms']:.3f} ms ({_si(s['roofline_bytes'], 'B')}/step "
        f"unsharded at {s['roofline_tier'].upper()} peak), "
        f"{s['memory_roofline_at_efficiency_ms']:.3f} ms at achievable efficiency; "
        f"compute {s['compute_roofline_ms']:.3f} ms",
        f"    paper's convention (all parameters + KV cache at HBM peak) "
        f"{s['paper_roofline_ms']:.3f} ms",
        f"  launches {s['launches_per_token']}/step, launch + sync "
        f"{s['launch_and_sync_ms_per_token']:.3f} ms/step",
        f"  PCUs busy {s['pcu_busy_fraction']:.1%}, occupied {s['pcu_occupied_fraction']:.1%}; "
        f"PMUs occupied {s['pmu_occupied_fraction']:.1%}",
    ]
    if s["moe_routing"]:
        lines.append(
            f"  weights loaded {_si(s['weight_bytes_loaded'], 'B')} of "
            f"{_si(s['param_bytes'], 'B')}; MoE routing: {s['moe_routing']}"
        )
    gap = s["ms_per_token"] - s["memory_roofline_ms"]
    lines.append(
        f"  time above the memory roofline: {gap:.3f} ms/step "
        f"({s['roofline_tier'].upper()} idle or slowed by)"
    )
    ops = s["memory_idle_compute_by_op"]
    for cause, ms in s["time_breakdown"].items():
        detail = ""
        if cause == "memory_idle_compute" and ops:
            detail = "  (" + ", ".join(f"{op} {t:.3f}" for op, t in ops.items() if t >= 5e-4) + ")"
        lines.append(f"    {_CAUSE_LABELS[cause]:<34} {ms:>9.3f} ms{detail}")
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


def chrome_trace(program: Program, preset: HardwarePreset, timing: StepTiming) -> dict[str, Any]:
    """Trace events (Chrome JSON trace format, opened by Perfetto and chrome://tracing) of one
    socket (all sockets are symmetric): a track per host, kernel, memory channel, unit group
    and the memory's idle time (each idle interval named by its cause, as in
    :func:`breakdown`); loop trips as async spans (trips overlap); counters of HBM, DDR and
    P2P bandwidth and of the bytes staged in buffers. Complete events on one track nest: a
    unit group whose executions overlap (a load of the next trip starting early) gets its
    executions as async spans instead."""
    launches = [s for s in program.schedule if isinstance(s, Launch)]

    def layer(call: int, trip: int) -> list[int]:
        layers = launches[call].layers
        trips = timing.calls[call].trips
        per = len(layers) // trips if layers else 0
        return layers[trip * per : (trip + 1) * per]

    by_track: dict[str, list[dict[str, Any]]] = defaultdict(list)
    trips: dict[tuple[int, int], list[float]] = {}

    def span(track: str, name: str, start: float, end: float, cat: str, **args: Any) -> None:
        by_track[track].append({"name": name, "cat": cat, "ts": start, "end": end, "args": args})

    for sp in timing.spans:
        args: dict[str, Any] = {}
        if sp.call >= 0:
            args["call"] = timing.calls[sp.call].label
        if sp.trip >= 0:
            args.update(trip=sp.trip, layers=layer(sp.call, sp.trip))
            bounds_ = trips.setdefault((sp.call, sp.trip), [sp.start, sp.end])
            bounds_[0], bounds_[1] = min(bounds_[0], sp.start), max(bounds_[1], sp.end)
        name = sp.name if sp.track in ("host", "kernel") else sp.track
        span(sp.track, name, sp.start, sp.end, sp.name, **args)
    for channel, intervals in timing.busy.items():
        for a, b in intervals:
            span(channel, "busy", a, b, "transfer")
    split = breakdown(program, preset, timing)
    for a, b, cause in split.idle:
        span(f"{split.tier} idle", _CAUSE_LABELS[cause], a, b, "idle", cause=cause)
    events: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = [
        {
            "name": "process_name",
            "ph": "M",
            "pid": 1,
            "args": {"name": f"{program.model}: socket 0 of {program.sockets} (symmetric)"},
        }
    ]
    async_id = 0
    for tid, (track, spans) in enumerate(by_track.items(), start=1):
        meta.append(
            {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": track}}
        )
        spans.sort(key=lambda e: (e["ts"], -e["end"]))
        if _nests(spans):
            for e in spans:
                events.append(
                    {**_event(e), "ph": "X", "tid": tid, "dur": (e["end"] - e["ts"]) * 1e6}
                )
            continue
        for e in spans:  # overlapping executions: async spans, one id each
            async_id += 1
            common = {"cat": track, "id": async_id, "pid": 1, "tid": tid}
            events.append({**_event(e), **common, "ph": "b"})
            events.append(
                {"name": e["name"], **common, "ph": "e", "ts": e["end"] * 1e6, "args": {}}
            )
    for (call, trip), (start, end) in sorted(trips.items()):
        label = timing.calls[call].label
        names = layer(call, trip)
        name = (
            label
            if timing.calls[call].trips == 1
            else f"{label}: layer {', '.join(map(str, names))} (trip {trip})"
        )
        async_id += 1
        common = {"cat": "trip", "id": async_id, "pid": 1}
        args = {"call": label, "trip": trip, "layers": names}
        events.append({"name": name, **common, "ph": "b", "ts": start * 1e6, "args": args})
        events.append({"name": name, **common, "ph": "e", "ts": end * 1e6, "args": {}})
    rates = {
        "hbm": preset.hbm_bandwidth * preset.hbm_efficiency,
        "ddr": preset.ddr_bandwidth * preset.ddr_efficiency,
        "p2p": preset.p2p_bandwidth * preset.p2p_links,
    }
    for channel, intervals in timing.busy.items():
        name = f"{channel.upper()} bandwidth (B/s)"
        events.append(_counter(name, 0.0, 0.0))
        for a, b in _union(intervals):
            events.append(_counter(name, a, rates[channel]))
            events.append(_counter(name, b, 0.0))
    for at, staged in [(0.0, 0.0), *timing.staging]:
        events.append(_counter("staged in buffers (B)", at, staged))
    return {"traceEvents": meta + events, "displayTimeUnit": "ns"}


def _nests(spans: list[dict[str, Any]]) -> bool:
    """Whether spans sorted by (start, -end) nest: each starts after the open ones end or ends
    within the innermost open one."""
    open_ends: list[float] = []
    for e in spans:
        while open_ends and open_ends[-1] <= e["ts"]:
            open_ends.pop()
        if open_ends and e["end"] > open_ends[-1]:
            return False
        open_ends.append(e["end"])
    return True


def _event(e: dict[str, Any]) -> dict[str, Any]:
    return {"name": e["name"], "cat": e["cat"], "pid": 1, "ts": e["ts"] * 1e6, "args": e["args"]}


def _counter(name: str, at: float, value: float) -> dict[str, Any]:
    return {"name": name, "ph": "C", "pid": 1, "ts": at * 1e6, "args": {"value": value}}
