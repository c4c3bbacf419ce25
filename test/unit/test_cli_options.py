"""Numeric options of every tool refuse values that mean nothing (a negative seed, zero
requests, ...) while argparse reads them: one line on stderr, exit 1, never a traceback and
nothing on stdout."""

from __future__ import annotations

import pytest

from rdu_compiler.tools import rdu_import, rdu_run, rdu_serve, rdu_sim, rdu_tune

NOT_READ = "no-such-file.json"  # the options are refused before any input is read


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (rdu_sim.main, [NOT_READ, "--functional", "--seed", "-1"], "--seed: must be >= 0, got -1"),
        (
            rdu_sim.main,
            [NOT_READ, "--functional", "--steps", "-2"],
            "--steps: must be >= 0, got -2",
        ),
        (rdu_run.main, ["tiny-llama", "--functional", "--seed", "-1"], "--seed: must be >= 0"),
        (rdu_run.main, ["tiny-llama", "--sockets", "0"], "--sockets: must be >= 1, got 0"),
        (rdu_run.main, ["tiny-llama", "--batch", "1,0"], "--batch: must be >= 1, got 0"),
        (rdu_run.main, ["tiny-llama", "--context", "-4"], "--context: must be >= 1, got -4"),
        (rdu_run.main, ["tiny-llama", "--batch", "1,x"], "--batch: expected an integer"),
        (rdu_run.main, ["tiny-llama", "--layers", "0"], "--layers: must be >= 1, got 0"),
        (rdu_run.main, ["tiny-llama", "--generate", "0"], "--generate: must be >= 1, got 0"),
        (rdu_run.main, ["tiny-llama", "--gpu-tp", "0"], "--gpu-tp: must be >= 1, got 0"),
        (rdu_import.main, ["tiny-llama", "--batch", "0"], "--batch: must be >= 1, got 0"),
        (rdu_import.main, ["tiny-llama", "--context", "x"], "--context: expected an integer"),
        (rdu_serve.main, [NOT_READ, "--seed", "-1"], "--seed: must be >= 0, got -1"),
        (rdu_serve.main, [NOT_READ, "--requests", "0"], "--requests: must be >= 1, got 0"),
        (rdu_tune.main, ["tiny-llama", "--seed", "-1"], "--seed: must be >= 0, got -1"),
        (rdu_tune.main, ["tiny-llama", "--seed", str(2**32)], "--seed: must be <= 4294967295"),
        (rdu_tune.main, ["tiny-llama", "--trials", "0"], "--trials: must be >= 1, got 0"),
        (rdu_tune.main, ["tiny-llama", "--jobs", "0"], "--jobs: must be >= 1, got 0"),
        (rdu_tune.main, ["tiny-llama", "--climb", "-1"], "--climb: must be >= 0, got -1"),
        (rdu_tune.main, ["tiny-llama", "--batch", "0"], "--batch: must be >= 1, got 0"),
        (rdu_tune.main, ["tiny-llama", "--context", "0"], "--context: must be >= 1, got 0"),
    ],
)
def test_numbers_that_mean_nothing_are_refused_in_one_line(capsys, main, argv, message):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1 and not out, err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert err.startswith(f"{main.__module__.rsplit('.', 1)[-1].replace('_', '-')}: error: ")


def test_worker_seeds_stay_in_the_samplers_range():
    """`--seed 4294967295 --jobs 2`: the second worker's seed wraps instead of failing."""
    assert rdu_tune.worker_seed(2**32 - 1, 1) == 0 and rdu_tune.worker_seed(7, 2) == 9
