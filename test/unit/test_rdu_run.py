"""`rdu-run`: output keys, logits file, and user errors (one message, exit 1, no traceback)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from frontend.config import load_model_config
from simulator.weights import RandomWeights, save_safetensors
from tools.rdu_run import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_and_logits_file(capsys, tmp_path):
    out_file = tmp_path / "logits.npy"
    code, out, err = run(capsys, "tiny-qwen2", "--prompt", "5,6,7", "--steps", "4", "--batch",
                         "2", "--context", "8", "--json", "--logits-out", str(out_file))
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
    folder = save_safetensors(tmp_path / "ckpt",
                              {t.name: seeded.get(t.name, t.shape) for t in specs})
    outs = [run(capsys, "tiny-llama", "--prompt", "9,40", "--steps", "3", "--json", *source)[1]
            for source in (("--seed", "3"), ("--weights", str(folder)))]
    assert json.loads(outs[0])["tokens"] == json.loads(outs[1])["tokens"]


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "1,256"], "--prompt token 256 is out of range for the vocabulary of "
                            "tiny-llama (256 tokens: 0..255)"),
    (["--prompt", "1,x"], "--prompt must be comma-separated token ids"),
    (["--prompt", "1,2,3", "--steps", "4", "--context", "5"], "--context 5 is too small for a "
                                                              "3-token prompt and 4 generated"),
    (["--weights", "/no/such/ckpt"], "weights path not found: /no/such/ckpt"),
    (["--engine", "sim"], "--engine sim: the simulator engine is not available yet"),
    (["--sockets", "2"], "--sockets 2: the simulator engine is not available yet"),
    (["--no-kernel-looping", "--functional"], "--no-kernel-looping, --functional: the simulator"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
])
def test_user_errors(capsys, argv, message):
    code, out, err = run(capsys, "tiny-llama", *argv)
    assert code == 1 and not out
    assert err.startswith("rdu-run: error: ") and message in err, err
    assert "Traceback" not in err


def test_console_script_reports_errors_without_traceback():
    exe = os.path.join(os.path.dirname(sys.executable), "rdu-run")
    r = subprocess.run([exe, "tiny-mistral", "--prompt", "1000"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "out of range for the vocabulary of tiny-mistral" in r.stderr
