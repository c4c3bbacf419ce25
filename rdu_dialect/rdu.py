"""The `rdu` dialect: hardware primitives of a SambaNova SN40L-like Reconfigurable Dataflow Unit.

This is the last IR before the program file (`docs/program_format.md`), and it says everything
the program says, one op per program item, so that `-t rdu-program` is a transcription and the
simulator needs nothing the IR does not state. A module at this level holds

- `rdu.value`: the decode step's whole, unsharded tensors by name (checkpoint parameters,
  inputs, outputs, the KV-cache state): what is bound or read at run time;
- `rdu.tensor`: off-chip buffers every socket holds (SPMD), with a memory tier, the blocks of
  values they hold (`#rdu.source`, per-socket shards through a socket step) and aliasing (the
  updated KV cache *is* its input's buffer);
- `rdu.kernel`: a chip configuration: its off-chip params (`rdu.param`), one or more
  `rdu.section`s (a kernel too large for one configuration runs its sections in order, with a
  Program Load between them), optionally inside one pipelined hardware loop `rdu.hw_loop`;
  a section holds its on-chip buffers (`rdu.buffer`) and its units (`rdu.pcu`, `rdu.pmu`,
  `rdu.agcu`), each with the index ranges it reads and writes (`#rdu.access`: `count` units,
  unit j shifted by j x step) and its work (`#rdu.work`), connected by streams (SSA values of
  type `!rdu.stream<tile, depth>`: the producer's written bytes flow to each consumer);
- the host program: a `func.func` whose body issues `rdu.launch` (with per-param bindings to
  tensor views, one per trip for stacked params) and `rdu.sync`.

Index ranges never depend on the socket: the program is what one socket runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from math import prod

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    FixedBitwidthType,
    FlatSymbolRefAttrConstr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    SymbolNameConstraint,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.dialects.func import FuncOp
from xdsl.dialects.utils.enum_attribute import EnumAttribute
from xdsl.ir import (
    Attribute,
    Dialect,
    Operation,
    ParametrizedAttribute,
    SpacedOpaqueSyntaxAttribute,
    TypeAttribute,
)
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    lazy_traits_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import (
    HasAncestor,
    HasParent,
    IsolatedFromAbove,
    NoTerminator,
    SymbolOpInterface,
    SymbolUserOpInterface,
)
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.hints import isa
from xdsl.utils.str_enum import StrEnum

from rdu_compiler.rdu_dialect.symbols import lookup_symbol
from rdu_compiler.simulator.numerics import DTYPES as PROGRAM_DTYPES

# ----------------------------------------------------------------------------------------------
# Attributes and types
# ----------------------------------------------------------------------------------------------


class MemoryTier(StrEnum):
    HBM = "hbm"
    DDR = "ddr"


class LaunchMode(StrEnum):
    SOFTWARE = "software"
    HARDWARE = "hardware"


class PcuMode(StrEnum):
    SIMD = "simd"
    SYSTOLIC = "systolic"


class ValueRole(StrEnum):
    """The program schema's `Value.role`."""

    PARAM = "param"
    INPUT = "input"
    OUTPUT = "output"
    STATE = "state"


class TensorKind(StrEnum):
    """The program schema's `Tensor.kind`."""

    WEIGHT = "weight"
    KV_CACHE = "kv_cache"
    INPUT = "input"
    OUTPUT = "output"
    ACTIVATION = "activation"


class PcuCompute(StrEnum):
    """What a PCU computes: a `simulator.numerics.OPS` name other than a collective (those run
    on AGCUs), i.e. an llm op's short name."""

    EMBEDDING = "embedding"
    RMS_NORM = "rms_norm"
    LAYER_NORM = "layer_norm"
    LINEAR = "linear"
    ROPE = "rope"
    KV_CACHE_WRITE = "kv_cache_write"
    ATTENTION = "attention"
    ATTENTION_PARTIAL = "attention_partial"
    ATTENTION_COMBINE = "attention_combine"
    ATTENTION_MERGE = "attention_merge"
    SILU = "silu"
    GELU = "gelu"
    ADD = "add"
    MUL = "mul"
    SOFTMAX = "softmax"
    ARGMAX = "argmax"
    MOE = "moe"
    MOE_PARTIAL = "moe_partial"
    MOE_COMBINE = "moe_combine"


@irdl_attr_definition
class MemoryTierAttr(EnumAttribute[MemoryTier], SpacedOpaqueSyntaxAttribute):
    """`#rdu<tier hbm>`: the off-chip memory a tensor lives in. HBM (64 GiB, ~1.8 TB/s per
    socket) or DDR (up to 1.5 TiB, ~200 GB/s): the timing model charges a transfer to the
    bandwidth of this tier."""

    name = "rdu.tier"


@irdl_attr_definition
class LaunchModeAttr(EnumAttribute[LaunchMode], SpacedOpaqueSyntaxAttribute):
    """`#rdu<launch_mode software>`: who orchestrates a kernel launch. `software`: the host runs
    Program Load -> Argument Load -> Kernel Execute for every launch; `hardware`: the static
    schedule is offloaded to the AGCUs, which sequence launches without the host."""

    name = "rdu.launch_mode"


@irdl_attr_definition
class PcuModeAttr(EnumAttribute[PcuMode], SpacedOpaqueSyntaxAttribute):
    """`#rdu<pcu_mode systolic>`: how a PCU's body is configured: a multi-stage SIMD pipeline
    (`simd`, elementwise and reductions) or an output-stationary systolic array (`systolic`,
    matrix multiplication). The timing model takes the unit's throughput from the mode."""

    name = "rdu.pcu_mode"


@irdl_attr_definition
class ValueRoleAttr(EnumAttribute[ValueRole], SpacedOpaqueSyntaxAttribute):
    """`#rdu<role state>`: how the run binds a value: a checkpoint `param`, a step `input`,
    an `output` read after the step, or `state` the step updates in place (the KV caches)."""

    name = "rdu.role"


@irdl_attr_definition
class TensorKindAttr(EnumAttribute[TensorKind], SpacedOpaqueSyntaxAttribute):
    """`#rdu<kind kv_cache>`: how an off-chip tensor is filled: `weight` from params, `input`
    from step inputs, `kv_cache` from state, `output` read into outputs after the step,
    `activation` scratch between kernels."""

    name = "rdu.kind"


@irdl_attr_definition
class PcuComputeAttr(EnumAttribute[PcuCompute], SpacedOpaqueSyntaxAttribute):
    """`#rdu<pcu_op linear>`: the numerics op a PCU group runs."""

    name = "rdu.pcu_op"


def _bytes(tensor: TensorType[Attribute]) -> int:
    """Bytes of a statically shaped tensor with a fixed-bitwidth element type."""
    element = tensor.get_element_type()
    assert isinstance(element, FixedBitwidthType)
    return (prod(tensor.get_shape()) * element.bitwidth + 7) // 8


def _shape_problem(tensor: Attribute) -> str | None:
    """Why `tensor` cannot be a tile, buffer or off-chip tensor, or None if it can."""
    if not isa(tensor, TensorType[Attribute]):
        return f"expected a tensor type, got {tensor}"
    if not tensor.has_static_shape():
        return f"expected a static shape, got {tensor}"
    if str(tensor.get_element_type()) not in PROGRAM_DTYPES:
        # The program file and the simulator's numerics know these element types only.
        return f"expected an element type of {', '.join(PROGRAM_DTYPES)}, got {tensor}"
    return None


def _parse_ints(parser: AttrParser) -> tuple[int, ...]:
    """`[1, -2, 3]`."""
    return tuple(
        parser.parse_comma_separated_list(
            parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False)
        )
    )


def _ints(values: Sequence[int]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _array(values: Sequence[int]) -> DenseArrayBase[I64]:
    return _interned_array(tuple(values))


@lru_cache(maxsize=1 << 14)
def _interned_array(values: tuple[int, ...]) -> DenseArrayBase[I64]:
    """Attributes are immutable values: the lowering builds the same few index arrays (ranges,
    shapes, offsets) tens of thousands of times per program, and xDSL verifies each on
    construction (a fifth of a 70B trial before this cache)."""
    return DenseArrayBase.from_list(i64, values)


@irdl_attr_definition
class StreamType(ParametrizedAttribute, TypeAttribute):
    """`!rdu.stream<tensor<512xbf16>, 2>`: a FIFO of tiles on the on-chip network from one unit
    group to its consumers (several consumers = multicast). `tile` is what one network transfer
    carries; `depth` (>= 1) is how many tiles may be in flight before the producer stalls
    (credit flow control: the backpressure the timing model simulates)."""

    name = "rdu.stream"

    tile: TensorType[Attribute]
    depth: IntegerAttr[I64]

    def __init__(self, tile: TensorType[Attribute], depth: int):
        super().__init__(tile, IntegerAttr(depth, i64))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> tuple[Attribute, ...]:
        with parser.in_angle_brackets():
            pos = parser.pos
            tile = parser.parse_type()
            if (problem := _shape_problem(tile)) is not None:
                parser.raise_error(f"stream tile: {problem}", pos, parser.pos)
            parser.parse_punctuation(",")
            pos = parser.pos
            depth = parser.parse_integer(allow_boolean=False, allow_negative=True)
            if depth < 1:
                parser.raise_error(f"stream depth must be >= 1, got {depth}", pos, parser.pos)
        return (tile, IntegerAttr(depth, i64))

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_attribute(self.tile)
            printer.print_string(f", {self.depth.value.data}")

    def verify(self) -> None:
        if (problem := _shape_problem(self.tile)) is not None:
            raise VerifyException(f"stream tile: {problem}")

    @property
    def tile_bytes(self) -> int:
        return _bytes(self.tile)


@irdl_attr_definition
class AccessAttr(ParametrizedAttribute):
    """`#rdu.access<"w" [0:16, 0:64] step [16, 0]>`: a block of a param or buffer, one
    `[start:stop)` range per dimension; unit j of a group of `count` accesses the ranges shifted
    by j x `step` (no step: every unit accesses the same block)."""

    name = "rdu.access"

    target: StringAttr
    starts: DenseArrayBase[I64]
    stops: DenseArrayBase[I64]
    step: DenseArrayBase[I64]

    def __init__(
        self, target: str, ranges: Sequence[tuple[int, int]], step: Sequence[int] | None = None
    ):
        super().__init__(
            StringAttr(target),
            _array([a for a, _ in ranges]),
            _array([b for _, b in ranges]),
            _array(step or ()),
        )

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.starts.get_values(), self.stops.get_values()))

    @property
    def steps(self) -> list[int] | None:
        return list(self.step.get_values()) or None

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> tuple[Attribute, ...]:
        with parser.in_angle_brackets():
            target = parser.parse_str_literal()

            def one_range() -> tuple[int, int]:
                start = parser.parse_integer(allow_boolean=False)
                parser.parse_punctuation(":")
                return start, parser.parse_integer(allow_boolean=False)

            ranges = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, one_range)
            step = _parse_ints(parser) if parser.parse_optional_keyword("step") else ()
        return (
            StringAttr(target),
            _array([a for a, _ in ranges]),
            _array([b for _, b in ranges]),
            _array(step),
        )

    def print_parameters(self, printer: Printer) -> None:
        ranges = ", ".join(f"{a}:{b}" for a, b in self.ranges)
        step = f" step {_ints(self.steps)}" if self.steps else ""
        printer.print_string(f'<"{self.target.data}" [{ranges}]{step}>')

    def verify(self) -> None:
        rank = len(self.starts.get_values())
        if len(self.stops.get_values()) != rank or (self.steps and len(self.steps) != rank):
            raise VerifyException(
                f"access to '{self.target.data}': ranks of ranges and step differ"
            )
        if any(a < 0 or a >= b for a, b in self.ranges):
            raise VerifyException(
                f"access to '{self.target.data}': empty or negative range in {self.ranges}"
            )


_WORK_FIELDS = ("flops", "bytes_read", "bytes_written", "tiles", "roofline_bytes")


@irdl_attr_definition
class WorkAttr(ParametrizedAttribute):
    """`#rdu.work<flops 2048 bytes_read 1088 bytes_written 128 tiles 2>`: what one execution
    (per launch, or per trip) of a whole unit group does: FLOPs of matrix products, bytes
    consumed and produced (off-chip bytes for AGCU transfers, at their tensor's tier), tiles;
    optionally `roofline_bytes N`: a transfer's share of what the unsharded step must move,
    when the simulated socket moves more (expert parallelism's busiest socket)."""

    name = "rdu.work"

    values: DenseArrayBase[I64]

    def __init__(
        self,
        flops: int,
        bytes_read: int,
        bytes_written: int,
        tiles: int,
        roofline_bytes: int | None = None,
    ):
        figures = (flops, bytes_read, bytes_written, tiles)
        super().__init__(_array(figures if roofline_bytes is None else (*figures, roofline_bytes)))

    def as_dict(self) -> dict[str, int]:
        return dict(zip(_WORK_FIELDS, self.values.get_values()))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> tuple[Attribute, ...]:
        with parser.in_angle_brackets():
            values = []
            for field in _WORK_FIELDS[:4]:
                parser.parse_keyword(field)
                values.append(parser.parse_integer(allow_boolean=False))
            if parser.parse_optional_keyword(_WORK_FIELDS[4]) is not None:
                values.append(parser.parse_integer(allow_boolean=False))
        return (_array(values),)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string("<" + " ".join(f"{k} {v}" for k, v in self.as_dict().items()) + ">")

    def verify(self) -> None:
        if len(self.values.get_values()) not in (4, 5) or min(self.values.get_values()) < 0:
            raise VerifyException("work needs four non-negative figures (five with roofline_bytes)")


@irdl_attr_definition
class SourceAttr(ParametrizedAttribute):
    """`#rdu.source<"ckpt.name" [0, 0] x [512, 4096] at [0, 0] step [512, 0] group 2>`: the
    block `value[start : start + shape]` a tensor holds at `at`. On socket s the block starts
    at `start + (s // group) * step` (no step: the same block on every socket, replicated).
    `interleave [1, 2, 1]`: along a dim with k > 1 socket s holds every k-th row from
    `start + s % k` on (a KV cache dealt along the sequence over sockets). `sockets [2, 3]`:
    only those sockets hold the block (expert parallelism: each socket its own experts)."""

    name = "rdu.source"

    value: StringAttr
    start: DenseArrayBase[I64]
    shape: DenseArrayBase[I64]
    at: DenseArrayBase[I64]
    socket_step: DenseArrayBase[I64]
    socket_group: IntegerAttr[I64]
    interleave: DenseArrayBase[I64]
    sockets: DenseArrayBase[I64]

    def __init__(
        self,
        value: str,
        start: Sequence[int],
        shape: Sequence[int],
        at: Sequence[int],
        socket_step: Sequence[int] | None = None,
        socket_group: int = 1,
        interleave: Sequence[int] | None = None,
        sockets: Sequence[int] | None = None,
    ):
        super().__init__(
            StringAttr(value),
            _array(start),
            _array(shape),
            _array(at),
            _array(socket_step or ()),
            IntegerAttr(socket_group, i64),
            _array(interleave or ()),
            _array(sockets or ()),
        )

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> tuple[Attribute, ...]:
        with parser.in_angle_brackets():
            value = parser.parse_str_literal()
            start = _parse_ints(parser)
            parser.parse_keyword("x")
            shape = _parse_ints(parser)
            parser.parse_keyword("at")
            at = _parse_ints(parser)
            step = _parse_ints(parser) if parser.parse_optional_keyword("step") else ()
            group = parser.parse_integer() if parser.parse_optional_keyword("group") else 1
            dealt = _parse_ints(parser) if parser.parse_optional_keyword("interleave") else ()
            held = _parse_ints(parser) if parser.parse_optional_keyword("sockets") else ()
        return (
            StringAttr(value),
            _array(start),
            _array(shape),
            _array(at),
            _array(step),
            IntegerAttr(group, i64),
            _array(dealt),
            _array(held),
        )

    def print_parameters(self, printer: Printer) -> None:
        text = (
            f'<"{self.value.data}" {_ints(self.start.get_values())} x '
            f"{_ints(self.shape.get_values())} at {_ints(self.at.get_values())}"
        )
        if self.socket_step.get_values():
            text += f" step {_ints(self.socket_step.get_values())}"
        if self.socket_group.value.data != 1:
            text += f" group {self.socket_group.value.data}"
        if self.interleave.get_values():
            text += f" interleave {_ints(self.interleave.get_values())}"
        if self.sockets.get_values():
            text += f" sockets {_ints(self.sockets.get_values())}"
        printer.print_string(text + ">")


@irdl_attr_definition
class BindingAttr(ParametrizedAttribute):
    """`#rdu.bind<"kc" [@k_cache[3]]>`: a kernel param bound for one launch to views
    `@tensor[leading indices]`: one view, or for a stacked param one per trip (or one view whose
    leading dimension is the trip count)."""

    name = "rdu.bind"

    param: StringAttr
    tensors: ArrayAttr[StringAttr]
    indices: ArrayAttr[DenseArrayBase[I64]]

    def __init__(self, param: str, views: Sequence[tuple[str, Sequence[int]]]):
        super().__init__(
            StringAttr(param),
            ArrayAttr([StringAttr(t) for t, _ in views]),
            ArrayAttr([_array(i) for _, i in views]),
        )

    @property
    def views(self) -> list[tuple[str, list[int]]]:
        return [(t.data, list(i.get_values())) for t, i in zip(self.tensors, self.indices)]

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> tuple[Attribute, ...]:
        with parser.in_angle_brackets():
            param = parser.parse_str_literal()

            def view() -> tuple[StringAttr, DenseArrayBase[I64]]:
                name = parser.parse_symbol_name()
                index = _rest_of_ints(parser) if parser.parse_optional_punctuation("[") else ()
                return name, _array(index)

            views = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, view)
        return (
            StringAttr(param),
            ArrayAttr([t for t, _ in views]),
            ArrayAttr([i for _, i in views]),
        )

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f'<"{self.param.data}" [')
        for k, (tensor, index) in enumerate(self.views):
            if k:
                printer.print_string(", ")
            printer.print_symbol_name(tensor)
            if index:
                printer.print_string(_ints(index))
        printer.print_string("]>")


def _rest_of_ints(parser: AttrParser) -> tuple[int, ...]:
    """The integers of a `[...]` whose `[` was just consumed."""
    values = [parser.parse_integer(allow_boolean=False)]
    while parser.parse_optional_punctuation(","):
        values.append(parser.parse_integer(allow_boolean=False))
    parser.parse_punctuation("]")
    return tuple(values)


# ----------------------------------------------------------------------------------------------
# Module level: values and off-chip tensors
# ----------------------------------------------------------------------------------------------


def _at_least(op: Operation, prop: str, minimum: int) -> int:
    """The integer property `prop` of `op`, checked to be >= minimum."""
    attr = op.properties[prop]
    assert isinstance(attr, IntegerAttr)
    value = attr.value.data
    if value < minimum:
        raise VerifyException(f"'{op.name}' {prop} must be >= {minimum}, got {value}")
    return value


def _check_shape(op: Operation, what: str, tensor: Attribute) -> None:
    if (problem := _shape_problem(tensor)) is not None:
        raise VerifyException(f"'{op.name}' {what}: {problem}")


@irdl_op_definition
class ValueOp(IRDLOperation):
    """`rdu.value "model.norm.weight" param : tensor<4096xbf16>`: a whole, unsharded tensor
    of the decode step, bound or read by name at run time: a checkpoint `param` (HF name), an
    `input`, an `output`, or `state` the step updates in place (the KV caches)."""

    name = "rdu.value"

    value = prop_def(StringAttr)
    role = prop_def(ValueRoleAttr)
    type = prop_def(TensorType[Attribute])

    traits = traits_def(HasParent(ModuleOp))

    assembly_format = "$value $role `:` $type attr-dict"

    def verify_(self) -> None:
        _check_shape(self, f'"{self.value.data}"', self.type)


@irdl_op_definition
class TensorOp(IRDLOperation):
    """`rdu.tensor @name : tensor<...> weight tier hbm [sources [...]] [aliases @other]`: a
    buffer in off-chip memory that every socket holds (its per-socket shape), filled per its
    kind (`weight` from params, `input`, `kv_cache`, `output`, `activation` scratch) from the
    value blocks its sources name. `aliases @other`: this buffer IS `@other`'s (the updated KV
    cache reuses its input's buffer: storing into it moves only the bytes the store says)."""

    name = "rdu.tensor"

    sym_name = prop_def(SymbolNameConstraint())
    type = prop_def(TensorType[Attribute])
    kind = prop_def(TensorKindAttr)
    tier = prop_def(MemoryTierAttr)
    sources = opt_prop_def(ArrayAttr[SourceAttr])
    aliases = opt_prop_def(FlatSymbolRefAttrConstr)

    traits = traits_def(SymbolOpInterface(), HasParent(ModuleOp))

    assembly_format = (
        "$sym_name `:` $type $kind `tier` $tier (`sources` $sources^)? (`aliases` $aliases^)? "
        "attr-dict"
    )

    def verify_(self) -> None:
        name = self.sym_name.data
        _check_shape(self, f"@{name}", self.type)
        if self.aliases is None:
            return
        other = lookup_symbol(self, self.aliases.root_reference.data)
        if not isinstance(other, TensorOp):
            raise VerifyException(
                f"'rdu.tensor' @{name} aliases "
                f"@{self.aliases.root_reference.data}, which is no rdu.tensor"
            )
        if other is self:
            raise VerifyException(f"'rdu.tensor' @{name} aliases itself")
        if (other.type, other.tier) != (self.type, self.tier) or self.sources is not None:
            raise VerifyException(
                f"'rdu.tensor' @{name} aliases @{other.sym_name.data}: it "
                f"needs the same type and tier and no sources of its own"
            )


# ----------------------------------------------------------------------------------------------
# Kernels, sections and units
# ----------------------------------------------------------------------------------------------


@irdl_op_definition
class KernelOp(IRDLOperation):
    """`rdu.kernel @name { rdu.param ... ; rdu.section ... ; rdu.hw_loop { rdu.section ... } ;
    rdu.section ... }`: one chip configuration (or several sections run in order), with at
    most one hardware loop. Sections before the loop run once before its first trip (a
    prologue: the embedding), sections after it once after its last (an epilogue: the LM
    head), so a decode step can be one launch. Each launch is a synchronization boundary,
    which is what kernel looping removes."""

    name = "rdu.kernel"

    sym_name = prop_def(SymbolNameConstraint())
    body = region_def("single_block")

    traits = traits_def(
        SymbolOpInterface(), IsolatedFromAbove(), NoTerminator(), HasParent(ModuleOp)
    )

    assembly_format = "$sym_name attr-dict-with-keyword $body"

    @property
    def params(self) -> list[ParamOp]:
        return [op for op in self.body.ops if isinstance(op, ParamOp)]

    @property
    def loop(self) -> HwLoopOp | None:
        return next((op for op in self.body.ops if isinstance(op, HwLoopOp)), None)

    @property
    def sections(self) -> list[SectionOp]:
        """Every section in program order: before the loop, the loop's, after the loop."""
        out: list[SectionOp] = []
        for op in self.body.ops:
            if isinstance(op, SectionOp):
                out.append(op)
            elif isinstance(op, HwLoopOp):
                out.extend(s for s in op.body.ops if isinstance(s, SectionOp))
        return out

    def loop_range(self) -> tuple[int, int] | None:
        """The indices `[begin, end)` in `sections` of the loop's sections (None: no loop)."""
        loop = self.loop
        if loop is None:
            return None
        before = 0
        for op in self.body.ops:
            if op is loop:
                break
            before += isinstance(op, SectionOp)
        return before, before + sum(isinstance(s, SectionOp) for s in loop.body.ops)

    def verify_(self) -> None:
        name = self.sym_name.data
        if not self.sections:
            raise VerifyException(f"'rdu.kernel' @{name} has no rdu.section")
        if sum(isinstance(op, HwLoopOp) for op in self.body.ops) > 1:
            raise VerifyException(f"'rdu.kernel' @{name} has more than one rdu.hw_loop")
        if self.sections[0].configured_with_previous is not None:
            raise VerifyException(
                f"'rdu.kernel' @{name}: its first section has no previous section to be "
                "configured with"
            )
        params = {p.param.data for p in self.params}
        if self.loop is not None:
            if not any(isinstance(s, SectionOp) for s in self.loop.body.ops):
                raise VerifyException(f"'rdu.kernel' @{name}: its rdu.hw_loop has no section")
            for stacked in self.loop.stacked:
                if stacked.data not in params:
                    raise VerifyException(
                        f"'rdu.kernel' @{name}: stacked '{stacked.data}' is not a param"
                    )
            once = [op for op in self.body.ops if isinstance(op, SectionOp)]
            stacked_names = {s.data for s in self.loop.stacked}
            for section in once:
                for unit in section.units:
                    for access in (*unit.reads, unit.write):
                        if access.target.data in stacked_names:
                            raise VerifyException(
                                f"'rdu.kernel' @{name}: unit '{unit.id.data}' runs once, "
                                f"outside the rdu.hw_loop, but accesses stacked param "
                                f"'{access.target.data}'"
                            )
        for section in self.sections:
            known = params | {b.buffer.data for b in section.body.ops if isinstance(b, BufferOp)}
            for unit in section.units:
                for access in (*unit.reads, unit.write):
                    if access.target.data not in known:
                        raise VerifyException(
                            f"'rdu.kernel' @{name}: unit '{unit.id.data}' accesses "
                            f"'{access.target.data}', neither a param nor a buffer of its "
                            f"section"
                        )


@irdl_op_definition
class ParamOp(IRDLOperation):
    """`rdu.param "h" : tensor<1x4096xbf16>`: an off-chip argument of the kernel, bound to a
    tensor view at each launch (in a looped kernel, a stacked param's shape is one trip's)."""

    name = "rdu.param"

    param = prop_def(StringAttr)
    type = prop_def(TensorType[Attribute])

    traits = traits_def(HasParent(KernelOp))

    assembly_format = "$param `:` $type attr-dict"

    def verify_(self) -> None:
        _check_shape(self, f'"{self.param.data}"', self.type)


@irdl_op_definition
class HwLoopOp(IRDLOperation):
    """`rdu.hw_loop trips N prefetch D stacked ["w", ...] { sections }`: the pipelined outer
    loop kernel looping creates, run by the chip without returning to the host. All sections
    run `trips` times per launch (a body of several sections reconfigures on every trip).
    `stacked` params take a different tensor each trip; loads of trip i + k, k <= `prefetch`,
    may run while trip i computes (except loads of params the kernel writes)."""

    name = "rdu.hw_loop"

    trips = prop_def(IntegerAttr[I64])
    prefetch = prop_def(IntegerAttr[I64])
    stacked = prop_def(ArrayAttr[StringAttr])
    body = region_def("single_block")

    traits = lazy_traits_def(lambda: (NoTerminator(), HasParent(KernelOp)))

    assembly_format = (
        "`trips` $trips `prefetch` $prefetch `stacked` $stacked attr-dict-with-keyword $body"
    )

    def verify_(self) -> None:
        _at_least(self, "trips", 1)
        _at_least(self, "prefetch", 0)


@irdl_op_definition
class SectionOp(IRDLOperation):
    """`rdu.section pcus P pmus M sram_bytes S [configured_with_previous] { buffers; units }`:
    a graph of units run as a whole, in its own configuration of the chip, and what it
    occupies on one socket; `configured_with_previous` puts it in the previous section's
    configuration (configured at once, no Program Load between them: a prologue or epilogue
    beside the loop). The verifier recomputes the totals from the units (PCUs and PMUs: sums
    of counts; SRAM: sum of PMU bytes x count), so they never lie; lowering checks them
    against the hardware preset."""

    name = "rdu.section"

    pcus = prop_def(IntegerAttr[I64])
    pmus = prop_def(IntegerAttr[I64])
    sram_bytes = prop_def(IntegerAttr[I64])
    configured_with_previous = opt_prop_def(UnitAttr)
    body = region_def("single_block")

    traits = lazy_traits_def(lambda: (NoTerminator(), HasParent(KernelOp, HwLoopOp)))

    assembly_format = (
        "`pcus` $pcus `pmus` $pmus `sram_bytes` $sram_bytes "
        "(`configured_with_previous` $configured_with_previous^)? attr-dict-with-keyword $body"
    )

    @property
    def units(self) -> list[UnitOp]:
        return [op for op in self.body.ops if isinstance(op, UnitOp)]

    def verify_(self) -> None:
        for resource, used in used_resources(self.units).items():
            declared = _at_least(self, resource, 0)
            if declared != used:
                raise VerifyException(
                    f"'rdu.section' declares {resource} {declared} but its units use {used}"
                )


def used_resources(units: Sequence[UnitOp]) -> dict[str, int]:
    """What a list of units occupies: PCUs, PMUs, and PMU SRAM bytes."""
    used = {"pcus": 0, "pmus": 0, "sram_bytes": 0}
    for unit in units:
        count = unit.count.value.data
        if isinstance(unit, PcuOp):
            used["pcus"] += count
        elif isinstance(unit, PmuOp):
            used["pmus"] += count
            used["sram_bytes"] += count * unit.sram_bytes.value.data
    return used


@irdl_op_definition
class BufferOp(IRDLOperation):
    """`rdu.buffer "x" : tensor<1x4096xbf16>`: a logical on-chip tensor of one section, the
    value that passes through the units in one execution; its physical footprint is the PMUs'
    bytes, not its shape. Buffers do not survive a section."""

    name = "rdu.buffer"

    buffer = prop_def(StringAttr)
    type = prop_def(TensorType[Attribute])

    traits = traits_def(HasParent(SectionOp))

    assembly_format = "$buffer `:` $type attr-dict"

    def verify_(self) -> None:
        _check_shape(self, f'"{self.buffer.data}"', self.type)


class UnitOp(IRDLOperation):
    """Fields every unit kind shares: `count` identical units named `id`, running `op` on the
    blocks `reads` name and storing into the block `write` names (unit j shifted by j x step),
    with `work` per execution of the group; its input streams come from the units that
    produced what it reads, and its result stream carries what it writes. `op` is a string
    (`copy`, `load`, ...) but on PCUs, where it is a `PcuComputeAttr`."""

    op = prop_def(StringAttr)
    id = prop_def(StringAttr)
    count = prop_def(IntegerAttr[I64])
    reads = prop_def(ArrayAttr[AccessAttr])
    write = prop_def(AccessAttr)
    work = prop_def(WorkAttr)
    # ops run in the units' pipeline, in order: {op, operand (-1: on the result; i: on read
    # i before the unit's op), reads (their other operands), attrs?} (the program's `fused`)
    fused = opt_prop_def(ArrayAttr[DictionaryAttr])
    inputs = var_operand_def(StreamType)
    output = result_def(StreamType)

    traits = lazy_traits_def(lambda: (HasParent(SectionOp),))

    @property
    def op_name(self) -> str:
        """What the units run, as the program names it."""
        op = self.properties["op"]
        if isinstance(op, PcuComputeAttr):
            return op.data.value
        assert isinstance(op, StringAttr)
        return op.data

    def verify_(self) -> None:
        _at_least(self, "count", 1)
        if not self.op_name or not self.id.data:
            raise VerifyException(f"'{self.name}' needs a non-empty op and id")
        for fused in self.fused.data if self.fused is not None else ():
            entry = fused.data
            reads = entry.get("reads")
            if (
                not {"op", "operand", "reads"}
                <= entry.keys()
                <= {"op", "operand", "reads", "attrs"}
                or not isinstance(entry["op"], StringAttr)
                or not isinstance(entry["operand"], IntegerAttr)
                or not isinstance(reads, ArrayAttr)
                or not all(isinstance(a, AccessAttr) for a in reads.data)
                or not isinstance(entry.get("attrs", DictionaryAttr({})), DictionaryAttr)
            ):
                raise VerifyException(
                    f"'{self.name}' fused ops are {{op = string, operand = integer, reads = "
                    "[accesses], attrs = {...} (optional)}"
                )


def fused_reads(fused: DictionaryAttr) -> list[AccessAttr]:
    """The reads of one entry of a unit's verified `fused` list."""
    reads = fused.data["reads"]
    assert isinstance(reads, ArrayAttr)
    return [a for a in reads.data if isinstance(a, AccessAttr)]


_UNIT_FORMAT = (
    "(` ` `(` $inputs^ `)`)? `reads` $reads `write` $write `work` $work (`fused` $fused^)? "
    "attr-dict `:` functional-type($inputs, $output)"
)


@irdl_op_definition
class PcuOp(UnitOp):
    """`rdu.pcu linear "q" count 16 systolic ...`: pattern compute units running a numerics
    op (`simulator.numerics.OPS`) on buffer blocks, in SIMD or systolic mode, with the op's
    keyword attributes in `attrs`, typed as on the llm op they come from (an `f32` epsilon,
    a `#llm.rope_scaling`); `attr_step` shifts integer attributes per unit (unit j runs with
    attrs[k] + j x attr_step[k]), as an access's step shifts its block, and `attr_by_socket`
    per socket (socket s runs with attrs[k] + attr_by_socket[k][s] more: which positions of a
    cache dealt along the sequence it holds)."""

    name = "rdu.pcu"

    op = prop_def(PcuComputeAttr)
    mode = prop_def(PcuModeAttr)
    attrs = opt_prop_def(DictionaryAttr)
    attr_step = opt_prop_def(DictionaryAttr)
    attr_by_socket = opt_prop_def(DictionaryAttr)

    assembly_format = (
        "$op $id `count` $count $mode (`attrs` $attrs^)? (`attr_step` $attr_step^)? "
        "(`attr_by_socket` $attr_by_socket^)? " + _UNIT_FORMAT
    )

    def verify_(self) -> None:
        super().verify_()
        attrs = self.attrs.data if self.attrs is not None else {}
        for key, step in (self.attr_step.data if self.attr_step else {}).items():
            if not isinstance(step, IntegerAttr) or not isinstance(attrs.get(key), IntegerAttr):
                raise VerifyException(
                    f"'{self.name}' attr_step '{key}' must step an integer attribute by an integer"
                )
        for key, shifts in (self.attr_by_socket.data if self.attr_by_socket else {}).items():
            if (
                not isinstance(shifts, ArrayAttr)
                or not all(isinstance(v, IntegerAttr) for v in shifts.data)
                or not isinstance(attrs.get(key), IntegerAttr)
            ):
                raise VerifyException(
                    f"'{self.name}' attr_by_socket '{key}' must shift an integer attribute by "
                    "a list of integers (one per socket)"
                )


@irdl_op_definition
class PmuOp(UnitOp):
    """`rdu.pmu "copy" "w.q" count 16 sram_bytes 65536 buffers 2 ...`: pattern memory units
    staging buffer blocks, each with `sram_bytes` of scratchpad in `buffers` buffers (2 =
    double buffering): the capacity that bounds what is in flight."""

    name = "rdu.pmu"

    sram_bytes = prop_def(IntegerAttr[I64])
    buffers = prop_def(IntegerAttr[I64])

    assembly_format = (
        "$op $id `count` $count `sram_bytes` $sram_bytes `buffers` $buffers " + _UNIT_FORMAT
    )

    def verify_(self) -> None:
        super().verify_()
        _at_least(self, "sram_bytes", 1)
        _at_least(self, "buffers", 1)


@irdl_op_definition
class AgcuOp(UnitOp):
    """`rdu.agcu "load" "ld.q" count 4 ...`: address generation and coalescing units, the only
    units touching off-chip memory or other sockets: `load` param -> buffer, `store` buffer ->
    param, `copy` param -> param, `all_reduce` buffer -> buffer summed over all sockets,
    `all_gather` buffer -> buffer concatenated over all sockets along `attrs` `dim`."""

    name = "rdu.agcu"

    attrs = opt_prop_def(DictionaryAttr)

    assembly_format = "$op $id `count` $count (`attrs` $attrs^)? " + _UNIT_FORMAT


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


class LaunchSymbolUser(SymbolUserOpInterface):
    """`rdu.launch @k` names an `rdu.kernel` and binds each of its params once (resolved through
    the module's cached symbol table: one table per module, not a scan per launch)."""

    def verify(self, op: Operation) -> None:
        assert isinstance(op, LaunchOp)
        name = op.kernel.root_reference.data
        kernel = lookup_symbol(op, name)
        if not isinstance(kernel, KernelOp):
            raise VerifyException(f"'rdu.launch' @{name} is no rdu.kernel")
        params = [p.param.data for p in kernel.params]
        bound = [b.param.data for b in op.bindings]
        if sorted(bound) != sorted(params):
            raise VerifyException(
                f"'rdu.launch' @{name} must bind each of its params {params} once, binds {bound}"
            )


@irdl_op_definition
class LaunchOp(IRDLOperation):
    """`rdu.launch @kernel mode software bindings [...] label "layer 3" layers [3]`: the host
    starts one run of a kernel (Program Load, Argument Load, Kernel Execute) after the previous
    one finished, binding every param to tensor views. `label` and `layers` (decoder layers it
    computes, split evenly over the trips) are for reports and traces."""

    name = "rdu.launch"

    kernel = prop_def(FlatSymbolRefAttrConstr)
    mode = prop_def(LaunchModeAttr)
    bindings = prop_def(ArrayAttr[BindingAttr])
    label = prop_def(StringAttr)
    layers = prop_def(DenseArrayBase)

    # Host ops live in the host program, a func.func.
    traits = traits_def(HasAncestor(FuncOp), LaunchSymbolUser())

    assembly_format = "$kernel `mode` $mode `label` $label `bindings` $bindings attr-dict"
    irdl_options = (ParsePropInAttrDict(),)


@irdl_op_definition
class SyncOp(IRDLOperation):
    """`rdu.sync`: the host waits until every kernel launched before it has finished."""

    name = "rdu.sync"

    traits = traits_def(HasAncestor(FuncOp))

    assembly_format = "attr-dict"


RDU = Dialect(
    "rdu",
    [
        ValueOp,
        TensorOp,
        KernelOp,
        ParamOp,
        HwLoopOp,
        SectionOp,
        BufferOp,
        PcuOp,
        PmuOp,
        AgcuOp,
        LaunchOp,
        SyncOp,
    ],
    [
        MemoryTierAttr,
        LaunchModeAttr,
        PcuModeAttr,
        ValueRoleAttr,
        TensorKindAttr,
        PcuComputeAttr,
        StreamType,
        AccessAttr,
        WorkAttr,
        SourceAttr,
        BindingAttr,
    ],
)
