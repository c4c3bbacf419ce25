"""`rdu-serve SPEC`: the description's validation (one located line, exit 1), deterministic
output, the report's keys and the GPU baselines beside the node, functional mode's tokens
against each expert run alone through the llm-level reference, and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine
from rdu_compiler.simulator.weights import RandomWeights
from rdu_compiler.tools.cli import decode_loop
from rdu_compiler.tools.coe_spec import load_spec
from rdu_compiler.tools.rdu_serve import KEYS, main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "coe" / "tiny-coe.yaml"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def reference_tokens(config, seed: int, prompt: list[int], steps: int, context: int):
    """The expert alone: the llm-level reference with its own weights."""
    engine = ReferenceEngine(
        build_decode_step(config, batch=1, context=context), RandomWeights(seed)
    )
    caches = list(engine.new_caches())

    def step(tokens, positions):
        logits, next_tokens, *caches[:] = engine.step(tokens, positions, *caches)
        return logits, next_tokens

    return decode_loop(step, prompt, steps, 1)


def test_timing_report_has_the_keys_and_is_deterministic(capsys):
    code, out, err = run(capsys, TINY, "--json")
    assert code == 0, err
    report = json.loads(out)
    for key in KEYS:
        assert report[key] is not None, key
        for baseline in ("dgx-h100", "dgx-a100"):
            assert report["baselines"][baseline][key] is not None, (baseline, key)
    assert report["requests"] == 8 and report["experts"] == 4
    # 3 llama experts share one program (one architecture), the qwen expert has its own
    assert set(report["rdu"]["architectures"]) == {"tiny-llama", "tiny-qwen2"}
    assert report["rdu"]["architectures"]["tiny-llama"]["experts"] == 3
    assert 0 <= report["hbm_hit_rate"] <= 1 and report["switches"] >= 1
    assert report["tpot_ms_p50"] <= report["tpot_ms_p99"]
    assert report["request_ms_p50"] <= report["request_ms_p99"]
    assert run(capsys, TINY, "--json")[1] == out
    assert run(capsys, TINY, "--json", "--seed", "5")[1] != out
    code, text, _ = run(capsys, TINY, "--requests", "3")
    assert code == 0 and "3 requests" in text and "dgx-h100" in text


def test_plot_is_written(capsys, tmp_path):
    chart = tmp_path / "latency.png"
    code, _, err = run(capsys, TINY, "--plot", chart, "--requests", "4")
    assert code == 0, err
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_functional_tokens_equal_each_expert_alone_and_the_router_decides(capsys):
    code, out, err = run(capsys, TINY, "--functional", "--json")
    assert code == 0, err
    report = json.loads(out)
    spec = load_spec(str(TINY))
    experts = {e.name: e for e in spec.experts}
    router = spec.router
    longest = max(r["prompt"].__len__() for r in report["requests"])
    assert len(report["requests"]) == 8
    for served in report["requests"]:
        expert = experts[served["expert"]]
        expected, _ = reference_tokens(
            expert.config, expert.seed, served["prompt"], len(served["tokens"]), spec.context
        )
        assert served["tokens"] == expected[0], served
        # the router model, run alone, picks the same expert
        _, logits = reference_tokens(router.config, router.seed, served["prompt"], 1, longest)
        chosen = int(np.argmax(np.asarray(logits, np.float32)[0, : len(spec.experts)]))
        assert spec.experts[chosen].name == served["expert"]


def test_functional_with_a_trace_file_uses_one_program_per_architecture(capsys, tmp_path):
    trace = tmp_path / "trace.jsonl"
    rows = [
        {"arrival_s": 0.1 * i, "expert": name, "prompt_tokens": 3, "output_tokens": 4}
        for i, name in enumerate(["qwen", "llama-000", "llama-002", "llama-000", "qwen"])
    ]
    rows[0]["prompt"] = [9, 8, 7]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "coe.yaml"
    spec.write_text(
        TINY.read_text()
        .replace("  model: tiny-llama\n  seed: 99\n", "  policy: trace\n  cost_ms: 1.5\n")
        .split("trace:\n")[0]
        + f"trace:\n  file: {trace.name}\n"
    )
    code, out, err = run(capsys, spec, "--functional", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [r["expert"] for r in report["requests"]] == [r["expert"] for r in rows]
    assert report["requests"][0]["prompt"] == [9, 8, 7]
    # two architectures, two programs; llama-000 -> llama-002 -> llama-000 rebinds twice
    assert report["programs"] == 2 and report["switches"] == 2
    experts = {e.name: e for e in load_spec(str(spec)).experts}
    for served in report["requests"]:
        e = experts[served["expert"]]
        expected, _ = reference_tokens(e.config, e.seed, served["prompt"], 4, 32)
        assert served["tokens"] == expected[0]
    code, out, err = run(capsys, spec, "--json")
    assert code == 0, err
    assert json.loads(out)["router_ms_mean"] == pytest.approx(1.5)


BAD_SPECS = [
    ("experts: []\n", "1:10: experts must be a non-empty list"),
    (
        "experts:\n  - {name: a, model: tiny-llama, colour: red}\n",
        "2:42: experts[0]: unknown key 'colour'",
    ),
    ("experts:\n  - {name: a, model: no-such-model}\n", "2:22: experts[0].model:"),
    (
        "experts:\n  - {name: a, model: tiny-llama, count: 2, weights: x}\n",
        "experts[0].weights: experts with count > 1 are seeded",
    ),
    (
        "experts:\n  - {name: a, model: tiny-llama}\nrouter: {policy: trace, model: tiny-llama}\n",
        "3:9: router: give a model",
    ),
    (
        "experts:\n  - {name: a, model: tiny-llama}\ncache: {policy: fifo}\n",
        "3:17: cache.policy: must be one of lru, popularity, got 'fifo'",
    ),
    (
        "experts:\n  - {name: a, model: tiny-llama}\nserving: {context: 100000}\n",
        "serving.context: 100000 exceeds the experts' max_position_embeddings (128)",
    ),
    (
        "experts:\n  - {name: a, model: tiny-llama}\ntrace: {prompt_tokens: [8, 4]}\n",
        "trace.prompt_tokens: must be a token count >= 1 or [min, max], got a list",
    ),
    (
        "experts:\n  - {name: a, model: tiny-llama}\n"
        "serving: {context: 16}\ntrace: {prompt_tokens: 10, output_tokens: 10}\n",
        "trace.output_tokens: the longest request needs 19 cache rows",
    ),
    (
        "experts:\n  - {name: a, model: tiny-llama}\n  - {name: a, model: tiny-llama}\n",
        "two experts are named 'a'",
    ),
    ("experts: [\n", "not YAML"),
    (
        "node: {sockets: 0}\nexperts: [{name: a, model: tiny-llama}]\n",
        "1:17: node.sockets: must be an integer >= 1, got 0",
    ),
]


@pytest.mark.parametrize("text, message", BAD_SPECS)
def test_bad_descriptions_get_one_located_line(capsys, tmp_path, text, message):
    spec = tmp_path / "coe.yaml"
    spec.write_text(text)
    code, out, err = run(capsys, spec)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"{spec}:") and ": error: " in err
    assert message in err.replace(": error: ", ": ", 1), err


def test_json_descriptions_and_their_syntax_errors(capsys, tmp_path):
    spec = tmp_path / "coe.json"
    spec.write_text(
        '{"experts": [{"name": "a", "model": "tiny-llama"}],\n'
        ' "trace": {"requests": 2, "prompt_tokens": 2, "output_tokens": 2}}\n'
    )
    code, out, err = run(capsys, spec, "--json")
    assert code == 0, err
    assert json.loads(out)["requests"] == 2
    spec.write_text('{"experts": [\n  {"name": "a",}\n]}\n')
    code, _, err = run(capsys, spec)
    assert code == 1 and err.startswith(f"{spec}:2:") and "not JSON" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--requests", "0"], "argument --requests: must be >= 1"),
        (["--plot", "chart.svg"], "the chart is a PNG"),
        (["--functional", "--policy", "lru"], "--policy times the node: drop it with --functional"),
    ],
)
def test_cli_errors(capsys, argv, message):
    code, out, err = run(capsys, TINY, *argv)
    assert code == 1 and out == "" and message in err and err.count("\n") == 1


def test_a_missing_description_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path / "none.yaml")
    assert code == 1 and "cannot read" in err and err.count("\n") == 1


def test_the_node_is_priced_from_the_compiled_program(capsys):
    from rdu_compiler.lowering.pipeline import compile_program
    from rdu_compiler.simulator.hardware import get_preset
    from rdu_compiler.simulator.numerics import bytes_of
    from rdu_compiler.simulator.timing import simulate

    code, out, err = run(capsys, TINY, "--json", "--requests", "2")
    assert code == 0, err
    arch = json.loads(out)["rdu"]["architectures"]["tiny-llama"]
    preset = get_preset("sn40l")
    program = compile_program("tiny-llama", context=32)
    assert arch["step_ms_at_context"] == pytest.approx(simulate(program, preset).step_s * 1e3)
    weights = sum(bytes_of(t.shape, t.dtype) for t in program.tensors if t.kind == "weight")
    assert arch["expert_bytes"] == weights
    rate = preset.ddr_bandwidth * preset.ddr_efficiency
    assert arch["switch_ms"] == pytest.approx(weights / rate * 1e3)


def test_experts_of_interleaved_architectures_keep_their_own_sizes(capsys, tmp_path):
    (tmp_path / "t.jsonl").write_text(
        '{"arrival_s": 0, "expert": "q", "prompt_tokens": 2, "output_tokens": 2}\n'
    )
    spec = tmp_path / "coe.yaml"
    spec.write_text(
        "experts:\n  - {name: a, model: tiny-llama}\n  - {name: q, model: tiny-qwen2}\n"
        "  - {name: b, model: tiny-llama}\nserving: {context: 8}\ntrace: {file: t.jsonl}\n"
        "baselines: []\n"
    )
    code, out, err = run(capsys, spec, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["rdu"]["architectures"]["tiny-llama"]["experts"] == 2
    qwen = report["rdu"]["architectures"]["tiny-qwen2"]["expert_bytes"]
    assert (
        report["bytes_per_tier"]["ddr"]["read"]
        == qwen
        != (report["rdu"]["architectures"]["tiny-llama"]["expert_bytes"])
    )
