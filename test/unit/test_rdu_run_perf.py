"""`rdu-run` for performance work: sweeps (JSON rows, CSV), charts, the trace, hardware options,
generation timing, per-kernel / per-op breakdowns, text prompts through a tokenizer, model-folder
checkpoints, and the options a mode would ignore (refused)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
from collections import defaultdict
from pathlib import Path

import pytest

from rdu_compiler.frontend.config import load_model_config, preset_path
from rdu_compiler.simulator.plots import SIZE
from rdu_compiler.simulator.weights import RandomWeights, save_safetensors
from rdu_compiler.tools.rdu_run import main

MODEL = ("tiny-llama", "--context", "32")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# -- sweeps -------------------------------------------------------------------------------------


def test_sweep_rows_csv_and_chart(capsys, tmp_path):
    """Lists make a sweep over their product, looped and unlooped: one row per case and
    variant, the same rows as JSON and CSV; TPOT and tokens/s in one vocabulary."""
    chart, table = tmp_path / "sweep.png", tmp_path / "sweep.csv"
    argv = ("tiny-llama", "--batch", "1,4", "--context", "16,32", "--json")
    rows = json.loads(ok(capsys, *argv, "--csv", table, "--plot", chart))
    assert [(r["batch"], r["context"], r["looping"]) for r in rows] == [
        (b, c, v) for b in (1, 4) for c in (16, 32) for v in ("looped", "unlooped")
    ]
    for r in rows:
        assert r["tokens_per_s"] == pytest.approx(r["batch"] / r["tpot_ms"] * 1e3)
        shares = r["bound_shares"]
        assert sum(shares.values()) == pytest.approx(r["tpot_ms"])
        above = sum(r["time_breakdown"].values())
        assert r["memory_roofline_ms"] + above == pytest.approx(r["tpot_ms"])
        assert r["bound"] in ("memory", "compute", "latency")
        assert 0 < r["roofline_fraction"] <= 1
    lines = list(csv.DictReader(io.StringIO(table.read_text())))
    assert len(lines) == len(rows)
    assert float(lines[3]["tpot_ms"]) == pytest.approx(rows[3]["tpot_ms"])
    assert "time_breakdown.launch" in lines[0] and "bound_shares.memory_ms" in lines[0]
    assert png_size(chart) == SIZE and chart.stat().st_size > 10_000
    text = ok(capsys, "tiny-llama", "--batch", "1,4", "--context", "16")
    assert "TPOT ms" in text and "tokens/s" in text and text.count("unlooped") == 2


# -- one run: breakdown, trace, chart -----------------------------------------------------------


def test_breakdown_per_kernel_and_op(capsys):
    report = json.loads(ok(capsys, *MODEL, "--json"))
    assert report.keys() >= {"timing", "breakdown"} and "prompt" not in report
    for variant, breakdown in report["breakdown"].items():
        step = report["timing"][variant]["ms_per_token"]
        kernels = breakdown["kernels"]
        assert sum(k["total_ms"] for k in kernels) == pytest.approx(step)
        for k in kernels:
            parts = k["memory_ms"] + k["compute_ms"] + k["latency_ms"]
            assert parts == pytest.approx(k["total_ms"]) and k["bound"] in (
                "memory",
                "compute",
                "latency",
            )
        ops = {o["op"] for o in breakdown["ops"]}  # attention may be mapped as partials
        assert ops >= {"linear", "load"} and any(o.startswith("attention") for o in ops)
    calls = {v: sum(k["calls"] for k in b["kernels"]) for v, b in report["breakdown"].items()}
    # unlooped: embed, 4 layers, lm_head; looped: one launch (embed, the loop, lm_head)
    assert calls == {"looped": 1, "unlooped": 6}
    text = ok(capsys, *MODEL)
    assert "per kernel" in text and "per op" in text and "decoder_layer" in text


def test_trace_is_chrome_trace_format_with_nested_tracks(capsys, tmp_path):
    """Every event has the fields of its phase; complete events on one track (pid, tid) nest
    (each starts after the previous one ended, or ends within it): Perfetto's rule."""
    trace = tmp_path / "trace.json"
    ok(capsys, *MODEL, "--trace", trace)
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert any(n.startswith("looped, software launch") for n in names)
    assert any(n.startswith("unlooped, software launch") for n in names)
    tracks = defaultdict(list)
    for e in events:
        assert e["ph"] in ("X", "M", "b", "e", "n", "C", "i"), e
        assert isinstance(e["pid"], int) and isinstance(e["name"], str)
        if e["ph"] == "X":
            assert e["dur"] >= 0 and e["ts"] >= 0 and isinstance(e["tid"], int)
            tracks[e["pid"], e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    assert tracks
    # async spans (overlapping loop trips): every begin has its end, ids unique in the trace
    began: dict[tuple[str, int], tuple[int, float]] = {}
    for e in events:
        if e["ph"] == "b":
            assert (e["cat"], e["id"]) not in began, e
            began[e["cat"], e["id"]] = (e["pid"], e["ts"])
        elif e["ph"] == "e":
            pid, ts = began[e["cat"], e["id"]]
            assert pid == e["pid"] and ts <= e["ts"] + 1e-6
    assert began and len({pid for pid, _ in began.values()}) == 2
    eps = 1e-6
    for track, spans in tracks.items():
        open_spans: list[tuple[float, float, str]] = []
        for start, end, name in sorted(spans, key=lambda s: (s[0], -s[1])):
            while open_spans and start >= open_spans[-1][1] - eps:
                open_spans.pop()
            assert not open_spans or end <= open_spans[-1][1] + eps, (track, name)
            open_spans.append((start, end, name))


def test_per_layer_chart(capsys, tmp_path):
    chart = tmp_path / "layers.png"
    ok(capsys, *MODEL, "--plot", chart)
    assert png_size(chart) == SIZE and chart.stat().st_size > 10_000


# -- hardware ----------------------------------------------------------------------------------


def test_hardware_file_overrides_and_printout(capsys, tmp_path):
    text = ok(capsys, "--print-hardware")
    assert "hbm_bandwidth" in text and "source:" in text and "parameter:" in text
    spec = json.loads(ok(capsys, "--print-hardware", "--json"))
    spec.update(name="fast-hbm", hbm_bandwidth=spec["hbm_bandwidth"] * 4)
    spec["provenance"]["hbm_bandwidth"] = {"origin": "override", "note": "4x, a what-if"}
    hw = tmp_path / "fast.json"
    hw.write_text(json.dumps(spec))

    def tpot(*argv):
        argv = ("llama-3.2-1b", "--context", "256", "--no-kernel-looping", "--json", *argv)
        report = json.loads(ok(capsys, *argv))
        return report["timing"]["unlooped"]["ms_per_token"], report["hardware"]

    base, name = tpot()
    faster, fast_name = tpot("--hardware", hw)
    overridden, _ = tpot("--hw-override", f"hbm_bandwidth={spec['hbm_bandwidth']}")
    assert (name, fast_name) == ("sn40l", "fast-hbm")
    assert faster < base / 2 and overridden == pytest.approx(faster)
    code, _, err = run(capsys, *MODEL, "--hardware", tmp_path / "none.json")
    assert code == 1 and "is neither a preset (sn40l) nor a file" in err


def test_list_models_and_version(capsys):
    models = ok(capsys, "--list-models")
    assert "llama-3.1-8b" in models and "tiny-mixtral" in models and "max positions" in models
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and "rdu-compiler" in capsys.readouterr().out


def test_help_has_examples_and_says_what_timing_means(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "ONE steady-state decode step" in text and "TPOT" in text


# -- generation timing -------------------------------------------------------------------------


def test_generation_timing_as_the_cache_grows(capsys):
    report = json.loads(ok(capsys, "tiny-llama", "--generate", "4", "--prompt", "1,2,3", "--json"))
    assert report["prompt_tokens"] == 3 and report["generate"] == 4 and report["context"] == 7
    for g in report["generation"].values():
        assert len(g["step_ms"]) == 4
        assert g["total_ms"] == pytest.approx(sum(g["step_ms"]))
        assert min(g["step_ms"]) <= g["tpot_p50_ms"] <= g["tpot_p99_ms"] <= max(g["step_ms"])
        # a longer cache is never meaningfully faster (the allocation plans each length's
        # attention blocks anew, which moves a step by well under 1%)
        assert all(b >= 0.99 * a for a, b in zip(g["step_ms"], g["step_ms"][1:], strict=False))
    looped, unlooped = (
        report["generation"][f"{v}, software launch"] for v in ("looped", "unlooped")
    )
    assert looped["total_ms"] < unlooped["total_ms"]


# -- what a mode would ignore is refused -------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--weights", "x"], "--weights: a timing run computes no numbers"),
        (["--steps", "3"], "--steps: a timing run computes no numbers"),
        (["--prompt", "1,2"], "--prompt: a timing run computes no numbers"),
        (["--functional", "--trace", "t.json"], "--trace: only timing runs take these"),
        (["--functional", "--batch", "1,2"], "a run that computes numbers takes one value"),
        (["--batch", "1,2", "--trace", "t.json"], "--trace times one case"),
        (["--engine", "reference", "--hw-override", "pcus=10"], "--hw-override: only the sim"),
        (["--functional", "--prompt", "hello world"], "is text, and tiny-llama has no tokenizer"),
        (["--batch", "1,x"], "expected an integer or a comma-separated list"),
    ],
)
def test_ignored_options_are_refused(capsys, argv, message):
    code, out, err = run(capsys, "tiny-llama", *argv)
    assert code == 1 and not out and message in err and err.count("\n") == 1, err


# -- model folders: checkpoint and tokenizer ----------------------------------------------------


def _model_folder(tmp_path: Path, extra: dict | None = None, drop: str | None = None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    shutil.copy(preset_path("tiny-llama"), folder / "config.json")
    seeded = RandomWeights(7)
    tensors = {
        t.name: seeded.get(t.name, t.shape)
        for t in load_model_config("tiny-llama").checkpoint_tensors()
        if t.name != drop
    }
    save_safetensors(folder, {**tensors, **(extra or {})})
    return folder


def _tokenizer(vocab: int) -> object:
    """A tiny word-level tokenizer built here (no download): ids below the model's vocab."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "hello", "world", "the", "cat", "sat"] + [f"w{i}" for i in range(vocab - 6)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def test_model_folder_checkpoint_and_text_prompt(capsys, tmp_path):
    """`rdu-run DIR`: DIR's checkpoint is used (and named), its tokenizer.json reads a text
    prompt and decodes the output; the same ids given as numbers give the same tokens; the
    tokens equal a run with the checkpoint's seed."""
    folder = _model_folder(tmp_path)
    tokenizer = _tokenizer(256)
    tokenizer.save(str(folder / "tokenizer.json"))
    argv = (folder, "--functional", "--context", "16", "--steps", "3")
    report = json.loads(ok(capsys, *argv, "--prompt", "hello the cat", "--json"))
    assert report["prompt"] == [1, 3, 4] == tokenizer.encode("hello the cat").ids
    assert report["weights"].startswith("checkpoint")
    assert report["text"] == [tokenizer.decode(report["tokens"][0], skip_special_tokens=False)]
    by_ids = json.loads(ok(capsys, *argv, "--prompt", "1,3,4", "--json"))
    seeded = json.loads(ok(capsys, *argv, "--prompt", "1,3,4", "--json", "--seed", "7"))
    assert report["tokens"] == by_ids["tokens"] == seeded["tokens"]
    text = ok(capsys, *argv, "--prompt", "hello the cat")
    assert text.splitlines()[0].startswith("model: sim engine, checkpoint")
    assert f"text: {report['text'][0]}" in text
    # --tokenizer PATH works for a preset too
    other = json.loads(
        ok(
            capsys,
            "tiny-llama",
            "--functional",
            "--context",
            "16",
            "--steps",
            "1",
            "--prompt",
            "sat",
            "--tokenizer",
            folder / "tokenizer.json",
            "--json",
        )
    )
    assert other["prompt"] == [5]


def test_checkpoint_missing_tensors_is_an_error_unused_a_warning(capsys, tmp_path):
    import numpy as np

    missing = _model_folder(tmp_path / "a", drop="model.norm.weight")
    code, out, err = run(capsys, missing, "--functional", "--context", "8", "--steps", "1")
    assert code == 1 and "lacks 1 tensor(s) model needs: model.norm.weight" in err
    extra = _model_folder(
        tmp_path / "b", extra={"model.layers.0.self_attn.q_proj.bias": np.zeros(64, np.float32)}
    )
    code, out, err = run(capsys, extra, "--functional", "--context", "8", "--steps", "1")
    assert code == 0 and "generated:" in out
    assert "warning: checkpoint" in err and "model.layers.0.self_attn.q_proj.bias" in err


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from rdu_compiler.tools.cli import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        with Progress(4) as progress:
            progress.advance("case one")
            progress.advance("case two")
        text = stream.getvalue()
        assert ("[#####---------------] 2/4 case two" in text) is shown  # 1 of 4 done
        assert bool(text) is shown


def test_sensitivity_chart(tmp_path):
    """bench/sensitivity.py's chart: one panel per parameter, a line per case."""
    from rdu_compiler.simulator.plots import plot_sensitivity

    table = {
        "launch_software_s": [
            ("x0", {"8b/1": 1.0, "8b/8": 1.2}),
            ("x1", {"8b/1": 1.1, "8b/8": 1.5}),
        ],
        "p2p_topology": [
            ("switch", {"8b/1": 1.1, "8b/8": 1.5}),
            ("ring", {"8b/1": 1.1, "8b/8": 1.3}),
        ],
    }
    chart = tmp_path / "sensitivity.png"
    chart.write_bytes(plot_sensitivity(table, {"8b/1": 1.1, "8b/8": 1.5}))
    assert png_size(chart) == SIZE and chart.stat().st_size > 10_000
    assert chart.read_bytes() == plot_sensitivity(
        table, {"8b/1": 1.1, "8b/8": 1.5}
    )  # deterministic


def test_readme_is_self_contained_and_its_checkpoint_example_runs(capsys, tmp_path):
    """The README names no file a clone lacks, and its `--weights ./ckpt/` example has a way
    to make `./ckpt` (examples/make_model_folder.py), whose weights are `--seed`'s."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    for doc in (root / "README.md", *(root / "docs").glob("*.md")):
        assert "../shared" not in doc.read_text() and "/work/shared" not in doc.read_text(), doc
    readme = (root / "README.md").read_text()
    assert "python examples/make_model_folder.py tiny-qwen2 ./ckpt --seed 3" in readme
    ckpt = tmp_path / "ckpt"
    maker = root / "examples" / "make_model_folder.py"
    subprocess.run([sys.executable, maker, "tiny-qwen2", ckpt, "--seed", "3"], check=True)
    argv = ("tiny-qwen2", "--engine", "reference", "--context", "16", "--steps", "3", "--json")
    from_folder = json.loads(ok(capsys, *argv, "--weights", ckpt))
    seeded = json.loads(ok(capsys, *argv, "--seed", "3"))
    assert (
        from_folder["weights"].startswith("checkpoint")
        and from_folder["tokens"] == seeded["tokens"]
    )
