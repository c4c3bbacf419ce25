"""Use before definition (issue 12): refused before any pass, by rdu-opt (located), by our
passes' precondition (plain xdsl-opt, in-process compilation), and by the dominance walk of
`rdu_dialect.ssa` itself on multi-block, nested and graph regions."""

import os
import subprocess
import sys

import pytest
from xdsl.context import Context
from xdsl.dialects import arith, builtin, cf, func, test
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.parser import Parser
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.lowering.lower_dfk_to_rdu import LowerDfkToRdu
from rdu_compiler.lowering.pipeline import compile_program, pipeline_passes
from rdu_compiler.passes.outline_kernels import OutlineKernels
from rdu_compiler.rdu_dialect import llm
from rdu_compiler.rdu_dialect.dfk import CallOp
from rdu_compiler.rdu_dialect.ssa import first_dominance_violation
from rdu_compiler.tools.cli import UserError
from rdu_compiler.tools.ir_file import parse_ir

RDU_OPT = os.path.join(os.path.dirname(sys.executable), "rdu-opt")


def tiny_step() -> ModuleOp:
    """`rdu-import tiny-llama --layers 1 --context 8`, in process."""
    return build_decode_step(load_model_config("tiny-llama", layers=1), context=8)


def step_ops(module: ModuleOp) -> list[Operation]:
    entry = next(op for op in module.ops if isinstance(op, func.FuncOp))
    return list(entry.body.block.ops)


def swap_rope_and_cache_write(module: ModuleOp) -> None:
    """The issue's reproducer: the first `llm.kv_cache_write` moved above the `llm.rope` whose
    result it writes (two swapped lines)."""
    write = next(op for op in step_ops(module) if isinstance(op, llm.KVCacheWriteOp))
    rope = write.operands[1].owner
    assert isinstance(rope, llm.RopeOp)
    write.detach()
    rope.parent_block().insert_op_before(write, rope)


def test_the_issue_reproducer_is_refused_in_process():
    module = tiny_step()
    swap_rope_and_cache_write(module)
    with pytest.raises(PassFailedException) as error:
        compile_program(module)
    assert str(error.value) == (
        "'llm.kv_cache_write' at loc(\"model.layers.0.self_attn\") in @decode_step: "
        "operand #1 (the result of 'llm.rope') is used before its definition"
    )


def outlined_with_weight_read_after_its_call() -> tuple[ModuleOp, CallOp]:
    """The outlined tiny step with the LM head's weight read moved after the call using it."""
    module = tiny_step()
    OutlineKernels().apply(Context(), module)
    head = next(
        op
        for op in step_ops(module)
        if isinstance(op, CallOp) and "lm_head" in op.callee.string_value()
    )
    read = head.operands[-1].owner
    assert isinstance(read, llm.WeightOp)
    read.detach()
    head.parent_block().insert_op_after(read, head)
    return module, head


def test_the_lowering_refuses_a_use_before_its_definition():
    module, _ = outlined_with_weight_read_after_its_call()
    with pytest.raises(
        PassFailedException,
        match=r"^'dfk.call' in @decode_step: operand #2 "
        r"\(the result of 'llm.weight'\) is used before its definition$",
    ):
        LowerDfkToRdu().apply(Context(), module)


def test_rdu_opt_refuses_it_located_before_the_lowering(tmp_path):
    module, _ = outlined_with_weight_read_after_its_call()
    source = tmp_path / "step.mlir"
    source.write_text(str(module))
    lines = source.read_text().splitlines()
    use = next(n for n, line in enumerate(lines, 1) if "dfk.call @lm_head" in line)
    out = tmp_path / "out.mlir"
    r = subprocess.run(
        [RDU_OPT, str(source), "-p", "lower-dfk-to-rdu", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"{source}:{use}:5: error: 'dfk.call' op operand #2 (the result of ")
    assert first.endswith(f"'llm.weight') is used before its definition (defined at {use + 1}:5)")
    assert not out.exists()


@pytest.mark.parametrize("kernel_looping", [True, False])
def test_every_stage_of_the_pipeline_is_in_dominance_order(kernel_looping):
    module = tiny_step()
    assert first_dominance_violation(module) is None
    for p in pipeline_passes(kernel_looping=kernel_looping):
        p.apply(Context(), module)
        assert first_dominance_violation(module) is None, p.name


def parse(text: str) -> ModuleOp:
    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, arith.Arith, cf.Cf, test.Test):
        ctx.load_dialect(dialect)
    return Parser(ctx, text).parse_module()


def violation(text: str) -> str | None:
    found = first_dominance_violation(parse(text))
    return None if found is None else f"{found[0].name} #{found[1]}"


def test_a_value_of_a_block_that_dominates_the_use_is_visible():
    assert (
        violation("""
    func.func @f(%c: i1) -> i32 {
      %x = arith.constant 1 : i32
      cf.cond_br %c, ^a, ^b
    ^a:
      cf.br ^join
    ^b:
      cf.br ^join
    ^join:
      %y = arith.addi %x, %x : i32
      func.return %y : i32
    }""")
        is None
    )


def test_a_value_of_one_branch_is_not_visible_after_the_join():
    assert (
        violation("""
    func.func @f(%c: i1) -> i32 {
      cf.cond_br %c, ^a, ^b
    ^a:
      %x = arith.constant 1 : i32
      cf.br ^join
    ^b:
      cf.br ^join
    ^join:
      func.return %x : i32
    }""")
        == "func.return #0"
    )


def test_a_later_block_that_does_not_dominate_is_refused_even_if_it_comes_first():
    # ^b is entered only from ^a, but %x is defined in ^b and used in ^a.
    assert (
        violation("""
    func.func @f() -> i32 {
      cf.br ^a
    ^a:
      %y = arith.addi %x, %x : i32
      cf.br ^b
    ^b:
      %x = arith.constant 1 : i32
      func.return %y : i32
    }""")
        == "arith.addi #0"
    )


def test_a_nested_region_sees_values_defined_before_its_op_only():
    assert (
        violation("""
    func.func @f() {
      %x = arith.constant 1 : i32
      "test.op"() ({
        %y = arith.addi %x, %x : i32
        "test.termop"() : () -> ()
      }) : () -> ()
      func.return
    }""")
        is None
    )
    assert (
        violation("""
    func.func @f() {
      "test.op"() ({
        %y = arith.addi %x, %x : i32
        "test.termop"() : () -> ()
      }) : () -> ()
      %x = arith.constant 1 : i32
      func.return
    }""")
        == "arith.addi #0"
    )


def test_the_module_body_is_a_graph_region():
    assert (
        violation("""
    "test.op"(%x) : (i32) -> ()
    %x = "test.op"() : () -> i32
    """)
        is None
    )


def test_an_ir_model_file_is_refused_located(tmp_path):
    """`rdu-run` / `rdu-sim` take an .mlir decode step: the same swap, refused on loading."""
    module = tiny_step()
    swap_rope_and_cache_write(module)
    source = tmp_path / "step.mlir"
    source.write_text(str(module))
    lines = source.read_text().splitlines()
    use = next(n for n, line in enumerate(lines, 1) if "llm.kv_cache_write" in line)
    with pytest.raises(UserError) as error:
        parse_ir(str(source))
    assert str(error.value) == (
        f"{source}:{use}:5: 'llm.kv_cache_write' op operand #1 (the result of 'llm.rope') is "
        f"used before its definition (defined at {use + 1}:5)"
    )
