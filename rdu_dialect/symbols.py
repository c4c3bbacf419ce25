"""Symbol lookup through one cached table per symbol-table op.

`xdsl.traits.SymbolTable.lookup_symbol` scans the module linearly. Verifiers of calls and
parameter reads look a symbol up per op, so on a 126-layer model (about 1,200 references to
1,200 symbols) a linear scan per op turns verification quadratic. Here each symbol-table op
(usually the module) gets one `name -> op` table, built on first use and rebuilt only when a
lookup finds it stale, so a whole-module verification costs O(ops).

A cached entry is trusted only after checking that the op it names is still a direct child
of the table op and still carries that name; a miss or a stale hit rebuilds the table. This
keeps lookups correct while passes add, rename and erase symbols between verifications.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from xdsl.ir import Operation
from xdsl.traits import SymbolTable
from xdsl.utils.symbol_table import get_name_if_symbol

_TABLES: WeakKeyDictionary[Operation, dict[str, Operation]] = WeakKeyDictionary()


def nearest_symbol_table(op: Operation) -> Operation | None:
    """The closest ancestor of `op` (excluding `op`) with the SymbolTable trait."""
    anchor = op.parent_op()
    while anchor is not None and not anchor.has_trait(SymbolTable):
        anchor = anchor.parent_op()
    return anchor


def _build(table_op: Operation) -> dict[str, Operation]:
    table: dict[str, Operation] = {}
    for child in table_op.regions[0].block.ops:
        name = get_name_if_symbol(child)
        if name is not None:
            table.setdefault(name, child)
    _TABLES[table_op] = table
    return table


def lookup_symbol(from_op: Operation, name: str) -> Operation | None:
    """The symbol `name` in the nearest symbol table above `from_op`, or None."""
    table_op = nearest_symbol_table(from_op)
    if table_op is None:
        return None
    table = _TABLES.get(table_op)
    if table is not None:
        hit = table.get(name)
        if hit is not None and hit.parent_op() is table_op and get_name_if_symbol(hit) == name:
            return hit
    return _build(table_op).get(name)
