"""Timing simulation: a discrete-event model of one decode step on the hardware preset.

What is modelled (all rates and costs from :class:`simulator.hardware.HardwarePreset`):

* **Host / sequencer.** Launches run one after the other. Each costs a launch (software: host
  runtime; hardware: AGCU sequencer), a Program Load when the chip holds another configuration
  (another kernel, or another section of a split kernel; the chip starts the step holding the
  schedule's last kernel, as in steady-state decoding) and an Argument Load. After the kernel
  finishes, its completion must be seen (sync, per the launch mode) before the next launch is
  issued. Nothing else is charged per call: the gain of kernel looping comes only from running
  fewer launches and from the loop's overlap of layers, never from a rule on loops.
* **Units** (one group of ``count`` identical units = one aggregate; all sockets run the same
  SPMD program on symmetric data, so one socket is simulated). A unit starts when every producer
  (its stream predecessors) has started and its first tile has crossed the producer (the hop
  latency: ``stage_latency_s`` per stage, ``pcu_stages`` stages for a PCU, one otherwise, and
  one more per op fused into the unit's pipeline), and
  when the same hardware unit finished the previous trip (a load: started it, see below). It
  finishes when its own work is done and every producer finished (plus the hop latency, less
  the stages the unit runs before a fused op that alone reads the producer's data: it joins
  the pipeline there): pipeline fill and drain come out of these hops. A collective (``all_reduce``,
  ``all_gather``) is a barrier: it starts when its producers have finished; work that does
  not wait for it (the next trip's loads, other units) runs beside it.
* **Work.** PCU: ``flops`` at ``count x lanes x 2 x clock`` (x ``pcu_stages`` in systolic mode),
  bytes at ``count x lanes x 4 bytes x clock`` (one f32 vector per cycle), whichever is slower;
  PMU: bytes at the same vector rate. AGCU ``load`` / ``store`` / ``copy`` move their work's
  off-chip bytes through the memory channel of the bound tensor's tier (HBM or DDR at
  ``bandwidth x efficiency``), shared equally by the socket's transfers in flight of the
  earliest trip; a later trip's (prefetching) transfers get only bandwidth the earlier trip
  leaves idle (requests are served in issue order), so prefetch never slows the current layer.
* **Links.** Collectives cross the socket's ``p2p_links`` links of ``p2p_bandwidth`` each
  (one shared channel of their sum), with the algorithm :func:`collective_plan` picks for the
  block size, the sockets taking part (all, or the all-gather's ``group``) and
  ``p2p_topology``: one-shot or two-shot (switch) or ring. The block is what the program's
  buffer holds, in its dtype (f32 partials of a row-split linear cost twice bf16).
* **Buffers and backpressure.** A load stages its bytes in the buffers of its stream: the
  spare capacity of the PMUs it feeds (``sram_bytes x count x (buffers - 1) / buffers``) plus
  the credits of its direct streams (``depth x tile_bytes``). Only its first readers (the
  first compute / AGCU units after those PMUs; a later reader of the same data reads it where
  the first left it) pace it: bytes beyond what free buffers hold move once they have started,
  and the staged bytes are free again when the load has finished.
* **Hardware loop.** Every section runs once per trip. A looped kernel reserves ``prefetch``
  more sets of every stream's buffers (the lowering's reservation, checked against the SRAM),
  shared by the trips in issue order: the load of trip ``t + 1`` may start once trip ``t``'s
  has started and trip ``t - prefetch`` has finished, and stages as much as free buffers hold
  while bandwidth is idle - the next layer's weights stream in while this layer's attention
  and all-reduces run. ``prefetch = 0``: trips run back to back, as separate launches would.
  Loads of params the kernel writes (the residual stream) wait for the previous trip's stores.
* **Sections** of one kernel run in program order (``Kernel.executions``: a prologue's once,
  the loop's trip by trip, an epilogue's once). Executions in one configuration run side by
  side, ordered by their data: a load of a param waits for the latest earlier execution that
  stores it (trip 0's load of the residual stream for the embedding's store, the LM head's for
  the last trip's), and requests are served in program order (an epilogue's loads get only
  bandwidth the loop leaves idle). The first execution of another configuration waits until
  everything before it finished, then for a Program Load (in a loop over several sections:
  every trip).
* **Invariants.** Every unit of every launch finishes, or :class:`SimulationError` names the
  kernel, unit and trip and the chain it waits on; transfers make progress whatever the rates;
  simulated time past ``_HORIZON_S`` is refused. The step is never shorter than the memory and
  compute bounds (``simulator.report.bounds``; property-tested).
* **Records.** Besides totals, :class:`StepTiming` keeps intervals (channel busy, host phases,
  collectives, compute, hops) and the staged bytes over time: the report's breakdown of the
  time above the roofline and the trace are computed from them.

The engine is a small heapq event loop with callbacks (no coroutines): one decode step of a
70B model on 16 sockets is a few ten thousand events. Only the standard library, msgspec and the
simulator's own modules are imported.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import msgspec

from rdu_compiler.simulator.hardware import (
    HardwarePreset,
    changed_figures,
    collective_plan,
    pcu_flops_per_s,
    vector_bytes_per_s,
)
from rdu_compiler.simulator.program import (
    COLLECTIVES,
    Agcu,
    Kernel,
    Launch,
    Pcu,
    Pmu,
    Program,
    Section,
    compiled_hardware,
    validate_program,
)

__all__ = [
    "CallTiming",
    "SimulationError",
    "Span",
    "StepTiming",
    "collective_plan",
    "simulate",
]

_REL_EPS = 1e-9  # a transfer within this fraction of its size of done is done (float rounding)


_HORIZON_S = 1e6  # no decode step takes 11 days: beyond, a parameter is nonsense
_OVERFLOW = (
    "simulated time passes {horizon:g} s (at {time:g} s): a hardware rate too small or a cost "
    "too large for the work of this program"
)


class SimulationError(Exception):
    """A simulation that cannot finish: a unit that never completes (named with its kernel,
    launch, trip and what it waits on) or a time that overflows. Never a partial result."""


class Span(msgspec.Struct, frozen=True, array_like=True):
    """An interval on one track of the trace: ``track`` (unit id, ``hbm``, ``host``, ...),
    ``name``, ``start`` / ``end`` in seconds, ``call`` (launch index), ``trip`` (-1: the host,
    or a section run once beside a loop)."""

    track: str
    name: str
    start: float
    end: float
    call: int
    trip: int


class CallTiming(msgspec.Struct, frozen=True, kw_only=True):
    """One launch: when it was issued, and its time split into launch (launch + Argument Load +
    Program Load), busy (kernel execution, fill and drain and the Program Loads between
    sections included) and sync (until the host or sequencer has seen it finish);
    ``program_load_s`` sums all its Program Loads."""

    label: str
    kernel: str
    layers: list[int]
    trips: int
    sections: int
    issued_s: float
    launch_s: float
    program_load_s: float
    busy_s: float
    sync_s: float


Interval = tuple[float, float]


class StepTiming(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated decode step of one socket (all sockets are symmetric).

    Besides the totals, the intervals of what happened, for attributing time (the report's
    breakdown) and drawing it (the trace): ``busy`` per channel (``hbm``, ``ddr``, ``p2p``: a
    transfer in flight), ``activity`` per kind - ``launch``, ``argument_load``,
    ``program_load`` (at launch and between sections), ``sync`` (host), ``collective`` (an
    all-reduce / all-gather between its start and end), ``hop`` (a tile crossing a unit: the
    pipeline's fill and drain), ``compute:<op>`` (a PCU or PMU group doing its own work) -
    and ``staging``, the bytes staged in buffers ahead of their readers over time
    (``(time, bytes)`` from that time on)."""

    step_s: float
    calls: list[CallTiming]
    bytes: dict[str, float]  # off-chip bytes moved per socket, by channel (hbm, ddr, p2p)
    channel_busy_s: dict[str, float]  # time each channel had a transfer in flight
    pcu_busy_s: float  # sum over PCU groups of count x compute time
    pcu_occupied_s: float  # sum over PCU groups of count x (finish - start)
    pmu_occupied_s: float
    events: int
    spans: list[Span]
    busy: dict[str, list[Interval]]
    activity: dict[str, list[Interval]]
    staging: list[tuple[float, float]]


class _Engine:
    """Time-ordered callbacks (a heap; ties in insertion order)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events = 0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []

    def at(self, time: float, fn: Callable[[], None]) -> None:
        if not time <= _HORIZON_S:  # also NaN
            raise SimulationError(_OVERFLOW.format(horizon=_HORIZON_S, time=time))
        self.events += 1
        heapq.heappush(self._heap, (max(time, self.now), self.events, fn))

    def run(self) -> None:
        heap = self._heap
        while heap:
            self.now, _, fn = heapq.heappop(heap)
            fn()


class _Channel:
    """A bandwidth shared by the transfers in flight (fluid): the transfers of the earliest
    trip share it equally, later trips' (prefetching) transfers get what is left - none while
    an earlier trip still moves data, as requests are served in the order they were issued.

    Progress is guaranteed whatever the rate: each completion event ends the transfer(s) it
    was scheduled for, even when the time step is below what the clock's float resolves."""

    def __init__(self, engine: _Engine, name: str, rate: float):
        self.engine, self.name, self.rate = engine, name, rate
        self.intervals: list[Interval] = []
        self.active: list[list[Any]] = []  # [remaining bytes, done callback, trip, size]
        self.moved = 0.0
        self.busy = 0.0
        self._since = 0.0
        self._busy_from = 0.0
        self._version = 0
        self._next: list[list[Any]] = []  # the transfers the pending completion event ends

    def transfer(self, nbytes: float, trip: int, done: Callable[[], None]) -> None:
        if nbytes <= 0:
            self.engine.at(self.engine.now, done)
            return
        self._advance()
        if not self.active:
            self._busy_from = self.engine.now
        self.moved += nbytes
        self.active.append([nbytes, done, trip, nbytes])
        self._reschedule()

    def _served(self) -> list[list[Any]]:
        first = min(t[2] for t in self.active)
        return [t for t in self.active if t[2] == first]

    def _advance(self) -> None:
        now = self.engine.now
        if self.active and now > self._since:
            served = self._served()
            share = (now - self._since) * self.rate / len(served)
            for t in served:
                t[0] -= share
        self._since = now

    def _reschedule(self) -> None:
        self._version += 1
        if self.active:
            version = self._version
            served = self._served()
            least = min(t[0] for t in served)
            self._next = [t for t in served if t[0] <= least]
            left = least * len(served) / self.rate
            self.engine.at(self.engine.now + left, lambda: self._complete(version))

    def _complete(self, version: int) -> None:
        if version != self._version:
            return
        self._advance()
        ending = {id(t) for t in self._next}
        done = [t for t in self.active if id(t) in ending or t[0] <= _REL_EPS * t[3]]
        self.active = [t for t in self.active if not (id(t) in ending or t[0] <= _REL_EPS * t[3])]
        if not self.active:
            self.busy += self.engine.now - self._busy_from
            self.intervals.append((self._busy_from, self.engine.now))
        self._reschedule()
        for t in done:
            t[1]()


class _UnitModel:
    """What the time model needs of one unit group, derived once per kernel."""

    __slots__ = (
        "id",
        "kind",
        "op",
        "count",
        "latency",
        "service",
        "nbytes",
        "param",
        "producers",
        "consumers",
        "gates",
        "gated_by",
        "cap",
        "barrier",
        "group",
        "stores",
        "joins",
    )

    def __init__(self, unit: Any, preset: HardwarePreset):
        self.id, self.op, self.count = unit.id, unit.op, unit.count
        self.kind = unit.__struct_config__.tag
        # a fused op is one more stage of the unit's pipeline (`Fused`), not a hop of its own
        stages = (preset.pcu_stages if isinstance(unit, Pcu) else 1) + len(unit.fused)
        self.latency = stages * preset.stage_latency_s
        vector = vector_bytes_per_s(preset, unit.count)
        work = unit.work
        self.service = 0.0
        if isinstance(unit, Pcu):
            flops = pcu_flops_per_s(preset, unit.count, systolic=unit.mode == "systolic")
            self.service = max(
                work.flops / flops, max(work.bytes_read, work.bytes_written) / vector
            )
        elif isinstance(unit, Pmu):
            self.service = max(work.bytes_read, work.bytes_written) / vector
        # off-chip bytes: a load reads, a store writes, a copy does both; a collective: its
        # socket's block (the P2P bytes follow from the algorithm, `_KernelRun._collective`)
        self.nbytes = (
            {
                "load": work.bytes_read,
                "store": work.bytes_written,
                "copy": work.bytes_read + work.bytes_written,
                **dict.fromkeys(COLLECTIVES, work.bytes_read),
            }.get(unit.op, 0)
            if isinstance(unit, Agcu)
            else 0
        )
        # the param whose tier an AGCU transfer uses (loads and copies: the one read; stores:
        # the one written), and the param it writes (later trips' loads of it wait for it)
        self.param = self.stores = None
        if isinstance(unit, Agcu) and unit.op not in COLLECTIVES:
            self.param = unit.write.name if unit.op == "store" else unit.reads[0].name
            if unit.op in ("store", "copy"):
                self.stores = unit.write.name
        self.barrier = unit.op in COLLECTIVES
        self.group: int | None = unit.attrs.get("group") if self.barrier else None
        self.producers: list[int] = []
        self.consumers: list[int] = []
        self.gates: list[int] = []  # consumers a load may not run ahead of beyond `cap`
        self.gated_by: list[int] = []
        self.cap = 0.0
        # consumer -> how much later this unit's data may reach it: the stages the consumer
        # runs before the fused op that reads it (it joins the pipeline there)
        self.joins: dict[int, float] = {}


class _SectionModel:
    def __init__(self, section: Section, preset: HardwarePreset):
        self.units = [_UnitModel(u, preset) for u in section.units]
        index = {u.id: i for i, u in enumerate(self.units)}
        credits: dict[tuple[int, int], float] = {}
        for s in section.streams:
            p, c = index[s.producer], index[s.consumer]
            if c not in self.units[p].consumers:
                self.units[p].consumers.append(c)
                self.units[c].producers.append(p)
            credits[p, c] = credits.get((p, c), 0) + s.depth * s.tile_bytes
        self._joins(section, preset)
        pmus = {i: u for i, u in enumerate(section.units) if isinstance(u, Pmu)}
        below = self._descendants()
        for i, u in enumerate(self.units):
            if not (u.kind == "agcu" and u.op == "load"):
                continue
            frontier, seen, gates = list(u.consumers), set(), []
            for c in u.consumers:
                if c not in pmus:
                    u.cap += credits[i, c]
            while frontier:
                c = frontier.pop()
                if c in seen:
                    continue
                seen.add(c)
                if c in pmus:
                    pmu = pmus[c]
                    u.cap += pmu.sram_bytes * pmu.count * (pmu.buffers - 1) / pmu.buffers
                    frontier.extend(self.units[c].consumers)
                else:
                    gates.append(c)
            # A consumer downstream of another consumer reads the data later, from where the
            # first one left it: only the first consumers pace the load. (Waiting for a later
            # one could wait on this load itself, through a collective barrier: a deadlock.)
            for c in sorted(gates):
                if not any(c in below[g] for g in gates):
                    u.gates.append(c)
                    self.units[c].gated_by.append(i)
            if not u.gates:
                u.cap = float(u.nbytes)

    def _joins(self, section: Section, preset: HardwarePreset) -> None:
        """Producers read only by a consumer's fused op join its pipeline at that op's stage
        (an epilogue's after the unit's own stages): their data may arrive that much later
        without delaying it (`_UnitModel.joins`)."""
        writer: dict[str, int] = {}
        for c, unit in enumerate(section.units):
            main = {a.name for a in unit.reads}
            own = preset.pcu_stages if isinstance(unit, Pcu) else 1
            for k, fused in enumerate(unit.fused):
                entry = (k + (own if fused.operand == -1 else 0)) * preset.stage_latency_s
                for access in fused.reads:
                    p = writer.get(access.name)
                    if p is not None and access.name not in main and c in self.units[p].consumers:
                        joins = self.units[p].joins
                        joins[c] = min(joins.get(c, entry), entry)
            writer[unit.write.name] = c

    def _descendants(self) -> list[set[int]]:
        """Per unit, the units its streams reach (directly or not); streams go forward in
        the unit list, so one backward sweep computes them."""
        below: list[set[int]] = [set() for _ in self.units]
        for i in reversed(range(len(self.units))):
            for c in self.units[i].consumers:
                below[i].add(c)
                below[i] |= below[c]
        return below


class _Inst:
    """One execution of a unit group: (execution of its section, unit)."""

    __slots__ = (
        "exec",
        "trip",
        "sec",
        "index",
        "u",
        "need_start",
        "t_start",
        "need_finish",
        "t_finish",
        "start",
        "gates_left",
        "channel",
        "ended",
        "rest",
        "claim",
        "moving",
    )

    def __init__(self, exec_: int, trip: int | None, sec: int, index: int, u: _UnitModel):
        # `exec`: the section execution's place in the kernel's program order (also the
        # order in which channels serve requests); `trip`: its loop trip (None: run once)
        self.exec, self.trip, self.sec, self.index, self.u = exec_, trip, sec, index, u
        # producers must have started (a barrier: finished), and finished for this to finish
        self.need_start = len(u.producers)
        self.need_finish = 1 + len(u.producers)
        self.t_start = self.t_finish = 0.0
        self.start = -1.0
        self.gates_left = len(u.gates)
        self.channel: _Channel | None = None
        self.ended = False
        self.rest = float(u.nbytes)  # a load's bytes not yet moving
        self.claim = 0.0  # a load's bytes staged in its stream's buffers ahead of its readers
        self.moving = False


class _Pool:
    """The staging buffers of one load's stream: free bytes, and the loads waiting for them."""

    __slots__ = ("free", "waiting")

    def __init__(self, capacity: float):
        self.free = capacity
        self.waiting: list[_Inst] = []


class _KernelRun:
    """One launch of a kernel: every execution of every section (``Kernel.executions``: a
    prologue once, the looped sections trip by trip, an epilogue once), driven by events.

    Executions follow each other through their data and their hardware: the same unit's
    previous trip, the loop's prefetch window, the stores of a param its loads read (the
    latest earlier execution storing it), and the configuration: executions in one
    configuration of the chip (a loop's trips, a prologue or epilogue configured with it) run
    side by side; the first execution of another configuration waits until everything
    before has finished and its Program Load is done."""

    def __init__(
        self,
        sim: _Step,
        kernel: Kernel,
        model: list[_SectionModel],
        launch: Launch,
        call: int,
        t0: float,
        done: Callable[[float], None],
    ):
        self.sim, self.model, self.call, self.done = sim, model, call, done
        self.kernel = kernel.name
        self.trips = kernel.trips
        self.prefetch = kernel.loop.prefetch if kernel.loop is not None else 0
        looped = kernel.looped_sections()
        self.execs = kernel.executions()
        tiers = sim.tiers(launch, kernel, self.trips)
        self.insts = [
            [_Inst(k, trip, s, i, u) for i, u in enumerate(model[s].units)]
            for k, (s, trip) in enumerate(self.execs)
        ]
        where = {(s, trip): k for k, (s, trip) in enumerate(self.execs)}
        self.next_trip = [
            where.get((s, trip + 1)) if trip is not None else None for s, trip in self.execs
        ]
        self.previous_trip = [where.get((s, trip - 1)) if trip else None for s, trip in self.execs]
        self.left = [len(row) for row in self.insts]
        self.remaining = len(self.execs)
        # executions in one configuration form a segment; the next segment waits for it
        config = {s: c for c, group in enumerate(kernel.configurations()) for s in group}
        self.segments: list[list[int]] = []
        for k, (s, _) in enumerate(self.execs):
            if not self.segments or config[self.execs[self.segments[-1][-1]][0]] != config[s]:
                self.segments.append([])
            self.segments[-1].append(k)
        self.segment_of = [g for g, seg in enumerate(self.segments) for _ in seg]
        self.segment_left = [len(seg) for seg in self.segments]
        # one buffer pool per load: its readers' staging buffers (in a looped section one set
        # per trip in flight, the loop's prefetch reservation) shared by the trips in order
        self.pools = {
            (s, i): _Pool(u.cap * (1 + self.prefetch if s in looped else 1))
            for s, sec in enumerate(model)
            for i, u in enumerate(sec.units)
            if u.op == "load"
        }
        self.trip_left = [len(looped)] * self.trips
        self.prefetch_wait: list[list[_Inst]] = [[] for _ in range(self.trips)]
        self.store_wait: dict[tuple[int, str], list[_Inst]] = {}
        stored_by: dict[str, list[int]] = {}  # param -> executions storing it, in order
        for k, row in enumerate(self.insts):
            for p in dict.fromkeys(i.u.stores for i in row if i.u.stores is not None):
                stored_by.setdefault(p, []).append(k)
        start_now: list[_Inst] = []
        for k, row in enumerate(self.insts):
            trip = row[0].trip if row else None
            for inst in row:
                u = inst.u
                if u.param is not None:
                    inst.channel = sim.channels[tiers[u.param][trip or 0]]
                elif u.barrier:
                    inst.channel = sim.channels["p2p"]
                if trip is not None and trip > 0:
                    inst.need_start += 1  # the same unit finished (a load: started) trip - 1
                if self.segment_of[k] > 0:
                    inst.need_start += 1  # the configuration loaded after what ran before
                if u.op == "load" and trip is not None and trip > self.prefetch:
                    inst.need_start += 1
                    self.prefetch_wait[trip - 1 - self.prefetch].append(inst)
                if u.op == "load" and u.param in stored_by:
                    # the latest earlier execution storing the param has written it
                    writer = next((j for j in reversed(stored_by[u.param]) if j < k), None)
                    if writer is not None:
                        inst.need_start += sum(i.u.stores == u.param for i in self.insts[writer])
                        self.store_wait.setdefault((writer, u.param), []).append(inst)
                inst.t_start = t0
                if inst.need_start == 0:
                    start_now.append(inst)
        for inst in start_now:
            sim.engine.at(t0, lambda i=inst: self._start(i))

    def _cond_start(self, inst: _Inst, time: float) -> None:
        if time > inst.t_start:
            inst.t_start = time
        inst.need_start -= 1
        if inst.need_start == 0:
            self.sim.engine.at(inst.t_start, lambda: self._start(inst))

    def _cond_finish(self, inst: _Inst, time: float) -> None:
        if time > inst.t_finish:
            inst.t_finish = time
        inst.need_finish -= 1
        if inst.need_finish == 0:
            self.sim.engine.at(inst.t_finish, lambda: self._finish(inst))

    def _start(self, inst: _Inst) -> None:
        engine, u = self.sim.engine, inst.u
        now = inst.start = engine.now
        row = self.insts[inst.exec]
        nxt = self.next_trip[inst.exec]
        if u.op == "load" and nxt is not None:
            # the next trip's load stages into free buffers of the same stream: it may start
            # once this one has (requests in issue order), as the trip window allows
            self._cond_start(self.insts[nxt][inst.index], now)
        for c in u.consumers:
            if not row[c].u.barrier:
                self._cond_start(row[c], now + u.latency)
        for g in u.gated_by:
            load = row[g]
            load.gates_left -= 1
            if load.gates_left == 0 and load.start >= 0:
                self._advance_load(load)
        if u.consumers:
            self.sim.mark("hop", now, now + u.latency)
        if u.op == "load" and inst.rest > 0:
            self._advance_load(inst)
        elif u.op == "load":
            self._worked(inst)
        elif u.barrier:
            self._collective(inst)
        elif inst.channel is not None:
            self._move(inst, u.nbytes, lambda: self._worked(inst))
        else:
            self.sim.mark(f"compute:{u.op}", now, now + u.service)
            engine.at(now + u.service, lambda: self._worked(inst))

    def _move(self, inst: _Inst, nbytes: float, then: Callable[[], None]) -> None:
        assert inst.channel is not None
        inst.channel.transfer(nbytes, inst.exec, then)

    def _advance_load(self, inst: _Inst) -> None:
        """Move what a load may: everything once its first readers have started (they take
        the tiles as they come), else what free buffers of its stream hold ahead of them
        (backpressure); it waits for either when neither allows more."""
        if inst.moving or inst.rest <= 0:
            return
        pool = self.pools[inst.sec, inst.index]
        if inst.gates_left == 0:
            nbytes = inst.rest
        else:
            nbytes = min(inst.rest, pool.free)
            if nbytes <= 0:
                if inst not in pool.waiting:
                    pool.waiting.append(inst)
                return
            pool.free -= nbytes
            inst.claim += nbytes
            self.sim.stage(nbytes)
        inst.rest -= nbytes
        inst.moving = True
        self._move(inst, nbytes, lambda: self._moved(inst))

    def _moved(self, inst: _Inst) -> None:
        inst.moving = False
        if inst.rest > 0:
            self._advance_load(inst)
        else:
            self._worked(inst)

    def _release(self, inst: _Inst) -> None:
        """A finished load's staged tiles are consumed: its buffers take the waiting loads of
        later trips, earliest first."""
        if inst.claim <= 0:
            return
        pool = self.pools[inst.sec, inst.index]
        pool.free += inst.claim
        self.sim.stage(-inst.claim)
        inst.claim = 0.0
        waiting, pool.waiting = pool.waiting, []
        for load in sorted(waiting, key=lambda i: i.exec):
            self._advance_load(load)

    def _collective(self, inst: _Inst) -> None:
        """Every socket's block of ``b`` bytes (in the dtype the program's buffer states, e.g.
        f32 partials) combined over the P2P links: see :func:`collective_plan`. The bytes
        share the socket's links with its other collectives in flight (trips in order), and
        the collective runs beside any work that does not wait for it."""
        latency, moved = collective_plan(
            self.sim.preset, inst.u.op, inst.u.group or self.sim.sockets, inst.u.nbytes
        )
        if moved <= 0 and latency <= 0:
            self._worked(inst)
            return
        self.sim.engine.at(
            self.sim.engine.now + latency,
            lambda: self._move(inst, moved, lambda: self._worked(inst)),
        )

    def _worked(self, inst: _Inst) -> None:
        self._cond_finish(inst, self.sim.engine.now)

    def _finish(self, inst: _Inst) -> None:
        now, u, k = self.sim.engine.now, inst.u, inst.exec
        inst.ended = True
        if u.op == "load":
            self._release(inst)
        elif u.barrier:
            self.sim.mark("collective", inst.start, now)
        if u.consumers:
            self.sim.mark("hop", now, now + u.latency)
        self.sim.record(self.call, inst, now)
        row = self.insts[k]
        for c in u.consumers:
            arrives = now + u.latency - u.joins.get(c, 0.0)
            self._cond_finish(row[c], arrives)
            if row[c].u.barrier:
                self._cond_start(row[c], arrives)
        nxt = self.next_trip[k]
        if nxt is not None and u.op != "load":
            self._cond_start(self.insts[nxt][inst.index], now)
        if u.stores is not None:
            for load in self.store_wait.get((k, u.stores), ()):
                self._cond_start(load, now)
        self.left[k] -= 1
        if self.left[k] == 0:
            self._execution_done(k, now)

    def _execution_done(self, k: int, now: float) -> None:
        self.remaining -= 1
        trip = self.execs[k][1]
        if trip is not None:
            self.trip_left[trip] -= 1
            if self.trip_left[trip] == 0:
                for load in self.prefetch_wait[trip]:
                    self._cond_start(load, now)
        g = self.segment_of[k]
        self.segment_left[g] -= 1
        if self.segment_left[g] == 0 and g + 1 < len(self.segments):
            ready = now + self.sim.preset.program_load_s
            self.sim.program_loads[self.call] += self.sim.preset.program_load_s
            self.sim.mark("program_load", now, ready)
            for nxt in self.segments[g + 1]:
                for inst in self.insts[nxt]:
                    self._cond_start(inst, ready)
        if self.remaining == 0:
            self.done(now)

    # -- diagnosis of a run that cannot finish ---------------------------------------------

    def stall(self) -> str:
        """Why this launch cannot finish, in one line: from its first unfinished unit
        execution, the chain of what each waits on (ending in a cycle for a deadlock)."""
        pending = [i for row in self.insts for i in row if not i.ended]
        chain, seen = [], set()
        inst: _Inst | None = pending[0]
        while inst is not None and id(inst) not in seen and len(chain) < 8:
            seen.add(id(inst))
            what, inst = self._waits(inst)[0]
            chain.append(what)
        if inst is not None and id(inst) in seen:
            chain.append("(a cycle: a deadlock)")
        return (
            f"kernel '{self.kernel}' (launch {self.call}"
            + (f", {label}" if (label := self.sim.launches[self.call].label) else "")
            + f") cannot finish, {len(pending)} unit execution(s) left: "
            + " -> ".join(chain)
        )

    def _name(self, inst: _Inst) -> str:
        when = f"trip {inst.trip}" if inst.trip is not None else f"section {inst.sec} (once)"
        return f"unit '{inst.u.id}' ({inst.u.op}) of {when}"

    def _waits(self, inst: _Inst) -> list[tuple[str, _Inst | None]]:
        """What ``inst`` still waits on: (description, the execution it waits for, if any)."""
        u, k, t = inst.u, inst.exec, inst.trip
        row = self.insts[k]
        me = self._name(inst)
        waits: list[tuple[str, _Inst | None]] = []
        if inst.start < 0:
            for p in u.producers:
                other = row[p]
                if u.barrier and not other.ended:
                    waits.append((f"{me} waits for {self._name(other)} to end", other))
                elif other.start < 0:
                    waits.append((f"{me} waits for {self._name(other)} to start", other))
            previous = self.previous_trip[k]
            if previous is not None and not self.insts[previous][inst.index].ended:
                other = self.insts[previous][inst.index]
                waits.append((f"{me} waits for its trip {other.trip} to end", other))
            earlier = [i for r in self.insts[: k + 1] for i in r if not i.ended]
            if u.op == "load" and t is not None and t > self.prefetch:
                window = [i for r in self.insts for i in r if i.trip == t - 1 - self.prefetch]
                left = [i for i in window if not i.ended]
                if left:
                    waits.append((f"{me} waits for trip {t - 1 - self.prefetch} to end", left[0]))
            if earlier and earlier[0] is not inst:
                waits.append((f"{me} waits for earlier work", earlier[0]))
        else:
            for g in u.gates:
                if inst.rest > 0 and not inst.moving and row[g].start < 0:
                    waits.append(
                        (f"{me} waits for buffer space: {self._name(row[g])} to start", row[g])
                    )
            for p in u.producers:
                if not row[p].ended:
                    waits.append((f"{me} waits for {self._name(row[p])} to end", row[p]))
        return waits or [(f"{me} waits for its own work", None)]


class _Step:
    """The host schedule of one step, run on the engine."""

    def __init__(self, program: Program, preset: HardwarePreset, trace: bool):
        self.program, self.preset, self.sockets = program, preset, program.sockets
        self.engine = _Engine()
        self.spans: list[Span] | None = [] if trace else None
        self.channels = {
            "hbm": _Channel(self.engine, "hbm", preset.hbm_bandwidth * preset.hbm_efficiency),
            "ddr": _Channel(self.engine, "ddr", preset.ddr_bandwidth * preset.ddr_efficiency),
            "p2p": _Channel(self.engine, "p2p", preset.p2p_bandwidth * preset.p2p_links),
        }
        self.activity: dict[str, list[Interval]] = {}
        self.tensors = {t.name: t for t in program.tensors}
        self.kernels = {k.name: k for k in program.kernels}
        self.models = {
            k.name: [_SectionModel(s, preset) for s in k.sections] for k in program.kernels
        }
        self.launches = [s for s in program.schedule if isinstance(s, Launch)]
        self.calls: list[CallTiming] = []
        self.running: _KernelRun | None = None
        self.staged = 0.0
        self.staging: list[tuple[float, float]] = []  # (time, bytes staged ahead of readers)
        self.program_loads = [0.0] * len(self.launches)
        self.pcu_busy = self.pcu_occupied = self.pmu_occupied = 0.0
        mode = program.launch_mode
        self.launch_cost = (
            preset.launch_software_s if mode == "software" else preset.launch_hardware_s
        )
        self.sync_cost = preset.sync_software_s if mode == "software" else preset.sync_hardware_s
        # the configuration the chip holds: (kernel, configuration index); the step starts
        # with the schedule's last configuration, as in steady-state decoding
        self.loaded = self._configurations(self.launches[-1].kernel)[1] if self.launches else None
        self.end = 0.0

    def _configurations(self, name: str) -> tuple[tuple[str, int], tuple[str, int]]:
        """The configurations a launch of kernel ``name`` starts and ends in."""
        kernel = self.kernels[name]
        config = {s: c for c, group in enumerate(kernel.configurations()) for s in group}
        executions = kernel.executions()
        return (name, config[executions[0][0]]), (name, config[executions[-1][0]])

    def tiers(self, launch: Launch, kernel: Kernel, trips: int) -> dict[str, list[str]]:
        """Per param, the memory tier of the tensor it is bound to on each trip."""
        out = {}
        for b in launch.bindings:
            tiers = [self.tensors[v.tensor].tier for v in b.tensors]
            out[b.param] = tiers if len(tiers) == trips else tiers * trips
        return out

    def mark(self, kind: str, start: float, end: float) -> None:
        """An interval of ``activity`` (see :class:`StepTiming`)."""
        if end > start:
            self.activity.setdefault(kind, []).append((start, end))

    def stage(self, nbytes: float) -> None:
        """Bytes claimed (> 0) or released (< 0) in staging buffers, for the occupancy curve."""
        self.staged += nbytes
        now = self.engine.now
        if self.staging and self.staging[-1][0] == now:
            self.staging[-1] = (now, self.staged)
        else:
            self.staging.append((now, self.staged))

    def record(self, call: int, inst: _Inst, end: float) -> None:
        u = inst.u
        if u.kind == "pcu":
            self.pcu_busy += u.count * u.service
            self.pcu_occupied += u.count * (end - inst.start)
        elif u.kind == "pmu":
            self.pmu_occupied += u.count * (end - inst.start)
        if self.spans is not None:
            trip = inst.trip if inst.trip is not None else -1  # -1: a section run once
            self.spans.append(Span(u.id, u.op, inst.start, end, call, trip))

    def issue(self, i: int, ready: float) -> None:
        launch = self.launches[i]
        kernel = self.kernels[launch.kernel]
        first, last = self._configurations(launch.kernel)
        load = self.preset.program_load_s if first != self.loaded else 0.0
        self.loaded = last
        self.program_loads[i] = load
        t = ready
        for kind, cost in (
            ("launch", self.launch_cost),
            ("program_load", load),
            ("argument_load", self.preset.argument_load_s),
        ):
            self.mark(kind, t, t + cost)
            if self.spans is not None and cost > 0:
                self.spans.append(Span("host", kind.replace("_", " "), t, t + cost, i, -1))
            t += cost
        t0 = t

        def start() -> None:
            self.running = _KernelRun(
                self,
                kernel,
                self.models[kernel.name],
                launch,
                i,
                t0,
                lambda end: self.finished(i, ready, t0, end),
            )

        self.engine.at(t0, start)

    def finished(self, i: int, issued: float, t0: float, end: float) -> None:
        launch = self.launches[i]
        kernel = self.kernels[launch.kernel]
        seen = end + self.sync_cost
        self.calls.append(
            CallTiming(
                label=launch.label or launch.kernel,
                kernel=launch.kernel,
                layers=list(launch.layers),
                trips=kernel.trips,
                sections=len(kernel.sections),
                issued_s=issued,
                launch_s=t0 - issued,
                program_load_s=self.program_loads[i],
                busy_s=end - t0,
                sync_s=self.sync_cost,
            )
        )
        self.mark("sync", end, seen)
        if self.spans is not None:
            self.spans.append(Span("host", "sync", end, seen, i, -1))
            self.spans.append(Span("kernel", launch.label or launch.kernel, t0, end, i, -1))
        if i + 1 < len(self.launches):
            self.issue(i + 1, seen)
        else:
            self.end = seen

    def run(self) -> StepTiming:
        if self.launches:
            self.issue(0, 0.0)
        self.engine.run()
        if len(self.calls) < len(self.launches):
            assert self.running is not None
            raise SimulationError(self.running.stall())
        if not self.end <= _HORIZON_S:
            raise SimulationError(_OVERFLOW.format(horizon=_HORIZON_S, time=self.end))
        return StepTiming(
            step_s=self.end,
            calls=self.calls,
            bytes={name: c.moved for name, c in self.channels.items()},
            channel_busy_s={name: c.busy for name, c in self.channels.items()},
            pcu_busy_s=self.pcu_busy,
            pcu_occupied_s=self.pcu_occupied,
            pmu_occupied_s=self.pmu_occupied,
            events=self.engine.events,
            spans=self.spans or [],
            busy={name: c.intervals for name, c in self.channels.items()},
            activity=self.activity,
            staging=self.staging,
        )


def simulate(
    program: Program,
    preset: HardwarePreset | None = None,
    *,
    trace: bool = False,
    what_if: bool = False,
) -> StepTiming:
    """Simulate one decode step of ``program`` on ``preset``, by default and normally the
    hardware it was compiled for (:func:`compiled_hardware`: the lowering chose its units and
    tiles for those figures). Other figures are refused with a SimulationError naming both,
    unless ``what_if`` says the change is deliberate (a sensitivity sweep, ``rdu-sim
    --hw-override``); a what-if is then checked like any program on that hardware
    (:func:`validate_program`: its kernels must still fit), so it is never silently timed on
    hardware it does not fit. ``trace`` keeps every unit's and channel's intervals for a trace
    file."""
    compiled = compiled_hardware(program)
    if preset is None:
        preset = compiled
    elif what_if:
        validate_program(program, preset)
    elif changed_figures(compiled, preset):
        raise SimulationError(
            f"the program was compiled for {compiled.label}, not for {preset.label}: timing it "
            f"on other hardware is a what-if (simulate(..., what_if=True), rdu-sim --hw-override)"
        )
    return _Step(program, preset, trace).run()
