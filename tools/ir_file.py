""".mlir files as models: parsing with source positions, and what a decode step in IR says
about itself (name, batch, context, vocabulary, sockets, stage), so that `rdu-run` and
`rdu-sim` take a user's own or hand-edited IR at any stage from `llm` down.

Every op parsed here (and by `rdu-opt`) without a `loc(...)` of its own gets its position in
the file as a `FileLineColLoc`, as `mlir-opt` does: locations survive the passes' clones, so a
pass that refuses an op (the lowering's contract checks) names `file:line:col`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    FileLineColLoc,
    IntAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnknownLoc,
)
from xdsl.ir import Operation
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException
from xdsl.utils.lexer import Span
from xdsl.utils.mlir_lexer import MLIRTokenKind

from rdu_compiler.rdu_dialect.ssa import NestedOpError, verify_dominance
from rdu_compiler.tools import lexer_fix
from rdu_compiler.tools.cli import UserError, read_text_file

MAX_INTEGER_WIDTH = (1 << 24) - 1
"""MLIR's widest integer type (`IntegerType::kMaxWidth`). xDSL has no limit and computes
`1 << width` for a value's range, which for `i4294967296` runs for minutes."""


class LocatingParser(Parser):
    """A parser that stamps every op written without `loc(...)` with its `file:line:col`
    (`line_offset`: lines before this chunk, for `--split-input-file`), and refuses, located,
    what xDSL's parser would hang or crash on (`tools/lexer_fix.py`, integer types wider than
    MLIR's, attributes xDSL cannot build)."""

    def __init__(self, *args, line_offset: int = 0, **kwargs):
        lexer_fix.install()
        super().__init__(*args, **kwargs)
        self._line_offset = line_offset

    def parse_module(self, allow_implicit_module: bool = True) -> ModuleOp:
        try:
            return super().parse_module(allow_implicit_module)
        except (OverflowError, ValueError, NotImplementedError) as error:
            # xDSL builds some attributes without range checks (a float too large for f16
            # raises OverflowError, a dense array of i65536 NotImplementedError).
            raise ParseError(
                self._current_token.span, f"attribute not representable in its type ({error})"
            ) from None

    def _parse_optional_integer_or_float_type(self):
        token = self._current_token
        match = self._builtin_integer_type_regex.match(token.text)
        if token.kind == MLIRTokenKind.BARE_IDENT and match is not None:
            if int(match.group(1)) > MAX_INTEGER_WIDTH:
                raise ParseError(
                    token.span,
                    f"integer type {token.text} is wider than MLIR's maximum of "
                    f"{MAX_INTEGER_WIDTH} bits",
                )
        return super()._parse_optional_integer_or_float_type()

    def parse_operation(self) -> Operation:
        start = self._current_token.span
        op = super().parse_operation()
        if isinstance(op.location, UnknownLoc):
            where = replace(start, line_offset=self._line_offset).get_location()
            op.location = FileLineColLoc(
                StringAttr(where.file), IntAttr(where.line), IntAttr(where.col)
            )
        return op

    def _get_op_by_name(self, name: str) -> type[Operation]:
        # xDSL reports an unknown op at the token after its name (for a bare `llm.foo` at the
        # end of the input, the next line); point at the name itself.
        try:
            return super()._get_op_by_name(name)
        except ParseError as error:
            after = self._current_token.span
            at = after.input.content.rfind(name, 0, after.start)
            if at < 0:
                raise
            raise ParseError(Span(at, at + len(name), after.input), error.msg) from None


def where(op: Operation) -> str:
    """`file:line:col` of `op`, or of the nearest op around it that has one."""
    node: Operation | None = op
    while node is not None:
        location = node.location
        if isinstance(location, FileLineColLoc):
            text = f"{location.filename.data}:{location.line.data}:{location.column.data}"
            return text if node is op else f"{text} (in this op)"
        node = node.parent_op()
    return f"'{op.name}'"


def first_failing_op(module: Operation) -> tuple[Operation, Exception] | None:
    """The innermost op whose own verifier fails, in xDSL's verification order."""
    for op in module.walk(region_first=True):
        try:
            op.verify(verify_nested_ops=False)
        except Exception as error:  # noqa: BLE001 - any verifier failure locates the op
            return op, error
    return None


def failure_of(op: Operation, error: Exception) -> tuple[Operation, str]:
    """The op to locate for a verifier failure found at `op`, and its message without the
    prefixes xDSL and the verifiers put before it (MLIR's form follows: `'op' op message`)."""
    if isinstance(error, NestedOpError):
        # Found by an ancestor's verifier (a kernel checking its body): locate the op.
        return error.op, error.detail
    message = (
        str(error)
        .removeprefix("Operation does not verify: ")
        .removeprefix(f"{op.name}: ")  # our verifiers name the op themselves
        .removeprefix(f"'{op.name}' ")  # so do upstream traits (HasAncestor)
    )
    return op, message


def _context() -> Context:
    from xdsl.universe import Universe

    from rdu_compiler.tools.universe import DIALECTS

    ctx = Context()
    for name, factory in Universe.get_multiverse().all_dialects.items():
        ctx.register_dialect(name, factory)
    for name, factory in DIALECTS.items():
        if name not in ctx.registered_dialect_names:
            ctx.register_dialect(name, factory)
    return ctx


def parse_ir(path: str) -> ModuleOp:
    """The verified module in `path`; bad IR is a UserError naming `file:line:col`."""
    text = read_text_file(path)
    try:
        module = LocatingParser(_context(), text, path).parse_module()
    except ParseError as error:  # one line, not xDSL's rendering with a caret
        raise UserError(f"{error.span.get_location()}: {error.msg}") from None
    try:
        # Dominance first (xDSL's verifier does not check it): nothing may walk the use-def
        # chains of IR with a use before its definition.
        verify_dominance(module)
        module.verify()
    except NestedOpError as error:  # a use before its definition, or found by a kernel
        raise UserError(f"{where(error.op)}: '{error.op.name}' op {error.detail}") from None
    except VerifyException as error:
        found = first_failing_op(module)
        if found is None:
            raise UserError(f"{path}: {error}") from None
        op, message = failure_of(*found)
        raise UserError(f"{where(op)}: '{op.name}' op {message}") from None
    return module


@dataclass(frozen=True)
class IrModel:
    """A decode step read from an `.mlir` file: what tools need to know before running it.

    `stage`: `llm` (as `rdu-import` prints it), `dfk` (outlined), `looped` (kernel-looped);
    `sockets`: the count a sharded module was sharded over, else None."""

    path: str
    module: ModuleOp
    name: str
    batch: int
    context: int
    vocab_size: int
    dtype: str
    sockets: int | None
    stage: str

    @property
    def max_position_embeddings(self) -> int:
        """The positions the step has rows for (what `check_context` compares against)."""
        return self.context

    @property
    def num_layers(self) -> int:
        step = _entry(self.module)
        assert step is not None, "checked when the file was read"
        return _shape(step.function_type.inputs.data[2])[0]

    def checkpoint_tensors(self) -> list[CheckpointTensor]:
        """The checkpoint tensors the step reads (every `llm.param`'s sources), by name."""
        from rdu_compiler.rdu_dialect import llm

        names = [
            name
            for op in self.module.ops
            if isinstance(op, llm.ParamOp)
            for name in _flat_sources(op.source)
        ]
        return [CheckpointTensor(name) for name in dict.fromkeys(names)]

    def fresh_module(self) -> ModuleOp:
        """A copy to run passes on (they rewrite the module in place)."""
        return self.module.clone()

    def fix_options(self, options) -> None:
        """Set `options`' batch, context, sockets (lists, as rdu-run has them) and dtype to
        the IR's: the file fixes them, so another value asked for is refused (the defaults,
        batch 1, bf16, one socket and no context, give way). An unsharded file may be run
        over any `--sockets` (sharded on the way)."""
        fixed = [
            ("--batch", "batch", [self.batch], [1]),
            ("--context", "context", [self.context], None),
            ("--dtype", "dtype", self.dtype, "bf16"),
        ]
        if self.sockets is not None:
            fixed.append(("--sockets", "sockets", [self.sockets], [1]))
        for flag, name, value, default in fixed:
            asked = getattr(options, name)
            if asked not in (value, default):
                shown = ",".join(map(str, asked)) if isinstance(asked, list) else asked
                wanted = value[0] if isinstance(value, list) else value
                raise UserError(
                    f"{flag} {shown}: {self.path} is a decode step with {name} {wanted}"
                )
            setattr(options, name, value)
        if options.layers is not None:
            raise UserError(f"--layers: {self.path} fixes the layers (edit the IR instead)")


@dataclass(frozen=True)
class CheckpointTensor:
    name: str


def _flat_sources(source) -> list[str]:
    from xdsl.dialects.builtin import ArrayAttr

    if isinstance(source, ArrayAttr):
        return [name for s in source.data for name in _flat_sources(s)]
    return [source.data]


def _entry(module: ModuleOp) -> func.FuncOp | None:
    from rdu_compiler.rdu_dialect.interpreter import ENTRY

    return next(
        (op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == ENTRY),
        None,
    )


def _shape(t) -> tuple[int, ...]:
    return tuple(t.get_shape()) if hasattr(t, "get_shape") else ()


def decode_step_module(model, *, batch: int, context: int, dtype: str) -> ModuleOp:
    """A fresh module of the decode step: a copy of an `.mlir` model's (whose batch, context
    and dtype `IrModel.fix_options` made the options'), or built by the frontend from a
    `ModelConfig`."""
    if isinstance(model, IrModel):
        return model.fresh_module()
    from rdu_compiler.frontend.builder import build_decode_step

    return build_decode_step(model, batch=batch, context=context, dtype=dtype)


def load_ir_model(path: str) -> IrModel:
    """Parse and check an IR decode step (docs/decode_step.md); a module that is no decode
    step, or one already lowered to `rdu`, is a UserError saying so."""
    from rdu_compiler.rdu_dialect import dfk, llm
    from rdu_compiler.rdu_dialect.interpreter import ENTRY
    from rdu_compiler.simulator.numerics import DTYPES

    module = parse_ir(path)
    if any(op.name.startswith("rdu.") for op in module.walk()):
        raise UserError(
            f"{path}: the module is already lowered to the rdu dialect; emit its program "
            "(rdu-opt -t rdu-program) and run that with rdu-sim"
        )
    step = _entry(module)
    if step is None:
        raise UserError(f"{path}: no func.func @{ENTRY}: not a decode step (docs/decode_step.md)")
    inputs, outputs = step.function_type.inputs.data, step.function_type.outputs.data
    shapes = [_shape(t) for t in (*inputs, *outputs)]
    if len(inputs) != 4 or len(outputs) != 4 or len(shapes[2]) != 5 or len(shapes[4]) != 2:
        raise UserError(
            f"{where(step)}: @{ENTRY} must take (tokens, positions, k_cache, v_cache) and return "
            "(logits, next_token, k_cache, v_cache) (docs/decode_step.md)"
        )
    dtype = str(cast(TensorType, outputs[0]).element_type)
    if dtype not in DTYPES:
        raise UserError(f"{where(step)}: logits of type {dtype}: not a dtype the tools run")
    name = module.attributes.get("llm.model")
    sockets = module.attributes.get(llm.SOCKETS_ATTR)
    walked = list(module.walk())
    stage = (
        "looped"
        if any(isinstance(op, dfk.LoopOp) for op in walked)
        else "dfk"
        if any(isinstance(op, dfk.KernelOp) for op in walked)
        else "llm"
    )
    return IrModel(
        path=path,
        module=module,
        name=name.data if isinstance(name, StringAttr) else path,
        batch=shapes[4][0],
        context=shapes[2][3],
        vocab_size=shapes[4][1],
        dtype=dtype,
        sockets=llm.sockets_of(module) if sockets is not None else None,
        stage=stage,
    )
