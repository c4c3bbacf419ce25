"""`rdu-tune`'s closing local search (`tools/local_search.py`): the moves of a knob, the order
of proposals, points never proposed (tried, or beyond an infeasible move), and the sampler's
climb on a synthetic objective (no compiling: the search logic alone)."""

import math

import optuna
from optuna.trial import TrialState

from rdu_compiler.lowering.pipeline import RduPipeline
from rdu_compiler.tools import local_search, tuner

PAR = tuner.Knob("matmul_par", "ordinal", values=(1, 2, 4, 8, 16, 32))
LAUNCH = tuner.Knob("launch", "categorical", values=("software", "hardware"))
TILE = tuner.Knob("tile_bytes", "int", 1024, 65536, log=True)
DEPTH = tuner.Knob("buffer_depth", "int", 1, 9)
SPACE = (PAR, TILE, LAUNCH)
MINIMIZE = [optuna.study.StudyDirection.MINIMIZE] * 2


def test_neighbours_of_each_kind():
    assert local_search.neighbours(LAUNCH, "software") == ["hardware"]
    assert local_search.neighbours(PAR, 0) == [1]  # ordinal: indices, clamped
    assert local_search.neighbours(PAR, 3) == [2, 4]
    assert local_search.neighbours(PAR, 5) == [4]
    assert local_search.neighbours(DEPTH, 1) == [2]  # (9 - 1) / 8 = 1 a step
    assert local_search.neighbours(DEPTH, 5) == [4, 6]
    down, up = local_search.neighbours(TILE, 4096)  # 64^(1/8) = 1.68 a step on the log scale
    assert (down, up) == (math.floor(4096 / 64 ** (1 / 8)), math.ceil(4096 * 64 ** (1 / 8)))
    assert local_search.neighbours(TILE, 65536) == [math.floor(65536 / 64 ** (1 / 8))]


DISTRIBUTIONS = {
    "matmul_par": optuna.distributions.IntDistribution(0, 5),
    "tile_bytes": optuna.distributions.IntDistribution(1024, 65536, log=True),
    "launch": optuna.distributions.CategoricalDistribution(["software", "hardware"]),
}


def _trial(number, params, values, feasible=True):
    trial = optuna.trial.create_trial(
        params=params,
        distributions={name: DISTRIBUTIONS[name] for name in params},
        values=values,
        constraints={tuner.FEASIBLE: 0.0 if feasible else 1.0},
    )
    trial.number = number
    return trial


def test_moves_start_from_the_best_point_categorical_knobs_first():
    best = {"matmul_par": 3, "tile_bytes": 4096, "launch": "software"}
    other = {"matmul_par": 1, "tile_bytes": 4096, "launch": "software"}
    trials = [_trial(0, other, [2.0, 1.0]), _trial(1, best, [1.0, 5.0])]
    moves = list(local_search.moves(SPACE, trials, MINIMIZE, tuner.feasible))
    tile_down, tile_up = local_search.neighbours(TILE, 4096)
    assert moves[:5] == [
        {**best, "launch": "hardware"},
        {**best, "matmul_par": 2},
        {**best, "matmul_par": 4},
        {**best, "tile_bytes": tile_down},
        {**best, "tile_bytes": tile_up},
    ]
    assert moves[5] == {**other, "launch": "hardware"}  # then the next best point
    assert best not in moves and other not in moves  # tried


def test_no_move_as_far_as_an_infeasible_one():
    start = {"matmul_par": 2, "tile_bytes": 4096, "launch": "software"}
    refused = {**start, "matmul_par": 3}  # one step up did not fit
    trials = [_trial(0, start, [1.0, 1.0]), _trial(1, refused, [math.inf] * 2, feasible=False)]
    moves = list(local_search.moves(SPACE, trials, MINIMIZE, tuner.feasible))
    assert {**start, "matmul_par": 1} in moves  # down is still tried
    assert all(m["matmul_par"] <= 2 for m in moves)
    assert local_search._beyond(PAR, 2, 4, 3) and not local_search._beyond(PAR, 2, 1, 3)


def _climb(seed):
    """A study on a synthetic objective (best at matmul_par=16, hardware launch, buffer depth
    3; matmul_par 32 does not fit) whose trials from 12 on climb; returns (params,
    feasible) per trial."""
    space = (PAR, LAUNCH, DEPTH)
    objectives = (tuner.Objective("ms_per_token", "minimize"), tuner.Objective("pcus", "minimize"))
    problem = tuner.Problem("tiny-llama", 1, 8, 1, RduPipeline(), space, objectives)
    sampler = tuner.make_sampler("tpe", problem, seed, tuner.Phases(4, climb_from=12))
    study = optuna.create_study(directions=["minimize"] * 2, sampler=sampler)
    out = []
    for _ in range(40):
        trial = study.ask()
        par, launch, depth = (k.suggest(trial) for k in space)
        fits = par <= 16
        trial.set_constraint(tuner.FEASIBLE, 0.0 if fits else 1.0)
        speed = abs(math.log2(par) - 4) + (launch == "software") + abs(depth - 3)
        study.tell(trial, [speed, par] if fits else [math.inf, math.inf])
        out.append(((trial.params["matmul_par"], launch, depth), fits))
    return out


def test_the_climb_is_deterministic_and_reaches_the_best_point():
    trials = _climb(seed=3)
    assert trials == _climb(seed=3)
    points = [point for point, _ in trials]
    assert (4, "hardware", 3) not in points[:12]  # not found by the model-guided trials
    assert (4, "hardware", 3) in points[12:]  # index 4: matmul_par=16
    climbed = points[12 : points.index((4, "hardware", 3)) + 1]
    assert len(set(climbed)) == len(climbed) and not set(climbed) & set(points[:12])
    assert all(point[0] < 5 for point in climbed)  # matmul_par 32 never tried from the climb


def test_random_search_does_not_climb_nor_search_pareto_moves():
    space = (PAR, LAUNCH)
    objectives = (tuner.Objective("ms_per_token", "minimize"), tuner.Objective("pcus", "minimize"))
    problem = tuner.Problem("tiny-llama", 1, 8, 1, RduPipeline(), space, objectives)
    sampler = tuner.make_sampler(
        "random", problem, 0, tuner.Phases(2, climb_from=0, pareto_until=10)
    )
    study = optuna.create_study(directions=["minimize"] * 2, sampler=sampler)
    study.add_trial(_trial(0, {"matmul_par": 2, "launch": "software"}, [1.0, 1.0]))
    trial = study.ask()
    assert sampler._proposal(study, study.trials[-1]) is None
    assert trial.number == 1 and study.trials[0].state == TrialState.COMPLETE
