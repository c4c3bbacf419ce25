"""Serving simulation of a Composition-of-Experts node: many experts in a large memory tier,
an HBM cache of experts, a request trace, and what switching experts costs.

Simulator-side (stdlib and numpy only; nothing of xDSL or the compiler): the node is described
by plain numbers and affine step-time models that the caller measured (``rdu-serve`` times the
compiled program of each architecture on the timing engine, or asks a GPU-node model), so the
same event simulation serves the RDU node and the GPU baselines alike.

The model, and what it assumes (each stated in ``docs/serving.md``):

* **One compute server, one copy engine.** The node runs one batch of one expert at a time
  (every socket or GPU works on it: tensor parallel), without preemption; the copy engine
  moves one expert at a time from the large tier (DDR, or host memory) into HBM, concurrently
  with compute. A step that runs while a copy is in flight is slowed by ``copy_slowdown`` (the
  copy's HBM writes take bandwidth from the step's HBM reads).
* **Routing.** Every request is routed first: a router on the node (a model of its own)
  occupies the compute server for its time, routed in arrival order and ahead of decoding; a
  host-side router (a stated policy with a cost) delays the request by its cost without
  occupying the node. The routed expert is the request's ``expert``.
* **Batches.** The compiled program has a fixed batch ``B``: the oldest waiting request's
  expert is served with up to ``B`` of its waiting requests, oldest first, as a static batch
  (every entry starts at position 0, the prompt fed one token per step as the compiled decode
  step does, finished entries idle until the longest is done). At step ``k`` every entry's KV
  cache holds ``k`` rows, so a batch of ``n`` steps takes ``sum_k step(k)``.
* **Step time** is affine in the cache length (``StepTime``): exact for the timing engine,
  which reads the KV cache linearly (``rdu-serve`` checks the two compiled lengths it fits
  through and ``bench/coe_serving.py`` measures the fit at a third).
* **The HBM cache of experts** holds whole experts within ``cache_bytes`` (what HBM keeps after
  the KV caches and the router). It starts empty. A miss loads the expert when its batch is
  due (or, with ``prefetch``, as soon as the router has decided), evicting by the policy:
  ``lru`` (least recently served) or ``popularity`` (fewest requests routed to it so far, then
  least recently served). A prefetch never evicts an expert in use, being loaded, or wanted by
  a routed waiting request; a load on demand spares the wanted ones too while it can.

Figures: a *switch* is one expert load into HBM; ``switch_ms_mean`` its copy time; the stall
is the part of it the compute server waited for. ``hbm_hit_rate``: the fraction of requests
that caused no load. TPOT: a request's time per output token after its first; request
latency: arrival to last token.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "POLICIES",
    "ExpertCache",
    "NodeModel",
    "Request",
    "Router",
    "ServingError",
    "StepTime",
    "overlap_slowdown",
    "simulate_serving",
]

POLICIES = ("lru", "popularity")


class ServingError(ValueError):
    """A node or trace the simulation cannot serve (an expert larger than the cache...)."""


@dataclass(frozen=True)
class Request:
    """One request: when it arrives, the expert the router picks (an index into the node's
    experts), its prompt length and how many tokens it generates."""

    id: int
    arrival_s: float
    expert: int
    prompt_tokens: int
    output_tokens: int

    @property
    def steps(self) -> int:
        """Decode steps the request needs: the prompt fed one token per step, then the
        output generated (the last token is not fed back)."""
        return self.prompt_tokens + self.output_tokens - 1


@dataclass(frozen=True)
class StepTime:
    """A per-step figure affine in the cache length ``L``: ``base + per_row * L`` (seconds of
    a step, or bytes it moves)."""

    base: float
    per_row: float

    @classmethod
    def through(cls, points: Sequence[tuple[int, float]]) -> StepTime:
        """The affine function through one point (constant) or the first and last of several
        ``(L, value)`` points."""
        (l0, v0), (l1, v1) = points[0], points[-1]
        if l1 == l0:
            return cls(v0, 0.0)
        slope = (v1 - v0) / (l1 - l0)
        return cls(v0 - slope * l0, slope)

    def at(self, rows: float) -> float:
        return self.base + self.per_row * rows

    def sum(self, first: int, last: int) -> float:
        """``at(L)`` summed over ``L = first .. last`` (0 when empty)."""
        n = last - first + 1
        return 0.0 if n <= 0 else n * self.base + self.per_row * (first + last) * n / 2


@dataclass(frozen=True)
class Router:
    """The router's time per request: ``cost_s`` plus, for a router model, its decode step
    summed over the prompt (fed one token per step). ``on_node``: it occupies the node."""

    cost_s: float = 0.0
    step: StepTime | None = None
    on_node: bool = False

    def time_s(self, prompt_tokens: int) -> float:
        return self.cost_s + (self.step.sum(1, prompt_tokens) if self.step else 0.0)


@dataclass(frozen=True)
class NodeModel:
    """A node as the serving simulation sees it.

    ``expert_arch[i]`` names expert ``i``'s architecture (its program); ``expert_bytes[i]`` the
    bytes a switch moves; per architecture, ``step_s`` the compiled batch's step time,
    ``step_bytes`` the HBM bytes a step reads, ``switch_s`` one load's copy time.
    ``copy_tier`` names where experts live (``ddr``, ``host``)."""

    name: str
    batch: int
    cache_bytes: int
    expert_arch: tuple[str, ...]
    expert_bytes: tuple[int, ...]
    step_s: dict[str, StepTime]
    step_bytes: dict[str, StepTime]
    switch_s: dict[str, float]
    copy_tier: str
    copy_slowdown: float = 1.0
    router: Router = field(default_factory=Router)


def overlap_slowdown(hbm_rate: float, copy_rate: float) -> float:
    """How much slower a memory-bound step runs while a copy writes into the same HBM:
    ``hbm / (hbm - copy)``, the copy's writes taking their share of the bandwidth; a copy that
    could take more than half of it gets half (fair arbitration), so at most 2x."""
    return hbm_rate / (hbm_rate - min(copy_rate, hbm_rate / 2))


class ExpertCache:
    """Which experts HBM holds, within ``capacity`` bytes, and which to evict (``policy``:
    ``lru`` or ``popularity``). :meth:`served` and :meth:`routed` feed the policies."""

    def __init__(self, capacity: int, sizes: Sequence[int], policy: str):
        if policy not in POLICIES:
            raise ServingError(f"unknown cache policy {policy!r}; known: {', '.join(POLICIES)}")
        self.capacity, self.sizes, self.policy = capacity, sizes, policy
        self.ready_at: dict[int, float] = {}  # resident (or loading) expert -> load end
        self.last_served: dict[int, int] = {}
        self.routed_count: Counter[int] = Counter()
        self._clock = 0
        self.used = 0

    def __contains__(self, expert: int) -> bool:
        return expert in self.ready_at

    def served(self, expert: int) -> None:
        self._clock += 1
        self.last_served[expert] = self._clock

    def routed(self, expert: int) -> None:
        self.routed_count[expert] += 1

    def _rank(self, expert: int) -> tuple[int, ...]:
        """Eviction order: smallest first."""
        recency = self.last_served.get(expert, 0)
        if self.policy == "lru":
            return (recency, expert)
        return (self.routed_count[expert], recency, expert)

    def victims(self, expert: int, protected: set[int]) -> list[int] | None:
        """Experts to evict so that ``expert`` fits, by the policy, never one in
        ``protected``; None if it cannot fit that way."""
        need = self.used + self.sizes[expert] - self.capacity
        chosen: list[int] = []
        for candidate in sorted((e for e in self.ready_at if e not in protected), key=self._rank):
            if need <= 0:
                break
            chosen.append(candidate)
            need -= self.sizes[candidate]
        return chosen if need <= 0 else None

    def load(self, expert: int, evict: list[int], ready_at: float) -> None:
        for e in evict:
            del self.ready_at[e]
            self.used -= self.sizes[e]
        self.ready_at[expert] = ready_at
        self.used += self.sizes[expert]


@dataclass
class _Served:
    """Per request, what the simulation recorded."""

    routed_s: float = 0.0
    router_s: float = 0.0
    first_token_s: float = 0.0
    finish_s: float = 0.0
    caused_load: bool = False


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def simulate_serving(
    node: NodeModel, requests: Sequence[Request], policy: str = "lru", prefetch: bool = False
) -> dict:
    """Serve ``requests`` (sorted by arrival) on ``node``; the figures as a JSON-ready dict
    (module docstring). Deterministic: ties are broken by request and expert index."""
    if not requests:
        raise ServingError("the trace has no requests")
    for i, size in enumerate(node.expert_bytes):
        if size > node.cache_bytes:
            raise ServingError(
                f"{node.name}: expert {i} ({size / 1e9:.2f} GB) does not fit the "
                f"{node.cache_bytes / 1e9:.2f} GB of HBM left for experts"
            )
    cache = ExpertCache(node.cache_bytes, node.expert_bytes, policy)
    served = [_Served() for _ in requests]
    loads: list[tuple[float, float, int]] = []  # (start, end, bytes) of every copy
    copy_free = 0.0
    # requests not yet routed (a host-side router decides at a time known in advance, a
    # router on the node when the node runs it), and those routed but not yet served
    unrouted = deque(requests)
    waiting: list[Request] = []

    def start_load(expert: int, at: float, protected: set[int]) -> bool:
        nonlocal copy_free
        evict = cache.victims(expert, protected)
        if evict is None:
            return False
        start = max(at, copy_free)
        copy_free = start + node.switch_s[node.expert_arch[expert]]
        loads.append((start, copy_free, node.expert_bytes[expert]))
        cache.load(expert, evict, copy_free)
        return True

    def wanted(at: float) -> set[int]:
        """Experts being loaded at ``at``, or resident and wanted by a waiting request."""
        return {r.expert for r in waiting if r.expert in cache} | {
            e for e, ready in cache.ready_at.items() if ready > at
        }

    def try_prefetch(request: Request, at: float, running: int | None) -> None:
        if request.expert in cache:
            return
        protected = wanted(at) | ({running} if running is not None else set())
        if start_load(request.expert, at, protected):
            served[request.id].caused_load = True

    def route_host_side(until: float, running: int | None) -> None:
        """Requests the host-side router decided by ``until`` join the waiting list (and are
        prefetched, in the order decided)."""
        while unrouted and not node.router.on_node:
            r = unrouted[0]
            done = r.arrival_s + node.router.time_s(r.prompt_tokens)
            if done > until:
                break
            unrouted.popleft()
            served[r.id].routed_s, served[r.id].router_s = done, done - r.arrival_s
            cache.routed(r.expert)
            waiting.append(r)
            if prefetch:
                try_prefetch(r, done, running)

    t = 0.0
    batches: list[tuple[int, int, float]] = []  # (expert, steps, stall seconds) of each batch
    while unrouted or waiting:
        route_host_side(t, None)
        if node.router.on_node and unrouted and unrouted[0].arrival_s <= t:
            r = unrouted.popleft()
            cost = node.router.time_s(r.prompt_tokens)
            t += cost
            served[r.id].routed_s, served[r.id].router_s = t, cost
            cache.routed(r.expert)
            waiting.append(r)
            if prefetch:
                try_prefetch(r, t, None)
            continue
        ready = [r for r in waiting if served[r.id].routed_s <= t]
        if not ready:
            head = unrouted[0] if unrouted else None
            upcoming = [served[r.id].routed_s for r in waiting]
            if head is not None:
                upcoming.append(
                    head.arrival_s
                    if node.router.on_node
                    else head.arrival_s + node.router.time_s(head.prompt_tokens)
                )
            t = max(t, min(upcoming))
            continue
        expert = ready[0].expert
        group = [r for r in ready if r.expert == expert][: node.batch]
        for r in group:
            waiting.remove(r)
        if expert not in cache:
            # spare what waiting requests want if possible, else only what is being loaded,
            # else (every slot loading for later requests) wait for the copy engine
            if not (
                start_load(expert, t, wanted(t))
                or start_load(expert, t, {e for e, at in cache.ready_at.items() if at > t})
            ):
                start_load(expert, copy_free, set())
            served[group[0].id].caused_load = True
        begin = max(t, cache.ready_at[expert])
        cache.served(expert)
        arch = node.expert_arch[expert]
        steps = max(r.steps for r in group)
        batches.append((expert, steps, begin - t))
        nominal = node.step_s[arch].sum(1, steps)
        # copies that run during the batch (prefetches the host-side router starts meanwhile
        # included) slow its steps; one pass suffices (second order)
        route_host_side(begin + nominal, expert)
        overlap = 0.0
        for start, end, _ in reversed(loads):  # serial copies: the latest come last
            if end <= begin:
                break
            overlap += max(0.0, min(end, begin + nominal) - max(start, begin))
        stretch = (nominal + overlap * (node.copy_slowdown - 1.0)) / nominal if nominal else 1.0
        for r in group:
            s = served[r.id]
            s.first_token_s = begin + stretch * node.step_s[arch].sum(1, r.prompt_tokens)
            s.finish_s = begin + stretch * node.step_s[arch].sum(1, r.steps)
        t = begin + stretch * nominal
    return _figures(node, requests, served, loads, batches, cache)


def _figures(node, requests, served, loads, batches, cache) -> dict:
    latency = [(s.finish_s - r.arrival_s) * 1e3 for r, s in zip(requests, served)]
    ttft = [(s.first_token_s - r.arrival_s) * 1e3 for r, s in zip(requests, served)]
    tpot = [
        (s.finish_s - s.first_token_s) * 1e3 / (r.output_tokens - 1)
        for r, s in zip(requests, served)
        if r.output_tokens > 1
    ]
    tokens = sum(r.output_tokens for r in requests)
    span = max(s.finish_s for s in served) - min(r.arrival_s for r in requests)
    switch_ms = [(end - start) * 1e3 for start, end, _ in loads]
    copied = sum(n for _, _, n in loads)
    hbm_read = sum(node.step_bytes[node.expert_arch[e]].sum(1, steps) for e, steps, _ in batches)
    return {
        "tokens_per_s": tokens / span,
        "tpot_ms_p50": _percentile(tpot, 50),
        "tpot_ms_p99": _percentile(tpot, 99),
        "request_ms_p50": _percentile(latency, 50),
        "request_ms_p99": _percentile(latency, 99),
        "request_ms_max": max(latency),
        "ttft_ms_p50": _percentile(ttft, 50),
        "ttft_ms_p99": _percentile(ttft, 99),
        "switches": len(loads),
        "switch_ms_mean": float(np.mean(switch_ms)) if switch_ms else 0.0,
        "switch_ms_total": float(sum(switch_ms)),
        "switch_stall_ms_total": sum(stall for _, _, stall in batches) * 1e3,
        "batches": len(batches),
        "hbm_hit_rate": 1.0 - sum(s.caused_load for s in served) / len(requests),
        "router_ms_mean": float(np.mean([s.router_s for s in served])) * 1e3,
        "requests": len(requests),
        "output_tokens": tokens,
        "makespan_s": span,
        "experts_in_hbm": len(cache.ready_at),
        "bytes_per_tier": {
            node.copy_tier: {"read": copied},
            "hbm": {"read": int(round(hbm_read)), "written": copied},
        },
        "latency_ms_percentiles": {
            str(q): _percentile(latency, q) for q in (10, 25, 50, 75, 90, 95, 99)
        },
        "tpot_ms_percentiles": {str(q): _percentile(tpot, q) for q in (10, 25, 50, 75, 90, 95, 99)},
    }
