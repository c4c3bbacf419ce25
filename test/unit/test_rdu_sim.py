"""`rdu-sim PROGRAM`: report table, JSON, trace, hardware overrides, functional mode; bad
programs get the loader's message and exit 1 without a traceback; the simulator and the tool
import neither xDSL nor the compiler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from compiled import compiled
from toy_program import build_toy

from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.program import encode_program
from rdu_compiler.simulator.timing import simulate
from rdu_compiler.tools.rdu_sim import main

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("programs") / "tiny-llama.json"
    path.write_bytes(encode_program(compiled("tiny-llama", context=64)))
    return path


def test_timing_table_json_and_trace(capsys, tiny, tmp_path):
    code, out, err = run(capsys, tiny)
    assert code == 0, err
    assert out.startswith("tiny-llama on 1 x sn40l (software launch)") and "TPOT" in out
    assert "ms/token" not in out  # per step, per token and TPOT are named as such
    assert "decoder_layer.looped" in out
    trace = tmp_path / "trace.json"
    code, out, _ = run(capsys, tiny, "--json", "--trace", trace)
    report = json.loads(out)
    assert {
        "ms_per_token",
        "tokens_per_s",
        "bandwidth_fraction_of_peak",
        "roofline_fraction",
        "launches_per_token",
        "launch_and_sync_ms_per_token",
        "calls",
    } <= report.keys()
    assert report["launches_per_token"] == 1  # the embedding, the loop, the LM head
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name") == "embed, layers 0-3, lm_head: layer 3 (trip 3)" for e in events)


def test_hardware_overrides(capsys, tiny):
    base = json.loads(run(capsys, tiny, "--json")[1])
    code, out, err = run(
        capsys, tiny, "--json", "--hw-override", "launch_software_s=0,sync_software_s=0"
    )
    assert code == 0, err
    fast = json.loads(out)
    assert fast["launch_and_sync_ms_per_token"] < base["launch_and_sync_ms_per_token"]
    assert fast["overrides"] == {"launch_software_s": 0.0, "sync_software_s": 0.0}
    code, out, err = run(capsys, tiny, "--hw-override", "hbm_bandwith=1e12")
    assert code == 1 and not out
    assert "unknown hardware parameter 'hbm_bandwith' (did you mean 'hbm_bandwidth'?)" in err


def test_simulated_on_the_hardware_it_was_compiled_for(capsys, tiny, tmp_path):
    """`rdu-run --hw-override` / the lowering's `hw-overrides` are in the program: rdu-sim
    times it on them, and `--hw-override` changes figures on top of them."""
    slow = compiled("tiny-llama", context=64, hw_overrides="hbm_bandwidth=1e11")
    path = tmp_path / "slow.json"
    path.write_bytes(encode_program(slow))
    assert path.read_bytes() == encode_program(
        compiled.__wrapped__("tiny-llama", context=64, hw_overrides="hbm_bandwidth=1e11")
    )
    code, out, err = run(capsys, path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["overrides"] == {"hbm_bandwidth": 1e11}
    sn40l = get_preset("sn40l")
    step_on = {
        bandwidth: simulate(slow, sn40l.replace(hbm_bandwidth=bandwidth), what_if=True).step_s * 1e3
        for bandwidth in (1e11, sn40l.hbm_bandwidth)
    }
    assert report["ms_per_token"] == step_on[1e11] != step_on[sn40l.hbm_bandwidth]
    code, out, err = run(capsys, path, "--json", "--hw-override", "launch_software_s=0")
    assert code == 0, err
    assert json.loads(out)["overrides"] == {"hbm_bandwidth": 1e11, "launch_software_s": 0.0}
    code, out, err = run(capsys, path, "--hw-override", "pcus=2")
    assert code == 1 and not out and "Traceback" not in err, err
    assert f"{path}: $.kernels[" in err, err  # every problem, each naming the file
    assert "but sn40l with pcus=2,hbm_bandwidth=100000000000.0 has 2 per socket" in err, err


def test_functional_matches_the_reference_engine(capsys, tiny):
    from rdu_compiler.tools.rdu_run import main as rdu_run

    code, out, err = run(capsys, tiny, "--functional", "--prompt", "3,9", "--steps", "4", "--json")
    assert code == 0, err
    got = json.loads(out)["tokens"]
    assert (
        rdu_run(
            [
                "tiny-llama",
                "--engine",
                "reference",
                "--prompt",
                "3,9",
                "--steps",
                "4",
                "--context",
                "64",
                "--json",
            ]
        )
        == 0
    )
    assert got == json.loads(capsys.readouterr()[0])["tokens"]
    code, out, err = run(capsys, tiny, "--functional", "--prompt", "3,900")
    assert code == 1 and "--prompt token 900 is out of range" in err


def test_toy_program_runs_both_ways(capsys, tmp_path):
    path = tmp_path / "toy.json"
    path.write_bytes(encode_program(build_toy(looped=True, sockets=2)))
    assert run(capsys, path)[0] == 0
    code, out, err = run(capsys, path, "--functional", "--prompt", "3", "--steps", "2")
    assert code == 0, err
    assert "entry 1:" in out  # batch 2


def good_bytes() -> bytes:
    return encode_program(build_toy(looped=False))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b'{"format": "rdu-program", "version": 1, "model": ', "truncated file"),
        (b"{not json", "malformed JSON at line 1, column 2"),
        (b'{"format": "rdu-program", "version": 2}', "program format version 2 is not supported"),
        (b'{"format": "onnx"}', "not an rdu-program file"),
        (
            lambda: good_bytes().replace(b'"sockets":1', b'"sockets":17'),
            "17 sockets, but sn40l has at most 16",
        ),
    ],
)
def test_bad_programs_are_rejected(capsys, tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_bytes(data() if callable(data) else data)
    for extra in ([], ["--functional"]):
        code, out, err = run(capsys, path, *extra)
        assert code == 1 and not out
        assert err.startswith(f"rdu-sim: error: {path}: ") and message in err, err
        assert "Traceback" not in err


def test_missing_file_and_console_script(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "rdu-sim")
    r = subprocess.run([exe, str(tmp_path / "nope.json")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cannot read the program file" in r.stderr


def test_no_xdsl_or_compiler_import(tmp_path):
    """The simulator (the GPU-node baseline too) and rdu-sim run a program (timing and
    functional) importing only the simulator, rdu_compiler.tools.cli and
    rdu_compiler.tools.rdu_sim."""
    path = tmp_path / "toy.json"
    path.write_bytes(encode_program(build_toy(looped=True, sockets=2)))
    code = (
        "import sys\n"
        "import rdu_compiler.simulator.functional, rdu_compiler.simulator.timing\n"
        "import rdu_compiler.simulator.report, rdu_compiler.simulator.gpu_node\n"
        "from rdu_compiler.tools.rdu_sim import main\n"
        f"assert main([{str(path)!r}, '--json']) == 0\n"
        f"assert main([{str(path)!r}, '--functional', '--steps', '2']) == 0\n"
        "ours = ('rdu_compiler.rdu_dialect', 'rdu_compiler.passes', 'rdu_compiler.lowering',"
        " 'rdu_compiler.frontend')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'xdsl' or m.startswith(ours)"
        " or (m.startswith('rdu_compiler.tools.') and m not in ('rdu_compiler.tools.cli',"
        " 'rdu_compiler.tools.rdu_sim'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)


def test_functional_weights_from_a_checkpoint(capsys, tiny, tmp_path):
    """Weights bound by name from a safetensors checkpoint (HF layout) give the same tokens as
    the seeded init they were saved from; every socket reads only its shard."""
    from rdu_compiler.simulator.program import load_program
    from rdu_compiler.simulator.weights import RandomWeights, save_safetensors

    seeded = RandomWeights(3)
    params = [v for v in load_program(tiny).values if v.role == "param"]
    folder = save_safetensors(
        tmp_path / "ckpt", {v.name: seeded.get(v.name, v.shape) for v in params}
    )
    sharded = tmp_path / "sharded.json"
    sharded.write_bytes(encode_program(compiled("tiny-llama", sockets=2, context=64)))
    outs = [
        json.loads(
            run(
                capsys,
                program,
                "--functional",
                "--prompt",
                "4,8",
                "--steps",
                "3",
                "--json",
                *source,
            )[1]
        )["tokens"]
        for program in (tiny, sharded)
        for source in (("--seed", "3"), ("--weights", folder))
    ]
    assert outs[0] == outs[1] == outs[2] == outs[3]


def test_a_closed_pipe_ends_quietly(tiny):
    """`rdu-sim step.json | head -1`: the reader has gone; no `[Errno 32] Broken pipe`, and the
    exit status of a process ended by SIGPIPE (what `yes | head -1` gives `yes`)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: every write fails
    exe = os.path.join(os.path.dirname(sys.executable), "rdu-sim")
    try:
        r = subprocess.run([exe, str(tiny)], stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert r.stderr == "" and r.returncode == 141
