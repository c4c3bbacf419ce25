"""rdu-opt's string-literal rule: the same literals as xDSL's, without its exponential
backtracking on an unterminated literal (a hang found by fuzzing)."""

from __future__ import annotations

import re
import time

from hypothesis import given
from hypothesis import strategies as st

from rdu_compiler.tools import lexer_fix, rdu_opt, rdu_sim

_UPSTREAM = re.compile(lexer_fix._UPSTREAM_RULE)
# Upstream doubles its time with each character: 29 took over 100 s, so the 40 and more of
# these inputs would take days. A run under a minute (imports included, on a loaded
# machine) is the linear rule.
HANG = 60


def test_unterminated_string_is_refused_quickly(tmp_path, capsys):
    # The minimized reproducer: 29 characters after the quote took over 100 s upstream.
    source = tmp_path / "unterminated.mlir"
    source.write_text(
        'builtin.module {\nllm.param @w "model.layers.0.mlp.up_proj.weight.' + "x" * 40
    )
    start = time.monotonic()
    assert rdu_opt.main([str(source)]) == 1
    assert time.monotonic() - start < HANG
    err = capsys.readouterr().err
    assert "End of file reached before closing string literal." in err
    assert "Traceback" not in err


def test_every_tool_that_parses_ir_has_the_rule(tmp_path, capsys):
    # rdu-sim (and rdu-run) read .mlir decode steps through the same parser as rdu-opt.
    source = tmp_path / "step.mlir"
    source.write_text('builtin.module {\nllm.param @w "model.layers.0.mlp.up_proj' + "x" * 40)
    start = time.monotonic()
    assert rdu_sim.main([str(source)]) == 1
    assert time.monotonic() - start < HANG
    assert "End of file reached before closing string literal." in capsys.readouterr().err


@given(st.text(alphabet='ab"\\\n\t0F9nx', max_size=12))
def test_linear_rule_matches_what_upstream_matches(body):
    # Terminated candidates only (upstream is exponential on the others); 12 characters
    # keep upstream fast.
    text = '"' + body + '"'
    upstream, linear = _UPSTREAM.match(text), lexer_fix._LINEAR_RULE.match(text)
    assert (upstream and upstream.end()) == (linear and linear.end())
