"""The `rdu` dialect: hardware primitives of a SambaNova SN40L-like Reconfigurable Dataflow Unit.

This is the last IR before the program file: everything the simulator's timing model needs is
stated here, nothing is left to be guessed from names. A module at this level holds

- `rdu.tensor`: off-chip tensors (HBM or DDR, on one socket), module-level symbols;
- `rdu.kernel`: one chip configuration, a graph of units (`rdu.pcu`, `rdu.pmu`, and AGCU
  transfers `rdu.load` / `rdu.store`, collectives `rdu.all_reduce`) connected by streams
  (SSA values of type `!rdu.stream<tile, depth>`), optionally inside one pipelined hardware
  loop `rdu.hw_loop`, with resource totals that the verifier recomputes from the units;
- the host program: a `func.func` (conventionally `@main`, one decode step) whose body issues
  `rdu.launch` and `rdu.sync` (host loops, if any, are ordinary `scf.for`). Host ops may sit
  anywhere inside a `func.func` except inside an `rdu.kernel`.

Work annotations (`flops`, `bytes`) are per execution of the enclosing block: once per launch
for a unit directly in a kernel, once per trip for a unit inside an `rdu.hw_loop`. Units are
spatial: a unit inside a loop is configured once and counted once in the kernel's totals.
"""

from __future__ import annotations

from enum import StrEnum
from math import prod
from typing import ClassVar, TypeVar

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DenseArrayBase,
    FixedBitwidthType,
    FlatSymbolRefAttr,
    FlatSymbolRefAttrConstr,
    IntAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    SymbolNameConstraint,
    TensorType,
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
    VarConstraint,
    base,
    irdl_attr_definition,
    irdl_op_definition,
    lazy_traits_def,
    operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import (
    HasParent,
    IsolatedFromAbove,
    NoTerminator,
    SymbolOpInterface,
)
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.hints import isa

from rdu_dialect.symbols import lookup_symbol

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


@irdl_attr_definition
class MemoryTierAttr(EnumAttribute[MemoryTier], SpacedOpaqueSyntaxAttribute):
    """`#rdu<tier hbm>`: the off-chip memory a tensor lives in. HBM (64 GiB, ~1.8 TB/s per
    socket) or DDR (up to 1.5 TiB, ~200 GB/s): the timing model charges a transfer to the
    bandwidth of this tier on the tensor's socket."""

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


def _bytes(tensor: TensorType[Attribute]) -> int:
    """Bytes of a statically shaped tensor with a fixed-bitwidth element type."""
    element = tensor.get_element_type()
    assert isinstance(element, FixedBitwidthType)
    return (prod(tensor.get_shape()) * element.bitwidth + 7) // 8


def _shape_problem(tensor: Attribute) -> str | None:
    """Why `tensor` cannot be a tile or an off-chip tensor, or None if it can."""
    if not isa(tensor, TensorType[Attribute]):
        return f"expected a tensor type, got {tensor}"
    if not tensor.has_static_shape():
        return f"expected a static shape, got {tensor}"
    if not isinstance(tensor.get_element_type(), FixedBitwidthType):
        return f"expected a fixed-bitwidth element type, got {tensor}"
    return None


@irdl_attr_definition
class StreamType(ParametrizedAttribute, TypeAttribute):
    """`!rdu.stream<tensor<16x64xbf16>, 2>`: a FIFO of tiles on the on-chip network between one
    producing unit and its consuming units (several consumers = multicast). `tile` is the
    statically shaped tensor one network transfer carries; `depth` (>= 1) is how many tiles may
    be in flight before the producer stalls (credit flow control: the backpressure the timing
    model simulates)."""

    name = "rdu.stream"

    tile: TensorType[Attribute]
    depth: IntAttr

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
        return (tile, IntAttr(depth))

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_attribute(self.tile)
            printer.print_string(f", {self.depth.data}")

    def verify(self) -> None:
        if (problem := _shape_problem(self.tile)) is not None:
            raise VerifyException(f"stream tile: {problem}")
        if self.depth.data < 1:
            raise VerifyException(f"stream depth must be >= 1, got {self.depth.data}")


# ----------------------------------------------------------------------------------------------
# Shared verification helpers
# ----------------------------------------------------------------------------------------------


_SymbolT = TypeVar("_SymbolT", bound=Operation)


def _at_least(op: Operation, prop: str, minimum: int) -> int:
    """The integer property `prop` of `op`, checked to be >= minimum."""
    attr = op.properties[prop]
    assert isinstance(attr, IntegerAttr)
    value = attr.value.data
    if value < minimum:
        raise VerifyException(f"'{op.name}' {prop} must be >= {minimum}, got {value}")
    return value


def _verify_host_op(op: Operation) -> None:
    """Host ops live inside a func.func (the host program), never inside a kernel."""
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, FuncOp | KernelOp):
        parent = parent.parent_op()
    if isinstance(parent, KernelOp):
        raise VerifyException(
            f"'{op.name}' is a host op and cannot be inside rdu.kernel @{parent.sym_name.data}"
        )
    if parent is None:
        raise VerifyException(f"'{op.name}' must be inside a func.func (the host program)")


def _lookup(op: Operation, ref: FlatSymbolRefAttr, kind: type[_SymbolT]) -> _SymbolT:
    """The `kind` op that `ref` names (resolved through the cached module symbol table)."""
    name = ref.root_reference.data
    target = lookup_symbol(op, name)
    if target is None:
        raise VerifyException(f"'{op.name}' @{name} does not exist")
    if not isinstance(target, kind):
        raise VerifyException(f"'{op.name}' @{name} is a '{target.name}', not an {kind.name}")
    return target


def _verify_transfer(op: LoadOp | StoreOp, stream: StreamType) -> None:
    """Checks shared by the AGCU transfers between off-chip tensors and a stream."""
    _at_least(op, "agcus", 1)
    if op.bytes is not None:
        _at_least(op, "bytes", 0)
    refs = op.tensors.data
    loop = op.parent_op()
    runs = loop.trips.value.data if isinstance(loop, HwLoopOp) else 1
    if len(refs) not in (1, runs):
        raise VerifyException(
            f"'{op.name}' lists {len(refs)} tensors but runs {runs} time(s) per launch: list "
            f"one tensor (the same every time) or one per run"
        )
    tensors = [_lookup(op, ref, TensorOp) for ref in refs]
    first = tensors[0]
    for tensor in tensors[1:]:
        if tensor.tensor_type != first.tensor_type:
            raise VerifyException(
                f"'{op.name}' per-iteration tensors differ in type: @{first.sym_name.data} is "
                f"{first.tensor_type}, @{tensor.sym_name.data} is {tensor.tensor_type}"
            )
    tile_element = stream.tile.get_element_type()
    if tile_element != first.tensor_type.get_element_type():
        raise VerifyException(
            f"'{op.name}' stream tile {stream.tile} does not match the element type of "
            f"@{first.sym_name.data} : {first.tensor_type}"
        )
    if op.bytes is not None and op.bytes.value.data > (size := _bytes(first.tensor_type)):
        raise VerifyException(
            f"'{op.name}' moves {op.bytes.value.data} bytes but @{first.sym_name.data} holds "
            f"only {size}"
        )


# ----------------------------------------------------------------------------------------------
# Off-chip tensors
# ----------------------------------------------------------------------------------------------


@irdl_op_definition
class TensorOp(IRDLOperation):
    """`rdu.tensor @name : tensor<...> tier hbm|ddr socket S [source "ckpt.name" [at [o, ...]]]
    [aliases @other]`: a buffer in off-chip memory (HBM or DDR) of socket S (>= 0).

    `source` names the checkpoint parameter the buffer is bound to at run time (weights are
    never in the program); with `at`, the buffer is the slice / shard of that parameter starting
    at these offsets, one per dimension, and of this tensor's shape: element `[i, j]` is
    `checkpoint[at[0] + i, at[1] + j]`. Without `source` the buffer is runtime state or an
    input/output (KV caches, activations, logits). `aliases @other` says this buffer IS
    `@other`'s (the updated KV cache reuses its input's buffer): the time model counts the
    bytes really written, never a copy.
    """

    name = "rdu.tensor"

    sym_name = prop_def(SymbolNameConstraint())
    tensor_type = prop_def(TensorType[Attribute], prop_name="type")
    tier = prop_def(MemoryTierAttr)
    socket = prop_def(IntegerAttr[I64])
    source = opt_prop_def(StringAttr)
    offsets = opt_prop_def(DenseArrayBase[I64], prop_name="at")
    aliases = opt_prop_def(FlatSymbolRefAttrConstr)

    traits = traits_def(SymbolOpInterface(), HasParent(ModuleOp))

    assembly_format = (
        "$sym_name `:` qualified($type) `tier` $tier `socket` $socket (`source` $source^)? "
        "(`at` $at^)? (`aliases` $aliases^)? attr-dict"
    )

    def verify_(self) -> None:
        name = self.sym_name.data
        if (problem := _shape_problem(self.tensor_type)) is not None:
            raise VerifyException(f"'rdu.tensor' @{name}: {problem}")
        _at_least(self, "socket", 0)
        if self.offsets is not None:
            offsets = self.offsets.get_values()
            rank = self.tensor_type.get_num_dims()
            if self.source is None:
                raise VerifyException(f"'rdu.tensor' @{name}: `at` needs a `source`")
            if len(offsets) != rank or any(o < 0 for o in offsets):
                raise VerifyException(
                    f"'rdu.tensor' @{name}: `at` needs {rank} non-negative offsets, got "
                    f"{list(offsets)}"
                )
        if self.aliases is not None:
            other = _lookup(self, self.aliases, TensorOp)
            if other is self:
                raise VerifyException(f"'rdu.tensor' @{name} aliases itself")
            if other.tensor_type != self.tensor_type:
                raise VerifyException(
                    f"'rdu.tensor' @{name} : {self.tensor_type} aliases @{other.sym_name.data}"
                    f" of a different type {other.tensor_type}"
                )
            if (other.tier, other.socket) != (self.tier, self.socket):
                raise VerifyException(
                    f"'rdu.tensor' @{name} aliases @{other.sym_name.data} but is placed in "
                    f"another tier or socket"
                )


# ----------------------------------------------------------------------------------------------
# Kernels and their units
# ----------------------------------------------------------------------------------------------


@irdl_op_definition
class KernelOp(IRDLOperation):
    """`rdu.kernel @name pcus N pmus N sram_bytes N { units }`: one configuration of the chip,
    a graph of units connected by streams, and the resources it occupies on one socket.

    Running it is one launch (`rdu.launch`); every launch is a synchronization boundary, which
    is what kernel looping removes. The totals are what lowering checks against the hardware
    preset; the verifier recomputes them from the units (pcus = sum of `rdu.pcu` counts, pmus =
    sum of `rdu.pmu` counts, sram_bytes = sum of `rdu.pmu` bytes x count), so they never lie.
    """

    name = "rdu.kernel"

    sym_name = prop_def(SymbolNameConstraint())
    pcus = prop_def(IntegerAttr[I64])
    pmus = prop_def(IntegerAttr[I64])
    sram_bytes = prop_def(IntegerAttr[I64])
    body = region_def("single_block")

    traits = traits_def(
        SymbolOpInterface(), IsolatedFromAbove(), NoTerminator(), HasParent(ModuleOp)
    )

    assembly_format = (
        "$sym_name `pcus` $pcus `pmus` $pmus `sram_bytes` $sram_bytes attr-dict-with-keyword $body"
    )

    def used_resources(self) -> dict[str, int]:
        """What the units inside the kernel really use."""
        used = {"pcus": 0, "pmus": 0, "sram_bytes": 0}
        for op in self.body.walk():
            if isinstance(op, PcuOp):
                used["pcus"] += op.count.value.data
            elif isinstance(op, PmuOp):
                used["pmus"] += op.count.value.data
                used["sram_bytes"] += op.count.value.data * op.bytes.value.data
        return used

    def verify_(self) -> None:
        for resource, used in self.used_resources().items():
            declared = _at_least(self, resource, 0)
            if declared != used:
                raise VerifyException(
                    f"'rdu.kernel' @{self.sym_name.data} declares {resource} {declared} but its"
                    f" units use {used}"
                )


@irdl_op_definition
class HwLoopOp(IRDLOperation):
    """`rdu.hw_loop trips N prefetch D { units }`: the pipelined outer loop kernel looping
    creates, run by the chip without returning to the host.

    The units inside are configured once and run `trips` (>= 1) times. The loads of trip
    i + k may run while trip i computes, for k <= `prefetch` (>= 0; 0 = a trip's loads wait for
    the previous trip to finish), so the memory need not idle between trips. Transfers inside
    list either one tensor (the same every trip) or one tensor per trip. Streams defined in the
    kernel outside the loop (e.g. a PMU holding data loaded once) are read on every trip.
    """

    name = "rdu.hw_loop"

    trips = prop_def(IntegerAttr[I64])
    prefetch = prop_def(IntegerAttr[I64])
    body = region_def("single_block")

    traits = lazy_traits_def(lambda: (NoTerminator(), HasParent(KernelOp)))

    assembly_format = "`trips` $trips `prefetch` $prefetch attr-dict-with-keyword $body"

    def verify_(self) -> None:
        _at_least(self, "trips", 1)
        _at_least(self, "prefetch", 0)


_UNIT_TRAITS = lazy_traits_def(lambda: (HasParent(KernelOp, HwLoopOp),))


@irdl_op_definition
class PcuOp(IRDLOperation):
    """`rdu.pcu "matmul" count N systolic (%in, ...) [flops F] : (...) -> (...)`: `count`
    identical pattern compute units running op `kind` (the simulator's numeric kernel of that
    name) in parallel, each on its share of the tiles.

    The group applies `kind` to the tiles arriving on its input streams, in order, and emits
    the result tiles on its output streams (any element type: format conversion happens in
    the PCU tail). `flops` is the arithmetic of all `count` units per execution (the timing
    model divides it by the throughput of `mode`). Which index ranges each of the `count` units
    covers is not in the IR yet: the dfk -> rdu lowering adds it.
    """

    name = "rdu.pcu"

    kind = prop_def(StringAttr)
    count = prop_def(IntegerAttr[I64])
    mode = prop_def(PcuModeAttr)
    flops = opt_prop_def(IntegerAttr[I64])
    inputs = var_operand_def(StreamType)
    outputs = var_result_def(StreamType)

    traits = _UNIT_TRAITS

    assembly_format = (
        "$kind `count` $count $mode ` ` `(` $inputs `)` (`flops` $flops^)? attr-dict `:` "
        "functional-type($inputs, $outputs)"
    )

    def verify_(self) -> None:
        if not self.kind.data:
            raise VerifyException("'rdu.pcu' needs a non-empty op kind")
        _at_least(self, "count", 1)
        if self.flops is not None:
            _at_least(self, "flops", 0)
        if not self.outputs:
            raise VerifyException(
                f"'rdu.pcu' \"{self.kind.data}\" needs at least one output stream"
            )


@irdl_op_definition
class PmuOp(IRDLOperation):
    """`rdu.pmu bytes B count N buffers K (%in, ...) : (...) -> (...)`: `count` pattern memory
    units (banked SRAM scratchpads), each with `bytes` of buffer, staging the tiles of their
    input streams for their output streams (possibly re-tiled or transposed, never converted:
    element types are preserved). `buffers` is 1 for a single buffer, 2 for double buffering
    (the producer fills one while the consumer drains the other), and so on; the capacity
    `bytes x count` must hold `buffers` copies of the largest tile.
    """

    name = "rdu.pmu"

    bytes = prop_def(IntegerAttr[I64])
    count = prop_def(IntegerAttr[I64])
    buffers = prop_def(IntegerAttr[I64])
    inputs = var_operand_def(StreamType)
    outputs = var_result_def(StreamType)

    traits = _UNIT_TRAITS

    assembly_format = (
        "`bytes` $bytes `count` $count `buffers` $buffers ` ` `(` $inputs `)` attr-dict `:` "
        "functional-type($inputs, $outputs)"
    )

    def verify_(self) -> None:
        per_unit = _at_least(self, "bytes", 1)
        count = _at_least(self, "count", 1)
        buffers = _at_least(self, "buffers", 1)
        if not self.inputs or not self.outputs:
            raise VerifyException("'rdu.pmu' needs at least one input and one output stream")
        streams = [s.type for s in (*self.inputs, *self.outputs)]
        element = streams[0].tile.get_element_type()
        for stream in streams[1:]:
            if stream.tile.get_element_type() != element:
                raise VerifyException(
                    f"'rdu.pmu' cannot convert elements: stream tile {stream.tile} differs from "
                    f"{streams[0].tile} in element type"
                )
        largest = max(_bytes(s.tile) for s in streams)
        if per_unit * count < buffers * largest:
            raise VerifyException(
                f"'rdu.pmu' holds {per_unit * count} bytes but {buffers} buffers of its largest "
                f"tile need {buffers * largest}"
            )


@irdl_op_definition
class LoadOp(IRDLOperation):
    """`rdu.load [@t, ...] agcus N [bytes B] : !rdu.stream<...>`: an AGCU transfer from
    off-chip memory onto a stream, using `agcus` address generation and coalescing units.

    It reads `bytes` (default: the whole tensor) from the listed `rdu.tensor` (inside an
    `rdu.hw_loop`, either one tensor for every trip or exactly one per trip, trip i reading the
    i-th) and emits them as tiles, charged to that tensor's tier and socket bandwidth.
    """

    name = "rdu.load"

    tensors = prop_def(ArrayAttr[FlatSymbolRefAttr])
    agcus = prop_def(IntegerAttr[I64])
    bytes = opt_prop_def(IntegerAttr[I64])
    stream = result_def(StreamType)

    traits = _UNIT_TRAITS

    assembly_format = "$tensors `agcus` $agcus (`bytes` $bytes^)? attr-dict `:` type($stream)"

    def verify_(self) -> None:
        _verify_transfer(self, self.stream.type)


@irdl_op_definition
class StoreOp(IRDLOperation):
    """`rdu.store %s -> [@t, ...] agcus N [bytes B] : !rdu.stream<...>`: an AGCU transfer from
    a stream into off-chip memory, using `agcus` units. It writes `bytes` (default: the whole
    tensor) into the listed `rdu.tensor` (one, or one per trip of the enclosing `rdu.hw_loop`),
    e.g. the one new row of a KV cache whose buffer aliases the input cache.
    """

    name = "rdu.store"

    input = operand_def(StreamType)
    tensors = prop_def(ArrayAttr[FlatSymbolRefAttr])
    agcus = prop_def(IntegerAttr[I64])
    bytes = opt_prop_def(IntegerAttr[I64])

    traits = _UNIT_TRAITS

    assembly_format = (
        "$input `->` $tensors `agcus` $agcus (`bytes` $bytes^)? attr-dict `:` type($input)"
    )

    def verify_(self) -> None:
        _verify_transfer(self, self.input.type)


@irdl_op_definition
class AllReduceOp(IRDLOperation):
    """`rdu.all_reduce %s sockets N [bytes B] : !rdu.stream<...>`: element-wise sum of a
    stream across `sockets` (>= 2) sockets over the peer-to-peer network (carried by the
    AGCUs); every socket receives the same summed tiles, on a stream of the same type. `bytes`
    is the size of one socket's data reduced per execution (what the P2P links carry is
    derived from it by the timing model's all-reduce algorithm).
    """

    name = "rdu.all_reduce"

    T: ClassVar = VarConstraint("T", base(StreamType))

    input = operand_def(T)
    sockets = prop_def(IntegerAttr[I64])
    bytes = opt_prop_def(IntegerAttr[I64])
    output = result_def(T)

    traits = _UNIT_TRAITS

    assembly_format = (
        "$input `sockets` $sockets (`bytes` $bytes^)? attr-dict `:` type($input)"
    )

    def verify_(self) -> None:
        _at_least(self, "sockets", 2)
        if self.bytes is not None:
            _at_least(self, "bytes", 0)


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


@irdl_op_definition
class LaunchOp(IRDLOperation):
    """`rdu.launch @kernel mode software|hardware`: the host starts one run of an
    `rdu.kernel`, in three phases: Program Load (configure the kernel's units), Argument Load
    (bind its off-chip tensors), Kernel Execute. Launches are asynchronous and run in program
    order, each after the previous one finished (a launch boundary is a synchronization
    point); in `software` mode the host issues each launch and pays its overhead, in
    `hardware` mode the AGCUs sequence launches from a static schedule.
    """

    name = "rdu.launch"

    kernel = prop_def(FlatSymbolRefAttrConstr)
    mode = prop_def(LaunchModeAttr)

    assembly_format = "$kernel `mode` $mode attr-dict"

    def verify_(self) -> None:
        _verify_host_op(self)
        _lookup(self, self.kernel, KernelOp)


@irdl_op_definition
class SyncOp(IRDLOperation):
    """`rdu.sync`: the host waits until every kernel launched before it has finished (results
    in off-chip memory are then visible to the host and to the next step)."""

    name = "rdu.sync"

    assembly_format = "attr-dict"

    def verify_(self) -> None:
        _verify_host_op(self)


RDU = Dialect(
    "rdu",
    [
        TensorOp,
        KernelOp,
        HwLoopOp,
        PcuOp,
        PmuOp,
        LoadOp,
        StoreOp,
        AllReduceOp,
        LaunchOp,
        SyncOp,
    ],
    [MemoryTierAttr, LaunchModeAttr, PcuModeAttr, StreamType],
)
