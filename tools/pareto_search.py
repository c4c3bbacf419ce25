"""The early trials of an `rdu-tune` search: Pareto local search (PLS).

Paquete, Chiarandini and Stützle's Pareto local search keeps an archive of the non-dominated
points found and proposes, again and again, an untried neighbour of an archive point, so that
the front is pushed out in every direction at once rather than along one objective. On the
default space the front that matters (bench/tune.py) lies a few moves from the default point,
moves that add up: PCUs sum over `matmul-par`, `attention-par` and `simd-par`, so the front's
points move two or three of them down together, while a model that has seen a handful of
trials (TPE) proposes far from them, or along TPOT only.

The archive holds the feasible points no other trial dominates (or equals: a knob without
effect adds nothing), inside the hypervolume's reference box (a point beyond it adds no
volume; `loss` gives the objectives in the box's units, the box being [0, `reference`) on
every axis). Its points are taken by their share of the hypervolume (the volume only they
dominate), largest first, and each proposes, in this order:

1. its *continuation*: the knobs whose move (proposed by the search from an archive point)
   led to it, without losing to that point, moved on the same way twice as far (a step that
   paid is worth a longer one: PCUs drop by halves down to one per op);
2. *combinations*: two of its own single moves at once, each of which gave a point it does not
   dominate and both gaining the same objective ("combine the good single moves");
3. its untried single moves (`local_search.neighbours`: a knob left to the allocation moves
   to the values beside the one its program chose), knobs in space order, those whose kind of
   move (the knob and its direction) the search tried and that never improved the archive
   last (a knob without effect costs a trial, not one per archive point).

A point is proposed only if no trial holds it (running trials included) and no move of it is
refused (`local_search.Refusals`). The proposal is a function of the study's trials only:
deterministic, no generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, NamedTuple

import numpy as np
from optuna.trial import FrozenTrial

from rdu_compiler.tools import local_search
from rdu_compiler.tools.local_search import Knob

Losses = tuple[float, ...]
Move = tuple[str, Any]  # a knob and its new Optuna parameter
# the trial system attribute holding the number of the archive trial a proposal is a neighbour
# of (beside `local_search.PROPOSED_ATTR`): the search learns from its own moves only
ORIGIN_ATTR = "rdu_tune.origin"


@dataclass(frozen=True)
class Evaluated:
    """A finished feasible trial as the search sees it."""

    number: int
    params: dict[str, Any]
    losses: Losses
    resolved: dict[str, int]
    origin: int | None = None  # the trial whose neighbour the search proposed it as


class Proposal(NamedTuple):
    point: dict[str, Any]
    origin: int  # the number of the archive trial it is a neighbour of


def dominates(a: Losses, b: Losses) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def archive(points: Sequence[Evaluated], reference: float) -> list[Evaluated]:
    """The points inside the reference box that no point dominates or equals earlier (the
    first of equal points stays), in the order given."""
    inside = [p for p in points if all(x < reference for x in p.losses)]
    kept = []
    for i, p in enumerate(inside):
        if any(dominates(q.losses, p.losses) for q in inside):
            continue
        if any(q.losses == p.losses for q in inside[:i]):
            continue
        kept.append(p)
    return kept


def contributions(points: Sequence[Evaluated], reference: float) -> list[float]:
    """Each point's exclusive hypervolume (what the set loses without it), against
    `reference` on every axis; `points` are mutually non-dominated."""
    from optuna._hypervolume import compute_hypervolume

    if not points:
        return []
    losses = np.array([p.losses for p in points])
    ref = np.full(losses.shape[1], reference)
    whole = float(compute_hypervolume(losses, ref))
    out = []
    for i in range(len(points)):
        rest = np.delete(losses, i, axis=0)
        out.append(whole - (float(compute_hypervolume(rest, ref)) if len(rest) else 0.0))
    return out


class _Outcomes:
    """What the evaluated points say about the search's own moves (a point and the archive
    point it was proposed from, `origin`): which points improved the archive when they were
    found, the moves that led to each point and did not lose to where they started, and the
    kinds of single move (a knob and a direction) tried and those that improved the archive."""

    def __init__(self, space: Sequence[Knob], points: Sequence[Evaluated], reference: float):
        self._space = {k.name: k for k in space}
        self.names = [k.name for k in space]
        self.by_key = {local_search.key(p.params, self.names): p for p in points}
        improved = {
            b.number
            for i, b in enumerate(points)
            if all(x < reference for x in b.losses)
            and not any(dominates(a.losses, b.losses) or a.losses == b.losses for a in points[:i])
        }
        by_number = {p.number: p for p in points}
        self.good_kinds: set[tuple[str, Any]] = set()
        self.tried_kinds: set[tuple[str, Any]] = set()
        # arrivals[key of p]: per move that led to p (p not dominated by its origin), each
        # knob moved and how far (:func:`local_search.position`)
        self.arrivals: dict[tuple, list[dict[str, float]]] = {}
        for b in points:
            a = by_number.get(b.origin) if b.origin is not None else None
            if a is None:
                continue
            moved = [n for n in self.names if a.params[n] != b.params[n]]
            if len(moved) == 1:
                kind = self.kind(a, (moved[0], b.params[moved[0]]))
                self.tried_kinds.add(kind)
                if b.number in improved:
                    self.good_kinds.add(kind)
            ordered = all(self._space[n].kind != "categorical" for n in moved)
            if ordered and not dominates(a.losses, b.losses) and a.losses != b.losses:
                steps = {n: self.where(b, n) - self.where(a, n) for n in moved}
                key = local_search.key(b.params, self.names)
                self.arrivals.setdefault(key, []).append(steps)

    def where(self, point: Evaluated, name: str) -> float:
        knob = self._space[name]
        return local_search.position(knob, point.params[name], point.resolved.get(name))

    def kind(self, start: Evaluated, move: Move) -> tuple[str, Any]:
        """The knob a single move moves and its direction (`local_search.direction`)."""
        name, param = move
        knob = self._space[name]
        return (
            name,
            local_search.direction(knob, start.params[name], param, start.resolved.get(name)),
        )

    def singles(self, start: Evaluated) -> list[Move]:
        """Every single move of `start`, in space order."""
        return [
            (k.name, param)
            for k in self._space.values()
            for param in local_search.neighbours(
                k, start.params[k.name], start.resolved.get(k.name)
            )
        ]

    def result(self, start: Evaluated, moves: Sequence[Move]) -> Evaluated | None:
        return self.by_key.get(local_search.key({**start.params, **dict(moves)}, self.names))

    def continuation(self, start: Evaluated, steps: dict[str, float]) -> list[Move]:
        """The knobs of an arrival moved on from `start` the same way, twice as far (a step
        that paid is worth a longer one: PCUs drop by halves down to one per op)."""
        moves = []
        for name, step in steps.items():
            knob = self._space[name]
            param = local_search.at(knob, self.where(start, name) + 2 * step)
            if param != start.params[name]:
                moves.append((name, param))
        return moves


def proposals(
    space: Sequence[Knob],
    trials: Sequence[FrozenTrial],
    loss: Callable[[FrozenTrial], Losses],
    feasible: Callable[[FrozenTrial], bool],
    reference: float,
) -> Iterator[Proposal]:
    """The points to try next, best first (module docstring): the archive's points by
    hypervolume share, each its continuation, combinations, untried single moves of a kind
    that improved the archive or was never tried; then the other single moves.
    `loss(trial)`: a feasible trial's objectives in the reference box's units (lower better)."""
    names = [k.name for k in space]
    knobs = {k.name: k for k in space}
    done = local_search.finished(trials, names)
    points = [
        Evaluated(
            t.number,
            t.params,
            tuple(loss(t)),
            t.user_attrs.get(local_search.RESOLVED_ATTR, {}),
            t.system_attrs.get(ORIGIN_ATTR),
        )
        for t in sorted(done, key=lambda t: t.number)
        if feasible(t)
    ]
    front = archive(points, reference)
    shares = contributions(front, reference)
    front = [
        p for _, p in sorted(zip(shares, front, strict=True), key=lambda s: (-s[0], s[1].number))
    ]
    outcomes = _Outcomes(space, points, reference)
    refusals = local_search.Refusals(space, done, feasible)
    seen = local_search.tried(trials, names)
    for p in points:  # a knob set to the value the allocation chose for it: tried
        for name, value in p.resolved.items():
            knob = knobs.get(name)
            if knob is not None and local_search.is_auto(knob) and value in knob.values:
                seen.add(local_search.key({**p.params, name: knob.values.index(value)}, names))

    def fresh(start: Evaluated, moves: Sequence[Move]) -> Proposal | None:
        point = {**start.params, **dict(moves)}
        if not moves or local_search.key(point, names) in seen:
            return None
        if not all(refusals.allow(start.params, knobs[n], param) for n, param in moves):
            return None
        seen.add(local_search.key(point, names))  # proposed once in this pass
        return Proposal(point, start.number)

    def later(start: Evaluated, move: Move) -> bool:
        kind = outcomes.kind(start, move)
        return kind in outcomes.tried_kinds and kind not in outcomes.good_kinds

    for start in front:
        here = local_search.key(start.params, names)
        for steps in outcomes.arrivals.get(here, []):
            point = fresh(start, outcomes.continuation(start, steps))
            if point is not None:
                yield point
        singles = outcomes.singles(start)
        gains = {}
        for move in singles:
            result = outcomes.result(start, [move])
            if result is not None and not dominates(start.losses, result.losses):
                better = {i for i, (x, y) in enumerate(zip(result.losses, start.losses)) if x < y}
                if better:
                    gains[move] = better
        for a, b in combinations(gains, 2):
            if a[0] != b[0] and gains[a] & gains[b]:
                point = fresh(start, [a, b])
                if point is not None:
                    yield point
        for move in singles:
            if not later(start, move):
                point = fresh(start, [move])
                if point is not None:
                    yield point
    for start in front:
        for move in outcomes.singles(start):
            point = fresh(start, [move])
            if point is not None:
                yield point
