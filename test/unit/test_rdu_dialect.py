"""The rdu dialect's enum attributes say exactly what the program schema and the numerics
accept, and the lowering keeps the llm attributes' types in the units' `attrs`."""

from typing import get_args, get_type_hints

from xdsl.context import Context
from xdsl.dialects.builtin import DictionaryAttr, Float32Type, FloatAttr

from rdu_compiler.frontend.builder import build_decode_step
from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.lowering.emit_program import build_program
from rdu_compiler.lowering.pipeline import pipeline_passes
from rdu_compiler.rdu_dialect import llm, rdu
from rdu_compiler.simulator.numerics import OPS
from rdu_compiler.simulator.program import COLLECTIVES, Pcu, Tensor, Value


def literals(struct: type, field: str) -> set[str]:
    return set(get_args(get_type_hints(struct)[field]))


def test_enums_are_the_program_schema_and_numerics_names():
    assert {r.value for r in rdu.ValueRole} == literals(Value, "role")
    assert {k.value for k in rdu.TensorKind} == literals(Tensor, "kind")
    assert {m.value for m in rdu.MemoryTier} == literals(Tensor, "tier")
    assert {m.value for m in rdu.PcuMode} == literals(Pcu, "mode")
    assert {c.value for c in rdu.PcuCompute} == set(OPS) - COLLECTIVES


def test_unit_attrs_keep_their_llm_types():
    module = build_decode_step(load_model_config("tiny-llama", layers=1), context=8)
    for p in pipeline_passes():
        p.apply(Context(), module)
    pcus = [op for op in module.walk() if isinstance(op, rdu.PcuOp)]
    # rope runs fused into the KV write (passes/fusion.py): its attributes are the fused op's
    rope = next(op for op in pcus if op.op.data is rdu.PcuCompute.KV_CACHE_WRITE)
    norm = next(op for op in pcus if op.op.data is rdu.PcuCompute.RMS_NORM)
    assert rope.fused is not None and norm.attrs is not None
    (fused_rope,) = rope.fused.data
    rope_attrs = fused_rope.data["attrs"]
    assert isinstance(rope_attrs, DictionaryAttr)
    scaling = rope_attrs.data["scaling"]
    eps = norm.attrs.data["eps"]
    assert isinstance(scaling, llm.RopeScalingAttr)
    assert isinstance(eps, FloatAttr) and isinstance(eps.type, Float32Type)
    # The program states them as plain JSON, as the numerics take them.
    program = build_program(module)
    units = [u for k in program.kernels for s in k.sections for u in s.units]
    emitted = next(u for u in units if u.id == rope.id.data)
    assert emitted.fused[0].attrs["scaling"] == {"kind": scaling.kind.data, **scaling.values()}
    assert next(u for u in units if u.id == norm.id.data).attrs["eps"] == eps.value.data
