"""The last trials of an `rdu-tune` search: one knob at a time from the best point.

A model-guided search (TPE) spends its trials where its model expects a better trade-off and
can miss a single move with a small gain that no other knob predicts (`launch=hardware`, about
2% of TPOT on llama-3.1-8b, 8 sockets). The last trials of the budget therefore climb: each
proposes the best feasible point so far (by the first objective, then the others) with one
knob moved one step: categorical knobs first (a switch such as the launch mode, few moves),
each to another value, then an ordinal knob to the next value either way, an int or float
one a step of an eighth of its range (of its log range for a log knob). When a move improves,
the next trial starts from it; when every move of the best point was tried, from the next
best point. Points tried before (or running) are not proposed again, nor a move that goes as
far as, or past, an infeasible move of the same knob from the same point (more parallelism
does not fit where less did not), nor a move to a value of a knob that no feasible trial has
and some infeasible one has (a categorical value), or passes on the way (an ordered knob).
The proposal is a function of the study's trials only: deterministic, no generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class Knob(Protocol):
    """What the search reads of a `tools.tuner.Knob` (that module imports this one)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def low(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def values(self) -> tuple[Any, ...]: ...
    @property
    def log(self) -> bool: ...


STEPS = 8  # an int or float knob moves an eighth of its range (of its log range when log)


def neighbours(knob: Knob, param: Any) -> list[Any]:
    """The Optuna parameters one step from `param` (categorical: every other value, in order;
    ordinal: the index either side; int and float: a step of 1/:data:`STEPS` of the range
    down, then up, clamped; none outside the range)."""
    if knob.kind == "categorical":
        return [v for v in knob.values if v != param]
    if knob.kind == "ordinal":
        return [i for i in (param - 1, param + 1) if 0 <= i < len(knob.values)]
    if knob.log:
        ratio = (knob.high / knob.low) ** (1 / STEPS)
        moves = [param / ratio, param * ratio]
    else:
        step = (knob.high - knob.low) / STEPS
        moves = [param - step, param + step]
    if knob.kind == "int":  # at least one integer away
        moves = [math.floor(moves[0]), math.ceil(moves[1])]
        moves = [min(moves[0], param - 1), max(moves[1], param + 1)]
    clamped = [min(max(m, knob.low), knob.high) for m in moves]
    return [m for m in dict.fromkeys(clamped) if m != param]


def _rank(trial: FrozenTrial, directions: Sequence[StudyDirection]) -> tuple:
    signs = [1 if d == StudyDirection.MINIMIZE else -1 for d in directions]
    return (*(s * v for s, v in zip(signs, trial.values, strict=True)), trial.number)


def _key(params: dict[str, Any], names: Sequence[str]) -> tuple:
    return tuple(params.get(n) for n in names)


def _beyond(knob: Knob, start: Any, move: Any, refused: Any) -> bool:
    """Whether `move` (from `start`) goes as far as `refused`, the same knob's infeasible
    move from the same start, or past it (ordered knobs; a categorical value only if equal)."""
    if knob.kind == "categorical":
        return move == refused
    return (move - start) * (refused - start) > 0 and abs(move - start) >= abs(refused - start)


def moves(
    space: Sequence[Knob],
    trials: Sequence[FrozenTrial],
    directions: Sequence[StudyDirection],
    feasible: Any,
) -> Iterator[dict[str, Any]]:
    """The points one knob away from the feasible trials, best trial first (:func:`_rank`),
    each trial's moves categorical knobs first, then in space order, skipping points tried
    (or running), moves beyond an infeasible one of the same knob from the same point, and
    moves to a value never feasible that goes as far as an infeasible trial's value of the
    knob. `feasible(trial)` says whether a finished trial is feasible."""
    names = [k.name for k in space]
    tried = {_key(t.params, names) for t in trials if t.state != TrialState.FAIL}
    done = [t for t in trials if t.state == TrialState.COMPLETE and len(t.params) == len(names)]
    refused = [t.params for t in done if not feasible(t)]
    fitted = [t.params for t in done if feasible(t)]
    ordered = sorted(space, key=lambda k: k.kind != "categorical")  # stable: space order
    for start in sorted((t for t in done if feasible(t)), key=lambda t: _rank(t, directions)):
        for knob in ordered:
            here = start.params[knob.name]
            blocked = [
                p[knob.name]
                for p in refused
                if all(p[n] == start.params[n] for n in names if n != knob.name)
            ]
            fits = {p[knob.name] for p in fitted}
            for param in neighbours(knob, here):
                point = {**start.params, knob.name: param}
                if _key(point, names) in tried:
                    continue
                if any(_beyond(knob, here, param, r) for r in blocked):
                    continue
                if param not in fits and any(
                    _beyond(knob, here, param, p[knob.name]) for p in refused
                ):
                    continue
                yield point
