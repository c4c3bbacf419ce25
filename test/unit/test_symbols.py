"""The cached symbol lookup stays correct while symbols are added, renamed and erased."""

from xdsl.dialects import func
from xdsl.dialects import test as test_dialect
from xdsl.dialects.builtin import ModuleOp, StringAttr

from rdu_compiler.rdu_dialect.symbols import lookup_symbol


def make_func(name: str) -> func.FuncOp:
    return func.FuncOp(name, ((), ()))


def test_lookup_finds_symbols_and_misses_unknown_names():
    a, b = make_func("a"), make_func("b")
    user = test_dialect.TestOp()
    module = ModuleOp([a, b, user])
    assert lookup_symbol(user, "a") is a
    assert lookup_symbol(user, "b") is b
    assert lookup_symbol(user, "c") is None
    assert lookup_symbol(module, "a") is None  # no symbol table above the module itself


def test_lookup_sees_added_renamed_and_erased_symbols():
    a = make_func("a")
    user = test_dialect.TestOp()
    module = ModuleOp([a, user])
    assert lookup_symbol(user, "a") is a

    late = make_func("late")
    module.body.block.add_op(late)
    assert lookup_symbol(user, "late") is late

    a.sym_name = StringAttr("renamed")
    assert lookup_symbol(user, "a") is None
    assert lookup_symbol(user, "renamed") is a

    a.detach()
    replacement = make_func("renamed")
    module.body.block.add_op(replacement)
    assert lookup_symbol(user, "renamed") is replacement


def test_lookup_from_nested_op_uses_enclosing_module():
    inner_user = test_dialect.TestOp()
    body_func = func.FuncOp("f", ((), ()))
    body_func.body.block.add_op(inner_user)
    module = ModuleOp([body_func])
    assert module is not None
    assert lookup_symbol(inner_user, "f") is body_func
