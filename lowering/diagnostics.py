"""How `lower-dfk-to-rdu` refuses IR: one located line, prefixed with the pass name.

Every module of the lowering raises through these helpers, so a refusal reads alike wherever it
is found (unit mapping, kernel checks, the host walk, placement) and never shows a Python repr.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import (
    FileLineColLoc,
    NameLoc,
)
from xdsl.ir import BlockArgument, Operation, OpResult, SSAValue
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.rdu_dialect import dfk


def fail(message: str) -> PassFailedException:
    """A refusal by the pass, unlocated (a bad option, a kernel that does not fit)."""
    return PassFailedException(f"lower-dfk-to-rdu: {message}")


def op_location(op: Operation) -> str:
    """Where `op` is, for a message: `file:line:col` when the IR came from text (tools stamp
    every parsed op with its position), else the op's name, its source module path (the
    frontend's `loc("model.layers.0.self_attn")`) and the function or kernel holding it."""
    location = op.location
    if isinstance(location, FileLineColLoc):
        return f"{location.filename.data}:{location.line.data}:{location.column.data}"
    where = f"'{op.name}'"
    if isinstance(location, NameLoc):
        where += f" ({location.desc.data})"
    holder = op.parent_op()
    while holder is not None and not isinstance(holder, func.FuncOp | dfk.KernelOp):
        holder = holder.parent_op()
    if holder is not None:
        where += (
            f" in {'kernel ' if isinstance(holder, dfk.KernelOp) else ''}@{holder.sym_name.data}"
        )
    return where


def fail_at(op: Operation, message: str) -> PassFailedException:
    """A refusal located at `op` (see `op_location`)."""
    return fail(f"{op_location(op)}: {message}")


def value_name(value: SSAValue) -> str:
    """A value as a message names it: `%name`, else what defines it (never a Python repr)."""
    if value.name_hint:
        return f"%{value.name_hint}"
    if isinstance(value, BlockArgument):
        return f"argument #{value.index}"
    assert isinstance(value, OpResult)
    return f"result #{value.index} of '{value.owner.name}'"
