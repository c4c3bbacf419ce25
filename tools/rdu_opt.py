"""`rdu-opt`: xdsl-opt with rdu-compiler's dialects, passes and targets.

Same flags and behaviour as `xdsl-opt`, with two differences users rely on:
- user errors (bad IR, verifier failure, unknown pass or target, bad pass option, missing
  input file, failing pass) print one located message on stderr and exit 1, never a Python
  traceback; a verifier failure names the file, line and column of the offending op;
- the output file is written only when everything succeeded (never half-written).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from collections.abc import Sequence
from io import StringIO
from typing import IO
from weakref import WeakKeyDictionary

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import (
    ArgSpecParseError,
    DiagnosticException,
    ParseError,
    VerifyException,
)
from xdsl.utils.lexer import Location, Span
from xdsl.xdsl_opt_main import xDSLOptMain

from rdu_compiler import __version__
from rdu_compiler.passes.pass_options import (
    PipelineError,
    parse_pass_pipeline,
    spec_syntax_message,
)
from rdu_compiler.rdu_dialect.ssa import UseBeforeDefinition, verify_dominance
from rdu_compiler.tools.cli import (
    UserError,
    describe_error,
    run_tool,
    write_atomically,
)
from rdu_compiler.tools.ir_file import LocatingParser, failure_of, first_failing_op
from rdu_compiler.tools.universe import DIALECTS, PASS_HELP, PASSES, TARGETS


class _SpanRecordingParser(LocatingParser):
    """A parser that remembers where each op was written, to locate verifier errors (and,
    as every parser of our tools, stamps ops without a location with their file:line:col)."""

    def __init__(self, spans: WeakKeyDictionary[Operation, Span], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._spans = spans

    def parse_operation(self) -> Operation:
        start = self._current_token.span
        op = super().parse_operation()
        self._spans[op] = start
        return op


class _OutputBuffer(StringIO):
    """Output kept in memory until the run succeeded; xDSL's `run` closes its stream."""

    def close(self) -> None:
        pass


def _one_line(op: Operation, limit: int = 160) -> str:
    text = str(op).split("\n", 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RduOptMain(xDSLOptMain):
    """xDSL's opt driver, with every upstream dialect and pass plus ours."""

    version_format = (
        f"rdu-opt (rdu-compiler {__version__}) built from xdsl version {{xdsl_version}}"
    )

    def __init__(self, description: str = (__doc__ or "").split("\n")[0], args=None):
        self._op_spans: WeakKeyDictionary[Operation, Span] = WeakKeyDictionary()
        self._output = _OutputBuffer()
        self._chunk_line_offset = 0
        self._module: ModuleOp | None = None
        self._finished_pass: ModulePass | None = None
        self._running_pass: ModulePass | None = None
        super().__init__(description=description, args=args)

    # Registration -----------------------------------------------------------------------

    def register_all_dialects(self):
        # Installed, our dialects arrive through the xdsl.universe entry point already.
        super().register_all_dialects()
        for name, factory in DIALECTS.items():
            if name not in self.ctx.registered_dialect_names:
                self.ctx.register_dialect(name, factory)

    def register_all_frontends(self):
        super().register_all_frontends()

        def parse_mlir(io: IO[bytes]):
            parser = _SpanRecordingParser(
                self._op_spans,
                self.ctx,
                io.read(),
                self.get_input_name(),
                line_offset=self._chunk_line_offset,
            )
            return parser.parse_module(not self.args.no_implicit_module)

        self.available_frontends["mlir"] = parse_mlir

    def register_all_passes(self):
        super().register_all_passes()
        for name, factory in PASSES.items():
            self.available_passes.setdefault(name, factory)

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser):
        super().register_all_arguments(arg_parser)
        arg_parser.formatter_class = argparse.RawDescriptionHelpFormatter
        for action in arg_parser._actions:
            if action.dest == "passes":
                action.help = (
                    "comma-separated pass pipeline, each pass with options in braces "
                    "(-p 'outline-kernels,kernel-looping{remarks=true}'); rdu-compiler's "
                    "passes are described below, --list-passes describes all"
                )
        arg_parser.add_argument(
            "--list-passes",
            action="store_true",
            help="list every available pass (ours and xDSL's) with what it does, and exit",
        )
        arg_parser.epilog = "rdu-compiler passes:\n" + "\n".join(
            textwrap.fill(
                PASS_HELP[name],
                width=100,
                initial_indent=f"  {name:<24}",
                subsequent_indent=" " * 26,
                break_on_hyphens=False,
            )
            for name in PASSES
        )

    def list_passes(self) -> str:
        """Every registered pass with the first sentence of what it does (ours from the
        registry, upstream ones from their docstrings: importing them all takes seconds)."""
        lines = []
        for name in sorted(self.available_passes):
            summary = PASS_HELP.get(name)
            if summary is None:
                doc = (self.available_passes[name]().__doc__ or "").strip()
                summary = " ".join(doc.split("\n\n")[0].split()) or "(no description)"
            lines.append(f"{name:<40} {summary}")
        return "\n".join(lines) + "\n"

    def register_all_targets(self):
        super().register_all_targets()
        for name, factory in TARGETS.items():
            self.available_targets.setdefault(name, factory)

    # Pipeline and I/O ---------------------------------------------------------------------

    def setup_pipeline(self):
        try:
            # xDSL's own messages for these are Python reprs or caret diagrams: ours first
            parse_pass_pipeline(self.args.passes, self.available_passes)
            super().setup_pipeline()
        except (PipelineError, ValueError, TypeError) as error:
            raise UserError(f"-p '{self.args.passes}': {error}") from None
        verify_and_print = self.pipeline.callback

        def tracking_callback(previous, module, next_pass):
            # Remember which pass ran last and which runs next, to name them in errors.
            self._module = module
            self._finished_pass, self._running_pass = previous, None
            if not self.args.disable_verify:
                # Before the verifiers, which xDSL runs on IR in any order: a use before its
                # definition (a cycle, even) is refused before anything walks use-def chains.
                verify_dominance(module)
            if verify_and_print is not None:
                verify_and_print(previous, module, next_pass)
            self._running_pass = next_pass

        self.pipeline = dataclasses.replace(self.pipeline, callback=tracking_callback)

    def get_input_stream(self):
        try:
            return super().get_input_stream()
        except OSError as error:
            raise UserError(
                f"cannot read input file '{error.filename}': {error.strerror}"
            ) from None

    def parse_chunk(self, chunk, file_extension, start_offset=0):
        self._chunk_line_offset = start_offset
        self._module = self._finished_pass = self._running_pass = None
        return super().parse_chunk(chunk, file_extension, start_offset)

    def prepare_output(self) -> IO[str]:
        # Collected in memory: `run` writes the file only once everything succeeded.
        return self._output

    def run(self):
        super().run()
        self._write_output(self._output.getvalue())

    def _write_output(self, text: str) -> None:
        if self.args.output_file is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            write_atomically(self.args.output_file, text)

    # Diagnostics ------------------------------------------------------------------------

    def _written_at(self, op: Operation) -> Location | None:
        """Where `op` was written in the input, if it was."""
        span = self._op_spans.get(op)
        if span is None:
            return None
        return dataclasses.replace(span, line_offset=self._chunk_line_offset).get_location()

    def locate(self, op: Operation) -> str:
        """`file:line:col` of `op`, or of its nearest ancestor written in the input."""
        node: Operation | None = op
        while node is not None:
            location = self._written_at(node)
            if location is not None:
                return str(location) if node is op else f"{location} (in this op)"
            node = node.parent_op()
        return "<unknown location>"

    def describe_verify_failure(self, error: Exception) -> str:
        after = f" (after pass '{self._finished_pass.name}')" if self._finished_pass else ""
        if isinstance(error, UseBeforeDefinition):
            found = error.op, error
        else:
            found = first_failing_op(self._module) if self._module is not None else None
        if found is None:
            return f"error: {error}{after}"
        op, message = failure_of(*found)
        return f"{self.locate(op)}: error: '{op.name}' op {message}{after}\n  {_one_line(op)}"

    def describe_pass_failure(self, error: Exception) -> str:
        if self._running_pass is None:
            return f"error: {error}"
        return f"error: pass '{self._running_pass.name}' failed: {error}"


PROG = "rdu-opt"


def _report(message: str) -> int:
    print(message.rstrip("\n"), file=sys.stderr)
    return 1


def _run(args: Sequence[str] | None) -> int:
    """The driver's run; its own errors located here, what every tool shares by `run_tool`."""
    try:
        driver = RduOptMain(args=args)  # parses -t's options
    except ArgSpecParseError as error:
        return _report(f"{PROG}: error: -t: {spec_syntax_message(error)}")
    try:
        if driver.args.list_passes:
            sys.stdout.write(driver.list_passes())
        else:
            driver.run()
    except ParseError as error:
        return _report(describe_error(PROG, error))
    except VerifyException as error:
        return _report(driver.describe_verify_failure(error))
    except DiagnosticException as error:
        return _report(driver.describe_pass_failure(error))
    except ValueError as error:
        # xDSL reports an unknown input file extension this way.
        return _report(f"{PROG}: error: {error}")
    return 0


def main(args: Sequence[str] | None = None) -> int:
    return run_tool(
        PROG,
        lambda: _run(args),
        (UserError,),
        smaller="an input of fewer layers, a shorter context or a smaller batch",
    )


if __name__ == "__main__":
    raise SystemExit(main())
