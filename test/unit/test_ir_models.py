"""IR files as models: `rdu-run` (reference engine, simulator timing and --functional) and
`rdu-sim` take an `.mlir` decode step at every stage from `llm` down (as rdu-import prints it,
outlined, kernel-looped, sharded) and compute exactly what they compute for the model itself;
bad IR gets one located line, never a traceback."""

from __future__ import annotations

import json
from functools import cache
from io import StringIO

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.printer import Printer
from xdsl.transforms.canonicalize import CanonicalizePass

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.lowering.lower_dfk_to_rdu import LowerDfkToRdu
from rdu_compiler.passes.kernel_looping import KernelLooping
from rdu_compiler.passes.outline_kernels import OutlineKernels
from rdu_compiler.passes.shard_tensor_parallel import ShardTensorParallel
from rdu_compiler.tools import rdu_run, rdu_sim

MODEL, LAYERS, CONTEXT = "tiny-llama", 2, 16
RUN = ["--prompt", "3,10", "--steps", "3", "--seed", "2", "--json"]
STAGES = {
    "llm": [],
    "dfk": [OutlineKernels()],
    "looped": [OutlineKernels(), KernelLooping(), CanonicalizePass()],
    "sharded": [OutlineKernels(), KernelLooping(), CanonicalizePass(), ShardTensorParallel(2)],
}


@cache
def _text(stage: str) -> str:
    module = build_decode_step(load_model_config(MODEL, layers=LAYERS), context=CONTEXT)
    for p in STAGES[stage]:
        p.apply(Context(), module)
    out = StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue() + "\n"


def _file(tmp_path, stage: str, text: str | None = None) -> str:
    path = tmp_path / f"{stage}.mlir"
    path.write_text(_text(stage) if text is None else text)
    return str(path)


def _tool(capsys, main, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys, main, *argv: str) -> dict:
    code, out, err = _tool(capsys, main, *argv)
    assert code == 0, err
    return json.loads(out)


def _logits(capsys, tmp_path, main, name: str, *argv: str) -> tuple[list, np.ndarray]:
    path = tmp_path / f"{name}.npy"
    tokens = _json(capsys, main, *argv, *RUN, "--logits-out", str(path))["tokens"]
    return tokens, np.load(path)


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_runs_as_the_model_does(capsys, tmp_path, stage):
    sockets = ["--sockets", "2"] if stage == "sharded" else []
    model = [MODEL, "--layers", str(LAYERS), "--context", str(CONTEXT), *sockets]
    path = _file(tmp_path, stage)
    for engine in (["--engine", "reference"], ["--functional"]):
        want = _logits(capsys, tmp_path, rdu_run.main, "model", *model, *engine)
        got = _logits(capsys, tmp_path, rdu_run.main, "file", path, *engine)
        assert got[0] == want[0]
        assert np.array_equal(got[1], want[1]), f"{stage} {engine}: logits differ"
    code, out, err = _tool(capsys, rdu_run.main, path)  # the table
    assert code == 0 and "looped" in out, err
    report = _json(capsys, rdu_run.main, path, "--json")
    assert report["context"] == CONTEXT and report["sockets"] == (2 if sockets else 1)
    timing = report["timing"]
    assert timing["looped"]["ms_per_token"] > 0
    # a looped file has no unlooped form to compare with: that column is absent, not faked
    assert (timing["unlooped"] is None) == (stage in ("looped", "sharded"))
    sim = _json(capsys, rdu_sim.main, path, "--functional", *RUN)
    assert sim["tokens"] == want[0] and sim["sockets"] == (2 if sockets else 1)
    assert _json(capsys, rdu_sim.main, path, "--json")["ms_per_token"] > 0


def test_options_the_file_fixes_are_refused(capsys, tmp_path):
    llm = _file(tmp_path, "llm")
    looped = _file(tmp_path, "looped")
    sharded = _file(tmp_path, "sharded")
    for argv, says in (
        ([llm, "--batch", "2"], "--batch 2: "),
        ([llm, "--context", "32"], "--context 32: "),
        ([llm, "--layers", "1"], "--layers: "),
        ([llm, "--dtype", "f32"], "--dtype f32: "),
        ([sharded, "--sockets", "4"], "--sockets 4: "),
        ([looped, "--no-kernel-looping"], "kernel-looped already"),
    ):
        code, out, err = _tool(capsys, rdu_run.main, *argv)
        assert code == 1 and not out and says in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "old, new, where, says",
    [
        (  # verifier: a weight read with another param's type
            "%q_proj = llm.weight @model.layers.0.self_attn.q_proj.weight",
            "%q_proj = llm.weight @model.layers.0.self_attn.k_proj.weight",
            "%q_proj = llm.weight",
            "'llm.weight' op @model.layers.0.self_attn.k_proj.weight has type",
        ),
        (  # the lowering's contract: the K cache returned permuted
            "dfk.stack %kc_1, %kc_3",
            "dfk.stack %kc_3, %kc_1",
            "func.return",
            "lower-dfk-to-rdu: ",
        ),
    ],
    ids=["verifier", "lowering-contract"],
)
def test_bad_ir_is_located(capsys, tmp_path, old, new, where, says):
    text = _text("llm")
    assert old in text
    edited = text.replace(old, new)
    line = next(i for i, t in enumerate(edited.splitlines(), 1) if where in t)
    path = _file(tmp_path, "bad", edited)
    runs = [(rdu_sim.main, ["--functional"]), (rdu_run.main, ["--functional"])]
    if "verifier" in says or "llm.weight" in says:
        runs.append((rdu_run.main, ["--engine", "reference"]))
    for main, argv in runs:
        code, out, err = _tool(capsys, main, path, *argv)
        assert code == 1 and not out, err
        assert f"{path}:{line}:" in err and says in err and err.count("\n") == 1, err


def test_unparsable_and_lowered_ir_are_refused(capsys, tmp_path):
    path = _file(tmp_path, "junk", "builtin.module {\n  foo.bar\n}\n")
    code, _, err = _tool(capsys, rdu_run.main, path)
    assert code == 1 and f"{path}:2:" in err and err.count("\n") == 1, err
    module = build_decode_step(load_model_config(MODEL, layers=LAYERS), context=CONTEXT)
    for p in (*STAGES["looped"], LowerDfkToRdu()):
        p.apply(Context(), module)
    out = StringIO()
    Printer(stream=out).print_op(module)
    lowered = _file(tmp_path, "lowered", out.getvalue())
    code, _, err = _tool(capsys, rdu_sim.main, lowered)
    assert code == 1 and "already lowered to the rdu dialect" in err, err
