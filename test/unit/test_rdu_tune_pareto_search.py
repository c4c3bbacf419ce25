"""`rdu-tune`'s Pareto local search (`tools/pareto_search.py`): the archive, the order of
proposals (continuation, combinations, single moves, moves of no effect last), points never
proposed (tried, running, or refused), moves from a knob left to the allocation, and the
sampler's phase on a synthetic objective (no compiling: the search logic alone)."""

import math

import optuna
import pytest

from rdu_compiler.lowering.pipeline import RduPipeline
from rdu_compiler.tools import local_search, pareto_search, tuner

# matmul_par as the default space has it: -1 (the allocation), then powers of two
MATMUL = tuner.Knob("matmul_par", "ordinal", values=(-1, 1, 2, 4, 8, 16, 32, 64))
SIMD = tuner.Knob("simd_par", "ordinal", values=(1, 2, 4, 8, 16))
AGCUS = tuner.Knob("agcus", "ordinal", values=(1, 2, 4, 8))  # no effect
LAUNCH = tuner.Knob("launch", "categorical", values=("software", "hardware"))
SPACE = (MATMUL, SIMD, AGCUS, LAUNCH)
DISTRIBUTIONS = {
    "matmul_par": optuna.distributions.IntDistribution(0, 7),
    "simd_par": optuna.distributions.IntDistribution(0, 4),
    "agcus": optuna.distributions.IntDistribution(0, 3),
    "launch": optuna.distributions.CategoricalDistribution(["software", "hardware"]),
}
DEFAULT = {"matmul_par": 0, "simd_par": 3, "agcus": 2, "launch": "software"}
RESOLVED = 16  # what the synthetic allocation gives matmul_par=-1


def _figures(params):
    """A synthetic compiler: TPOT and PCUs of a point, or None when it does not fit (64 PCUs
    per linear). PCUs add up over matmul_par and simd_par; fewer matmul PCUs cost TPOT below
    16, fewer simd PCUs cost nothing down to 2; agcus changes nothing."""
    matmul = MATMUL.values[params["matmul_par"]]
    matmul = RESOLVED if matmul == -1 else matmul
    simd = SIMD.values[params["simd_par"]]
    if matmul > 32:
        return None
    tpot = 1.0 + 0.1 * max(0, math.log2(RESOLVED / matmul)) + (0.2 if simd < 2 else 0.0)
    tpot -= 0.01 * (params["launch"] == "hardware")
    return [tpot, 4.0 * matmul + 2.0 * simd]


def _trial(number, params, resolved=None, figures=None, origin=None):
    """A finished trial; `origin`: the trial the search proposed it from."""
    figures = figures or _figures(params)
    trial = optuna.trial.create_trial(
        params=params,
        distributions={n: DISTRIBUTIONS[n] for n in params},
        values=figures or [math.inf, math.inf],
        constraints={tuner.FEASIBLE: 0.0 if figures else 1.0},
        user_attrs={local_search.RESOLVED_ATTR: resolved} if resolved else {},
        system_attrs={} if origin is None else {pareto_search.ORIGIN_ATTR: origin},
    )
    trial.number = number
    return trial


def _loss(default):
    scale = _figures(default)
    assert scale is not None
    return lambda t: tuple(v / s for v, s in zip(t.values, scale, strict=True))


def _proposals(trials):
    found = pareto_search.proposals(SPACE, trials, _loss(DEFAULT), tuner.feasible, 2.0)
    return [proposal.point for proposal in found]


def _point(number, losses):
    return pareto_search.Evaluated(number, {}, losses, {})


def test_the_archive_keeps_the_first_of_equal_points_and_none_beyond_the_box():
    points = [
        _point(0, (1.0, 1.0)),
        _point(1, (1.0, 1.0)),  # equal: a knob without effect
        _point(2, (1.1, 0.5)),
        _point(3, (1.2, 0.6)),  # dominated by 2
        _point(4, (2.5, 0.1)),  # beyond the reference box
        _point(5, (0.9, 1.5)),
    ]
    kept = pareto_search.archive(points, 2.0)
    assert [p.number for p in kept] == [0, 2, 5]


def test_contributions_are_the_volume_only_each_point_dominates():
    points = [_point(0, (1.0, 1.0)), _point(1, (1.5, 0.5))]
    # whole: 1 x 1 + 0.5 x 0.5 = 1.25; without 0: 0.5 x 1.5 = 0.75; without 1: 1
    assert pareto_search.contributions(points, 2.0) == pytest.approx([0.5, 0.25])


def test_a_knob_left_to_the_allocation_moves_beside_the_value_it_resolved_to():
    assert local_search.is_auto(MATMUL) and not local_search.is_auto(SIMD)
    assert local_search.neighbours(MATMUL, 0, 16) == [4, 6]  # 8 and 32, not 1
    assert local_search.neighbours(MATMUL, 0, 12) == [4, 5]  # 8 and 16
    assert local_search.neighbours(MATMUL, 0) == [3, 5]  # unknown: beside the middle (8)
    assert local_search.neighbours(MATMUL, 1) == [2]  # from 1, never back to -1
    assert local_search.direction(MATMUL, 0, 4, 16) == -1
    assert local_search.direction(MATMUL, 0, 6, 16) == 1
    assert local_search.position(MATMUL, 0, 16) == 5 and local_search.at(MATMUL, -3) == 1
    assert local_search.position(MATMUL, 0, 12) == pytest.approx(4 + math.log2(12 / 8))


def test_the_first_proposals_are_the_defaults_single_moves_in_space_order():
    # (a resolution of a knob the space does not search is no matter: attention_par here)
    proposals = _proposals([_trial(0, DEFAULT, {"matmul_par": RESOLVED, "attention_par": 4})])
    assert proposals[:4] == [
        {**DEFAULT, "matmul_par": 4},  # 8: beside the resolved 16
        {**DEFAULT, "matmul_par": 6},  # 32
        {**DEFAULT, "simd_par": 2},
        {**DEFAULT, "simd_par": 4},
    ]
    assert len(proposals) == len({tuple(p.values()) for p in proposals})  # no repeats
    assert DEFAULT not in proposals


def test_good_single_moves_are_continued_and_combined_moves_of_no_effect_come_last():
    trials = [
        _trial(0, DEFAULT, {"matmul_par": RESOLVED}),  # 1.0 ms, 80 PCUs
        _trial(1, {**DEFAULT, "agcus": 1}, {"matmul_par": RESOLVED}, origin=0),  # no effect
        _trial(2, {**DEFAULT, "matmul_par": 4}, origin=0),  # 8: 48 PCUs, 1.1 ms (a trade)
        _trial(3, {**DEFAULT, "simd_par": 2}, {"matmul_par": RESOLVED}, [1.05, 72.0], 0),
    ]
    proposals = _proposals(trials)
    # the archive: the matmul point (the largest share of the volume), the default, the simd
    # point; the matmul point first proposes its continuation, twice as far (16 -> 8 -> 2) ...
    assert proposals[0] == {**DEFAULT, "matmul_par": 2}
    # ... the default proposes both its good single moves at once (both spend fewer PCUs)
    assert {**DEFAULT, "matmul_par": 4, "simd_par": 2} in proposals
    # ... and the simd point its continuation (4 -> 2)
    assert {**DEFAULT, "simd_par": 1} in proposals
    # agcus down (no effect from the default) comes after every other move of the archive
    first_agcus = min(i for i, p in enumerate(proposals) if p["agcus"] == 1)
    assert all(p["agcus"] != 1 for p in proposals[:first_agcus])
    assert all(p["agcus"] == 1 for p in proposals[first_agcus:])
    assert proposals == _proposals(list(reversed(trials)))  # a function of the trials
    # a categorical switch that trades (faster, more PCUs) has no continuation
    trials.append(_trial(4, {**DEFAULT, "launch": "hardware"}, None, [0.95, 90.0], 0))
    assert {**DEFAULT, "launch": "hardware"} not in _proposals(trials)


def test_the_search_learns_from_its_own_moves_only():
    """A trial one knob from another that the search did not propose from it (the model's,
    say) continues nothing: its difference is no move that paid."""
    trials = [
        _trial(0, DEFAULT, {"matmul_par": RESOLVED}),
        _trial(1, {**DEFAULT, "matmul_par": 4}),  # 8, but not the search's move
    ]
    assert _proposals(trials)[0] != {**DEFAULT, "matmul_par": 2}
    trials[1].system_attrs[pareto_search.ORIGIN_ATTR] = 0
    assert _proposals(trials)[0] == {**DEFAULT, "matmul_par": 2}


def test_no_point_tried_running_or_refused_is_proposed():
    start = {**DEFAULT, "matmul_par": 5}  # 16
    trials = [
        _trial(0, DEFAULT, {"matmul_par": RESOLVED}),
        _trial(1, start),
        _trial(2, {**start, "matmul_par": 7}),  # 64 does not fit
    ]
    # a running trial's parameters are not set yet: its proposal is
    claimed = {**DEFAULT, "matmul_par": 4}
    running = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        system_attrs={local_search.PROPOSED_ATTR: claimed},
    )
    running.number = 3
    trials.append(running)
    proposals = _proposals(trials)
    assert claimed not in proposals
    assert all(p["matmul_par"] != 7 for p in proposals)  # never 64 (refused)
    assert {**start, "matmul_par": 6} in proposals  # 32, short of the refused move
    keys = [tuple(p.values()) for p in proposals]
    assert len(keys) == len(set(keys))
    tried = {tuple(local_search.claimed(t).values()) for t in trials}
    assert not tried & set(keys)


def _study(seed, parallel=1, trials=20, pareto_until=12):
    """A study on the synthetic compiler whose trials 1..`pareto_until` - 1 are the Pareto
    local search's, `parallel` trials asked before any is told (as parallel workers)."""
    objectives = (tuner.Objective("ms_per_token", "minimize"), tuner.Objective("pcus", "minimize"))
    problem = tuner.Problem("tiny-llama", 1, 8, 1, RduPipeline(), SPACE, objectives)
    phases = tuner.Phases(4, climb_from=None, pareto_until=pareto_until)
    sampler = tuner.make_sampler("tpe", problem, seed, phases)
    study = optuna.create_study(directions=["minimize"] * 2, sampler=sampler)
    study.enqueue_trial(DEFAULT)
    points = []
    while len(points) < trials:
        asked = [study.ask() for _ in range(parallel)]
        for trial in asked:
            for knob in SPACE:
                knob.suggest(trial)
            params = dict(trial.params)
            figures = _figures(params)
            trial.set_constraint(tuner.FEASIBLE, 0.0 if figures else 1.0)
            if figures and params["matmul_par"] == 0:
                trial.set_user_attr(local_search.RESOLVED_ATTR, {"matmul_par": RESOLVED})
            points.append((trial.number, params))
        for trial in asked:
            figures = _figures(trial.params)
            study.tell(trial, figures or [math.inf, math.inf])
    return study, points


def test_the_sampler_proposes_pareto_moves_deterministically_and_never_twice():
    study, points = _study(seed=0)
    _, again = _study(seed=1)  # the local search has no generator: the seed does not matter
    assert points[:12] == again[:12]
    early = [tuple(p.values()) for _, p in points[:12]]
    assert len(early) == len(set(early))
    assert points[1][1] == {**DEFAULT, "matmul_par": 4}  # trial 1: the default's first move
    # the search finds the front's corner: simd_par 2 (no cost) with matmul_par 8
    losses = {tuple(p.values()): _figures(p) for _, p in points[:12]}
    assert (4, 1, 2, "software") in losses


def test_parallel_workers_get_distinct_proposals():
    study, points = _study(seed=0, parallel=3, trials=12)
    keys = [tuple(p.values()) for number, p in points if 1 <= number < 12]
    assert len(keys) == len(set(keys))
    # the search's points are recorded in the trial when proposed (what parallel workers read)
    proposed = [t for t in study.trials if local_search.PROPOSED_ATTR in t.system_attrs]
    assert len(proposed) >= 6
    assert all(t.system_attrs[local_search.PROPOSED_ATTR] == t.params for t in proposed)


def test_an_evaluation_tells_what_the_allocation_chose_for_its_automatic_knobs():
    """The PCUs per linear / attention the program gives the knobs left at -1, read from the
    program's units (the section with the most PCUs); none for a knob given a value."""
    objectives = (tuner.Objective("ms_per_token", "minimize"), tuner.Objective("pcus", "minimize"))
    problem = tuner.Problem("tiny-llama", 1, 8, 1, RduPipeline(), (), objectives)
    evaluator = tuner.Evaluator(problem)
    auto = evaluator.evaluate(RduPipeline())
    assert auto.resolved is not None and set(auto.resolved) == {"matmul_par", "attention_par"}
    assert all(v >= 1 for v in auto.resolved.values())
    given = evaluator.evaluate(RduPipeline(matmul_par=2))
    assert given.resolved is not None and set(given.resolved) == {"attention_par"}
    # a linear of tiny-llama split the allocation's way: the objectives match the knob set to it
    explicit = evaluator.evaluate(RduPipeline(attention_par=auto.resolved["attention_par"]))
    assert explicit.objectives is not None and auto.objectives is not None
    assert explicit.objectives["pcus"] == auto.objectives["pcus"]
