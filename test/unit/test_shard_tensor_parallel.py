"""shard-tensor-parallel: semantics (every rank run by the reference, within bf16 tolerance of
the unsharded model), independence from where in the pipeline it runs, refusals, the shard
representation, and the support table of docs/tensor_parallelism.md (regenerate it with
`python test/unit/test_shard_tensor_parallel.py`)."""

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from logit_tolerance import BF16_ULPS, check_logits, logit_tolerance
from test_generic_form_mlir_opt import run as run_tool
from xdsl.context import Context
from xdsl.dialects import builtin, func
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import PassFailedException, VerifyException

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import list_presets, load_model_config
from rdu_compiler.passes.kernel_looping import KernelLooping
from rdu_compiler.passes.outline_kernels import OutlineKernels
from rdu_compiler.passes.shard_tensor_parallel import (
    SOCKET_COUNTS,
    ShardTensorParallel,
    _merge,
    _privatize,
)
from rdu_compiler.rdu_dialect.dfk import DFK, KernelOp
from rdu_compiler.rdu_dialect.interpreter import ReferenceEngine
from rdu_compiler.rdu_dialect.llm import (
    LLM,
    SOCKETS_ATTR,
    AllGatherOp,
    AllReduceOp,
    AttentionOp,
    KVCacheWriteOp,
    ParamOp,
    ShardAttr,
)
from rdu_compiler.simulator.weights import RandomWeights

TINY = [p for p in list_presets() if p.startswith("tiny-")]
DOC = Path(__file__).parents[2] / "docs" / "tensor_parallelism.md"
BEGIN, END = "<!-- support-table:begin -->", "<!-- support-table:end -->"


def build(preset: str, layers: int | None = None, context: int = 8):
    return build_decode_step(load_model_config(preset, layers=layers), batch=2, context=context)


def apply(module, *passes):
    for p in passes:
        p.apply(Context(), module)
    module.verify()
    return module


def shard(n: int) -> ShardTensorParallel:
    return ShardTensorParallel(sockets=n)


def run(module, steps: int = 4):
    """Teacher-forced decode steps (fixed tokens; entries at different positions): the logits
    and greedy tokens of every step, and the final whole caches."""
    engine = ReferenceEngine(module, RandomWeights(seed=5))
    k, v = engine.new_caches()
    tokens = np.random.default_rng(0).integers(0, engine.vocab, (steps, engine.batch))
    out = []
    for step in range(steps):
        logits, next_tokens, k, v = engine.step(tokens[step], [step, step + 3], k, v)
        out.append((logits, next_tokens))
    return out, (k, v)


@pytest.fixture(scope="module")
def unsharded():
    cache: dict[str, tuple] = {}

    def get(preset: str):
        if preset not in cache:
            cache[preset] = run(build(preset))
        return cache[preset]

    return get


@pytest.mark.parametrize("sockets", [1, 2, 4])
@pytest.mark.parametrize("preset", TINY)
def test_sharded_reference_matches_unsharded(preset, sockets, unsharded):
    """Every rank runs its shard; all-reduces sum the partials. Tiny presets have 4 query and
    2 kv heads, so 4 sockets replicates each kv head on 2 ranks."""
    want_steps, want_caches = unsharded(preset)
    module = apply(build(preset), shard(sockets))
    got_steps, got_caches = run(module)
    for step, ((got, got_tokens), (want, _)) in enumerate(zip(got_steps, want_steps)):
        if sockets == 1:
            np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
        check_logits(got, got_tokens, want, BF16_ULPS, f"{preset}, {sockets} sockets, step {step}")
    for got, want in zip(got_caches, want_caches):
        assert got.shape == want.shape  # the engine takes and returns whole caches
        want32, got32 = want.astype(np.float32), got.astype(np.float32)
        np.testing.assert_array_equal(got32 == 0, want32 == 0)  # the same rows written
        tol = logit_tolerance(want32.reshape(1, -1), BF16_ULPS)[0]
        assert np.abs(got32 - want32).max() <= tol


def mqa(preset: str):
    """A tiny preset with one kv head (multi-query attention): fewer kv heads than sockets
    from 2 sockets on."""
    config = load_model_config(preset)
    return dataclasses.replace(config, name=f"{preset}-mqa", num_kv_heads=1)


def _matches(got_run, want_run, what: str) -> None:
    (got_steps, got_caches), (want_steps, want_caches) = got_run, want_run
    for step, ((got, got_tokens), (want, _)) in enumerate(zip(got_steps, want_steps)):
        check_logits(got, got_tokens, want, BF16_ULPS, f"{what}, step {step}")
    for got, want in zip(got_caches, want_caches):
        want32, got32 = want.astype(np.float32), got.astype(np.float32)
        np.testing.assert_array_equal(got32 == 0, want32 == 0, err_msg=what)
        tol = logit_tolerance(want32.reshape(1, -1), BF16_ULPS)[0]
        assert np.abs(got32 - want32).max() <= tol, what


@pytest.mark.parametrize(
    "model, sockets, split",
    [
        *((preset, 4, 2) for preset in TINY),
        *(
            (f"{preset}:mqa", n, k)
            for preset in ("tiny-llama", "tiny-mistral", "tiny-qwen2")
            for n, k in ((2, 2), (4, 4), (4, 2))
        ),
    ],
)
def test_caches_dealt_along_the_sequence_match_unsharded(model, sockets, split):
    """KV heads fewer than sockets, each kv head's cache dealt over `split` of the sockets
    sharing it (kv-seq-split): every rank writes the new rows of the positions it holds and
    attends them, the group combines its partials, and the whole caches come back equal."""
    preset, _, variant = model.partition(":")
    config = mqa(preset) if variant else load_model_config(preset)
    want = run(build_decode_step(config, batch=2, context=8))
    module = apply(
        build_decode_step(config, batch=2, context=8),
        ShardTensorParallel(sockets=sockets, kv_seq_split=split),
    )
    shards = {
        op.context_shards.value.data
        for op in module.walk()
        if isinstance(op, AttentionOp | KVCacheWriteOp)
    }
    assert shards == {split}
    _matches(run(module), want, f"{model}, {sockets} sockets, dealt over {split}")


PIPELINES = {
    "shard, outline, loop": [shard(4), OutlineKernels(), KernelLooping()],
    "outline, shard": [OutlineKernels(), shard(4)],
    "outline, loop, shard": [OutlineKernels(), KernelLooping(), shard(4)],
    "outline per op, shard": [OutlineKernels(policy="op"), shard(4)],
}


@pytest.mark.parametrize("preset", ["tiny-mixtral", "tiny-alternating", "tiny-qwen3"])
def test_same_answer_wherever_sharding_runs(preset):
    """Before outlining, after it, after kernel looping, with one kernel per op: every rank
    runs the same math, so the results are bit for bit those of sharding the llm IR."""
    want_steps, want_caches = run(apply(build(preset), shard(4)), steps=3)
    for name, passes in PIPELINES.items():
        got_steps, got_caches = run(apply(build(preset), *passes), steps=3)
        for got, want in zip(
            [a for s in got_steps for a in s] + list(got_caches),
            [a for s in want_steps for a in s] + list(want_caches),
        ):
            np.testing.assert_array_equal(got, want, err_msg=f"{preset}: {name}")


def _lm_head(module) -> tuple[ParamOp, list[AllGatherOp]]:
    """The parameter the LM head reads (the one the argmax's linear reads), and the gathers."""
    params = {p.sym_name.data: p for p in module.ops if isinstance(p, ParamOp)}
    name = "lm_head.weight" if "lm_head.weight" in params else "model.embed_tokens.weight.lm_head"
    return params[name], [op for op in module.walk() if isinstance(op, AllGatherOp)]


def test_lm_head_is_split_by_vocab_unless_indivisible():
    head, gathers = _lm_head(apply(build("tiny-qwen2", layers=1), shard(4)))
    assert head.shard == ShardAttr(0, 4) and head.type.get_shape() == (64, 64)
    assert len(gathers) == 1 and gathers[0].result.type.get_shape() == (2, 256)
    assert gathers[0].input.type.get_shape() == (2, 64)
    # tied: the head's read gets a parameter of its own (the same checkpoint tensor), split;
    # the embedding's stays whole
    module = apply(build("tiny-llama", layers=1), shard(4))
    head, gathers = _lm_head(module)
    assert head.shard == ShardAttr(0, 4) and head.type.get_shape() == (64, 64) and gathers
    table = next(
        p
        for p in module.ops
        if isinstance(p, ParamOp) and p is not head and p.source == head.source
    )
    assert table.shard is None and table.type.get_shape() == (256, 64)
    # a vocab of 250 does not split in 4 (but does in 2)
    config = dataclasses.replace(load_model_config("tiny-qwen2", layers=1), vocab_size=250)
    for n, split in ((4, False), (2, True)):
        head, gathers = _lm_head(apply(build_decode_step(config, batch=2, context=8), shard(n)))
        assert (head.shard is not None) == split == bool(gathers)


def test_outlined_kernels_keep_their_names_and_all_reduces_sit_in_the_layers():
    module = apply(build("tiny-llama"), OutlineKernels(), shard(2))
    kernels = [op for op in module.ops if isinstance(op, KernelOp)]
    assert [k.sym_name.data for k in kernels] == ["embed", "decoder_layer", "lm_head"]
    reduces = [op for op in kernels[1].walk() if isinstance(op, AllReduceOp)]
    assert len(reduces) == 2  # after o_proj and after down_proj


def test_op_policy_kernels_are_split_per_call():
    """`@linear` of the op policy serves q (column-split) and o (row-split) projections: the
    calls get distinct kernels, identical ones shared again."""
    module = apply(build("tiny-mixtral"), OutlineKernels(policy="op"), shard(2))
    names = [op.sym_name.data for op in module.ops if isinstance(op, KernelOp)]
    assert not any(".call" in n for n in names)
    reduces = [op for op in module.walk() if isinstance(op, AllReduceOp)]
    assert len(reduces) == 2  # one o_proj kernel, one moe kernel, each shared by the layers


def _printed(module) -> str:
    out = io.StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue()


def _shard_copy_per_call(module, sharding: ShardTensorParallel):
    """The pass as it ran before kernels called several times could be kept whole: every call
    its own copy of the kernel, the identical copies merged back afterwards."""
    copies = _privatize(module)
    sharding.apply(Context(), module)
    _merge(copies)
    return module


@pytest.mark.parametrize("policy", ["layer", "op"])
@pytest.mark.parametrize(
    "preset, sockets, kv_seq_split",
    [("tiny-llama", 2, -1), ("tiny-llama", 4, 2), ("tiny-mixtral", 4, -1), ("tiny-qwen3", 4, 1)],
)
def test_kernels_kept_whole_shard_as_a_copy_per_call_would(preset, sockets, kv_seq_split, policy):
    """Unlooped layers call one kernel each: the pass keeps it whole when that cuts it as a
    copy per call would be cut (the layer policy), else (`@linear` of the op policy serves
    column- and row-split projections) gives each call its copy; the IR is the same either
    way as with a copy per call."""
    sharding = ShardTensorParallel(sockets=sockets, kv_seq_split=kv_seq_split)
    got = apply(build(preset, layers=3), OutlineKernels(policy=policy), sharding)
    want = _shard_copy_per_call(
        apply(build(preset, layers=3), OutlineKernels(policy=policy)), sharding
    )
    assert _printed(got) == _printed(want)


# `@mul` serves the MLP's product (its intermediate split over the sockets) and a product of
# a parameter nothing else reads: kept whole, the kernel would split that parameter too.
TWO_SPLITS_ONE_KERNEL = """
builtin.module attributes {llm.model = "toy"} {
  llm.param @wg "gate" : tensor<8x8xbf16>
  llm.param @wu "up" : tensor<8x8xbf16>
  llm.param @wd "down" : tensor<8x8xbf16>
  llm.param @extra "extra" : tensor<1x8xbf16>
  dfk.kernel @mul(%a: tensor<1x8xbf16>, %b: tensor<1x8xbf16>) -> (tensor<1x8xbf16>) {
    %p = llm.mul %a, %b : tensor<1x8xbf16>
    dfk.return %p : tensor<1x8xbf16>
  }
  func.func @step(%h: tensor<1x8xbf16>) -> (tensor<1x8xbf16>, tensor<1x8xbf16>) {
    %wg = llm.weight @wg : tensor<8x8xbf16>
    %g = llm.linear %h, %wg : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %wu = llm.weight @wu : tensor<8x8xbf16>
    %u = llm.linear %h, %wu : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %s = llm.silu %g : tensor<1x8xbf16>
    %gu = dfk.call @mul(%s, %u) : (tensor<1x8xbf16>, tensor<1x8xbf16>) -> (tensor<1x8xbf16>)
    %wd = llm.weight @wd : tensor<8x8xbf16>
    %d = llm.linear %gu, %wd : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %e = llm.weight @extra : tensor<1x8xbf16>
    %z = dfk.call @mul(%e, %e) : (tensor<1x8xbf16>, tensor<1x8xbf16>) -> (tensor<1x8xbf16>)
    func.return %d, %z : tensor<1x8xbf16>, tensor<1x8xbf16>
  }
}
"""


def test_calls_needing_different_splits_do_not_share_a_kernel():
    """No conflict warns here (the second call's values need no split): the pass must see
    that the kernel's own ops do not imply the split the first call gives it."""
    module = apply(parse(TWO_SPLITS_ONE_KERNEL), shard(2))
    params = {p.sym_name.data: p for p in module.ops if isinstance(p, ParamOp)}
    assert params["extra"].shard is None and params["wg"].shard == ShardAttr(0, 2)
    kernels = {k.sym_name.data: k for k in module.ops if isinstance(k, KernelOp)}
    assert list(kernels) == ["mul", "mul_1"]
    assert kernels["mul"].function_type.inputs.data[0].get_shape() == (1, 4)
    assert kernels["mul_1"].function_type.inputs.data[0].get_shape() == (1, 8)
    want = _shard_copy_per_call(parse(TWO_SPLITS_ONE_KERNEL), shard(2))
    assert _printed(module) == _printed(want)


def test_one_socket_only_stamps_and_resharding_is_idempotent():
    module, original = build("tiny-llama"), str(build("tiny-llama"))
    apply(module, shard(1))
    assert module.attributes[SOCKETS_ATTR] == builtin.IntegerAttr(1, builtin.i64)
    del module.attributes[SOCKETS_ATTR]
    assert str(module) == original
    once = str(apply(build("tiny-llama"), shard(2)))
    assert str(apply(build("tiny-llama"), shard(2), shard(2))) == once
    assert str(apply(build("tiny-llama"), shard(1), shard(2))) == once


@pytest.mark.parametrize(
    "preset, sockets, message",
    [
        (
            "qwen2.5-7b",
            8,
            r"qwen2.5-7b \(28 attention heads, 4 kv heads\) cannot be split over 8 "
            r"sockets: the 28 query heads are not a multiple of 8 \(supported: 1, 2, 4 sockets\)",
        ),
        ("qwen2.5-7b", 16, "the 28 query heads are not a multiple of 16"),
        ("tiny-llama", 8, "the 4 query heads are not a multiple of 8"),
    ],
)
def test_refused_head_counts(preset, sockets, message):
    with pytest.raises(PassFailedException, match=message):
        apply(build(preset, layers=1), shard(sockets))


def test_qwen_splits_on_two_and_four_sockets():
    for sockets in (2, 4):
        module = apply(build("qwen2.5-7b", layers=1), shard(sockets))
        attention = next(op for op in module.walk() if op.name == "llm.attention")
        assert (attention.num_heads.value.data, attention.num_kv_heads.value.data) == (
            28 // sockets,
            4 // sockets,
        )


def test_refused_options_and_resharding():
    with pytest.raises(PassFailedException, match="sockets=3 is not supported"):
        apply(build("tiny-llama", layers=1), shard(3))
    with pytest.raises(PassFailedException, match="already sharded over 2 sockets"):
        apply(build("tiny-llama", layers=1), shard(2), shard(4))


def parse(text: str):
    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, LLM, DFK):
        ctx.load_dialect(dialect)
    return Parser(ctx, text).parse_module()


AFTER_ATTENTION = """
builtin.module {{
  llm.param @w "w" : {w}
  llm.param @b "b" : tensor<8xbf16>
  func.func @f(%q: tensor<1x8xbf16>, %kc: tensor<1x2x4x2xbf16>, %pos: tensor<1xi32>) -> {r} {{
    %a = llm.attention %q, %kc, %kc, %pos {{num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 2 : i64}} : tensor<1x8xbf16>, tensor<1x2x4x2xbf16>, tensor<1x2x4x2xbf16>, tensor<1xi32>
    %w = llm.weight @w : {w}
    %b = llm.weight @b : tensor<8xbf16>
    {op}
    func.return %r : {r}
  }}
}}
"""


@pytest.mark.parametrize(
    "w, op, r, message",
    [
        (
            "tensor<8x8xbf16>",
            "%r = llm.linear %a, %w, %b : tensor<1x8xbf16>, tensor<8x8xbf16>, "
            "tensor<8xbf16> -> tensor<1x8xbf16>",
            "tensor<1x8xbf16>",
            "row-split llm.linear .* with a bias is not supported",
        ),
        (
            "tensor<8xbf16>",
            "%r = llm.rms_norm %a, %w {eps = 1.0e-05 : f32} : tensor<1x8xbf16>, tensor<8xbf16>",
            "tensor<1x8xbf16>",
            "llm.rms_norm normalizes over features split across sockets",
        ),
        (
            "tensor<8xbf16>",
            "%r = llm.softmax %a : tensor<1x8xbf16>",
            "tensor<1x8xbf16>",
            "llm.softmax has no sharding rule",
        ),
    ],
)
def test_refused_ops_over_split_features(w, op, r, message):
    module = parse(AFTER_ATTENTION.format(w=w, op=op, r=r))
    with pytest.raises(PassFailedException, match=message):
        apply(module, shard(2))


def test_shard_attr_maps_ranks_to_blocks():
    """2 kv heads (of dim 16) on 4 sockets: ranks 0, 1 hold kv head 0, ranks 2, 3 kv head 1."""
    kv = ShardAttr(0, 2)
    assert kv.whole_shape((16, 64)) == (32, 64)
    assert [kv.block(r, 4)[0] for r in range(4)] == [0, 0, 1, 1]
    assert kv.index((16, 64), 3, 4) == (slice(16, 32), slice(None))
    assert ShardAttr(1, 4).index((64, 16), 2, 4) == (slice(None), slice(32, 48))


def test_shard_attr_deals_rows_among_the_ranks_sharing_a_block():
    """2 kv heads on 8 sockets, each head's rows dealt over 2 of the 4 ranks sharing it:
    ranks 0, 2 hold the even rows of head 0, ranks 1, 3 its odd rows (replicas in pairs)."""
    kv = ShardAttr(0, 2, 1, 2)
    assert kv.whole_shape((1, 8)) == (2, 16)
    assert [kv.block(r, 8) for r in range(4)] == [(0, 0), (0, 1), (0, 0), (0, 1)]
    assert kv.index((1, 8), 5, 8) == (slice(1, 2), slice(1, None, 2))
    with pytest.raises(VerifyException, match="interleave 3 must divide the 4 socket"):
        ShardAttr(0, 2, 1, 3).check(8, (1, 8), "w")
    with pytest.raises(VerifyException, match="another dim"):
        ShardAttr(0, 2, 0, 2).check(8, (1, 8), "w")


@pytest.mark.parametrize(
    "sockets, message",
    [
        ("", "shard parts 2 must divide the module's 1 socket"),
        ("attributes {llm.sockets = 4 : i64}", None),
        ("attributes {llm.sockets = 8 : i64}", None),
    ],
)
def test_param_shard_is_verified_against_the_socket_count(sockets, message):
    module = parse(f"""
    builtin.module {sockets} {{
      llm.param @w "w" shard #llm.shard<dim = 0, parts = 2> : tensor<4x8xbf16>
    }}""")
    if message is None:
        module.verify()
    else:
        with pytest.raises(VerifyException, match=message):
            module.verify()
    with pytest.raises(VerifyException, match="shard dim 2 is out of range"):
        parse("""
        builtin.module attributes {llm.sockets = 2 : i64} {
          llm.param @w "w" shard #llm.shard<dim = 2, parts = 2> : tensor<4x8xbf16>
        }""").verify()


@pytest.mark.parametrize("split", [1, 2], ids=["replicated-kv", "kv-dealt"])
def test_generic_form_of_a_sharded_module_parses_with_mlir_opt(mlir_opt, split):
    sharding = ShardTensorParallel(sockets=4, kv_seq_split=split)
    module = apply(build("tiny-llama", layers=1), OutlineKernels(), KernelLooping(), sharding)
    text = io.StringIO()
    Printer(stream=text, print_generic_format=True).print_op(module)
    upstream = run_tool(
        [mlir_opt, "--allow-unregistered-dialect", "--mlir-print-op-generic"], text.getvalue()
    )
    reparsed = apply(parse(upstream))

    def annotations(m):
        entry = next(op for op in m.ops if isinstance(op, func.FuncOp))
        params = [(p.sym_name, p.type, p.shard) for p in m.ops if isinstance(p, ParamOp)]
        return m.attributes[SOCKETS_ATTR], params, entry.arg_attrs, entry.res_attrs

    assert annotations(reparsed) == annotations(module)


# --------------------------------------------------------------------------------------
# The support table of docs/tensor_parallelism.md
# --------------------------------------------------------------------------------------


def support_table() -> str:
    """Every preset x socket count, found by running the pass on the preset's first layer."""
    header = " | ".join("1 socket" if n == 1 else f"{n} sockets" for n in SOCKET_COUNTS)
    rows = [f"| preset | heads / kv heads | {header} |", "|---|---|" + "---|" * len(SOCKET_COUNTS)]
    refusals = []
    for preset in list_presets():
        config = load_model_config(preset)
        cells = []
        for n in SOCKET_COUNTS:
            try:
                module = apply(build(preset, layers=1), shard(n))
            except PassFailedException as e:
                cells.append("refused")
                refusals.append(f"- {preset}, {n} sockets: {e}")
                continue
            parts = {
                op.shard.parts.data
                for op in module.ops
                if isinstance(op, ParamOp) and op.shard is not None
            }
            cell = (
                f"replicated KV (x{n // min(parts)})" if parts and min(parts) < n else "supported"
            )
            if n > 1 and not any(isinstance(op, AllGatherOp) for op in module.walk()):
                cell += ", LM head replicated"
            cells.append(cell)
        rows.append(
            f"| {preset} | {config.num_heads} / {config.num_kv_heads} | " + " | ".join(cells) + " |"
        )
    return "\n".join(rows + ["", "Refusals (the pass's messages):", "", *refusals])


def test_doc_support_table_is_up_to_date():
    doc = DOC.read_text()
    table = doc[doc.index(BEGIN) + len(BEGIN) : doc.index(END)].strip()
    assert table == support_table(), (
        "docs/tensor_parallelism.md is out of date: regenerate the table with "
        "`python test/unit/test_shard_tensor_parallel.py`"
    )


if __name__ == "__main__":
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + support_table() + "\n" + doc[end:])
