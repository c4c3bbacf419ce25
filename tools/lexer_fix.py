"""A linear-time string-literal rule for xDSL's MLIR lexer, installed by every tool that
parses IR (`tools.ir_file.LocatingParser`).

xDSL 0.74 lexes a string literal with ``"(?:[^"\\\n\v\f]+|\\(...))*"``: a repeated group
around a repeated character class. On an unterminated literal (``"model.layers.0.mlp.up_p``)
the regex engine tries every way of splitting the characters between the two repetitions
before it gives up, so the time doubles with each character: 1 s at 18 characters after the
quote, over 100 s at 29. The same rule with possessive repetitions (Python >= 3.11) matches
exactly the same literals and fails in linear time. The upstream problem is described in
docs/robustness.md; remove this module once xDSL's lexer no longer backtracks.
"""

from __future__ import annotations

import re

from xdsl.utils.mlir_lexer import MLIRLexer

# The upstream rule this module replaces; anything else (a fixed xDSL) is left alone.
_UPSTREAM_RULE = r'"(?:[^"\\\n\v\f]+|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*"'
_LINEAR_RULE = re.compile(r'"(?:[^"\\\n\v\f]++|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*+"')


def install() -> None:
    """Replace the backtracking string-literal rule (idempotent; no-op on other xDSL rules)."""
    if MLIRLexer._unescaped_characters_regex.pattern == _UPSTREAM_RULE:
        MLIRLexer._unescaped_characters_regex = _LINEAR_RULE
