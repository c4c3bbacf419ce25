"""`rdu-tune`: the space read from the pipeline's options, reproducible searches, infeasible
points, resuming a stored study, replaying a front point through `rdu-run`, two workers on one
PostgreSQL study, and user errors (one message, exit 1)."""

import json
import os
import subprocess
import sys
import uuid
import warnings
from dataclasses import fields
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from rdu_compiler.lowering.lower_dfk_to_rdu import Mapping
from rdu_compiler.lowering.pipeline import RduPipeline
from rdu_compiler.tools import tuner
from rdu_compiler.tools.rdu_run import main as rdu_run
from rdu_compiler.tools.rdu_tune import main as rdu_tune

CONFIGS = Path(__file__).parent / "configs"

# A small space on a tiny model: a few seconds per search.
SMALL_SPACE = {
    "matmul-par": {"kind": "ordinal", "values": [4, 16, 64]},
    "tile-bytes": {"kind": "int", "range": [4096, 262144], "log": True},
    "launch": {"kind": "categorical", "values": ["software", "hardware"]},
}


def tune(capsys, *argv):
    code = rdu_tune([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def small_space(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SMALL_SPACE))
    return path


def test_default_space_is_the_pipelines_options():
    knobs = {k.name: k for k in tuner.default_space()}
    options = {f.name for f in fields(RduPipeline)}
    assert set(knobs) == options - set(tuner.NOT_SEARCHED)
    assert {f.name for f in fields(Mapping)} <= set(knobs)  # the lowering's knobs, inherited
    default = RduPipeline()
    for name, knob in knobs.items():  # the default point lies in the space
        assert knob.param(getattr(default, name)) is not None, name
    assert "fusion" not in knobs  # a kernel per op: far slower, and costly to try (tuner.py)
    assert knobs["launch"].values == ("software", "hardware")
    assert knobs["kernel_looping"].values == (False, True)
    assert knobs["tile_bytes"].values == (-1, *(8192 * 2**i for i in range(7)))
    assert knobs["matmul_par"].values == (-1, *(2**i for i in range(11)))
    assert knobs["kv_seq_split"].values == (-1, 1, 2, 4, 8, 16)  # no 0: it is refused
    assert all(RduPipeline.__dataclass_fields__[n].default == -1 for n in tuner.AUTO_RANGES)


def test_startup_trials_move_a_few_knobs_of_the_default():
    """The model-guided search starts near the default point (the automatic allocation); the
    random baseline does not."""
    space = tuple(tuner.default_space())
    objectives = (tuner.Objective("ms_per_token", "minimize"), tuner.Objective("pcus", "minimize"))
    problem = tuner.Problem("tiny-llama", 1, 8, 1, RduPipeline(), space, objectives)
    centre = {k.name: k.param(getattr(problem.base, k.name)) for k in space}

    def startup_points(sampler_name: str) -> list[dict]:
        sampler = tuner.make_sampler(sampler_name, problem, seed=5, phases=tuner.Phases(12))
        study = optuna.create_study(directions=["minimize"] * 2, sampler=sampler)
        points = []
        for _ in range(12):
            trial = study.ask()
            for knob in space:
                knob.suggest(trial)
            points.append(trial.params)
            study.tell(trial, [1.0, 1.0])
        return points

    points = startup_points("tpe")
    assert points == startup_points("tpe")  # reproducible
    moved = [{n for n, v in p.items() if v != centre[n]} for p in points]
    assert all(moved) and sum(map(len, moved)) <= 4 * len(moved)
    assert len(set().union(*moved)) >= len(space) // 2  # not always the same knobs
    randomly = [{n for n, v in p.items() if v != centre[n]} for p in startup_points("random")]
    assert sum(map(len, randomly)) > sum(map(len, moved))


def test_tpe_takes_the_prior_weight_quietly():
    """TPE's prior weight is an argument Optuna 4.9 deprecated (the pin keeps it): set, and
    its warning not shown to users."""
    space = tuple(tuner.default_space())
    objectives = (tuner.Objective("ms_per_token", "minimize"),)
    problem = tuner.Problem("tiny-llama", 1, 8, 1, RduPipeline(), space, objectives)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = tuner.make_sampler("tpe", problem, 0, tuner.phases(60))
    assert not caught, [str(w.message) for w in caught]
    model = sampler._model
    assert isinstance(model, optuna.samplers.TPESampler)
    assert model._parzen_estimator_parameters.prior_weight == tuner.TPE_PRIOR_WEIGHT


def test_shipped_example_space_parses():
    import yaml

    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "tune_space.yaml")
    with open(path) as stream:
        knobs, fixed = tuner.parse_space(yaml.safe_load(stream), path)
    assert [k.name for k in knobs] == ["matmul_par", "tile_bytes", "launch", "hw.hbm_bandwidth"]
    assert fixed == {"fusion": "layer"} and knobs[1].prior == 262144 and knobs[1].log


def test_pipeline_spec_round_trips():
    pipeline = RduPipeline(sockets=8, tile_bytes=262144, launch="hardware", hw_overrides="pcus=8")
    text = pipeline.spec()
    assert text.startswith("rdu-pipeline{matmul-par=-1 ") and 'hw-overrides="pcus=8"' in text
    assert RduPipeline.parse(text) == pipeline
    assert RduPipeline.parse("rdu-pipeline{fusion=op}") == RduPipeline(fusion="op")


def test_search_is_deterministic_with_a_seed(capsys, small_space):
    argv = ("tiny-llama", "--space", small_space, "--trials", 6, "--seed", 3, "--json")
    code, first, err = tune(capsys, *argv)
    assert code == 0, err
    code, second, err = tune(capsys, *argv)
    assert code == 0, err
    assert first == second
    assert "Warning" not in err  # Optuna's deprecation of TPE's prior weight stays quiet
    report = json.loads(first)
    assert (report["trials"], report["infeasible"], report["ran_here"]) == (6, 0, 6)
    assert report["default"]["objectives"]["ms_per_token"] > 0
    assert report["front"]
    for point in report["front"]:
        assert set(point["objectives"]) == {"ms_per_token", "pcus"}
        pipeline = RduPipeline.parse(point["pipeline"])
        assert pipeline.matmul_par in (4, 16, 64) and 4096 <= pipeline.tile_bytes <= 262144


def test_infeasible_points_are_constraints_not_crashes(capsys, small_space):
    # 16 PCUs: the automatic allocation fits, matmul-par 64 cannot; 3 sockets cannot shard
    # tiny-llama
    code, out, err = tune(
        capsys, "tiny-llama", "--space", small_space, "--hw-override", "pcus=16",
        "--sockets", "1,3", "--trials", 10, "--seed", 2, "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["default"]["objectives"]["ms_per_token"] > 0
    assert 0 < report["infeasible"] < report["trials"] == 10
    assert sum(r["trials"] for r in report["infeasible_reasons"]) == report["infeasible"]
    assert any("does not fit" in r["reason"] for r in report["infeasible_reasons"])
    for point in report["front"]:  # only feasible points
        pipeline = RduPipeline.parse(point["pipeline"])
        assert pipeline.matmul_par < 64 and pipeline.sockets == 1
        assert pipeline.hw_overrides == "pcus=16"


def test_an_infeasible_default_is_reported_not_a_crash(capsys, small_space):
    # 1 PCU: not even the default mapping (the KV write on a PCU per kv head) fits
    code, out, err = tune(
        capsys, "tiny-llama", "--space", small_space, "--hw-override", "pcus=1",
        "--trials", 3, "--seed", 1, "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["default"]["objectives"] is None
    assert "does not fit" in report["default"]["infeasible"]
    assert report["infeasible"] == report["trials"] == 3 and report["front"] == []


def test_resume_from_a_journal_file(capsys, small_space, tmp_path):
    storage = tmp_path / "study.journal"
    common = ("tiny-llama", "--space", small_space, "--storage", storage, "--study", "s")
    code, out, err = tune(capsys, *common, "--trials", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["trials"] == 3
    code, out, err = tune(capsys, *common, "--trials", 5, "--json")
    assert code == 0, err
    assert (json.loads(out)["trials"], json.loads(out)["ran_here"]) == (5, 2)
    study = optuna.load_study(
        study_name="s",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(storage))
        ),
    )
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # the same study for another problem is refused
    code, out, err = tune(capsys, *common, "--objectives", "ms_per_token", "--trials", 6)
    assert code == 1 and "was made for another problem (different objectives)" in err
    assert "Traceback" not in err


def test_front_point_replays_through_rdu_run(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("matmul-par: {kind: ordinal, values: [8, 32, 128]}\nhw.pcus: [256, 1040]\n")
    # hw.pcus as a bare list is a mistake (a bare value fixes a knob): corrected below
    code, out, err = tune(capsys, "tiny-llama", "--space", space, "--trials", 2)
    assert code == 1 and "hw.pcus" in err
    space.write_text(
        "matmul-par: {kind: ordinal, values: [8, 32, 128], prior: 32}\n"
        "hw.pcus: {kind: int, range: [256, 1040], log: true}\n"
    )
    code, out, err = tune(capsys, "tiny-llama", "--space", space, "--trials", 5, "--json")
    assert code == 0, err
    report = json.loads(out)
    best = min(report["front"], key=lambda p: p["objectives"]["ms_per_token"])
    assert "hw-overrides=" in best["pipeline"]
    code = rdu_run(["tiny-llama", "--pipeline", best["pipeline"], "--json"])
    replay, err = capsys.readouterr()
    assert code == 0, err
    timing = json.loads(replay)["timing"]
    looped = RduPipeline.parse(best["pipeline"]).kernel_looping
    assert timing["looped" if looped else "unlooped"]["ms_per_token"] == pytest.approx(
        best["objectives"]["ms_per_token"], rel=1e-12
    )


def test_parallel_local_workers_run_exactly_the_budget(capsys, small_space):
    code, out, err = tune(
        capsys, "tiny-llama", "--space", small_space, "--trials", 5, "--jobs", 2, "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["trials"], report["ran_here"]) == (5, 5)


def test_plot_writes_a_png(capsys, small_space, tmp_path):
    plot = tmp_path / "front.png"
    code, out, err = tune(
        capsys, "tiny-llama", "--space", small_space, "--trials", 4, "--plot", plot
    )
    assert code == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert "Pareto front" in out and "rdu-pipeline{" in out


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"nope": {"kind": "int", "range": [1, 2]}}', "unknown knob nope"),
        ('{"tile-bytes": {"kind": "int", "range": [8, 2]}}', "range needs low < high"),
        ('{"tile-bytes": {"kind": "int", "range": [0, 8], "log": true}}', "positive range"),
        ('{"fusion": {"values": ["layer", "tiles"]}}', "expected one of layer, op"),
        ('{"matmul-par": {"kind": "ordinal", "values": [1, 2], "prior": 3}}', "prior 3"),
        ('{"hw.pcu": {"kind": "int", "range": [1, 2]}}', "unknown hardware figure pcu"),
        ('{"tile-bytes": ', "space.json:1:"),
        (b"\xff\xfe{", "space.json' is not a text file"),
        # values the file gives are shown as JSON, never as Python reprs (['software', 3])
        (
            '{"launch": ["software", 3]}',
            'a bare value fixes the knob, got the list ["software", 3]',
        ),
        ('{"launch": {"values": ["software", {"a": 1}]}}', 'got {"a": 1}'),
        ('{"matmul-par": {"kind": ["int"]}}', 'got ["int"]'),
    ],
)
def test_bad_space_files(capsys, tmp_path, content, message):
    space = tmp_path / "space.json"
    space.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out, err = tune(capsys, "tiny-llama", "--space", space, "--trials", 2)
    assert code == 1 and message in err and err.count("\n") == 1, err
    assert out == "" and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--objectives", "ms_per_token,nope"), "unknown objective 'nope'"),
        (("--objectives", "up:ms_per_token"), "a direction is min: or max:"),
        (("--sockets", "2,x"), "--sockets must be comma-separated integers"),
        (("--trials", "0"), "argument --trials: must be >= 1"),
        (("--climb", "-1"), "argument --climb: must be >= 0"),
        (("--pareto", "-1"), "argument --pareto: must be >= 0"),
        (("--storage", "postgresql://u:secret@127.0.0.1:1/db"), "cannot open postgresql://u:***@"),
    ],
)
def test_bad_options(capsys, argv, message):
    code, out, err = tune(capsys, "tiny-llama", "--trials", 2, *argv)
    assert code == 1 and message in err, err
    assert "secret" not in err and "Traceback" not in err


def _postgres_url() -> str:
    url = os.environ.get("RDU_TUNE_POSTGRES_URL")
    if url is None:
        if os.environ.get("CI"):
            pytest.fail("CI must start PostgreSQL and set RDU_TUNE_POSTGRES_URL (.ci/run)")
        pytest.skip("no PostgreSQL server: set RDU_TUNE_POSTGRES_URL (.ci/start_postgres.sh)")
    try:
        optuna.storages.RDBStorage(url)
    except Exception as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at RDU_TUNE_POSTGRES_URL unreachable: {error}")
    return url


def test_two_workers_share_one_postgresql_study(small_space):
    url = _postgres_url()
    study = f"test-{uuid.uuid4().hex[:12]}"
    command = [
        sys.executable, "-m", "rdu_compiler.tools.rdu_tune", "tiny-llama", "--space",
        str(small_space), "--trials", "16", "--storage", url, "--study", study, "--json",
    ]  # fmt: skip
    workers = [
        subprocess.Popen(
            [*command, "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for seed in (0, 1)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
    reports = [json.loads(out) for out, _ in outputs]
    trials = optuna.load_study(study_name=study, storage=url).trials
    # none lost: every trial finished; none done twice: the workers' runs add up to the trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert 16 <= len(trials) <= 17  # a race at the end may add one (docs/tuning.md)
    assert sum(r["ran_here"] for r in reports) == len(trials)
    assert all(r["ran_here"] > 0 for r in reports)  # both really worked on it
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    optuna.delete_study(study_name=study, storage=url)


def test_a_trial_times_the_pipeline_it_reports():
    """Every option of the passes before the lowering reaches the trial's compile, through
    one list of them (`RduPipeline.prepare_options`: `kv-seq-split` was once searched but
    never applied), and one evaluator keeps apart the modules it prepared with different ones."""
    from rdu_compiler.lowering.pipeline import compile_program
    from rdu_compiler.simulator.hardware import get_preset
    from rdu_compiler.simulator.report import summarize
    from rdu_compiler.simulator.timing import simulate

    mqa = str(CONFIGS / "tiny-llama-mqa.json")
    objectives = (tuner.Objective("ms_per_token", "minimize"),)
    problem = tuner.Problem(mqa, 1, 64, None, RduPipeline(sockets=2), (), objectives)
    evaluator = tuner.Evaluator(problem)
    figures = {}
    for split in (1, 2):
        pipeline = RduPipeline(sockets=2, kv_seq_split=split)
        program = compile_program(mqa, batch=1, context=64, **pipeline.compile_options())
        preset = get_preset(pipeline.hw)
        expected = summarize(program, preset, simulate(program, preset))["ms_per_token"]
        figures[split] = evaluator.evaluate(pipeline).objectives
        assert figures[split] == {"ms_per_token": expected}
    assert figures[1] != figures[2]  # the option matters here, so the check above can fail
