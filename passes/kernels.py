"""Helpers shared by the passes that create kernels (outlining, kernel looping).

Both passes must give new kernels stable names and reuse an existing kernel when a new one
would be identical to it: identical layers become one symbol, and the parts of a broken run
with the same trip count share one looped kernel. Identity is structural (ops, properties,
attributes, types and the use-def graph, modulo SSA names and locations), compared through a
hashable key. Only the symbols named `base`, `base_1`, ... are candidates, so finding the
kernel a body duplicates costs a comparison per kernel of that name, not per symbol.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from xdsl.ir import Block, Operation, SSAValue

from rdu_compiler.rdu_dialect.dfk import KernelOp
from rdu_compiler.rdu_dialect.symbols import lookup_symbol


def structure_key(block: Block) -> Hashable:
    """A key equal for two blocks exactly when they are structurally identical: same
    argument types and, op by op, same name, properties, attributes, result types, operands
    (by position in the block's value numbering) and nested regions."""
    ids: dict[SSAValue, int] = {}

    def block_key(b: Block) -> tuple[Hashable, ...]:
        for arg in b.args:
            ids[arg] = len(ids)
        return (b.arg_types, tuple(op_key(op) for op in b.ops))

    def op_key(op: Operation) -> tuple[Hashable, ...]:
        key = (
            op.name,
            tuple(ids[v] for v in op.operands),
            op.result_types,
            tuple(sorted(op.properties.items())),
            tuple(sorted(op.attributes.items())),
            tuple(tuple(block_key(b) for b in r.blocks) for r in op.regions),
        )
        for result in op.results:
            ids[result] = len(ids)
        return key

    return block_key(block)


def symbol_for(
    anchor: Operation, base: str, reuse: Callable[[Operation], bool]
) -> tuple[str, Operation | None]:
    """The first of `base`, `base_1`, `base_2`, ... in the symbol table above `anchor` that is
    either free (-> `(name, None)`) or names a symbol that `reuse` accepts (-> `(name, it)`).
    Names are thus stable (they depend only on what the module already holds) and a symbol
    identical to the one wanted is shared instead of duplicated."""
    name, n = base, 0
    while (existing := lookup_symbol(anchor, name)) is not None and not reuse(existing):
        n += 1
        name = f"{base}_{n}"
    return name, existing


def kernel_for(anchor: Operation, base: str, body: Block) -> tuple[str, bool]:
    """The name for a kernel with this `body`, and whether the module already holds that
    kernel (an identical one, which callers then share) rather than only a free name."""
    key = structure_key(body)
    name, existing = symbol_for(
        anchor, base, lambda s: isinstance(s, KernelOp) and structure_key(s.body.block) == key
    )
    return name, existing is not None
