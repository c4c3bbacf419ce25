"""`rdu-run`: output keys, logits file, and user errors (one message, exit 1, no traceback)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from logit_tolerance import BF16_ULPS, check_logits, logit_tolerance

from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.simulator.weights import RandomWeights, save_safetensors
from rdu_compiler.tools.rdu_run import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_and_logits_file(capsys, tmp_path):
    out_file = tmp_path / "logits.npy"
    code, out, err = run(
        capsys,
        "tiny-qwen2",
        "--engine",
        "reference",
        "--prompt",
        "5,6,7",
        "--steps",
        "4",
        "--batch",
        "2",
        "--context",
        "8",
        "--json",
        "--logits-out",
        str(out_file),
    )
    assert code == 0, err
    report = json.loads(out)
    assert {"model", "engine", "sockets", "batch", "context", "tokens"} <= report.keys()
    assert (report["model"], report["engine"], report["sockets"]) == ("tiny-qwen2", "reference", 1)
    assert (report["batch"], report["context"]) == (2, 8)
    tokens = np.array(report["tokens"])
    assert tokens.shape == (2, 4) and (tokens[0] == tokens[1]).all()  # same prompt per entry
    logits = np.load(out_file)
    assert logits.shape == (2, 256) and logits.dtype == np.float32
    assert (np.argmax(logits, axis=-1) == tokens[:, -1]).all()  # the last step's logits


def test_checkpoint_weights_match_the_seed(capsys, tmp_path):
    seeded = RandomWeights(3)
    specs = load_model_config("tiny-llama").checkpoint_tensors()
    folder = save_safetensors(
        tmp_path / "ckpt", {t.name: seeded.get(t.name, t.shape) for t in specs}
    )
    outs = [
        run(
            capsys,
            "tiny-llama",
            "--engine",
            "reference",
            "--prompt",
            "9,40",
            "--steps",
            "3",
            "--json",
            *source,
        )[1]
        for source in (("--seed", "3"), ("--weights", str(folder)))
    ]
    assert json.loads(outs[0])["tokens"] == json.loads(outs[1])["tokens"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--engine", "reference", "--prompt", "1,256"],
            "--prompt token 256 is out of range for the vocabulary of "
            "tiny-llama (256 tokens: 0..255)",
        ),
        (["--functional", "--prompt", "1,x"], "--prompt '1,x' is text, and tiny-llama has no"),
        (
            ["--functional", "--prompt", "1,2,3", "--steps", "4", "--context", "5"],
            "--context 5 is too small for a 3-token prompt and 4 generated",
        ),
        (
            ["--engine", "reference", "--weights", "/no/such/ckpt"],
            "weights path not found: /no/such/ckpt",
        ),
        (
            ["--engine", "reference", "--sockets", "2", "--launch", "hardware"],
            "--launch hardware: only the simulator engine",
        ),
        (
            ["--engine", "reference", "--no-kernel-looping", "--functional"],
            "--no-kernel-looping, --functional: only the simulator engine",
        ),
        (["--engine", "reference", "--sockets", "3"], "sockets=3 is not supported"),
        (["--functional", "--launch", "both"], "--launch both compares timings: drop --functional"),
        (["--sockets", "0"], "argument --sockets: must be >= 1, got 0"),
        (["--logits-out", "x.npy"], "--logits-out needs real numbers: add --functional"),
        (["--batch", "0"], "argument --batch: must be >= 1, got 0"),
    ],
)
def test_user_errors(capsys, argv, message):
    code, out, err = run(capsys, "tiny-llama", *argv)
    assert code == 1 and not out
    assert err.startswith("rdu-run: error: ") and message in err, err
    assert "Traceback" not in err


def test_console_script_reports_errors_without_traceback():
    exe = os.path.join(os.path.dirname(sys.executable), "rdu-run")
    r = subprocess.run(
        [exe, "tiny-mistral", "--functional", "--prompt", "1000"], capture_output=True, text=True
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "out of range for the vocabulary of tiny-mistral" in r.stderr


# -- the simulator engine (the default) ----------------------------------------------------

TIMING_KEYS = {
    "ms_per_token",
    "tokens_per_s",
    "bandwidth_fraction_of_peak",
    "roofline_fraction",
    "launches_per_token",
    "launch_and_sync_ms_per_token",
    "roofline_ms",
    "memory_roofline_ms",
    "compute_roofline_ms",
    "time_breakdown",
}


def test_sim_timing_side_by_side(capsys):
    code, out, err = run(capsys, "tiny-llama", "--json", "--context", "128")
    assert code == 0 and not err  # no progress display when stderr is not a terminal
    report = json.loads(out)
    assert (report["engine"], report["tokens"]) == ("sim", None)
    timing = report["timing"]
    assert timing.keys() == {"looped", "unlooped", "speedup"}
    assert timing["looped"].keys() == timing["unlooped"].keys() == TIMING_KEYS
    assert timing["speedup"] == pytest.approx(
        timing["unlooped"]["ms_per_token"] / timing["looped"]["ms_per_token"]
    )
    assert timing["speedup"] > 1
    assert timing["looped"]["launches_per_token"] < timing["unlooped"]["launches_per_token"]
    code, out, _ = run(capsys, "tiny-llama", "--context", "128")
    assert "kernel looping speedup" in out and "looped" in out and "unlooped" in out


def test_sim_options_change_the_timing(capsys):
    def timing(*argv):
        code, out, err = run(capsys, "llama-3.1-8b", "--json", *argv)
        assert code == 0, err
        return json.loads(out)["timing"]

    unlooped = timing("--no-kernel-looping")
    assert (unlooped["looped"], unlooped["speedup"]) == (None, None)
    hardware = timing("--no-kernel-looping", "--launch", "hardware")
    assert (
        hardware["unlooped"]["launch_and_sync_ms_per_token"]
        < unlooped["unlooped"]["launch_and_sync_ms_per_token"]
    )
    eight = timing("--no-kernel-looping", "--sockets", "8")
    assert eight["unlooped"]["ms_per_token"] < unlooped["unlooped"]["ms_per_token"] / 3


def test_sim_timing_for_both_launch_modes(capsys):
    """`--launch both`: each launch mode timed looped and unlooped, as a single-mode run times
    it, under `timing_by_launch`, with `timing` keeping the software figures; the table shows
    the four columns."""
    argv = ("tiny-llama", "--json", "--context", "128")
    code, out, err = run(capsys, *argv, "--launch", "both")
    assert code == 0, err
    report = json.loads(out)
    assert report["launch"] == "both"
    both = report["timing_by_launch"]
    assert report["timing"] == both["software"]
    assert both.keys() == {"software", "hardware"}
    for launch, timing in both.items():
        code, out, err = run(capsys, *argv, "--launch", launch)
        assert code == 0, err
        single = json.loads(out)
        assert single["launch"] == launch and "timing_by_launch" not in single
        assert timing == single["timing"]
    sw, hw = both["software"], both["hardware"]
    assert sw["speedup"] > hw["speedup"] > 1  # hardware launch leaves less for looping to win
    assert (
        hw["unlooped"]["launch_and_sync_ms_per_token"]
        < sw["unlooped"]["launch_and_sync_ms_per_token"]
    )
    code, out, _ = run(capsys, "tiny-llama", "--context", "128", "--launch", "both")
    assert "software and hardware launch" in out
    assert out.split("time above")[0].count("unlooped") == 2  # one column per launch mode
    assert f"{sw['speedup']:.2f}x (software launch), {hw['speedup']:.2f}x (hardware launch)" in out


def test_reference_engine_runs_sharded(capsys, tmp_path):
    """`--engine reference --sockets 2` runs every rank of the sharded module: on a run whose
    top-2 margins exceed the bf16 tolerance at every step (checked, on the 1-socket logits),
    the greedy tokens equal the 1-socket tokens, and the last logits agree within it."""
    from test_functional import BATCH, CONTEXT, PROMPT, SEED, STEPS, reference_run

    preset = "tiny-mistral"
    fed, want = reference_run(preset)
    for logits in map(np.float32, want):
        top2 = np.sort(logits, axis=-1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0] > logit_tolerance(logits, BF16_ULPS)).all()
    reports, logits = [], []
    for sockets in ("1", "2"):
        out_file = tmp_path / f"logits{sockets}.npy"
        code, out, err = run(
            capsys,
            preset,
            "--engine",
            "reference",
            "--sockets",
            sockets,
            "--prompt",
            ",".join(map(str, PROMPT)),
            "--steps",
            str(STEPS),
            "--batch",
            str(BATCH),
            "--context",
            str(CONTEXT),
            "--seed",
            str(SEED),
            "--json",
            "--logits-out",
            str(out_file),
        )
        assert code == 0, err
        reports.append(json.loads(out))
        logits.append(np.load(out_file))
    assert [r["sockets"] for r in reports] == [1, 2]
    assert reports[0]["tokens"] == reports[1]["tokens"] == [fed[len(PROMPT) :]] * BATCH
    check_logits(
        logits[1], np.argmax(logits[1], axis=-1), logits[0], BF16_ULPS, f"{preset} x2 last step"
    )


@pytest.mark.parametrize("sockets", ["1", "2"])
@pytest.mark.parametrize("looping", [[], ["--no-kernel-looping"]])
def test_sim_functional_tokens_equal_the_reference(capsys, tmp_path, sockets, looping):
    """Free-running greedy tokens, bit-exact: on 2 sockets with the all-reduces in f32
    (`collective-dtype=f32`), as the reference sums. (The default rounds the partials to bf16,
    within the bf16 tolerance of the logits, which may break a tie the other way: here the
    reference's top-2 margin at the 4th token is 0.)"""
    compile_as = ["--sockets", sockets]
    if sockets != "1":
        looped = "false" if looping else "true"
        spec = f"rdu-pipeline{{sockets={sockets} kernel-looping={looped} collective-dtype=f32}}"
        compile_as, looping = ["--pipeline", spec], []
    argv = [
        "tiny-mistral",
        "--prompt",
        "5,6,7",
        "--steps",
        "4",
        "--batch",
        "2",
        "--context",
        "8",
        "--json",
    ]
    code, out, err = run(capsys, *argv, "--engine", "reference")
    assert code == 0, err
    want = json.loads(out)["tokens"]
    logits = tmp_path / "logits.npy"
    code, out, err = run(
        capsys, *argv, "--functional", *compile_as, *looping, "--logits-out", str(logits)
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["engine"], report["sockets"], report["tokens"]) == ("sim", int(sockets), want)
    assert (np.argmax(np.load(logits), axis=-1) == np.array(want)[:, -1]).all()


def test_sim_functional_refuses_a_model_too_large(capsys):
    code, out, err = run(capsys, "llama-3.1-70b", "--functional", "--sockets", "8")
    assert code == 1 and not out and "Traceback" not in err
    assert "needs about" in err and "GiB of memory" in err


@pytest.mark.parametrize(
    "argv",
    [["llama-3.1-8b", "--context", "200000"], ["tiny-llama", "--context", "200", "--functional"]],
)
def test_context_above_max_positions_is_refused(capsys, argv):
    """The rule rdu-import applies: no KV-cache rows beyond the model's positions."""
    code, out, err = run(capsys, *argv)
    assert code == 1 and not out
    assert f"--context {argv[2]} exceeds the model's max_position_embeddings" in err
