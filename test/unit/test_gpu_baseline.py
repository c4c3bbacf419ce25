"""`rdu-run --gpu`: the GPU baseline's workload is the compiler's figures, the model lands on the
H200 measurements of ANCHORS.md, and the CLI prints and refuses what it should."""

from __future__ import annotations

import json

import pytest

from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.gpu_node import GPU_NODES
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.program import Launch
from rdu_compiler.simulator.report import bounds
from rdu_compiler.tools.gpu_baseline import decode_workload
from rdu_compiler.tools.rdu_run import main

# ANCHORS.md, "GPU decode, measured": one H200 (4.8 TB/s, 141 GB), Llama-3.1-8B shape, bf16,
# 4,096 tokens, torch.compile + CUDA graph
H200_BATCH1_MS, H200_BATCH8_MS, H200_BATCH1_BYTES = 5.5, 6.4, 15.55e9


def h200_like():
    """A one-GPU node with the H200's memory (used only here): the GPU the measurements ran on
    (compute peak and launch gap as the H100's, the same Hopper chip)."""
    return GPU_NODES["dgx-h100"].replace(
        gpus=1, hbm_bandwidth=4.8e12, hbm_bytes_per_gpu=141 * 10**9
    )


def test_h200_measurements():
    """Batch 1 calibrated the decode efficiency (58.8% / 95% busy), so landing within 5% checks
    the assembly: the compiler's bytes and kernel count against the measured run's. Batch 8 is
    held out: a prediction, within 10%."""
    config = load_model_config("llama-3.1-8b")
    node = h200_like()
    one = decode_workload(config, batch=1, context=4096, dtype="bf16", tensor_parallel=1)
    assert one.weight_bytes + one.kv_bytes_per_step == pytest.approx(H200_BATCH1_BYTES, rel=1e-3)
    assert 0.8 * 643 < one.kernels_per_step < 1.2 * 643  # torch.compile's 643 kernels/step
    assert node.decode_step_s(one) * 1e3 == pytest.approx(H200_BATCH1_MS, rel=0.05)
    eight = decode_workload(config, batch=8, context=4096, dtype="bf16", tensor_parallel=1)
    assert node.decode_step_s(eight) * 1e3 == pytest.approx(H200_BATCH8_MS, rel=0.10)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mixtral"])
def test_workload_is_the_compilers(name):
    """One GPU: as many kernels as the unfused program launches, its FLOPs exactly, and the
    bytes of its roofline but the activations its kernels pass through HBM."""
    config = load_model_config(name)
    workload = decode_workload(config, batch=2, context=16, dtype="bf16", tensor_parallel=1)
    program = compile_program(
        config, kernel_looping=False, fusion="op", batch=2, context=16, sockets=1
    )
    bound = bounds(program, get_preset("sn40l"))
    assert workload.kernels_per_step == sum(isinstance(s, Launch) for s in program.schedule)
    assert workload.flops_per_step == bound.flops
    moved = workload.weight_bytes + workload.kv_bytes_per_step
    assert moved < sum(bound.unique_bytes.values()) < 1.25 * moved
    assert (workload.all_reduces_per_step, workload.all_reduce_bytes_per_step) == (0, 0)


def test_collectives_of_the_sharded_step():
    """Two GPUs: an all-reduce after o_proj and after down_proj in every layer ([B, hidden]
    bf16), and the LM head's all-gather of the logits as half an all-reduce of them."""
    config = load_model_config("tiny-llama")
    one = decode_workload(config, batch=2, context=16, dtype="bf16", tensor_parallel=1)
    two = decode_workload(config, batch=2, context=16, dtype="bf16", tensor_parallel=2)
    layers = config.num_layers
    assert two.all_reduces_per_step == 2 * layers + 1
    assert two.all_reduce_bytes_per_step == 2 * layers * 2 * config.hidden_size * 2 + (
        2 * config.vocab_size * 2 // 2
    )
    assert two.kernels_per_step == one.kernels_per_step + 2 * layers + 1
    assert (two.weight_bytes, two.flops_per_step) == (one.weight_bytes, one.flops_per_step)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_and_table(capsys):
    argv = ["tiny-llama", "--gpu", "dgx-h100,dgx-a100", "--gpu-tp", "4", "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    report = json.loads(out)
    assert list(report["gpu"]) == ["dgx-h100", "dgx-a100"]
    looped = report["timing"]["looped"]["ms_per_token"]
    for name, gpu in report["gpu"].items():
        assert (gpu["node"], gpu["gpus"], gpu["tensor_parallel"]) == (name, 8, 4)
        assert gpu["tokens_per_s"] == pytest.approx(1e3 / gpu["ms_per_token"])
        parts = max(gpu["memory_ms"], gpu["compute_ms"]) + gpu["launch_gaps_ms"]
        assert gpu["ms_per_token"] == pytest.approx(parts + gpu["all_reduce_ms"])
        assert gpu["ms_per_token"] >= gpu["roofline_ms"]
        assert (gpu["rdu_variant"], gpu["rdu_sockets"]) == ("looped", 1)
        assert gpu["rdu_speedup"] == pytest.approx(gpu["ms_per_token"] / looped)
    # the A100's slower memory shows even on a tiny model's few bytes
    assert report["gpu"]["dgx-a100"]["memory_ms"] > report["gpu"]["dgx-h100"]["memory_ms"]
    code, out, err = run(capsys, "tiny-llama", "--gpu", "dgx-a100", "--gpu-tp", "2")
    assert code == 0, err
    assert "GPU baseline: one kernel per op" in out
    assert "RDU speedup = GPU step / the simulated RDU step on 1 socket(s)" in out
    lines = {line.split("  ")[1].strip(): line for line in out.splitlines() if "  " in line}
    assert lines["GPUs, tensor parallel"].split()[-1] == "2"
    assert lines["kernels/step"].split()[-1] == "85"  # 76 ops + 8 all-reduces + 1 all-gather


def test_cli_unknown_node(capsys):
    assert main(["tiny-llama", "--gpu", "dgx-b200"]) == 1
    err = capsys.readouterr().err
    assert "unknown GPU node dgx-b200; known: dgx-a100, dgx-h100" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gpu-tp", "2"], "--gpu-tp: give --gpu NODE too"),
        (["--gpu", "dgx-h100", "--gpu-tp", "0"], "argument --gpu-tp: must be >= 1, got 0"),
        (["--gpu", "dgx-h100", "--gpu-tp", "16"], "--gpu-tp 16: dgx-h100 has 8 GPUs"),
        (
            ["--gpu", "dgx-h100", "--gpu-tp", "3"],
            "--gpu on 3 tensor-parallel GPUs: sockets=3 is not",
        ),
        (["--gpu", "dgx-h100"], "--gpu on 8 tensor-parallel GPUs: tiny-llama (4 attention"),
        (["--gpu", "dgx-h100", "--batch", "1,2"], "--gpu times one case: give one --batch"),
        (["--gpu", "dgx-h100", "--generate", "2"], "--gpu times one steady-state step"),
        (["--gpu", "dgx-h100", "--functional"], "--gpu: only timing runs take these"),
        (["--gpu", "dgx-h100", "--engine", "reference"], "--gpu: only the simulator engine"),
    ],
)
def test_cli_refuses(capsys, argv, message):
    code, out, err = run(capsys, "tiny-llama", *argv)
    assert code == 1 and out == ""
    assert err.startswith(f"rdu-run: error: {message}") and len(err.splitlines()) == 1, err
