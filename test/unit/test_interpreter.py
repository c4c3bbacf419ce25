"""The reference interpreter on hand-written IR: dfk control structure, stacked parameter
binding, llm.all_reduce on one socket and across the ranks of a sharded module, llm.all_gather."""

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects.arith import Arith
from xdsl.dialects.builtin import Builtin, IntegerAttr, i64
from xdsl.dialects.func import Func
from xdsl.parser import Parser

from rdu_compiler.rdu_dialect.dfk import DFK
from rdu_compiler.rdu_dialect.interpreter import Ranks, ReferenceEngineError, make_interpreter
from rdu_compiler.rdu_dialect.llm import LLM, SOCKETS_ATTR
from rdu_compiler.simulator.weights import RandomWeights


def parse(text: str):
    ctx = Context()
    for dialect in (Builtin, Func, Arith, LLM, DFK):
        ctx.load_dialect(dialect)
    module = Parser(ctx, text).parse_module()
    module.verify()
    return module


# One "layer": norm, a K projection written into the layer's cache, attention over it, a
# residual linear. Types: x [2 entries, 16], cache [2 entries, 2 kv heads, 8 rows, 4],
# stacked over 2 layers as kcs.
TYPES = """
!x = tensor<2x16xbf16>
!pos = tensor<2xi32>
!kc = tensor<2x2x8x4xbf16>
!kcs = tensor<2x2x2x8x4xbf16>
!wn = tensor<16xbf16>
!wk = tensor<8x16xbf16>
!wo = tensor<16x16xbf16>
!wns = tensor<2x16xbf16>
!wks = tensor<2x8x16xbf16>
!wos = tensor<2x16x16xbf16>
"""

LAYER_BODY = """
    %h = llm.rms_norm %x, %wn {eps = 1.0e-05 : f32} : !x, !wn
    %k = llm.linear %h, %wk : !x, !wk -> tensor<2x8xbf16>
    %kc2 = llm.kv_cache_write %kc, %k, %pos : !kc, tensor<2x8xbf16>, !pos
    %a = llm.attention %h, %kc2, %kc2, %pos
         {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 4 : i64} : !x, !kc, !kc, !pos
    %y = llm.linear %a, %wo : !x, !wo -> !x
    %x2 = llm.add %x, %y : !x
"""

PARAMS = """
  llm.param @l0.wn "l0.wn" : !wn
  llm.param @l1.wn "l1.wn" : !wn
  llm.param @l0.wk "l0.wk" : !wk
  llm.param @l1.wk "l1.wk" : !wk
  llm.param @l0.wo "l0.wo" : !wo
  llm.param @l1.wo "l1.wo" : !wo
  llm.param @wn stacked ["l0.wn", "l1.wn"] : !wns
  llm.param @wk stacked ["l0.wk", "l1.wk"] : !wks
  llm.param @wo stacked ["l0.wo", "l1.wo"] : !wos
"""

CALLED_TWICE = f"""{TYPES}
builtin.module {{
{PARAMS}
  dfk.kernel @layer(%x: !x, %pos: !pos, %kc: !kc, %wn: !wn, %wk: !wk, %wo: !wo) -> (!x, !kc) {{
{LAYER_BODY}
    dfk.return %x2, %kc2 : !x, !kc
  }}
  func.func @f(%x0: !x, %pos: !pos, %kcs: !kcs) -> (!x, !kcs) {{
    %kc0 = dfk.slice %kcs[0] : !kcs -> !kc
    %kc1 = dfk.slice %kcs[1] : !kcs -> !kc
    %wn0 = llm.weight @l0.wn : !wn
    %wk0 = llm.weight @l0.wk : !wk
    %wo0 = llm.weight @l0.wo : !wo
    %r0:2 = dfk.call @layer(%x0, %pos, %kc0, %wn0, %wk0, %wo0)
            : (!x, !pos, !kc, !wn, !wk, !wo) -> (!x, !kc)
    %wn1 = llm.weight @l1.wn : !wn
    %wk1 = llm.weight @l1.wk : !wk
    %wo1 = llm.weight @l1.wo : !wo
    %r1:2 = dfk.call @layer(%r0#0, %pos, %kc1, %wn1, %wk1, %wo1)
            : (!x, !pos, !kc, !wn, !wk, !wo) -> (!x, !kc)
    %kcs2 = dfk.stack %r0#1, %r1#1 : !kc -> !kcs
    func.return %r1#0, %kcs2 : !x, !kcs
  }}
}}
"""

LOOPED = f"""{TYPES}
builtin.module {{
{PARAMS}
  dfk.kernel @layer.looped(%h0: !x, %p: !pos, %kcs: !kcs, %wns: !wns, %wks: !wks, %wos: !wos)
      -> (!x, !kcs) {{
    %r:2 = dfk.loop %i = 0 to 2 pipeline_depth 2 carried(%x = %h0 : !x) invariant(%pos = %p : !pos)
           stacked(%kc = %kcs : !kcs, %wn = %wns : !wns, %wk = %wks : !wks, %wo = %wos : !wos) {{
{LAYER_BODY}
      dfk.yield carried(%x2 : !x) stacked(%kc2 : !kc)
    }} -> (!x, !kcs)
    dfk.return %r#0, %r#1 : !x, !kcs
  }}
  func.func @f(%x0: !x, %pos: !pos, %kcs: !kcs) -> (!x, !kcs) {{
    %wn = llm.weight @wn : !wns
    %wk = llm.weight @wk : !wks
    %wo = llm.weight @wo : !wos
    %r:2 = dfk.call @layer.looped(%x0, %pos, %kcs, %wn, %wk, %wo)
           : (!x, !pos, !kcs, !wns, !wks, !wos) -> (!x, !kcs)
    func.return %r#0, %r#1 : !x, !kcs
  }}
}}
"""


def run_f(text: str, *args):
    module = parse(text)
    interpreter = make_interpreter(module, RandomWeights(3))
    return interpreter.call_op("f", args)


def test_kernel_called_twice_equals_looped_kernel():
    """What kernel looping relies on: N calls == one call of the looped kernel, bit for bit."""
    rng = np.random.default_rng(0)
    x = RandomWeights(9).get("x", (2, 16))
    pos = np.array([3, 6], np.int32)
    kcs = rng.standard_normal((2, 2, 2, 8, 4)).astype(x.dtype)
    before = kcs.copy()
    x_calls, kc_calls = run_f(CALLED_TWICE, x, pos, kcs)
    x_loop, kc_loop = run_f(LOOPED, x, pos, kcs)
    np.testing.assert_array_equal(x_calls.view(np.uint16), x_loop.view(np.uint16))
    np.testing.assert_array_equal(kc_calls.view(np.uint16), kc_loop.view(np.uint16))
    assert kc_loop.shape == kcs.shape
    np.testing.assert_array_equal(kcs.view(np.uint16), before.view(np.uint16))  # value semantics
    changed = np.argwhere((kc_loop != kcs).any(axis=-1))  # (layer, entry, head, row)
    assert {(int(b), int(r)) for _, b, _, r in changed} == {(0, 3), (1, 6)}


def test_nested_stacked_param_binds_each_slice_by_name():
    text = """
    builtin.module {
      llm.param @e stacked [["a", "b", "c"], ["d", "e", "f"]] : tensor<2x3x4x5xbf16>
      func.func @f() -> tensor<2x3x4x5xbf16> {
        %w = llm.weight @e : tensor<2x3x4x5xbf16>
        func.return %w : tensor<2x3x4x5xbf16>
      }
    }
    """
    (w,) = run_f(text)
    source = RandomWeights(3)
    for i, row in enumerate((("a", "b", "c"), ("d", "e", "f"))):
        for j, name in enumerate(row):
            np.testing.assert_array_equal(
                w[i, j].view(np.uint16), source.get(name, (4, 5)).view(np.uint16)
            )


ALL_REDUCE = """
builtin.module {
  func.func @f(%x: tensor<2x4xbf16>) -> tensor<2x4xbf16> {
    %y = llm.all_reduce %x {reduction = "sum"} : tensor<2x4xbf16>
    func.return %y : tensor<2x4xbf16>
  }
}
"""


def test_all_reduce_is_identity_on_one_socket():
    x = RandomWeights(1).get("x", (2, 4))
    (y,) = run_f(ALL_REDUCE, x)
    np.testing.assert_array_equal(y.view(np.uint16), x.view(np.uint16))


def test_all_reduce_sums_the_ranks_of_a_sharded_module():
    module = parse(ALL_REDUCE)
    module.attributes[SOCKETS_ATTR] = IntegerAttr(2, i64)
    with pytest.raises(ReferenceEngineError, match="sharded over 2 sockets.*need every rank"):
        make_interpreter(module, RandomWeights(1))
    x = [RandomWeights(1).get(f"x{r}", (2, 4)) for r in range(2)]
    (y0,), (y1,) = Ranks(module, RandomWeights(1)).call("f", [(x[0],), (x[1],)])
    want = (x[0].astype(np.float32) + x[1].astype(np.float32)).astype(x[0].dtype)
    for y in (y0, y1):
        np.testing.assert_array_equal(y.view(np.uint16), want.view(np.uint16))


def test_all_gather_concatenates_the_ranks_in_order():
    module = parse("""
builtin.module attributes {llm.sockets = 4 : i64} {
  func.func @f(%x: tensor<2x3xbf16>) -> tensor<2x12xbf16> {
    %y = llm.all_gather %x {dim = 1 : i64} : tensor<2x3xbf16> -> tensor<2x12xbf16>
    func.return %y : tensor<2x12xbf16>
  }
}
""")
    x = [RandomWeights(1).get(f"x{r}", (2, 3)) for r in range(4)]
    results = Ranks(module, RandomWeights(1)).call("f", [(p,) for p in x])
    want = np.concatenate(x, axis=1)
    for (y,) in results:
        np.testing.assert_array_equal(y.view(np.uint16), want.view(np.uint16))
