"""The `llm` dialect: one decode step of a language model as tensor ops.

Value semantics on builtin static-shape `tensor<...>` types. Data tensors (activations, weights,
caches) have `bf16` (the default) or `f32` elements, and every op requires the data operands it
combines to share one element type. Token ids and positions are `tensor<Bxi32>`, one entry per
batch entry; the entries of a batch may sit at different positions.

Layout conventions:
- activations are 2-D `[B, features]`; attention heads are not separate dims: a query is
  `[B, num_heads * head_dim]`, head `h` being features `h*head_dim .. (h+1)*head_dim - 1`, so no
  reshapes are needed anywhere;
- linear weights use the Hugging Face layout `[out, in]`;
- one layer's KV cache is `[B, kv_heads, context, head_dim]` (the stacked all-layers cache is
  sliced to this by the caller).

Numerics: the reference math of every op lives in `simulator/numerics.py` (f32 compute, the
result rounded to its element type once; `llm.moe` rounds where the equivalent sequence of llm
ops would). The docstrings below state each op's meaning.

Parameters are module-level `llm.param` symbols naming their checkpoint tensor(s); `llm.weight`
reads one as a value. A stacked parameter lists one checkpoint tensor per slice of its leading
dims (kernel looping stacks per-layer weights by layout, never by a runtime copy).

Discardable attributes and traits other stages rely on:
- `llm.sockets = <N> : i64` (`SOCKETS_ATTR`) on the module: the module is one SPMD program that
  N sockets run, each on its own shard (stamped by `shard-tensor-parallel`; absent means 1).
  Sharded parameters carry a `#llm.shard` (`ParamOp.shard`), and so do the sharded arguments
  and results of the entry function (`llm.shard` argument / result attribute), see
  docs/tensor_parallelism.md;
- `llm.layer = <i> : i64` (`LAYER_ATTR`) on an op says it belongs to decoder layer `i` (0-based).
  The frontend sets it; passes (kernel outlining) group ops by it; `layer_of(op)` reads it. llm
  ops verify its form when present.
- `ResultAliasesOperand(i)`: the op's result is meant to reuse the buffer of operand `i`
  (`llm.kv_cache_write`). The IR stays value-semantic; lowering records "result aliases operand
  i" in the program and the time model counts only the bytes really written.

Purity: every op that produces a value is `Pure`, including the collectives `llm.all_reduce`
and `llm.all_gather` (see `AllReduceOp`'s docstring: in an SPMD program every rank runs the
same ops, so CSE/DCE/hoisting act on all ranks alike and the collectives stay matched, as
MLIR's `mesh.all_reduce`, also `Pure`). `llm.param` is a symbol
definition, not a computation: it is not `Pure` (a pure op without results would be DCE'd).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DictionaryAttr,
    FlatSymbolRefAttrConstr,
    Float32Type,
    FloatAttr,
    IntAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    bf16,
    f32,
    f64,
    i32,
    i64,
)
from xdsl.ir import Attribute, Dialect, Operation, ParametrizedAttribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    VarConstraint,
    base,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.traits import (
    HasParent,
    OpTrait,
    Pure,
    SymbolOpInterface,
    SymbolUserOpInterface,
)
from xdsl.utils.exceptions import VerifyException

from rdu_compiler.rdu_dialect.symbols import lookup_symbol
from rdu_compiler.rdu_dialect.tensors import tensor_type

LAYER_ATTR = "llm.layer"
"""Discardable attribute (`IntegerAttr` i64 >= 0) marking the ops of one decoder layer."""

SOCKETS_ATTR = "llm.sockets"
"""Module attribute (i64 >= 1): how many sockets run the SPMD program (absent means 1)."""

SHARD_ATTR = "llm.shard"
"""Argument / result attribute (`#llm.shard`) of a function whose value is a per-rank shard."""

DATA_ELEMENT_TYPES = (bf16, f32)
"""Element types of data tensors (activations, weights, caches)."""


def sockets_of(module: ModuleOp) -> int:
    """How many sockets run `module` (its `llm.sockets` stamp; 1 when unstamped)."""
    attr = module.attributes.get(SOCKETS_ATTR)
    return attr.value.data if isinstance(attr, IntegerAttr) else 1


def layer_of(op: Operation) -> int | None:
    """The decoder layer `op` belongs to (its `llm.layer` attribute), or None if unmarked."""
    attr = op.attributes.get(LAYER_ATTR)
    return attr.value.data if isinstance(attr, IntegerAttr) else None


# ---------------------------------------------------------------------------------------------
# Traits
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultAliasesOperand(OpTrait):
    """The op's (single) result is meant to reuse the buffer of operand `index`.

    The IR stays value-semantic: the result is a new value of the operand's type. Lowering maps
    both to one buffer and records "result aliases operand `index`" in the program, so an
    in-place update moves only the bytes it writes. This is only sound when the operand has no
    use after the op; lowering must check that (and copy, or refuse, otherwise).
    Query it with `op.get_trait(ResultAliasesOperand)`. The op itself guarantees that the
    result has the operand's type.
    """

    index: int = 0


class _LayerAttrForm(OpTrait):
    """Checks the form of the discardable `llm.layer` attribute, when present."""

    def verify(self, op: Operation) -> None:
        attr = op.attributes.get(LAYER_ATTR)
        if attr is not None and not (
            isinstance(attr, IntegerAttr) and attr.type == i64 and attr.value.data >= 0
        ):
            raise VerifyException(
                f"{op.name}: {LAYER_ATTR} must be a non-negative i64 integer, got {attr}"
            )


_PURE = (Pure(), _LayerAttrForm())


# ---------------------------------------------------------------------------------------------
# Shared verification helpers (every shape / dtype message comes from here)
# ---------------------------------------------------------------------------------------------

_Typed: TypeAlias = SSAValue | Attribute


def _shape(op: Operation, role: str, v: _Typed, rank: int | None = None) -> tuple[int, ...]:
    """Shape of a static-shape data tensor (bf16/f32) of the given rank (any rank >= 1 if None)."""
    ty = tensor_type(v)
    shape = ty.get_shape()
    if any(d < 0 for d in shape):
        raise VerifyException(f"{op.name}: {role} must have a static shape, got {ty}")
    if rank is not None and len(shape) != rank:
        raise VerifyException(f"{op.name}: {role} must be a rank-{rank} tensor, got {ty}")
    if not shape:
        raise VerifyException(f"{op.name}: {role} must not be a 0-d tensor, got {ty}")
    if ty.element_type not in DATA_ELEMENT_TYPES:
        raise VerifyException(f"{op.name}: {role} must have bf16 or f32 elements, got {ty}")
    return shape


def _batch(op: Operation, role: str, v: _Typed) -> int:
    """Length of a `tensor<Bxi32>` of ids or positions."""
    ty = tensor_type(v)
    shape = ty.get_shape()
    if len(shape) != 1 or shape[0] < 0 or ty.element_type != i32:
        raise VerifyException(f"{op.name}: {role} must be a static tensor<Bxi32>, got {ty}")
    return shape[0]


def _same_element_type(op: Operation, *roles: tuple[str, _Typed]) -> None:
    """All the named tensors share the first one's element type."""
    first_role, first = roles[0]
    want = tensor_type(first).element_type
    for role, v in roles[1:]:
        got = tensor_type(v).element_type
        if got != want:
            raise VerifyException(
                f"{op.name}: element types differ: {first_role} has {want}, {role} has {got}"
            )


def _positions(op: Operation, positions: SSAValue, role: str, batch: int) -> None:
    """`positions` is a `tensor<Bxi32>` with one entry per batch entry of `role`."""
    n = _batch(op, "positions", positions)
    if n != batch:
        raise VerifyException(f"{op.name}: positions has {n} entries but {role} has batch {batch}")


def _dims(
    op: Operation, role: str, v: _Typed, expected: Sequence[int | None], legend: str
) -> tuple[int, ...]:
    """Shape of `v`, which must match `expected` (None = any) dim by dim; `legend` names them."""
    shape = _shape(op, role, v, len(expected))
    if any(e is not None and d != e for d, e in zip(shape, expected)):
        want = ", ".join("?" if e is None else str(e) for e in expected)
        raise VerifyException(
            f"{op.name}: {role} must be [{want}] ([{legend}]), got {tensor_type(v)}"
        )
    return shape


def _result_is(op: Operation, shape: Sequence[int], element_type: Attribute) -> None:
    """The op's result must be exactly `tensor<shape x element_type>`."""
    want = TensorType(element_type, shape)
    got = op.results[0].type
    if got != want:
        raise VerifyException(f"{op.name}: result must be {want}, got {got}")


def _positive(op: Operation, name: str, attr: IntegerAttr | FloatAttr | None) -> None:
    if attr is not None and not attr.value.data > 0:
        raise VerifyException(f"{op.name}: {name} must be positive, got {attr.value.data}")


def _one_of(op: Operation, name: str, attr: StringAttr, allowed: Sequence[str]) -> None:
    if attr.data not in allowed:
        raise VerifyException(
            f"{op.name}: {name} must be one of {', '.join(allowed)}, got '{attr.data}'"
        )


def _format_float(value: float) -> str:
    """A float in MLIR literal form (always with a '.' so it never reads as an integer)."""
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa and mantissa.lstrip("-").isdigit():
        mantissa += ".0"
    return mantissa + e + exponent


# ---------------------------------------------------------------------------------------------
# Attributes
# ---------------------------------------------------------------------------------------------

_ROPE_SCALING_FIELDS: dict[str, dict[str, type]] = {
    "linear": {"factor": float},
    "llama3": {
        "factor": float,
        "low_freq_factor": float,
        "high_freq_factor": float,
        "original_max_position_embeddings": int,
    },
}


def _rope_scaling_problem(kind: str, values: dict[str, int | float]) -> tuple[str, str] | None:
    """What is wrong with a rope scaling, as (where: "kind", "end" or a field name, message)."""
    fields = _ROPE_SCALING_FIELDS.get(kind)
    if fields is None:
        return "kind", (
            f"unknown rope scaling kind '{kind}' "
            f"(expected one of: {', '.join(_ROPE_SCALING_FIELDS)})"
        )
    for name, value in values.items():
        if name not in fields:
            return name, (
                f"rope scaling '{kind}' has no field '{name}' (fields: {', '.join(fields)})"
            )
        if fields[name] is int and not isinstance(value, int):
            return name, f"rope scaling field '{name}' must be an integer, got {value}"
        if not (value > 0 and math.isfinite(value)):
            return name, f"rope scaling field '{name}' must be positive, got {value}"
    missing = [name for name in fields if name not in values]
    if missing:
        return "end", f"rope scaling '{kind}' is missing field(s): {', '.join(missing)}"
    if kind == "llama3" and not values["high_freq_factor"] > values["low_freq_factor"]:
        return "high_freq_factor", (
            "rope scaling 'llama3' needs high_freq_factor > low_freq_factor, got "
            f"{values['high_freq_factor']} <= {values['low_freq_factor']}"
        )
    return None


@irdl_attr_definition
class RopeScalingAttr(ParametrizedAttribute):
    """How RoPE frequencies are rescaled for long context (HF `rope_scaling`).

    `#llm.rope_scaling<linear, factor = 4.0>`: every inverse frequency is divided by `factor`
    (equivalently, positions are divided by it).

    `#llm.rope_scaling<llama3, factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0,
    original_max_position_embeddings = 8192>`: with `wavelen = 2*pi / inv_freq`,
    `lo = original_max_position_embeddings / low_freq_factor` and
    `hi = original_max_position_embeddings / high_freq_factor`: frequencies with
    `wavelen < hi` are kept, those with `wavelen > lo` are divided by `factor`, and in between
    `inv_freq = (1 - s) * inv_freq / factor + s * inv_freq` with
    `s = (original_max_position_embeddings / wavelen - low_freq_factor)
    / (high_freq_factor - low_freq_factor)`. Neither kind scales cos / sin themselves.
    """

    name = "llm.rope_scaling"

    kind: StringAttr
    fields: DictionaryAttr

    @staticmethod
    def from_values(kind: str, **values: int | float) -> RopeScalingAttr:
        """Build from plain values (floats for float fields, ints for integer fields),
        fields in the kind's canonical order."""
        types = _ROPE_SCALING_FIELDS.get(kind, {})
        order = list(types)
        items = sorted(
            values.items(),
            key=lambda item: order.index(item[0]) if item[0] in types else len(order),
        )
        return RopeScalingAttr(
            StringAttr(kind),
            DictionaryAttr(
                {
                    name: IntegerAttr(value, i64)
                    if types.get(name) is int and isinstance(value, int)
                    else FloatAttr(float(value), f64)
                    for name, value in items
                }
            ),
        )

    def values(self) -> dict[str, int | float]:
        """The fields as plain Python numbers."""
        return {
            name: attr.value.data
            for name, attr in self.fields.data.items()
            if isinstance(attr, IntegerAttr | FloatAttr)
        }

    def verify(self) -> None:
        for name, attr in self.fields.data.items():
            if not isinstance(attr, IntegerAttr | FloatAttr):
                raise VerifyException(f"rope scaling field '{name}' must be a number, got {attr}")
        problem = _rope_scaling_problem(self.kind.data, self.values())
        if problem is not None:
            raise VerifyException(problem[1])

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        parser.parse_punctuation("<")
        positions = {"kind": parser.pos}
        kind = parser.parse_identifier(" (rope scaling kind)")
        values: dict[str, int | float] = {}
        while parser.parse_optional_punctuation(",") is not None:
            name_pos = parser.pos
            name = parser.parse_identifier(" (rope scaling field)")
            if name in values:
                parser.raise_error(f"duplicate rope scaling field '{name}'", name_pos)
            positions[name] = name_pos
            parser.parse_punctuation("=")
            values[name] = parser.parse_number(context_msg=f" for rope scaling field '{name}'")
        positions["end"] = parser.pos
        problem = _rope_scaling_problem(kind, values)
        if problem is not None:
            parser.raise_error(problem[1], positions[problem[0]])
        parser.parse_punctuation(">")
        return RopeScalingAttr.from_values(kind, **values).parameters

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.kind.data}")
        for name, value in self.values().items():
            text = str(value) if isinstance(value, int) else _format_float(value)
            printer.print_string(f", {name} = {text}")
        printer.print_string(">")


@irdl_attr_definition
class ShardAttr(ParametrizedAttribute):
    """Which part of a whole tensor each rank of an SPMD program holds: `#llm.shard<dim = d,
    parts = p>`, optionally `#llm.shard<dim = d, parts = p, interleave_dim = e, interleave =
    k>`.

    The whole tensor is cut along dim `d` into `p` equal blocks; with N = the module's
    `llm.sockets` (which `p` must divide), rank r holds block `r * p // N`. `p == N` is a
    plain split (rank r holds block r); `p < N` replicates each block on `N / p` consecutive
    ranks (K/V heads fewer than sockets), and those replicated bytes are real traffic. With
    `interleave = k > 1` (k divides `N / p`), the ranks sharing a block also deal its rows
    along dim `e` among themselves: rank r holds rows `r % k, r % k + k, ...` (the KV cache's
    sequence split: position t on rank t % k of the group, at row t // k). The annotated
    type is the shard's: the whole tensor's dim `d` is `p` times larger, dim `e` `k` times.
    """

    name = "llm.shard"

    dim: IntAttr
    parts: IntAttr
    interleave_dim: IntAttr
    interleave: IntAttr

    def __init__(self, dim: int, parts: int, interleave_dim: int = 0, interleave: int = 1):
        super().__init__(IntAttr(dim), IntAttr(parts), IntAttr(interleave_dim), IntAttr(interleave))

    def block(self, rank: int, sockets: int) -> tuple[int, int]:
        """The part rank `rank` of `sockets` holds: its block along `dim`, its rows along
        `interleave_dim` (ranks holding the same part are replicas)."""
        return rank * self.parts.data // sockets, rank % self.interleave.data

    def whole_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The whole tensor's shape, given the shard's."""
        whole = list(shape)
        whole[self.dim.data] *= self.parts.data
        whole[self.interleave_dim.data] *= self.interleave.data
        return tuple(whole)

    def index(self, shape: Sequence[int], rank: int, sockets: int) -> tuple[slice, ...]:
        """Where the shard (of shape `shape`) of rank `rank` lies in the whole tensor."""
        d, size = self.dim.data, shape[self.dim.data]
        block, row = self.block(rank, sockets)
        index = [slice(None)] * len(shape)
        index[d] = slice(block * size, (block + 1) * size)
        if self.interleave.data > 1:
            index[self.interleave_dim.data] = slice(row, None, self.interleave.data)
        return tuple(index)

    def check(self, sockets: int, shape: Sequence[int], where: str) -> None:
        """Raises a VerifyException unless this shards a rank-`len(shape)` tensor over
        `sockets` sockets."""
        dim, parts = self.dim.data, self.parts.data
        if not 0 <= dim < len(shape):
            raise VerifyException(f"{where}: shard dim {dim} is out of range for rank {len(shape)}")
        if parts < 1 or sockets % parts:
            raise VerifyException(
                f"{where}: shard parts {parts} must divide the module's {sockets} socket(s) "
                f"({SOCKETS_ATTR})"
            )
        k, e = self.interleave.data, self.interleave_dim.data
        if k < 1 or (sockets // parts) % k:
            raise VerifyException(
                f"{where}: shard interleave {k} must divide the {sockets // parts} socket(s) "
                f"sharing each of the {parts} part(s)"
            )
        if k > 1 and (not 0 <= e < len(shape) or e == dim):
            raise VerifyException(
                f"{where}: shard interleave dim {e} must be another dim of the rank-{len(shape)} "
                "tensor than the shard dim"
            )

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        parser.parse_punctuation("<")
        values = []
        for i, key in enumerate(("dim", "parts", "interleave_dim", "interleave")):
            if i and parser.parse_optional_punctuation(",") is None:
                break
            parser.parse_keyword(key)
            parser.parse_punctuation("=")
            values.append(parser.parse_integer())
        if len(values) == 3:
            parser.parse_punctuation(",")  # reports the missing `interleave`
        parser.parse_punctuation(">")
        if len(values) < 2:
            parser.raise_error("expected `parts = <integer>` in #llm.shard")
        values += [0, 1][len(values) - 2 :]
        return tuple(IntAttr(v) for v in values)

    def print_parameters(self, printer: Printer) -> None:
        text = f"<dim = {self.dim.data}, parts = {self.parts.data}"
        if self.interleave.data != 1:
            text += f", interleave_dim = {self.interleave_dim.data}"
            text += f", interleave = {self.interleave.data}"
        printer.print_string(text + ">")


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

NestedSources: TypeAlias = "str | Sequence[NestedSources]"


def _source_attr(source: NestedSources | Attribute) -> Attribute:
    if isinstance(source, Attribute):
        return source
    if isinstance(source, str):
        return StringAttr(source)
    return ArrayAttr([_source_attr(s) for s in source])


def _source_depth(op: ParamOp, source: Attribute, level: int, shape: tuple[int, ...]) -> int:
    """Nesting depth of a (sub-)list of sources at `level`, checked against `shape`."""
    where = f"llm.param @{op.sym_name.data}"
    if isinstance(source, StringAttr):
        if not source.data:
            raise VerifyException(f"{where}: empty checkpoint name")
        return 0
    if not isinstance(source, ArrayAttr):
        raise VerifyException(f"{where}: sources must be strings, got {source}")
    if level >= len(shape):
        raise VerifyException(
            f"{where}: stacked sources nest deeper than the rank {len(shape)} of {op.type}"
        )
    if len(source.data) != shape[level]:
        dealt = op.stack_shard
        if dealt is not None and dealt.dim.data == level:
            parts = dealt.parts.data
            raise VerifyException(
                f"{where}: stacked sources list {len(source.data)} slices at nesting level "
                f"{level} but dim {level} of {op.type} holds {shape[level] // parts} in each of "
                f"the {parts} parts of its stack_shard ({shape[level]} slices)"
            )
        raise VerifyException(
            f"{where}: stacked sources list {len(source.data)} slices at nesting level {level} "
            f"but dim {level} of {op.type} is {shape[level]}"
        )
    depths = {_source_depth(op, s, level + 1, shape) for s in source.data}
    if len(depths) != 1:
        raise VerifyException(f"{where}: stacked sources are nested unevenly")
    return 1 + depths.pop()


def _parse_optional_shard(parser: Parser, keyword: str) -> ShardAttr | None:
    """`keyword #llm.shard<...>`, if the keyword comes next."""
    if parser.parse_optional_keyword(keyword) is None:
        return None
    pos = parser.pos
    shard = parser.parse_attribute()
    if not isinstance(shard, ShardAttr):
        parser.raise_error(f"expected a #llm.shard after '{keyword}'", pos)
    return shard


@irdl_op_definition
class ParamOp(IRDLOperation):
    """A model parameter: a module-level symbol with its tensor type and checkpoint source(s).

        llm.param @model.embed_tokens.weight "model.embed_tokens.weight" : tensor<128x64xbf16>
        llm.param @wq stacked ["model.layers.0.self_attn.q_proj.weight",
                              "model.layers.1.self_attn.q_proj.weight"] : tensor<2x64x64xbf16>

    A plain parameter is one checkpoint tensor (HF name and layout) of exactly `type`. A
    stacked parameter's `source` is a nested list mirroring its `d` leading dims: the entry at
    `[i0, ..., i(d-1)]` names the checkpoint tensor that is slice `[i0, ..., i(d-1), :, ...]`
    (of type `checkpoint_type`), e.g. layers x experts for `d = 2`. Slices are bound one by one
    at run time (each may live in its own memory tier or shard): no contiguous storage is
    implied. Weights never appear in the IR; `llm.weight` reads a parameter as a value.

    In a module sharded over sockets (`llm.sockets`), `shard` (a `#llm.shard`, printed after
    the sources: `... "name" shard #llm.shard<dim = 0, parts = 2> : ...`) says which part of
    each checkpoint tensor a rank holds: `dim` counts in the checkpoint tensor (one slice of a
    stacked parameter), so stacking keeps it; `type` is then the shard's type. `stack_shard`
    (a `#llm.shard` without interleave, printed next: `... stack_shard #llm.shard<dim = 1,
    parts = 8> : ...`) deals the slices of stacked dim `dim` over the ranks instead (expert
    parallelism: rank r binds experts of block `r * parts // N`): the sources list every
    slice, `type` holds `1 / parts` of them along that dim.
    """

    name = "llm.param"

    sym_name = prop_def(SymbolNameConstraint())
    type = prop_def(TensorType)
    source = prop_def(base(StringAttr) | base(ArrayAttr))
    shard = opt_prop_def(ShardAttr)
    stack_shard = opt_prop_def(ShardAttr)

    traits = traits_def(SymbolOpInterface(), HasParent(ModuleOp), _LayerAttrForm())

    def __init__(
        self,
        sym_name: str,
        type: TensorType[Attribute],
        source: NestedSources | Attribute,
        shard: ShardAttr | None = None,
        stack_shard: ShardAttr | None = None,
    ):
        super().__init__(
            properties={
                "sym_name": StringAttr(sym_name),
                "type": type,
                "source": _source_attr(source),
                "shard": shard,
                "stack_shard": stack_shard,
            }
        )

    @property
    def is_stacked(self) -> bool:
        return isinstance(self.source, ArrayAttr)

    @property
    def stack_depth(self) -> int:
        """How many leading dims are stacked (0 for a plain parameter)."""
        depth, source = 0, self.source
        while isinstance(source, ArrayAttr):
            depth, source = depth + 1, source.data[0]
        return depth

    @property
    def checkpoint_type(self) -> TensorType[Attribute]:
        """The type of each checkpoint tensor (one slice; the whole type if not stacked)."""
        return TensorType(self.type.element_type, self.type.get_shape()[self.stack_depth :])

    def slice_source(self, index: int) -> StringAttr | ArrayAttr[Attribute]:
        """Source(s) of slice `index` along the leading dim: a name, or a nested list."""
        assert isinstance(self.source, ArrayAttr), f"@{self.sym_name.data} is not stacked"
        return self.source.data[index]  # type: ignore[return-value]

    def flat_sources(self) -> list[str]:
        """All checkpoint names, slices in row-major order of the stacked dims."""
        names: list[str] = []

        def walk(source: Attribute) -> None:
            if isinstance(source, ArrayAttr):
                for s in source.data:
                    walk(s)
            else:
                assert isinstance(source, StringAttr)
                names.append(source.data)

        walk(self.source)
        return names

    @property
    def stacked_shape(self) -> tuple[int, ...]:
        """The type's shape with every slice of the sources (`stack_shard`'s dim whole)."""
        shape = list(self.type.get_shape())
        if self.stack_shard is not None:
            shape[self.stack_shard.dim.data] *= self.stack_shard.parts.data
        return tuple(shape)

    def rank_sources(self, rank: int, sockets: int) -> list[str]:
        """The checkpoint names rank `rank` of `sockets` binds, in row-major order of the
        stacked dims: all of them unless `stack_shard` deals a stacked dim."""
        if self.stack_shard is None:
            return self.flat_sources()
        dim = self.stack_shard.dim.data
        held = self.type.get_shape()[dim]
        block, _ = self.stack_shard.block(rank, sockets)

        def walk(source: Attribute, level: int) -> list[str]:
            if isinstance(source, StringAttr):
                return [source.data]
            assert isinstance(source, ArrayAttr)
            items = source.data[block * held : (block + 1) * held] if level == dim else source.data
            return [name for s in items for name in walk(s, level + 1)]

        return walk(self.source, 0)

    def verify_(self) -> None:
        where = f"llm.param @{self.sym_name.data}"
        _shape(self, f"@{self.sym_name.data} type", self.type)
        stack_shard = self.stack_shard
        if stack_shard is not None and (
            not 0 <= stack_shard.dim.data < self.stack_depth or stack_shard.interleave.data != 1
        ):
            raise VerifyException(
                f"{where}: stack_shard must name one of the {self.stack_depth} stacked dim(s), "
                "without interleave"
            )
        _source_depth(self, self.source, 0, self.stacked_shape)
        module = self.parent_op()
        if not isinstance(module, ModuleOp):
            return
        if self.shard is not None:
            self.shard.check(sockets_of(module), self.checkpoint_type.get_shape(), where)
        if stack_shard is not None:
            stack_shard.check(
                sockets_of(module), self.stacked_shape[: self.stack_depth], f"{where} stack_shard"
            )

    @classmethod
    def parse(cls, parser: Parser) -> ParamOp:
        sym_name = parser.parse_symbol_name()
        if parser.parse_optional_keyword("stacked") is not None:
            pos = parser.pos
            source = parser.parse_attribute()
            if not isinstance(source, ArrayAttr):
                parser.raise_error("expected a list of checkpoint names after 'stacked'", pos)
        else:
            source = StringAttr(parser.parse_str_literal(" (checkpoint name)"))
        shard = _parse_optional_shard(parser, "shard")
        stack_shard = _parse_optional_shard(parser, "stack_shard")
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        pos = parser.pos
        type = parser.parse_type()
        if not isinstance(type, TensorType):
            parser.raise_error(f"llm.param type must be a tensor, got {type}", pos)
        op = cls(sym_name.data, type, source, shard, stack_shard)
        op.attributes |= attributes
        return op

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_symbol_name(self.sym_name.data)
        printer.print_string(" stacked " if self.is_stacked else " ")
        printer.print_attribute(self.source)
        if self.shard is not None:
            printer.print_string(" shard ")
            printer.print_attribute(self.shard)
        if self.stack_shard is not None:
            printer.print_string(" stack_shard ")
            printer.print_attribute(self.stack_shard)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.type)


class _WeightSymbolUser(SymbolUserOpInterface):
    def verify(self, op: Operation) -> None:
        assert isinstance(op, WeightOp)
        name = op.param.root_reference.data
        param = lookup_symbol(op, name)
        if param is None:
            raise VerifyException(f"llm.weight: no symbol named @{name}")
        if not isinstance(param, ParamOp):
            raise VerifyException(f"llm.weight: @{name} is a {param.name}, not an llm.param")
        if param.type != op.result.type:
            raise VerifyException(
                f"llm.weight: @{name} has type {param.type} but the read expects {op.result.type}"
            )


@irdl_op_definition
class WeightOp(IRDLOperation):
    """Reads the parameter `@param` as a value: `%w = llm.weight @sym : tensor<...>`.

    The result is the parameter's tensor (for a stacked parameter, the whole stack). Exists so
    that parameters are named module-level symbols (bound by name at run time) while ops use
    them as ordinary SSA values.
    """

    name = "llm.weight"

    param = prop_def(FlatSymbolRefAttrConstr)
    result = result_def(TensorType)

    assembly_format = "$param attr-dict `:` type($result)"
    traits = traits_def(_WeightSymbolUser(), *_PURE)

    def __init__(self, param: ParamOp):
        super().__init__(
            properties={"param": SymbolRefAttr(param.sym_name)}, result_types=[param.type]
        )


# ---------------------------------------------------------------------------------------------
# Compute ops
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class EmbeddingOp(IRDLOperation):
    """Token embedding lookup: `result[b, :] = table[ids[b], :]`.

    table `[V, H]`, ids `tensor<Bxi32>` with values in `[0, V)` (others are an error of the
    reference) -> `[B, H]` of the table's element type.
    """

    name = "llm.embedding"

    table = operand_def(TensorType)
    ids = operand_def(TensorType)
    result = result_def(TensorType)

    assembly_format = "$table `,` $ids attr-dict `:` type($table) `,` type($ids) `->` type($result)"
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        _, hidden = _shape(self, "table", self.table, 2)
        batch = _batch(self, "ids", self.ids)
        _result_is(self, (batch, hidden), tensor_type(self.table).element_type)


class _NormOp(IRDLOperation):
    T: ClassVar = VarConstraint("T", base(TensorType))

    input = operand_def(T)
    weight = operand_def(TensorType)
    eps = prop_def(FloatAttr[Float32Type])
    result = result_def(T)

    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(*_PURE)

    def _verify_norm(self) -> None:
        """Checks shared by the norms."""
        _, features = _shape(self, "input", self.input, 2)
        (group,) = _shape(self, "weight", self.weight, 1)
        _same_element_type(self, ("input", self.input), ("weight", self.weight))
        _positive(self, "eps", self.eps)
        if features % group:
            raise VerifyException(
                f"{self.name}: weight has {group} elements, which does not divide the "
                f"input's {features} features"
            )


@irdl_op_definition
class RMSNormOp(_NormOp):
    """RMS normalization over contiguous feature groups.

    input `[B, N]`, weight `[G]` with `G` dividing `N`. Each group `x_g` of `G` consecutive
    features of each row is normalized on its own:
    `y_g = x_g / sqrt(mean(x_g ** 2) + eps) * weight`. `G == N` is the usual RMSNorm;
    `G == head_dim` on a `[B, heads*head_dim]` query or key is a per-head norm (Qwen3 q/k norm).
    """

    name = "llm.rms_norm"

    assembly_format = "$input `,` $weight attr-dict `:` type($input) `,` type($weight)"

    def verify_(self) -> None:
        self._verify_norm()


@irdl_op_definition
class LayerNormOp(_NormOp):
    """Layer normalization of each row: `y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`.

    input `[B, N]`, weight `[N]`, bias `[N]`; `var` is the biased (population) variance.
    """

    name = "llm.layer_norm"

    bias = operand_def(TensorType)

    assembly_format = (
        "$input `,` $weight `,` $bias attr-dict `:` type($input) `,` type($weight) `,` type($bias)"
    )

    def verify_(self) -> None:
        _, features = _shape(self, "input", self.input, 2)
        _dims(self, "weight", self.weight, (features,), "input features")
        _dims(self, "bias", self.bias, (features,), "input features")
        _same_element_type(self, ("input", self.input), ("bias", self.bias))
        self._verify_norm()


@irdl_op_definition
class LinearOp(IRDLOperation):
    """Dense layer, HF layout: `result = input @ weight^T (+ bias)`.

    input `[B, IN]`, weight `[OUT, IN]`, optional bias `[OUT]` -> `[B, OUT]`.
    """

    name = "llm.linear"

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)

    assembly_format = (
        "$input `,` $weight (`,` $bias^)? attr-dict `:` type($input) `,` type($weight) "
        "(`,` type($bias)^)? `->` type($result)"
    )
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        batch, features = _shape(self, "input", self.input, 2)
        out, expects = _shape(self, "weight", self.weight, 2)
        _same_element_type(self, ("input", self.input), ("weight", self.weight))
        if features != expects:
            raise VerifyException(
                f"llm.linear: input has {features} features but weight [{out}, {expects}] "
                f"expects {expects}"
            )
        if self.bias is not None:
            (n,) = _shape(self, "bias", self.bias, 1)
            _same_element_type(self, ("input", self.input), ("bias", self.bias))
            if n != out:
                raise VerifyException(
                    f"llm.linear: bias has {n} elements but weight [{out}, {expects}] has "
                    f"{out} outputs"
                )
        _result_is(self, (batch, out), tensor_type(self.input).element_type)


@irdl_op_definition
class RopeOp(IRDLOperation):
    """Rotary position embedding of every head, HF "rotate_half" (non-interleaved) convention.

    input `[B, n*head_dim]`, positions `tensor<Bxi32>` -> same type as input. With
    `half = head_dim / 2` and `inv_freq[i] = theta ** (-2i / head_dim)` for `i < half` (then
    rescaled by `scaling`, a `#llm.rope_scaling`, if present), for each batch entry `b`, head,
    and `i < half`: with `a = positions[b] * inv_freq[i]`, `x1 = x[i]`, `x2 = x[i + half]`
    (within the head): `y[i] = x1*cos(a) - x2*sin(a)`, `y[i + half] = x2*cos(a) + x1*sin(a)`.
    """

    name = "llm.rope"

    T: ClassVar = VarConstraint("T", base(TensorType))

    input = operand_def(T)
    positions = operand_def(TensorType)
    head_dim = prop_def(IntegerAttr[I64])
    theta = prop_def(FloatAttr[Float32Type])
    scaling = opt_prop_def(RopeScalingAttr)
    result = result_def(T)

    assembly_format = "$input `,` $positions attr-dict `:` type($input) `,` type($positions)"
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        batch, features = _shape(self, "input", self.input, 2)
        _positions(self, self.positions, "input", batch)
        _positive(self, "head_dim", self.head_dim)
        _positive(self, "theta", self.theta)
        head_dim = self.head_dim.value.data
        if head_dim % 2:
            raise VerifyException(f"llm.rope: head_dim must be even, got {head_dim}")
        if features % head_dim:
            raise VerifyException(
                f"llm.rope: head_dim {head_dim} does not divide the input's {features} features"
            )


def context_shards_of(op: KVCacheWriteOp | AttentionOp) -> int:
    """Over how many ranks `op`'s cache rows are dealt (1: the rank holds every position)."""
    return 1 if op.context_shards is None else op.context_shards.value.data


def expert_shards_of(op: MoEOp) -> int:
    """Over how many ranks `op`'s experts are dealt (1: the rank holds every expert)."""
    return 1 if op.expert_shards is None else op.expert_shards.value.data


def _context_shards(op: Operation, attr: IntegerAttr | None, name: str = "context_shards") -> None:
    """`attr` (`context_shards`, or `name`) is positive and divides the module's socket
    count."""
    _positive(op, name, attr)
    module = op.get_toplevel_object()
    sockets = sockets_of(module) if isinstance(module, ModuleOp) else 1
    if attr is not None and sockets % attr.value.data:
        raise VerifyException(
            f"{op.name}: {name} {attr.value.data} must divide the module's {sockets} "
            f"socket(s) ({SOCKETS_ATTR})"
        )


@irdl_op_definition
class KVCacheWriteOp(IRDLOperation):
    """Writes one new K (or V) row per batch entry into one layer's cache.

    cache `[B, KVH, S, D]`, new `[B, KVH*D]`, positions `tensor<Bxi32>` (each in `[0, S)`) ->
    the cache's type: the cache with `result[b, g, positions[b], :] = new[b, g*D : (g+1)*D]`
    for every batch entry `b` and kv head `g`, every other row unchanged.
    Value-semantic, but the result reuses the cache's buffer (`ResultAliasesOperand(0)`): a
    decode step moves the new rows only, never a copy of the cache.

    `context_shards = k` (set by sharding, see `ShardAttr`'s interleave): the cache is this
    rank's share of a sequence dealt over the k ranks of its group, its row `t` holding
    position `t * k + rank % k`; an entry's row is written only by the rank holding its
    position (positions are in `[0, k * S)`).
    """

    name = "llm.kv_cache_write"

    T: ClassVar = VarConstraint("T", base(TensorType))

    cache = operand_def(T)
    new = operand_def(TensorType)
    positions = operand_def(TensorType)
    context_shards = opt_prop_def(IntegerAttr[I64])
    result = result_def(T)

    assembly_format = (
        "$cache `,` $new `,` $positions attr-dict `:` type($cache) `,` type($new) `,` "
        "type($positions)"
    )
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(ResultAliasesOperand(0), *_PURE)

    def verify_(self) -> None:
        _context_shards(self, self.context_shards)
        batch, kv_heads, _, head_dim = _shape(self, "cache", self.cache, 4)
        _dims(self, "new", self.new, (batch, kv_heads * head_dim), "batch, kv_heads*head_dim")
        _same_element_type(self, ("cache", self.cache), ("new", self.new))
        _positions(self, self.positions, "cache", batch)


@irdl_op_definition
class AttentionOp(IRDLOperation):
    """Decode attention of one query row per batch entry over one layer's KV cache.

    query `[B, num_heads*head_dim]`, k_cache / v_cache `[B, num_kv_heads, S, head_dim]`,
    positions `tensor<Bxi32>` -> `[B, num_heads*head_dim]`. Grouped-query: query head `h`
    uses kv head `g = h // (num_heads / num_kv_heads)`. Causal over the cache: entry `b`
    attends rows `t` in `lo .. positions[b]` inclusive, `lo = max(0, positions[b] -
    sliding_window + 1)` (`lo = 0` without a window). Per (b, h):
    `p = softmax_t(scale * dot(q[b, h], k_cache[b, g, t]))`,
    `out[b, h] = sum_t p[t] * v_cache[b, g, t]`; `scale` defaults to `1 / sqrt(head_dim)`.
    The caches must already hold row `positions[b]` (written by `llm.kv_cache_write`).

    `context_shards = k` (set by sharding): the caches are this rank's share of a sequence
    dealt over the k consecutive ranks of its group, which share its kv heads (row `t` =
    position `t * k + rank % k`). The result is still this rank's query heads attending the
    whole sequence: the group's queries are gathered (their heads all read these kv heads),
    each rank attends the positions it holds for all of them (flash-decoding partials), the
    partials are gathered and each rank combines those of its own heads. A collective like
    `llm.all_reduce`: every rank runs it, in the same order.
    """

    name = "llm.attention"

    T: ClassVar = VarConstraint("T", base(TensorType))

    query = operand_def(T)
    k_cache = operand_def(TensorType)
    v_cache = operand_def(TensorType)
    positions = operand_def(TensorType)
    num_heads = prop_def(IntegerAttr[I64])
    num_kv_heads = prop_def(IntegerAttr[I64])
    head_dim = prop_def(IntegerAttr[I64])
    scale = opt_prop_def(FloatAttr[Float32Type])
    sliding_window = opt_prop_def(IntegerAttr[I64])
    context_shards = opt_prop_def(IntegerAttr[I64])
    result = result_def(T)

    assembly_format = (
        "$query `,` $k_cache `,` $v_cache `,` $positions attr-dict `:` type($query) `,` "
        "type($k_cache) `,` type($v_cache) `,` type($positions)"
    )
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        for attr in ("num_heads", "num_kv_heads", "head_dim", "sliding_window"):
            _positive(self, attr, getattr(self, attr))
        _context_shards(self, self.context_shards)
        heads, kv_heads = self.num_heads.value.data, self.num_kv_heads.value.data
        head_dim = self.head_dim.value.data
        if heads % kv_heads:
            raise VerifyException(
                f"llm.attention: num_kv_heads {kv_heads} does not divide num_heads {heads}"
            )
        batch, _ = _dims(
            self, "query", self.query, (None, heads * head_dim), "batch, num_heads*head_dim"
        )
        legend = "batch, num_kv_heads, context, head_dim"
        _dims(self, "k cache", self.k_cache, (batch, kv_heads, None, head_dim), legend)
        if self.v_cache.type != self.k_cache.type:
            raise VerifyException(
                f"llm.attention: k cache {self.k_cache.type} and v cache {self.v_cache.type} "
                "must have the same type"
            )
        _same_element_type(self, ("query", self.query), ("k cache", self.k_cache))
        _positions(self, self.positions, "query", batch)


class _UnaryOp(IRDLOperation):
    """An op whose result has its input's type, on any static data tensor."""

    T: ClassVar = VarConstraint("T", base(TensorType))

    input = operand_def(T)
    result = result_def(T)

    assembly_format = "$input attr-dict `:` type($input)"
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        _shape(self, "input", self.input)


@irdl_op_definition
class SiluOp(_UnaryOp):
    """Elementwise SiLU: `y = x * sigmoid(x) = x / (1 + exp(-x))`."""

    name = "llm.silu"


GELU_APPROXIMATIONS = ("none", "tanh")


@irdl_op_definition
class GeluOp(_UnaryOp):
    """Elementwise GELU. `approximate = "none"` (default): `y = 0.5*x*(1 + erf(x / sqrt(2)))`;
    `"tanh"`: `y = 0.5*x*(1 + tanh(sqrt(2/pi) * (x + 0.044715*x**3)))` (HF `gelu_pytorch_tanh`).
    """

    name = "llm.gelu"

    approximate = opt_prop_def(StringAttr, default_value=StringAttr("none"))

    def verify_(self) -> None:
        super().verify_()
        _one_of(self, "approximate", self.approximate, GELU_APPROXIMATIONS)


@irdl_op_definition
class SoftmaxOp(_UnaryOp):
    """Softmax along the last axis: `y = exp(x - max(x)) / sum(exp(x - max(x)))`."""

    name = "llm.softmax"


ALL_REDUCE_KINDS = ("sum",)


@irdl_op_definition
class AllReduceOp(_UnaryOp):
    """Sums `input` elementwise across the sockets of an SPMD program (inserted by sharding).

    Every socket runs the same program on its own shard; each gets the same result: the sum
    over all sockets of their `input` (summation order unspecified, hence bf16 tolerance),
    in f32, rounded once. When `input` is the result of an `llm.linear` used only by
    all-reduces (a row-split linear), the parts summed are the linear's unrounded f32
    accumulators: the reduction split over the sockets rounds once, as the unsharded linear.

    Purity: the result is a deterministic function of the inputs of all ranks, and every rank
    runs the same op sequence, so rewrites apply to all ranks alike: CSE of two all-reduces of
    the same value gives the same sum, DCE of an unused one drops it everywhere, and the
    collectives stay matched. Hence `Pure`, as MLIR's `mesh.all_reduce`. What would break SPMD
    is rank-dependent control flow around it, which this IR has none of.
    """

    name = "llm.all_reduce"

    reduction = prop_def(StringAttr)

    def verify_(self) -> None:
        super().verify_()
        _one_of(self, "reduction", self.reduction, ALL_REDUCE_KINDS)


@irdl_op_definition
class AllGatherOp(IRDLOperation):
    """Concatenates `input` across the sockets of an SPMD program along dim `dim` (inserted by
    sharding: the vocab-parallel LM head gathers its logits).

    Every socket gets the same result: the `input`s of ranks 0, 1, ..., N-1 (N = the module's
    `llm.sockets`) concatenated in rank order along `dim`, so the result's dim `dim` is N times
    the input's and every other dim is the input's. Exact: no arithmetic, no rounding.
    `Pure` for the reason `llm.all_reduce` is: every rank runs the same collectives in order.
    """

    name = "llm.all_gather"

    input = operand_def(TensorType)
    dim = prop_def(IntegerAttr[I64])
    result = result_def(TensorType)

    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        shape = _shape(self, "input", self.input)
        dim = self.dim.value.data
        if not 0 <= dim < len(shape):
            raise VerifyException(
                f"llm.all_gather: dim {dim} is out of range for the rank-{len(shape)} input"
            )
        module = self.get_toplevel_object()
        sockets = sockets_of(module) if isinstance(module, ModuleOp) else 1
        whole = (*shape[:dim], shape[dim] * sockets, *shape[dim + 1 :])
        _result_is(self, whole, tensor_type(self.input).element_type)


class _BinaryOp(IRDLOperation):
    """Elementwise op on two tensors of one type."""

    T: ClassVar = VarConstraint("T", base(TensorType))

    lhs = operand_def(T)
    rhs = operand_def(T)
    result = result_def(T)

    assembly_format = "$lhs `,` $rhs attr-dict `:` type($result)"
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        _shape(self, "lhs", self.lhs)


@irdl_op_definition
class AddOp(_BinaryOp):
    """Elementwise sum `lhs + rhs` (residual connections)."""

    name = "llm.add"


@irdl_op_definition
class MulOp(_BinaryOp):
    """Elementwise product `lhs * rhs` (gated MLPs)."""

    name = "llm.mul"


@irdl_op_definition
class ArgmaxOp(IRDLOperation):
    """Greedy pick: `result[b] = argmax_v input[b, v]` (first index among equal maxima).

    input `[B, V]` -> `tensor<Bxi32>`.
    """

    name = "llm.argmax"

    input = operand_def(TensorType)
    result = result_def(TensorType)

    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        batch, _ = _shape(self, "input", self.input, 2)
        _result_is(self, (batch,), i32)


@irdl_op_definition
class MoEOp(IRDLOperation):
    """Mixture of SwiGLU experts with top-k routing.

    input `[B, H]`, router `[E, H]`, gate / up `[E, I, H]`, down `[E, H, I]` -> `[B, H]`.
    Per batch entry `b`: `p = softmax(router @ x[b])` over the `E = num_experts` experts;
    `top` = the `top_k` experts of largest `p` (lower index first among ties), with weights
    `w = p[top]`, renormalized to sum 1 if `normalize_top_k` is set (Mixtral);
    `y[b] = sum_{e in top} w_e * down[e] @ (silu(gate[e] @ x[b]) * (up[e] @ x[b]))`.
    `expert_shards = p` (set by sharding with `moe=expert`): the experts are dealt over the
    ranks, gate / up / down hold this rank's `E / p` of them (rank r of N: the experts of
    block `r * p // N`), the router all `E`; the sum runs over the rank's experts only, and
    an `llm.all_reduce` adds the ranks' sums.
    """

    name = "llm.moe"

    T: ClassVar = VarConstraint("T", base(TensorType))

    input = operand_def(T)
    router = operand_def(TensorType)
    gate = operand_def(TensorType)
    up = operand_def(TensorType)
    down = operand_def(TensorType)
    num_experts = prop_def(IntegerAttr[I64])
    top_k = prop_def(IntegerAttr[I64])
    normalize_top_k = opt_prop_def(UnitAttr)
    expert_shards = opt_prop_def(IntegerAttr[I64])
    result = result_def(T)

    assembly_format = (
        "$input `,` $router `,` $gate `,` $up `,` $down attr-dict `:` type($input) `,` "
        "type($router) `,` type($gate) `,` type($up) `,` type($down)"
    )
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(*_PURE)

    def verify_(self) -> None:
        experts, top_k = self.num_experts.value.data, self.top_k.value.data
        if not 1 <= top_k <= experts:
            raise VerifyException(
                f"llm.moe: top_k must be in 1..num_experts = 1..{experts}, got {top_k}"
            )
        _, hidden = _shape(self, "input", self.input, 2)
        _dims(self, "router", self.router, (experts, hidden), "num_experts, hidden")
        _context_shards(self, self.expert_shards, "expert_shards")
        shards = expert_shards_of(self)
        if experts % shards:
            raise VerifyException(
                f"llm.moe: expert_shards {shards} must divide num_experts {experts}"
            )
        held = experts // shards
        count = "num_experts" if shards == 1 else "num_experts / expert_shards"
        legend = f"{count}, intermediate, hidden"
        _, inner, _ = _dims(self, "gate", self.gate, (held, None, hidden), legend)
        _dims(self, "up", self.up, (held, inner, hidden), legend)
        legend = f"{count}, hidden, intermediate"
        _dims(self, "down", self.down, (held, hidden, inner), legend)
        weights = (("router", self.router), ("gate", self.gate), ("up", self.up))
        _same_element_type(self, ("input", self.input), *weights, ("down", self.down))


LLM = Dialect(
    "llm",
    [
        ParamOp,
        WeightOp,
        EmbeddingOp,
        RMSNormOp,
        LayerNormOp,
        LinearOp,
        RopeOp,
        KVCacheWriteOp,
        AttentionOp,
        SiluOp,
        GeluOp,
        AddOp,
        MulOp,
        SoftmaxOp,
        ArgmaxOp,
        MoEOp,
        AllReduceOp,
        AllGatherOp,
    ],
    [RopeScalingAttr, ShardAttr],
)
