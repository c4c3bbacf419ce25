"""Every option of every rdu-compiler pass, given a value of the wrong kind, is refused in one
line that names the pass, the option and what it accepts, in words (no Python repr)."""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

import pytest
from xdsl.utils.arg_spec import ArgSpec

from rdu_compiler.passes.pass_options import PipelineError, parse_pass_pipeline
from rdu_compiler.tools.universe import PASSES

# A value of a kind each option type refuses (a string where a number is wanted, and so on).
WRONG = {bool: ("maybe",), int: ("abc",), str: (3,)}


def _options():
    for name, factory in PASSES.items():
        cls = factory()
        hints = get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init and field.name != "name":
                yield name, field.name, hints[field.name]


@pytest.mark.parametrize(("pass_name", "option", "hint"), list(_options()))
def test_a_wrong_value_is_refused_in_words(pass_name, option, hint):
    value = WRONG.get(hint, ("bogus",))
    spec = ArgSpec(pass_name, {option.replace("_", "-"): value})
    with pytest.raises(PipelineError) as caught:
        PASSES[pass_name]().from_pass_spec(spec)  # the path plain xdsl-opt takes
    message = str(caught.value)
    assert message.startswith(f"{pass_name} option {option.replace('_', '-')}: '")
    assert not any(repr_ in message for repr_ in ("typing", "<class", "('", "["))


def test_option_kinds_are_named():
    cases = {
        "rdu-pipeline{launch=bogus}": "launch: 'bogus' is not one of software, hardware",
        "lower-dfk-to-rdu{launch=bogus}": "launch: 'bogus' is not one of software, hardware",
        "rdu-pipeline{fusion=3}": "fusion: '3' is not one of layer, op",
        "rdu-pipeline{sockets=abc}": "sockets: 'abc' is not an integer",
        "rdu-pipeline{kernel-looping=1}": "kernel-looping: '1' is not true or false",
        "merge-launches{hw=3}": "hw: '3' is not a string (in quotes)",
        "rdu-pipeline{launch=software,hardware}": "'software,hardware' is not one of",
        "rdu-pipeline{launch}": "launch needs a value (one of software, hardware)",
        "rdu-pipeline{bogus=1}": "rdu-pipeline has no option bogus (its options: matmul-par,",
        "rdu-pipelin": "unknown pass rdu-pipelin (did you mean rdu-pipeline?)",
        "rdu-pipeline{hw=}": "column 17: Unknown argument value",
    }
    for text, expected in cases.items():
        with pytest.raises(PipelineError) as caught:
            parse_pass_pipeline(text, PASSES)
        assert expected in str(caught.value), text
        assert "\n" not in str(caught.value)


def test_good_options_pass():
    specs = parse_pass_pipeline(
        'outline-kernels{policy=op},rdu-pipeline{sockets=2 launch=hardware hw-overrides="pcus=8"}',
        PASSES,
    )
    assert [s.name for s in specs] == ["outline-kernels", "rdu-pipeline"]


def test_rdu_run_pipeline_text():
    """`rdu-run --pipeline` takes one rdu-pipeline{...}: anything else is named as such."""
    import re

    from xdsl.utils.exceptions import PassFailedException

    from rdu_compiler.lowering.pipeline import RduPipeline

    for text in ("canonicalize", "rdu-pipeline,rdu-pipeline"):
        with pytest.raises(
            PassFailedException, match=re.escape(f"expected one rdu-pipeline{{...}}, got '{text}'")
        ):
            RduPipeline.parse(text)
    with pytest.raises(PassFailedException) as caught:
        RduPipeline.parse("rdu-pipeline{launch=3}")
    assert str(caught.value) == (
        "bad pipeline 'rdu-pipeline{launch=3}': rdu-pipeline option launch: '3' is not one of "
        "software, hardware"
    )
