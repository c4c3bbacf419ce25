"""Pass pipeline text checked with messages users can read.

xDSL turns `-p 'pass{key=value}'` into a pass by its fields' type hints and, on a mismatch,
says `Incompatible types: given ('bogus',), expected typing.Literal['software', 'hardware']`
(Python reprs); an unknown pass is `Unrecognized passes: ['x']`, a syntax error a caret
diagram over several lines. :func:`parse_pass_pipeline` and :func:`check_pass_options` say the
same in one line (`rdu-pipeline option launch: 'bogus' is not one of software, hardware`), for
any pass, ours or xDSL's: `rdu-opt` calls them before xDSL builds its pipeline, and our passes
derive from :class:`CheckedOptionsPass` so that plain `xdsl-opt`, which prints every error as a
traceback, at least ends it with that line.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self, get_args, get_origin, get_type_hints

from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import ArgSpec, ArgSpecConvertible, ParameterListType, parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError
from xdsl.utils.hints import isa

__all__ = [
    "CheckedOptions",
    "CheckedOptionsPass",
    "PipelineError",
    "UnknownPassError",
    "check_pass_options",
    "parse_pass_pipeline",
    "spec_syntax_message",
]


class PipelineError(ValueError):
    """A pass pipeline that cannot be built, with a one-line message that says why."""


class UnknownPassError(PipelineError):
    """A pipeline naming a pass that is not available."""


def parse_pass_pipeline(
    text: str, available: Mapping[str, Callable[[], type[ModulePass]]]
) -> list[ArgSpec]:
    """The passes of pipeline `text`, each known in `available` (name -> pass class factory)
    and with options its fields accept; a PipelineError otherwise."""
    try:
        specs = list(parse_pipeline(text))
    except ArgSpecParseError as error:
        raise PipelineError(spec_syntax_message(error)) from None
    for spec in specs:
        if spec.name not in available:
            close = difflib.get_close_matches(spec.name, list(available), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UnknownPassError(f"unknown pass {spec.name}{hint}")
        check_pass_options(available[spec.name](), spec)
    return specs


def spec_syntax_message(error: ArgSpecParseError) -> str:
    """xDSL's caret diagram of a `name{options}` syntax error as one line: column, message."""
    # its text: a title line, `pass-pipeline:1:COL`, the spec, a caret, the message
    lines = str(error).splitlines()
    column = lines[1].rsplit(":", 1)[-1] if len(lines) > 1 else "?"
    return f"column {column}: {lines[-1].strip()}"


def check_pass_options(pass_class: type[ArgSpecConvertible], spec: ArgSpec) -> None:
    """Raise a PipelineError naming the pass (or target) and option when `spec` gives an
    option that `pass_class` does not have, or a value its type (by xDSL's rule) does not
    accept."""
    options = {f.name: f for f in dataclasses.fields(pass_class) if f.init and f.name != "name"}
    hints = get_type_hints(pass_class)
    for key, value in spec.normalize_parameter_names().parameters.items():
        dashed = key.replace("_", "-")
        if key not in options:
            known = ", ".join(name.replace("_", "-") for name in options) or "none"
            raise PipelineError(f"{spec.name} has no option {dashed} (its options: {known})")
        hint = hints[key]
        if not value and not _is_optional(hint):
            raise PipelineError(f"{spec.name} option {dashed} needs a value ({_described(hint)})")
        if not _accepts(hint, value):
            raise PipelineError(
                f"{spec.name} option {dashed}: {_shown(value)} is not {_described(hint)}"
            )


class CheckedOptions(ArgSpecConvertible):
    """Options checked by :func:`check_pass_options` before xDSL converts them, so a bad value
    is refused in words wherever the pass or target is built from text."""

    @classmethod
    def from_spec(cls, spec: ArgSpec) -> Self:
        check_pass_options(cls, spec)
        return super().from_spec(spec)


class CheckedOptionsPass(CheckedOptions, ModulePass):
    """A pass whose options are checked (:class:`CheckedOptions`)."""


def _accepts(hint: Any, value: ParameterListType) -> bool:
    """xDSL's conversion rule (`xdsl.utils.arg_spec`): no value for an optional option, one
    value of the type, or a tuple of values of a tuple type."""
    if not value:
        return _is_optional(hint)
    return (len(value) == 1 and isa(value[0], hint)) or isa(value, hint)


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (typing.Union, types.UnionType) and type(None) in get_args(hint)


def _shown(value: ParameterListType) -> str:
    return ",".join(_word(item) for item in value).join("''")


def _word(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    return str(item)


_WORDS: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string (in quotes)",
}


def _described(hint: Any) -> str:
    """What an option of type `hint` accepts, in words."""
    if hint in _WORDS:
        return _WORDS[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(_word(a) for a in args)
    if origin is tuple:
        return "a list of " + _plural(a for a in args if a is not Ellipsis)
    if _is_optional(hint):
        return " or ".join(_described(a) for a in args if a is not type(None))
    return getattr(hint, "__name__", "of the option's type")


def _plural(hints: Iterable[Any]) -> str:
    names = {bool: "true/false", int: "integers", float: "numbers", str: "strings"}
    return " or ".join(names.get(h, _described(h)) for h in hints)
