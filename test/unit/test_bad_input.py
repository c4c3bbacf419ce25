"""Regression tests for what fuzzing found (issue 12), each from a minimized reproducer: bad
input ends in one message and exit 1, never a traceback, a hang or a huge allocation."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from compiled import compiled

from rdu_compiler.frontend.config import read_config_dict
from rdu_compiler.simulator import functional
from rdu_compiler.simulator.program import encode_program
from rdu_compiler.tools import rdu_import, rdu_opt, rdu_run, rdu_sim

TINY = dict(context=16)


def _run(capsys, main, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _program_with(tmp_path, edit):
    """The tiny-llama program as JSON builtins, changed by ``edit``, written to a file."""
    data = msgspec.to_builtins(compiled("tiny-llama", **TINY))
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path


def _units(data, op):
    return [u for k in data["kernels"] for s in k["sections"] for u in s["units"] if u["op"] == op]


@pytest.mark.parametrize(
    ("op", "key", "value", "message"),
    [
        ("attention", "num_heads", 0, "num_heads must be an integer >= 1, got 0"),
        ("attention", "num_heads", -2, "num_heads must be an integer >= 1, got -2"),
        ("attention", "head_dim", 2**31 - 1, "kv heads of head_dim 2147483647"),
        ("rope", "head_dim", 48, "must be [batch, heads * head_dim] with an even head_dim 48"),
        ("rope", "theta", -1.0, "theta must be > 0.0"),
        ("rms_norm", "eps", "x", "eps must be a finite number"),
    ],
)
def test_unit_attributes_are_checked_by_the_loader(capsys, tmp_path, op, key, value, message):
    def edit(data):  # attention may be mapped as partials over context blocks; rope runs
        # fused into the KV write (passes/fusion.py)
        if op == "rope":
            (fused,) = _units(data, "kv_cache_write")[0]["fused"]
            fused["attrs"][key] = value
            return
        (_units(data, op) or _units(data, f"{op}_partial"))[0]["attrs"][key] = value

    path = _program_with(tmp_path, edit)
    for mode in ([], ["--functional"]):
        code, out, err = _run(capsys, rdu_sim.main, path, *mode)
        assert code == 1 and not out, err
        assert message in err, err


def test_a_value_too_large_to_draw_is_refused_before_allocating(capsys, tmp_path):
    # A param value of 2^31 rows: only a block of it is held, but random init draws it whole.
    def edit(data):
        embed = next(v for v in data["values"] if v["name"] == "model.embed_tokens.weight")
        embed["shape"][0] = 2**31

    path = _program_with(tmp_path, edit)
    code, out, err = _run(capsys, rdu_sim.main, path, "--functional")
    assert code == 1 and "GiB of memory" in err and "available" in err, err


def test_out_of_memory_is_a_message(capsys, tmp_path, monkeypatch):
    path = tmp_path / "tiny.json"
    path.write_bytes(encode_program(compiled("tiny-llama", **TINY)))

    def exhausted(self, tokens, positions):
        raise MemoryError

    monkeypatch.setattr(functional.FunctionalSimulator, "decode", exhausted)
    code, out, err = _run(capsys, rdu_sim.main, path, "--functional", "--steps", "1")
    assert code == 1 and err.startswith("rdu-sim: error: out of memory"), err
    assert "fewer layers" in err and "--layers" not in err, err


def test_rdu_opt_out_of_memory_is_a_message(capsys, tmp_path, monkeypatch):
    def exhausted(self):
        raise MemoryError

    monkeypatch.setattr(rdu_opt.RduOptMain, "run", exhausted)
    step = Path(__file__).parents[2] / "examples" / "tiny_llama_step.mlir"
    code, out, err = _run(capsys, rdu_opt.main, step, "-o", tmp_path / "out.mlir")
    assert code == 1 and not out and err.startswith("rdu-opt: error: out of memory"), err
    assert "fewer layers" in err and "--layers" not in err, err
    assert not (tmp_path / "out.mlir").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prompt", "1,2"], "--prompt: not used by a timing run"),
        (["--steps", "5"], "--steps: not used by a timing run"),
        (["--weights", "/nonexistent"], "--weights: not used by a timing run"),
        (["--seed", "0"], "--seed: not used by a timing run"),
        (["--trace", ""], "--trace needs a file name"),
        (["--functional", "--trace", "out.json"], "--trace: not used by a functional run"),
        (["--functional", "--hw-override", "pcus=8"], "--hw-override: not used by a functional"),
    ],
)
def test_rdu_sim_refuses_options_its_mode_ignores(capsys, tmp_path, argv, message):
    path = tmp_path / "tiny.json"
    path.write_bytes(encode_program(compiled("tiny-llama", **TINY)))
    trace = tmp_path / "out.json"
    trace.write_text("kept")
    argv = [str(trace) if a == "out.json" else a for a in argv]
    code, out, err = _run(capsys, rdu_sim.main, path, *argv)
    assert code == 1 and not out and message in err, err
    assert trace.read_text() == "kept"


def test_deeply_nested_config(capsys, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"vocab_size": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, err = _run(capsys, rdu_import.main, config)
    assert code == 1 and "nested too deeply" in err, err


def test_layer_counts_are_bounded(capsys, tmp_path):
    config = read_config_dict("tiny-llama")
    config["num_hidden_layers"] = 10**9
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, _, err = _run(capsys, rdu_import.main, path)
    assert code == 1 and "num_hidden_layers: 1000000000 decoder layers; at most 1024" in err
    for main in (rdu_import.main, rdu_run.main):
        code, _, err = _run(capsys, main, "tiny-llama", "--layers", "99999999999999999999")
        assert code == 1 and "at most 1024 are supported" in err, err


def test_config_floats_fit_f32(capsys, tmp_path):
    # rope_theta 1e308 became an f32 attribute: OverflowError in xDSL.
    config = read_config_dict("tiny-mixtral")
    config["rope_theta"] = 1e308
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, _, err = _run(capsys, rdu_import.main, path)
    assert code == 1 and "rope_theta: must fit a 32-bit float" in err, err


def test_expert_counts_are_bounded(capsys, tmp_path):
    # 10^20 experts hung: the parameter count enumerated every expert's tensors.
    config = read_config_dict("tiny-mixtral")
    config["num_local_experts"] = 10**20
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, _, err = _run(capsys, rdu_import.main, path, "--stats")
    assert code == 1 and f"{10**20} experts; at most 1024 are supported" in err, err


@pytest.mark.parametrize("extra", [[], ["--stats"]])
def test_a_step_no_system_holds_is_refused(capsys, tmp_path, extra):
    out_file = tmp_path / "step.mlir"
    out_file.write_text("kept")
    code, out, err = _run(
        capsys,
        rdu_import.main,
        "tiny-llama",
        "--batch",
        "99999999999999999999",
        "-o",
        out_file,
        *extra,
    )
    assert code == 1 and not out
    assert "more than the largest sn40l system holds (16 sockets" in err, err
    assert out_file.read_text() == "kept"


def test_deeply_nested_program(capsys, tmp_path):
    path = tmp_path / "program.json"
    path.write_text('{"format": "rdu-program", "version": 1, "x": ' + "[" * 5000 + "]" * 5000 + "}")
    code, _, err = _run(capsys, rdu_sim.main, path)
    assert code == 1 and "JSON nested too deeply to be a program" in err, err
