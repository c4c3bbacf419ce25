"""SSA structure checks that xDSL 0.74 does not make: dominance, and isolation with a message
that names the offending op.

MLIR's verifier refuses a use that its definition does not dominate; xDSL's parser accepts a
forward reference and its verifier never checks order (`xdsl.irdl.dominance` only relates the
blocks of a region). Passes walk blocks in order and map values as they go, so IR with a use
before its definition makes them crash or miscompile. Hence:

- `verify_dominance(root)`: one linear walk over the regions of `root`, refusing the first
  operand that is not defined before its use (in the block, an enclosing block, or a block
  that dominates it). Regions of `builtin.module` are graph regions (order-free), as in MLIR.
  `dfk.kernel` runs it on its body; tools run it on the module before any pass, and our passes
  check it as their precondition (`require_dominance`), so plain `xdsl-opt` gets a message too.
- `IsolatedBody`: `IsolatedFromAbove` whose failure names the op that captures a value.
- `NestedOpError`: a verifier failure found by an ancestor (a kernel checking its body) about
  one of its nested ops; tools locate that op rather than the ancestor.

Messages describe values by what defines them (`describe_value`), never by a Python repr.
"""

from __future__ import annotations

from xdsl.dialects.builtin import FileLineColLoc, ModuleOp, StringAttr, UnknownLoc
from xdsl.ir import Block, BlockArgument, Operation, OpResult, Region, SSAValue
from xdsl.irdl.dominance import DominanceInfo
from xdsl.traits import IsolatedFromAbove
from xdsl.utils.exceptions import PassFailedException, VerifyException


class NestedOpError(VerifyException):
    """A verifier failure about `op`, raised by the verifier of one of its ancestors: the
    message names `op` (`'arith.addf' op <detail>`, MLIR's form), and tools that know where
    ops were written locate `op` rather than the ancestor."""

    def __init__(self, op: Operation, detail: str):
        super().__init__(f"'{op.name}' op {detail}")
        self.op = op
        self.detail = detail


class UseBeforeDefinition(NestedOpError):
    """Operand `index` of `op` is not defined where `op` can see it."""

    def __init__(self, op: Operation, index: int, detail: str):
        super().__init__(op, detail)
        self.index = index

    @property
    def value(self) -> SSAValue:
        return self.op.operands[self.index]


def symbol_name(op: Operation) -> str | None:
    """`op`'s `sym_name`, if it is a symbol."""
    name = op.properties.get("sym_name", op.attributes.get("sym_name"))
    return name.data if isinstance(name, StringAttr) else None


def describe_op(op: Operation) -> str:
    """`'dfk.kernel' @k`, or just `'llm.add'` for an op that is no symbol."""
    name = symbol_name(op)
    return f"'{op.name}'" + (f" @{name}" if name is not None else "")


def describe_value(value: SSAValue) -> str:
    """What defines `value`, in words: `the result of 'llm.rope'`, `result #1 of 'dfk.call'`,
    `argument #2 of 'dfk.kernel' @k`, `argument #0 of the 'dfk.loop' body`."""
    if isinstance(value, OpResult):
        owner = value.op
        which = "the result" if len(owner.results) == 1 else f"result #{value.index}"
        return f"{which} of {describe_op(owner)}"
    assert isinstance(value, BlockArgument)
    parent = value.block.parent_op()
    if parent is None:
        return f"argument #{value.index} of a detached block"
    if symbol_name(parent) is not None:
        return f"argument #{value.index} of {describe_op(parent)}"
    return f"argument #{value.index} of the '{parent.name}' body"


def _is_graph_region(op: Operation) -> bool:
    """Regions without SSA dominance (MLIR: `builtin.module` is a graph region)."""
    return isinstance(op, ModuleOp)


def _defined_in(block: Block) -> list[SSAValue]:
    return [*block.args, *(r for op in block.ops for r in op.results)]


def first_dominance_violation(root: Operation) -> tuple[Operation, int] | None:
    """The first (op, operand index), in walk order over `root`'s regions, whose operand is
    not visible at the op: defined later in its block (or by the op itself), inside another
    op's region, or in a block that does not dominate the use. Values from above `root` are
    assumed visible. Linear in the size of `root` (plus a dominance computation per region of
    several blocks)."""
    visible: set[SSAValue] = set()

    def check_block(block: Block, graph: bool) -> tuple[Operation, int] | None:
        added: list[SSAValue] = [*block.args]
        if graph:
            added.extend(r for op in block.ops for r in op.results)
        visible.update(added)
        try:
            for op in block.ops:
                for index, operand in enumerate(op.operands):
                    if operand not in visible and _defined_under(operand, root):
                        return op, index
                for region in op.regions:
                    if (found := check_region(region, _is_graph_region(op))) is not None:
                        return found
                if not graph:
                    visible.update(op.results)
                    added.extend(op.results)
            return None
        finally:
            visible.difference_update(added)

    def check_region(region: Region, graph: bool) -> tuple[Operation, int] | None:
        blocks = list(region.blocks)
        dominance = DominanceInfo(region) if len(blocks) > 1 else None
        for block in blocks:
            dominators = (
                [d for d in blocks if dominance.strictly_dominates(d, block)]
                if dominance is not None
                else []
            )
            inherited = [v for d in dominators for v in _defined_in(d) if v not in visible]
            visible.update(inherited)
            try:
                if (found := check_block(block, graph)) is not None:
                    return found
            finally:
                visible.difference_update(inherited)
        return None

    for region in root.regions:
        if (found := check_region(region, _is_graph_region(root))) is not None:
            return found
    return None


def _defined_under(value: SSAValue, root: Operation) -> bool:
    """Whether `value` is defined inside `root`'s regions (or is one of its own results)."""
    return root.is_ancestor(value.owner)


def _problem(op: Operation, index: int) -> str:
    """Why operand `index` of `op` is not visible at `op`."""
    value = op.operands[index]
    what = f"operand #{index} ({describe_value(value)})"
    if isinstance(value, OpResult):
        definer = value.op
        block = definer.parent_block()
        user = block.find_ancestor_op_in_block(op) if block is not None else None
        if user is definer:
            return f"{what} is the op's own result"
        if user is not None and user.is_before_in_block(definer):
            site = definer.location
            at = (
                f" (defined at {site.line.data}:{site.column.data})"
                if isinstance(site, FileLineColLoc)
                else ""
            )
            return f"{what} is used before its definition{at}"
    return f"{what} is not visible here: it is defined in a region that does not enclose this use"


def verify_dominance(root: Operation) -> None:
    """Raise `UseBeforeDefinition` for the first operand inside `root` that its definition
    does not dominate."""
    found = first_dominance_violation(root)
    if found is not None:
        raise UseBeforeDefinition(*found, _problem(*found))


def where(op: Operation) -> str:
    """`'llm.rope' at loc("model.layers.0.self_attn.rope") in @decode_step`: the op, its
    location if it has one, and the symbol that holds it, for messages that have no file
    position (passes run by plain xdsl-opt)."""
    text = describe_op(op)
    if not isinstance(op.location, UnknownLoc):
        text += f" at {op.location}"
    holder = op.parent_op()
    while holder is not None and symbol_name(holder) is None:
        holder = holder.parent_op()
    if holder is not None:
        text += f" in @{symbol_name(holder)}"
    return text


def require_dominance(module: ModuleOp) -> None:
    """A pass's precondition: raise PassFailedException naming the first use before its
    definition in `module` (rdu-opt refuses such IR before any pass; plain xdsl-opt does not
    check dominance, so our passes do)."""
    found = first_dominance_violation(module)
    if found is not None:
        raise PassFailedException(f"{where(found[0])}: {_problem(*found)}")


class IsolatedBody(IsolatedFromAbove):
    """`IsolatedFromAbove`, failing with a `NestedOpError` on the op that uses a value from
    above (the upstream message prints the whole op, regions included)."""

    def verify(self, op: Operation) -> None:
        for nested in op.walk():
            for index, operand in enumerate(nested.operands):
                if nested is not op and not _defined_under(operand, op):
                    raise NestedOpError(
                        nested,
                        f"operand #{index} ({describe_value(operand)}) is defined outside "
                        f"the enclosing {describe_op(op)}, which is isolated from above",
                    )
