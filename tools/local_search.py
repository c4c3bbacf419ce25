"""The last trials of an `rdu-tune` search: one knob at a time from the best point.

A model-guided search (TPE) spends its trials where its model expects a better trade-off and
can miss a single move with a small gain that no other knob predicts (`launch=hardware`, about
2% of TPOT on llama-3.1-8b, 8 sockets). The last trials of the budget therefore climb: each
proposes the best feasible point so far (by the first objective, then the others) with one
knob moved one step: categorical knobs first (a switch such as the launch mode, few moves),
each to another value, then an ordinal knob to the next value either way (a knob left to the
allocation, -1, to the values beside the one the trial's program chose: -1 sits next to the
smallest value in the knob's order, the worst corner), an int or float one a step of an
eighth of its range (of its log range for a log knob). When a move improves,
the next trial starts from it; when every move of the best point was tried, from the next
best point. Points tried before (or running) are not proposed again, nor a move that goes as
far as, or past, an infeasible move of the same knob from the same point (more parallelism
does not fit where less did not), nor a move to a value of a knob that no feasible trial has
and some infeasible one has (a categorical value), or passes on the way (an ordered knob).
The proposal is a function of the study's trials only: deterministic, no generator. The
moves, the refusals and what a trial holds are shared with the Pareto local search of the first
trials (`tools/pareto_search.py`).
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


AUTO = -1  # an ordinal knob's first value -1: the allocation (or a cost model) decides
# the trial user attribute holding, per knob left at AUTO, the value the program resolved it to
# (`tools/tuner.py` sets it; an int: PCUs per op of the knob's kind)
RESOLVED_ATTR = "resolved"
# the trial system attribute holding the point a sampler proposed for it: a running trial's
# parameters are stored one by one as the trial suggests them, so a parallel worker reads the
# whole proposal here (`claimed`)
PROPOSED_ATTR = "rdu_tune.proposed"


def is_auto(knob: Knob) -> bool:
    """Whether `knob` is ordinal over AUTO and then ascending positive values (the -1 options
    of the default space): AUTO is no step away from any of them."""
    values = knob.values
    return (
        knob.kind == "ordinal"
        and len(values) > 2
        and values[0] == AUTO
        and all(isinstance(v, int) and 0 < v < w for v, w in zip(values[1:], values[2:]))
    )


def _beside(knob: Knob, resolved: int | None) -> list[int]:
    """The indices of the values either side of `resolved` (the value AUTO stood for) among
    an AUTO knob's values, the value itself excluded; without a resolution, either side of
    the middle value (a mid-range guess, never an extreme)."""
    values = knob.values[1:]
    if resolved is None:
        resolved = values[len(values) // 2]
    below = [i for i, v in enumerate(values, 1) if v < resolved]
    above = [i for i, v in enumerate(values, 1) if v > resolved]
    return below[-1:] + above[:1]


def neighbours(knob: Knob, param: Any, resolved: int | None = None) -> list[Any]:
    """The Optuna parameters one step from `param` (categorical: every other value, in order;
    ordinal: the index either side, and for an AUTO knob (:func:`is_auto`) at AUTO the values
    beside the one it `resolved` to, AUTO itself never a step from a value; int and float: a
    step of 1/:data:`STEPS` of the range down, then up, clamped; none outside the range)."""
    if knob.kind == "categorical":
        return [v for v in knob.values if v != param]
    if knob.kind == "ordinal":
        if is_auto(knob):
            if param == 0:
                return _beside(knob, resolved)
            return [i for i in (param - 1, param + 1) if 1 <= i < len(knob.values)]
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


def position(knob: Knob, param: Any, resolved: int | None = None) -> float:
    """Where a parameter lies along an ordered knob, the unit a step: an ordinal's index (AUTO
    where the value it resolved to lies, between indices on the log scale when it lies
    between values), an int's or float's value (its log for a log knob)."""
    if knob.kind == "ordinal":
        if not (is_auto(knob) and param == 0):
            return float(param)
        values = knob.values
        target = resolved if resolved is not None else values[1 + (len(values) - 1) // 2]
        target = min(max(target, values[1]), values[-1])
        i = next(i for i in range(1, len(values) - 1) if values[i + 1] >= target)
        return i + math.log(target / values[i]) / math.log(values[i + 1] / values[i])
    return math.log(param) if knob.log else float(param)


def at(knob: Knob, where: float) -> Any:
    """The parameter nearest `where` (:func:`position`) within the knob's range (an AUTO
    knob's values only, never AUTO)."""
    if knob.kind == "ordinal":
        return min(max(round(where), 1 if is_auto(knob) else 0), len(knob.values) - 1)
    value = min(max(math.exp(where) if knob.log else where, knob.low), knob.high)
    return round(value) if knob.kind == "int" else value


def direction(
    knob: Knob, start: Any, move: Any, resolved: int | None = None, moved: int | None = None
) -> Any:
    """Which way `move` goes from `start`: -1 or 1 for an ordered knob (AUTO where the value
    it `resolved` to, or `moved` to, lies), the value moved to for a categorical one."""
    if knob.kind == "categorical":
        return move
    return 1 if position(knob, move, moved) > position(knob, start, resolved) else -1


def resolution(trial: FrozenTrial, knob: Knob) -> int | None:
    """What AUTO stood for in `trial` for `knob`, when its program told."""
    return trial.user_attrs.get(RESOLVED_ATTR, {}).get(knob.name)


def claimed(trial: FrozenTrial) -> dict[str, Any]:
    """The point a trial holds: its parameters, or while it runs, the point proposed for it."""
    return trial.system_attrs.get(PROPOSED_ATTR, trial.params)


def _rank(trial: FrozenTrial, directions: Sequence[StudyDirection]) -> tuple:
    signs = [1 if d == StudyDirection.MINIMIZE else -1 for d in directions]
    return (*(s * v for s, v in zip(signs, trial.values, strict=True)), trial.number)


def key(params: dict[str, Any], names: Sequence[str]) -> tuple:
    return tuple(params.get(n) for n in names)


def _beyond(knob: Knob, start: Any, move: Any, refused: Any) -> bool:
    """Whether `move` (from `start`) goes as far as `refused`, the same knob's infeasible
    move from the same start, or past it (ordered knobs; a categorical value only if equal)."""
    if knob.kind == "categorical":
        return move == refused
    return (move - start) * (refused - start) > 0 and abs(move - start) >= abs(refused - start)


class Refusals:
    """What the finished trials say does not fit: a move as far as, or past, an infeasible
    move of the same knob from the same point, or to a value of a knob that no feasible trial
    has and that goes as far as an infeasible trial's value of the knob."""

    def __init__(self, space: Sequence[Knob], done: Sequence[FrozenTrial], feasible: Any):
        self._names = [k.name for k in space]
        self._refused = [t.params for t in done if not feasible(t)]
        self._fits = {n: {t.params[n] for t in done if feasible(t)} for n in self._names}

    def allow(self, start: dict[str, Any], knob: Knob, param: Any) -> bool:
        """Whether moving `knob` of `start` to `param` is not known to be refused."""
        here = start[knob.name]
        for p in self._refused:
            if _beyond(knob, here, param, p[knob.name]) and (
                param not in self._fits[knob.name]
                or all(p[n] == start[n] for n in self._names if n != knob.name)
            ):
                return False
        return True


def finished(trials: Sequence[FrozenTrial], names: Sequence[str]) -> list[FrozenTrial]:
    """The complete trials that set every knob of the space."""
    return [t for t in trials if t.state == TrialState.COMPLETE and len(t.params) == len(names)]


def tried(trials: Sequence[FrozenTrial], names: Sequence[str]) -> set[tuple]:
    """The points held by trials (:func:`claimed`) but failed ones (a failed trial's point is
    tried again: a failure is an interruption, not an outcome)."""
    return {key(claimed(t), names) for t in trials if t.state != TrialState.FAIL}


def moves(
    space: Sequence[Knob],
    trials: Sequence[FrozenTrial],
    directions: Sequence[StudyDirection],
    feasible: Any,
) -> Iterator[dict[str, Any]]:
    """The points one knob away from the feasible trials, best trial first (:func:`_rank`),
    each trial's moves categorical knobs first, then in space order, skipping points tried
    (or running) and moves :class:`Refusals` refuses. `feasible(trial)` says whether a
    finished trial is feasible."""
    names = [k.name for k in space]
    seen = tried(trials, names)
    done = finished(trials, names)
    refusals = Refusals(space, done, feasible)
    ordered = sorted(space, key=lambda k: k.kind != "categorical")  # stable: space order
    for start in sorted((t for t in done if feasible(t)), key=lambda t: _rank(t, directions)):
        for knob in ordered:
            here = start.params[knob.name]
            for param in neighbours(knob, here, resolution(start, knob)):
                point = {**start.params, knob.name: param}
                if key(point, names) not in seen and refusals.allow(start.params, knob, param):
                    yield point
