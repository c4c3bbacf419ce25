"""The program file: the only contract between rdu-compiler's lowering and its simulator.

Simulator-side contract code (stdlib, msgspec and the simulator's own numerics / hardware
modules; never xDSL, never the compiler). The lowering builds a :class:`Program` and writes it
with :func:`encode_program`; the simulator reads it with :func:`load_program`. Both directions
validate, so a bad program fails where it is made and where it is read, with the JSON path of
the problem. ``docs/program_format.md`` explains every field and shows an example.

Design (details in the docs):

* **SPMD.** The program is what *one* socket runs; every socket runs it on its own buffers,
  whose contents may differ by socket only through the ``socket_step``, ``interleave`` and
  ``sockets`` of a tensor's sources (a shard of a checkpoint parameter, a KV cache's positions,
  a socket's experts). Index ranges in kernels never depend on the socket; integer attributes
  may, through a PCU's ``attr_by_socket`` (which of a sequence's positions, which experts a
  socket holds).
* **Execution from index ranges.** A unit applies its op (a :data:`simulator.numerics.OPS`
  name or a data movement) to the blocks its ``reads`` name and stores the result in the block
  its ``write`` names; units run in list order. Nothing else says what a unit computes, so a
  wrong offset in the program gives a wrong answer in the functional simulator.
* **Timing from the program alone.** Every unit states its work (FLOPs, bytes, tiles) per
  execution, its kind and count; streams state the tile sizes and depths between units;
  sections state resources; the hardware preset gives the rates.
* **Looping changes only the schedule.** A kernel's params, sections and units describe one
  layer; looping adds a ``loop`` (trips, prefetch, stacked params bound to one tensor per trip)
  and replaces N launches by one. The unit graph and work are the same in both programs.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from rdu_compiler.simulator.hardware import HardwarePreset, PresetError, get_preset, list_presets
from rdu_compiler.simulator.numerics import OPS, RopeScaling, bytes_of

__all__ = [
    "COLLECTIVES",
    "FUSABLE",
    "LaunchMode",
    "PROGRAM_FORMAT",
    "VERSION",
    "Access",
    "Agcu",
    "Binding",
    "Buffer",
    "DType",
    "Fused",
    "Kernel",
    "Launch",
    "Loop",
    "Param",
    "Pcu",
    "Pmu",
    "Program",
    "ProgramError",
    "Resources",
    "Section",
    "Source",
    "Stream",
    "Sync",
    "Tensor",
    "Unit",
    "Value",
    "View",
    "Work",
    "compiled_hardware",
    "configuration_needs",
    "decode_program",
    "encode_program",
    "load_program",
    "validate_program",
]

PROGRAM_FORMAT = "rdu-program"
VERSION = 1

Name = Annotated[str, Meta(min_length=1)]
Count = Annotated[int, Meta(ge=1)]
Index = Annotated[int, Meta(ge=0)]
Shape = list[Count]
DType = Literal["bf16", "f16", "f32", "i32", "i64"]
LaunchMode = Literal["software", "hardware"]
"""Who sequences the launches: the host's runtime (software) or the AGCUs (hardware)."""


class _Struct(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Common config: immutable, keyword construction, unknown fields rejected (a typo in a
    hand-written program is an error, not a silently ignored key), defaults not written."""


# ----------------------------------------------------------------------------------------------
# Values and off-chip tensors
# ----------------------------------------------------------------------------------------------


class Value(_Struct, frozen=True, kw_only=True):
    """A whole, unsharded tensor of the decode step, bound or read by name at run time:
    ``param`` (a checkpoint tensor, HF name), ``input`` (a step argument: token ids,
    positions), ``output`` (a step result: logits, next token), ``state`` (an argument the
    step updates in place and returns: the KV caches). Weights are never in the program."""

    name: Name
    role: Literal["param", "input", "output", "state"]
    shape: Shape
    dtype: DType


class Source(_Struct, frozen=True, kw_only=True):
    """The block ``value[start : start + shape]`` of a :class:`Value` that a tensor holds at
    ``at``. The block is aligned to the tensor's trailing dimensions (a ``[I, H]`` expert
    weight fills ``[1, I, H]`` of a stacked ``[E, I, H]`` tensor at ``[e, 0, 0]``; leading
    block dimensions beyond the tensor's rank must be 1). On socket ``s`` the block starts at
    ``start + (s // socket_group) * socket_step``: no step = the same block on every socket
    (replicated); a step = a shard per group of ``socket_group`` sockets (``socket_group`` > 1
    replicates each shard, e.g. KV heads fewer than sockets). ``interleave`` (per dimension,
    default all 1) deals a dimension's rows among the sockets: with ``k`` along a dimension,
    socket ``s`` holds every k-th row from ``start + s % k`` on, ``shape`` rows (a KV cache
    dealt along the sequence over the ``k`` sockets of a group sharing its kv heads: position
    ``t`` on socket ``t % k``, at row ``t // k``). ``sockets`` (increasing socket indices)
    limits the source to those sockets, so different sockets hold different values in the
    same place (expert parallelism: slot ``j`` of a stacked expert tensor holds expert
    ``s * E/N + j`` on socket ``s``); the sources holding on a socket tile the tensor. For
    ``output`` values the copy goes the other way, from the tensor into the value after the
    step."""

    value: Name
    start: list[Index]
    shape: Shape
    at: list[Index]
    socket_step: list[int] | None = None
    socket_group: Count = 1
    interleave: list[Count] | None = None
    sockets: list[Index] | None = None

    def holds_on(self, socket: int) -> bool:
        """Whether socket ``socket``'s copy of the tensor holds this block."""
        return self.sockets is None or socket in self.sockets


class Tensor(_Struct, frozen=True, kw_only=True):
    """A buffer in off-chip memory (tier ``hbm`` or ``ddr``) that every socket holds.

    ``kind`` says how it is filled: ``weight`` from ``param`` values, ``input`` from step
    inputs, ``kv_cache`` from ``state`` values (zeros before the first step, then kept across
    steps), ``output`` read into ``output`` values after the step, ``activation`` scratch
    between kernels (no sources). ``sources`` tile the tensor exactly. ``aliases`` names the
    tensor whose buffer this one *is* (the updated KV cache reuses its input's buffer: no copy,
    no bytes); an alias has the same shape, dtype and tier, and no sources of its own."""

    name: Name
    kind: Literal["weight", "kv_cache", "input", "output", "activation"]
    shape: Shape
    dtype: DType
    tier: Literal["hbm", "ddr"]
    sources: list[Source] = []
    aliases: Name | None = None


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


class Param(_Struct, frozen=True, kw_only=True):
    """An off-chip argument of a kernel, bound to a tensor (or a view of one) at each launch.
    Only AGCU units access params; in a looped kernel a stacked param's shape is one trip's."""

    name: Name
    shape: Shape
    dtype: DType


class Buffer(_Struct, frozen=True, kw_only=True):
    """A logical on-chip tensor of one section: the value that passes through the PMUs / streams
    in one execution (per launch, or per trip of a loop). It names data for the functional
    simulator; its physical footprint is the PMUs' ``sram_bytes`` (tiles in flight), not its
    shape. Buffers do not survive a section: data crossing sections goes through a param."""

    name: Name
    shape: Shape
    dtype: DType


class Access(_Struct, frozen=True, kw_only=True):
    """A block of a param or buffer: one ``[start, stop)`` range per dimension. Unit ``j`` of a
    group of ``count`` accesses the ranges shifted by ``j * step`` (per dimension; no step =
    every unit accesses the same block), so identical units are described once."""

    name: Name
    ranges: list[tuple[Index, Index]]
    step: list[int] | None = None

    def block_shape(self) -> list[int]:
        """The shape of the block (of each unit)."""
        return [b - a for a, b in self.ranges]


class Work(_Struct, frozen=True, kw_only=True):
    """What one execution (per launch, or per trip) of the whole group of ``count`` units does:
    arithmetic (FLOPs, 2 per multiply-add), bytes consumed and produced (off-chip bytes for
    AGCU transfers, at their tensor's tier; per socket for collectives: the block it reads is
    its share), and tiles processed. Data-dependent accesses state what really moves: a
    KV-cache write its new rows, attention the attended rows. ``roofline_bytes`` (AGCU
    transfers only) is this socket's share of the bytes the unsharded step must move, when
    the simulated socket moves more than that share (expert parallelism: every socket is
    simulated as the busiest one, holding the routed experts); without it the share is the
    bytes moved over the sockets holding the same contents."""

    flops: Index
    bytes_read: Index
    bytes_written: Index
    tiles: Index
    roofline_bytes: Index | None = None


class Fused(_Struct, frozen=True, kw_only=True):
    """An elementwise or per-head op run in another unit's pipeline (one more stage of it, no
    units of its own): ``operand`` -1 applies it to the unit's result before the write (an
    epilogue: ``silu`` after a linear, the residual ``add`` after an all-reduce), ``i`` to
    the unit's read ``i`` before the unit's op (a prologue: ``rope`` of an attention's
    query). Its operands are that value, then ``reads`` (blocks stepped like the unit's own
    accesses); ``attrs`` are its keyword attributes; its result has the value's shape, in the
    dtype of the write (epilogue) or of the read (prologue)."""

    op: Name
    operand: Annotated[int, Meta(ge=-1)] = -1
    reads: list[Access] = []
    attrs: dict[str, Any] = {}


FUSABLE = ("add", "mul", "silu", "gelu", "rope")
"""The ops a unit may run fused (:class:`Fused`)."""


class _Unit(_Struct, frozen=True, tag_field="unit", kw_only=True):
    """Fields shared by every unit kind; ``unit`` (the JSON tag) says which kind it is.
    ``fused``: ops run in its pipeline, in order (PCUs, and collectives' epilogues)."""

    id: Name
    op: Name
    count: Count = 1
    reads: list[Access]
    write: Access
    attrs: dict[str, Any] = {}
    work: Work
    fused: list[Fused] = []


class Pcu(_Unit, frozen=True, tag="pcu", kw_only=True):
    """Pattern compute units running ``op``, a :data:`~simulator.numerics.OPS` name other than
    a collective: reads are the op's operands in order, ``attrs`` its keyword attributes, the
    result's dtype that of the written buffer. ``kv_cache_write`` updates its first read in
    place (its write is that same block). ``mode`` sets the throughput the time model uses.
    ``attr_step`` shifts integer attributes per unit like ``step`` shifts accesses: unit ``j``
    runs with ``attrs[k] + j * attr_step[k]`` (a context block's first cache row), and
    ``attr_by_socket`` per socket (one entry per socket): on socket ``s`` it runs with
    ``attrs[k] + attr_by_socket[k][s]`` more (the first position of a cache dealt along the
    sequence over sockets, the socket's own heads of its group's partials)."""

    mode: Literal["simd", "systolic"]
    attr_step: dict[str, int] = {}
    attr_by_socket: dict[str, list[int]] = {}


class Pmu(_Unit, frozen=True, tag="pmu", kw_only=True):
    """Pattern memory units staging a buffer block (op ``copy``; reading and writing the same
    block = holding it), each with ``sram_bytes`` of scratchpad in ``buffers`` buffers (2 =
    double buffering): the capacity that bounds what is in flight (backpressure)."""

    sram_bytes: Count
    buffers: Count = 1


class Agcu(_Unit, frozen=True, tag="agcu", kw_only=True):
    """Address generation and coalescing units: the only units touching off-chip memory or
    other sockets. ``load`` param -> buffer, ``store`` buffer -> param, ``copy`` param ->
    param, ``all_reduce`` buffer -> buffer summed over all sockets (f32 partials may be read;
    the sum is rounded once to the written buffer's dtype), ``all_gather`` buffer -> buffer:
    every socket's block side by side, in socket order, along ``attrs["dim"]`` (the written
    block is ``sockets`` times the read one along it); with ``attrs["group"]`` = g the sockets
    gather in consecutive groups of g (``s // g``), each getting its group's blocks (g times
    the read one). These are the only attributes an AGCU takes.
    ``count`` AGCUs share the transfer, each moving its block."""


Unit = Pcu | Pmu | Agcu


class Stream(_Struct, frozen=True, kw_only=True):
    """An on-chip network edge from one unit group to another (multicast = several streams from
    one producer): ``bytes`` per execution in tiles of ``tile_bytes``, at most ``depth`` tiles
    in flight (credit flow control). For the time model; data semantics are in the accesses."""

    producer: Name
    consumer: Name
    bytes: Index
    tile_bytes: Count
    depth: Count


class Resources(_Struct, frozen=True, kw_only=True):
    """What a section occupies on one socket: PCUs and PMUs (sums of unit counts) and SRAM
    (sum of PMU ``sram_bytes x count``). Redundant with the units on purpose: the loader
    recomputes and compares, and checks the totals against the hardware preset."""

    pcus: Index
    pmus: Index
    sram_bytes: Index


class Section(_Struct, frozen=True, kw_only=True):
    """A graph of units run as a whole (its buffers live while it runs), in its own
    configuration of the chip: a kernel too large for one configuration has several sections,
    run in order with a Program Load between them (inside a loop: every trip).
    ``configured_with_previous`` puts it in the previous section's configuration instead:
    both are configured at once (their resources add up), no Program Load separates them, and
    each runs as soon as its data is there (a kernel's prologue beside its loop)."""

    resources: Resources
    buffers: list[Buffer]
    units: list[Unit]
    streams: list[Stream]
    configured_with_previous: bool = False


class Loop(_Struct, frozen=True, kw_only=True):
    """The pipelined hardware loop kernel looping creates: the sections ``[begin, end)`` that
    ``sections`` names (default: all) run ``trips`` times in one launch; sections before the
    range run once before the first trip (a prologue: the embedding), sections after it once
    after the last (an epilogue: the LM head), so a whole decode step can be one launch.
    ``stacked`` params take a different tensor per trip (bound to ``trips`` views, or to one
    view whose leading dimension has ``trips`` entries) and only the looped sections access
    them; other params are the same every trip (a param both read and written carries a value
    from trip to trip, in place). Loads of trip ``i + k`` (``k <= prefetch``) may run while
    trip ``i`` computes, except loads of params the kernel writes; they stage into
    ``prefetch`` extra sets of the looped sections' PMU buffers, which the loop reserves: per
    configuration, ``(1 + prefetch)`` times its looped sections' ``sram_bytes`` plus its other
    sections' must fit the preset's SRAM."""

    trips: Count
    prefetch: Index
    stacked: list[Name] = []
    sections: tuple[Index, Index] | None = None


class Kernel(_Struct, frozen=True, kw_only=True):
    """A kernel: its off-chip params, its sections (one or more configurations) and, if looped,
    its hardware loop. Each launch is a synchronization boundary."""

    name: Name
    params: list[Param]
    sections: Annotated[list[Section], Meta(min_length=1)]
    loop: Loop | None = None

    @property
    def trips(self) -> int:
        """Trips of the loop (1 without one)."""
        return self.loop.trips if self.loop is not None else 1

    def looped_sections(self) -> range:
        """The sections the loop repeats (all of them without a loop, or without a range)."""
        if self.loop is None or self.loop.sections is None:
            return range(len(self.sections))
        return range(*self.loop.sections)

    def runs(self, section: int) -> int:
        """How often section ``section`` runs per launch."""
        return self.trips if section in self.looped_sections() else 1

    def executions(self) -> list[tuple[int, int | None]]:
        """The kernel's section executions in program order, as ``(section, trip)``: the
        sections before the loop's range once (trip None), the range ``trips`` times (trip
        by trip), the sections after it once. Without a loop: every section once, trip 0."""
        looped = self.looped_sections()
        if self.loop is None:
            return [(s, 0) for s in looped]
        trips: list[int | None] = list(range(self.trips))
        once = [s for s in range(len(self.sections)) if s not in looped]
        return (
            [(s, None) for s in once if s < looped.start]
            + [(s, t) for t in trips for s in looped]
            + [(s, None) for s in once if s >= looped.stop]
        )

    def configurations(self) -> list[list[int]]:
        """The sections grouped by configuration: a section ``configured_with_previous``
        joins its predecessor's group."""
        groups: list[list[int]] = []
        for s, section in enumerate(self.sections):
            if section.configured_with_previous and groups:
                groups[-1].append(s)
            else:
                groups.append([s])
        return groups


# ----------------------------------------------------------------------------------------------
# Host schedule
# ----------------------------------------------------------------------------------------------


class View(_Struct, frozen=True, kw_only=True):
    """``tensor[index...]``: a tensor, or the sub-tensor at leading indices (a layer's slice of
    the stacked KV cache)."""

    tensor: Name
    index: list[Index] = []


class Binding(_Struct, frozen=True, kw_only=True):
    """A kernel param bound for one launch: one view, or for a stacked param one per trip
    (or one stacked view)."""

    param: Name
    tensors: Annotated[list[View], Meta(min_length=1)]


class _Step(_Struct, frozen=True, tag_field="step", kw_only=True):
    """A host schedule step; ``step`` (the JSON tag) says which."""


class Launch(_Step, frozen=True, tag="launch", kw_only=True):
    """Run a kernel once (Program Load -> Argument Load -> Kernel Execute, in the program's
    launch mode), after the previous launch finished. ``label`` and ``layers`` (the decoder
    layers it computes, in order, split evenly over the trips) are for reports and traces."""

    kernel: Name
    bindings: list[Binding]
    label: str = ""
    layers: list[Index] = []


class Sync(_Step, frozen=True, tag="sync", kw_only=True):
    """The host waits until every launch so far has finished (outputs are then readable)."""


class Program(_Struct, frozen=True, kw_only=True, omit_defaults=False):
    """A whole program file: one decode step of ``model`` on ``sockets`` sockets of the
    ``hardware`` preset with the figures ``hardware_overrides`` changes (absent, and not
    written, when none: see :func:`compiled_hardware`). ``format`` and ``version`` come first
    and are always written."""

    format: str = PROGRAM_FORMAT
    version: int = VERSION
    model: str
    hardware: Name
    hardware_overrides: dict[str, int | float | str] | UnsetType = UNSET
    sockets: Count
    launch_mode: LaunchMode
    batch: Count
    context: Count
    dtype: DType
    values: list[Value]
    tensors: list[Tensor]
    kernels: list[Kernel]
    schedule: list[Launch | Sync]


# ----------------------------------------------------------------------------------------------
# Errors, encoding, loading
# ----------------------------------------------------------------------------------------------

_SHOWN = 20


class ProgramError(Exception):
    """A program file that cannot be used: ``file`` and the ``problems`` found, each a JSON path
    (``$.kernels[3].sections[0].units[5].reads[1]``, ``""`` for the whole file) and a message."""

    def __init__(self, file: str, problems: Sequence[tuple[str, str]]):
        self.file = file
        self.problems = list(problems)
        lines = [
            f"{file}: {path}: {msg}" if path else f"{file}: {msg}"
            for path, msg in self.problems[:_SHOWN]
        ]
        if len(self.problems) > _SHOWN:
            lines.append(f"{file}: ... and {len(self.problems) - _SHOWN} more problems")
        super().__init__("\n".join(lines))


def encode_program(
    program: Program,
    *,
    pretty: bool = False,
    check: bool = True,
    preset: HardwarePreset | None = None,
) -> bytes:
    """The program as deterministic JSON bytes (struct fields in schema order, attribute keys
    sorted, floats in shortest round-trip form, a final newline). ``pretty`` writes one JSON
    line per item that fits 100 columns (for reading and line-based tests; same content).
    ``check`` validates first, so an invalid program is never written."""
    if check:
        validate_program(program, preset)
    if not pretty:
        return msgspec.json.encode(program, order="deterministic") + b"\n"
    return _pretty(msgspec.to_builtins(program, order="deterministic"), 0, 0).encode() + b"\n"


def _pretty(obj: Any, indent: int, column: int) -> str:
    """``obj`` on one line if it fits 100 columns from ``column``, else one item per line."""
    flat = msgspec.json.encode(obj).decode()
    if column + len(flat) <= 100 or not isinstance(obj, (dict, list)) or not obj:
        return flat
    pad = " " * (indent + 2)
    if isinstance(obj, dict):
        keys = [msgspec.json.encode(k).decode() + ": " for k in obj]
        items = [
            pad + key + _pretty(v, indent + 2, indent + 2 + len(key))
            for key, v in zip(keys, obj.values())
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _pretty(v, indent + 2, indent + 2) for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


class _Header(msgspec.Struct):
    """The two fields read before anything else, so a wrong file or version says so instead of
    failing on the first field the schema does not know."""

    format: Any = None
    version: Any = None


def load_program(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    preset: HardwarePreset | None = None,
) -> Program:
    """Read, decode and validate a program file (a path, or the file's bytes). ``preset``
    (default: the preset the program names) is what resources and capacities are checked
    against. Raises :class:`ProgramError` naming the file and the JSON path of each problem."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "<bytes>", bytes(source)
    else:
        name = os.fspath(source)
        try:
            data = Path(name).read_bytes()
        except OSError as e:
            raise ProgramError(name, [("", f"cannot read the program file: {e.strerror}")]) from e
    program = decode_program(data, name)
    validate_program(program, preset, name=name)
    return program


def decode_program(data: bytes, name: str = "<bytes>") -> Program:
    """Decode JSON bytes into a :class:`Program` (typed, no semantic checks): malformed or
    truncated JSON, another format, another version, a missing field or a wrong type raise
    :class:`ProgramError` with the JSON path msgspec reports."""
    if not data.strip():
        raise ProgramError(name, [("", "empty file (expected an rdu-program JSON document)")])
    try:
        header = msgspec.json.decode(data, type=_Header)
        if header.format != PROGRAM_FORMAT:
            found = "no `format` field" if header.format is None else f"format {header.format!r}"
            raise ProgramError(
                name,
                [
                    (
                        "$.format",
                        f"not an {PROGRAM_FORMAT} file: {found} (expected {PROGRAM_FORMAT!r})",
                    )
                ],
            )
        if header.version != VERSION:
            raise ProgramError(
                name,
                [
                    (
                        "$.version",
                        f"program format version {header.version!r}"
                        f" is not supported (this simulator reads "
                        f"version {VERSION})",
                    )
                ],
            )
        return msgspec.json.decode(data, type=Program)
    except msgspec.ValidationError as e:  # a subclass of DecodeError: catch it first
        message, _, where = str(e).partition(" - at `")
        raise ProgramError(name, [(where.rstrip("`") or "$", message)]) from None
    except msgspec.DecodeError as e:
        raise ProgramError(name, [("", _describe_decode_error(str(e), data))]) from None
    except RecursionError:
        raise ProgramError(name, [("", "JSON nested too deeply to be a program")]) from None


def _describe_decode_error(message: str, data: bytes) -> str:
    if "truncated" in message:
        return "truncated file: the JSON document ends early"
    at = re.search(r"\(byte (\d+)\)", message)
    if at is None:
        return f"malformed JSON: {message}"
    offset = int(at.group(1))
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"malformed JSON at line {line}, column {column}: {message}"


# ----------------------------------------------------------------------------------------------
# Semantic validation
# ----------------------------------------------------------------------------------------------

_ROLE_OF_KIND = {"weight": "param", "input": "input", "kv_cache": "state", "output": "output"}

COLLECTIVES = frozenset({"all_reduce", "all_gather"})
"""The AGCU ops that combine the blocks of all sockets over the peer-to-peer network (and the
numerics ops that are not PCU ops)."""

# (unit kind, op) -> (where reads live, where the write lives); PCU ops are compute ops.
_MOVES = {
    ("agcu", "load"): ("param", "buffer"),
    ("agcu", "store"): ("buffer", "param"),
    ("agcu", "copy"): ("param", "param"),
    ("agcu", "all_reduce"): ("buffer", "buffer"),
    ("agcu", "all_gather"): ("buffer", "buffer"),
    ("pmu", "copy"): ("buffer", "buffer"),
}


class _Signature(msgspec.Struct, frozen=True):
    """What a compute op accepts, read from its numerics function: positional operands
    (``least`` required, ``most`` in all) and keyword attributes (``out_dtype`` comes from the
    written buffer, ``inplace`` from the op's semantics, so neither is an attribute)."""

    least: int
    most: int
    required: frozenset[str]
    allowed: frozenset[str]


def _signature(fn: Callable[..., Any]) -> _Signature:
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = [
        p for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("out_dtype", "inplace")
    ]
    return _Signature(
        least=sum(p.default is p.empty for p in positional),
        most=len(positional),
        required=frozenset(p.name for p in keywords if p.default is p.empty),
        allowed=frozenset(p.name for p in keywords),
    )


_COMPUTE = {name: _signature(fn) for name, fn in OPS.items() if name not in COLLECTIVES}

Report = Callable[[str, str], None]


def compiled_hardware(program: Program) -> HardwarePreset:
    """The hardware ``program`` was compiled for: its ``hardware`` preset with its
    ``hardware_overrides`` applied (the default of every check and simulation of it). Raises
    PresetError for an unknown preset or a bad override."""
    preset = get_preset(program.hardware)
    if program.hardware_overrides is UNSET:
        return preset
    return preset.replace(**program.hardware_overrides)


def validate_program(
    program: Program, preset: HardwarePreset | None = None, *, name: str = "<program>"
) -> None:
    """Check what the schema cannot say: references resolve, index ranges stay in bounds,
    sources tile their tensors, aliases match, units are well-formed for their op, resources
    match their units and fit the preset (default: :func:`compiled_hardware`), launches bind
    every param with a matching view, loop trips match stacked bindings, sockets are in range.
    Raises :class:`ProgramError` listing every problem with its JSON path."""
    problems: list[tuple[str, str]] = []

    def bad(path: str, message: str) -> None:
        problems.append((path, message))

    if program.format != PROGRAM_FORMAT:
        bad("$.format", f"not an {PROGRAM_FORMAT} program: format {program.format!r}")
    if program.version != VERSION:
        bad(
            "$.version",
            f"program format version {program.version} is not supported "
            f"(this simulator reads version {VERSION})",
        )
    if preset is None:
        try:
            preset = compiled_hardware(program)
        except PresetError as e:
            overridden = program.hardware_overrides is not UNSET and program.hardware in (
                list_presets()
            )
            bad("$.hardware_overrides" if overridden else "$.hardware", str(e))
    if preset is not None and program.sockets > preset.max_sockets:
        bad(
            "$.sockets",
            f"{program.sockets} sockets, but {preset.label} has at most {preset.max_sockets}",
        )
    values = _unique(bad, "$.values", program.values)
    tensors = _unique(bad, "$.tensors", program.tensors)
    kernels = _unique(bad, "$.kernels", program.kernels)
    for i, tensor in enumerate(program.tensors):
        _check_tensor(bad, f"$.tensors[{i}]", tensor, tensors, values, program.sockets)
    if preset is not None:
        _check_capacity(bad, program.tensors, preset)
    for k, kernel in enumerate(program.kernels):
        _check_kernel(bad, f"$.kernels[{k}]", kernel, preset, program.sockets)
    for s, step in enumerate(program.schedule):
        if isinstance(step, Launch):
            _check_launch(bad, f"$.schedule[{s}]", step, kernels, tensors)
    if not program.schedule or not isinstance(program.schedule[-1], Sync):
        bad("$.schedule", "the schedule must end with a sync (the host reads the outputs)")
    if problems:
        raise ProgramError(name, problems)


def _unique(bad: Report, path: str, items: Sequence[Any]) -> dict[str, Any]:
    """Index ``items`` by name, reporting duplicates."""
    seen: dict[str, Any] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            bad(f"{path}[{i}].name", f"duplicate name {item.name!r}")
        else:
            seen[item.name] = item
    return seen


def _shifted(
    ranges: Sequence[tuple[int, int]], step: Sequence[int] | None, j: int
) -> list[tuple[int, int]]:
    """The ranges of unit ``j`` (or shard ``j``): shifted by ``j * step``."""
    if step is None:
        return [(a, b) for a, b in ranges]
    return [(a + j * d, b + j * d) for (a, b), d in zip(ranges, step)]


def _out_of_bounds(ranges: Sequence[tuple[int, int]], shape: Sequence[int]) -> int | None:
    """The first dimension where ``ranges`` leave ``[0, shape)``, or None."""
    return next((d for d, ((a, b), n) in enumerate(zip(ranges, shape)) if a < 0 or b > n), None)


def _disjoint(x: Sequence[tuple[int, int]], y: Sequence[tuple[int, int]]) -> bool:
    return any(b1 <= a2 or b2 <= a1 for (a1, b1), (a2, b2) in zip(x, y))


# -- tensors -----------------------------------------------------------------------------------


def _check_tensor(
    bad: Report,
    path: str,
    tensor: Tensor,
    tensors: dict[str, Tensor],
    values: dict[str, Value],
    sockets: int,
) -> None:
    if tensor.aliases is not None:
        target = tensors.get(tensor.aliases)
        if target is None:
            bad(f"{path}.aliases", f"aliases unknown tensor {tensor.aliases!r}")
        elif target is tensor:
            bad(f"{path}.aliases", f"tensor {tensor.name!r} aliases itself")
        elif target.aliases is not None:
            bad(
                f"{path}.aliases",
                f"aliases {target.name!r}, which is itself an alias of "
                f"{target.aliases!r}: name the buffer's owner",
            )
        elif (target.shape, target.dtype, target.tier) != (tensor.shape, tensor.dtype, tensor.tier):
            bad(
                f"{path}.aliases",
                f"{tensor.name!r} {tensor.shape} {tensor.dtype} in "
                f"{tensor.tier} aliases {target.name!r} {target.shape} "
                f"{target.dtype} in {target.tier}: an alias is the same "
                f"buffer, so shape, dtype and tier must match",
            )
        if tensor.sources:
            bad(f"{path}.sources", "an alias has no sources: it is its target's buffer")
        return
    role = _ROLE_OF_KIND.get(tensor.kind)
    if role is None and tensor.sources:
        bad(f"{path}.sources", f"an {tensor.kind} tensor has no sources")
    if role in ("param", "input", "output") and not tensor.sources:
        bad(
            f"{path}.sources",
            f"a {tensor.kind} tensor needs sources (which {role} values it holds)",
        )
    blocks: list[list[tuple[int, int]]] = []
    for j, source in enumerate(tensor.sources):
        block = _check_source(bad, f"{path}.sources[{j}]", source, tensor, values, role, sockets)
        if block is not None:
            blocks.append(block)
    if len(blocks) == len(tensor.sources) and blocks:
        if all(source.sockets is None for source in tensor.sources):
            _check_tiling(bad, f"{path}.sources", tensor, list(enumerate(blocks)))
            return
        for socket in range(sockets):  # sources limited to some sockets: each socket's copy
            held = [
                (j, block)
                for j, (block, source) in enumerate(zip(blocks, tensor.sources))
                if source.holds_on(socket)
            ]
            if not _check_tiling(bad, f"{path}.sources", tensor, held, f" on socket {socket}"):
                return


def _check_source(
    bad: Report,
    path: str,
    source: Source,
    tensor: Tensor,
    values: dict[str, Value],
    role: str | None,
    sockets: int,
) -> list[tuple[int, int]] | None:
    """Check one source; return its block in the tensor's coordinates (None if broken)."""
    value = values.get(source.value)
    if value is None:
        bad(f"{path}.value", f"unknown value {source.value!r}")
        return None
    if value.role != role:
        bad(
            f"{path}.value",
            f"a {tensor.kind} tensor holds {role} values, but "
            f"{value.name!r} has role {value.role!r}",
        )
        return None
    rank = len(value.shape)
    for field in ("start", "shape", "socket_step", "interleave"):
        got = getattr(source, field)
        if got is not None and len(got) != rank:
            bad(f"{path}.{field}", f"{len(got)} entries for value {value.name!r} of rank {rank}")
            return None
    if len(source.at) != len(tensor.shape):
        bad(
            f"{path}.at",
            f"{len(source.at)} entries for tensor {tensor.name!r} of rank {len(tensor.shape)}",
        )
        return None
    if source.sockets is not None and (
        not source.sockets
        or any(not 0 <= s < sockets for s in source.sockets)
        or any(a >= b for a, b in zip(source.sockets, source.sockets[1:]))
    ):
        bad(
            f"{path}.sockets",
            f"sockets {source.sockets} must be increasing socket indices in 0..{sockets - 1} "
            "(at least one)",
        )
        return None
    if source.socket_step is not None and sockets % source.socket_group:
        bad(
            f"{path}.socket_group",
            f"socket_group {source.socket_group} does not divide the {sockets} sockets",
        )
        return None
    interleave = source.interleave or [1] * rank
    dealt = math.prod(interleave)
    if sockets % dealt or (source.socket_step is not None and source.socket_group % dealt):
        bad(
            f"{path}.interleave",
            f"interleave {interleave} deals rows over {dealt} sockets, which must divide the "
            f"{source.socket_group if source.socket_step is not None else sockets} sockets "
            "holding the block",
        )
        return None
    ranges = [(a, a + k * (n - 1) + k) for a, n, k in zip(source.start, source.shape, interleave)]
    shards = sockets // source.socket_group if source.socket_step is not None else 1
    for shard in sorted({0, shards - 1}):
        dim = _out_of_bounds(_shifted(ranges, source.socket_step, shard), value.shape)
        if dim is not None:
            a, b = _shifted(ranges, source.socket_step, shard)[dim]
            bad(
                f"{path}.start",
                f"shard {shard} (sockets {shard * source.socket_group}.."
                f"{(shard + 1) * source.socket_group - 1}) reads [{a}, {b}) of "
                f"dimension {dim} of {value.name!r} {value.shape}",
            )
            return None
    extra = rank - len(tensor.shape)
    if extra > 0 and any(n != 1 for n in source.shape[:extra]):
        bad(
            f"{path}.shape",
            f"block {source.shape} has more dimensions than tensor "
            f"{tensor.name!r} {tensor.shape} and the extra leading ones are "
            f"not 1",
        )
        return None
    block_shape = source.shape[extra:] if extra > 0 else [1] * -extra + source.shape
    block = [(a, a + n) for a, n in zip(source.at, block_shape)]
    dim = _out_of_bounds(block, tensor.shape)
    if dim is not None:
        bad(
            f"{path}.at",
            f"block [{block[dim][0]}, {block[dim][1]}) of dimension {dim} lies "
            f"outside tensor {tensor.name!r} {tensor.shape}",
        )
        return None
    return block


def _check_tiling(
    bad: Report,
    path: str,
    tensor: Tensor,
    blocks: list[tuple[int, list[tuple[int, int]]]],
    where: str = "",
) -> bool:
    """Whether the sources' blocks (with their indices) tile the tensor exactly; reports why
    not (`where`: on which socket)."""
    for k, (j, block) in enumerate(blocks):
        for i, other in blocks[:k]:
            if not _disjoint(other, block):
                bad(f"{path}[{j}]", f"overlaps sources[{i}] in tensor {tensor.name!r}{where}")
                return False
    covered = sum(math.prod(b - a for a, b in block) for _, block in blocks)
    if covered != math.prod(tensor.shape):
        bad(
            path,
            f"sources cover {covered} of the {math.prod(tensor.shape)} elements of "
            f"{tensor.name!r}{where}: they must tile it exactly",
        )
        return False
    return True


def _check_capacity(bad: Report, tensors: Sequence[Tensor], preset: HardwarePreset) -> None:
    for tier, capacity in (("hbm", preset.hbm_bytes), ("ddr", preset.ddr_bytes)):
        used = sum(
            bytes_of(t.shape, t.dtype) for t in tensors if t.tier == tier and t.aliases is None
        )
        if used > capacity:
            bad(
                "$.tensors",
                f"tensors in {tier} need {used} bytes per socket, but {preset.label} has "
                f"{capacity}",
            )


# -- kernels -----------------------------------------------------------------------------------


def _check_kernel(
    bad: Report, path: str, kernel: Kernel, preset: HardwarePreset | None, sockets: int
) -> None:
    params = _unique(bad, f"{path}.params", kernel.params)
    loop = kernel.loop
    ranged = True  # the loop's section range is sound (or absent)
    if loop is not None:
        for i, name in enumerate(loop.stacked):
            if name not in params:
                bad(
                    f"{path}.loop.stacked[{i}]",
                    f"stacked {name!r} is not a param of kernel {kernel.name!r}",
                )
            elif name in loop.stacked[:i]:
                bad(f"{path}.loop.stacked[{i}]", f"{name!r} listed twice")
        if loop.sections is not None and not loop.sections[0] < loop.sections[1] <= len(
            kernel.sections
        ):
            ranged = False
            bad(
                f"{path}.loop.sections",
                f"[{loop.sections[0]}, {loop.sections[1]}) is not a non-empty range of the "
                f"kernel's {len(kernel.sections)} section(s)",
            )
    if kernel.sections[0].configured_with_previous:
        bad(
            f"{path}.sections[0].configured_with_previous",
            "the first section has no previous section to be configured with",
        )
    ids: set[str] = set()
    for s, section in enumerate(kernel.sections):
        _check_section(bad, f"{path}.sections[{s}]", section, params, ids, preset, sockets)
    if ranged:
        if loop is not None:
            _check_once_sections(bad, path, kernel, loop)
        if preset is not None:
            _check_configurations(bad, path, kernel, preset)


def _check_once_sections(bad: Report, path: str, kernel: Kernel, loop: Loop) -> None:
    """Sections outside the loop's range run once: no trip picks a stacked param's tensor."""
    looped, stacked = kernel.looped_sections(), set(loop.stacked)
    for s, section in enumerate(kernel.sections):
        if s in looped:
            continue
        for u, unit in enumerate(section.units):
            name = next((a.name for a in (*unit.reads, unit.write) if a.name in stacked), None)
            if name is not None:
                bad(
                    f"{path}.sections[{s}].units[{u}]",
                    f"section {s} runs once, outside the loop's sections [{looped.start}, "
                    f"{looped.stop}), but accesses stacked param {name!r} (one tensor per trip)",
                )


def configuration_needs(sections: Sequence[tuple[Resources, bool]], prefetch: int) -> Resources:
    """What sections configured together occupy on one socket, each given as (its resources,
    whether the loop repeats it): their PCUs and PMUs, and SRAM with the loop's reservation,
    ``1 + prefetch`` sets of the looped sections' staging buffers."""
    return Resources(
        pcus=sum(r.pcus for r, _ in sections),
        pmus=sum(r.pmus for r, _ in sections),
        sram_bytes=sum(r.sram_bytes * (1 + prefetch if looped else 1) for r, looped in sections),
    )


def _check_configurations(bad: Report, path: str, kernel: Kernel, preset: HardwarePreset) -> None:
    """Sections configured together must fit the preset together; a loop's prefetch sets of
    its sections' staging buffers must fit the SRAM beside the rest of their configuration."""
    looped = kernel.looped_sections()
    prefetch = kernel.loop.prefetch if kernel.loop is not None else 0
    for group in kernel.configurations():
        sections = [(kernel.sections[s].resources, s in looped) for s in group]
        need = configuration_needs(sections, prefetch)
        staged = sum(r.sram_bytes for r, repeated in sections if repeated)
        keys = ("pcus", "pmus") if kernel.loop is not None and staged else _RESOURCE_KEYS
        for key in keys if len(group) > 1 else ():
            if getattr(need, key) > (limit := getattr(preset, key)):
                bad(
                    f"{path}.sections[{group[-1]}].configured_with_previous",
                    f"sections {group[0]}..{group[-1]} are configured together and need "
                    f"{getattr(need, key)} {key} but {preset.label} has {limit} per socket",
                )
        if kernel.loop is not None and staged and need.sram_bytes > preset.sram_bytes:
            once = need.sram_bytes - (1 + prefetch) * staged
            beside = f", plus {once} of sections run once" if once else ""
            bad(
                f"{path}.loop.prefetch",
                f"prefetch {prefetch} reserves {need.sram_bytes} bytes of SRAM (1 + prefetch "
                f"sets of {staged}{beside}) but {preset.label} has {preset.sram_bytes}",
            )


_RESOURCE_KEYS = ("pcus", "pmus", "sram_bytes")


def _check_section(
    bad: Report,
    path: str,
    section: Section,
    params: dict[str, Param],
    ids: set[str],
    preset: HardwarePreset | None,
    sockets: int,
) -> None:
    buffers = _unique(bad, f"{path}.buffers", section.buffers)
    for b, buffer in enumerate(section.buffers):
        if buffer.name in params:
            bad(f"{path}.buffers[{b}].name", f"buffer {buffer.name!r} has the name of a param")
    order: dict[str, int] = {}
    written: set[str] = set()
    used = {"pcus": 0, "pmus": 0, "sram_bytes": 0}
    for u, unit in enumerate(section.units):
        upath = f"{path}.units[{u}]"
        if unit.id in ids:
            bad(f"{upath}.id", f"duplicate unit id {unit.id!r} in the kernel")
        ids.add(unit.id)
        order[unit.id] = u
        _check_unit(bad, upath, unit, params, buffers, written, preset, sockets)
        written.add(unit.write.name)
        if isinstance(unit, Pcu):
            used["pcus"] += unit.count
        elif isinstance(unit, Pmu):
            used["pmus"] += unit.count
            used["sram_bytes"] += unit.count * unit.sram_bytes
    for key, value in used.items():
        declared = getattr(section.resources, key)
        if declared != value:
            bad(f"{path}.resources.{key}", f"declares {declared} but its units use {value}")
        if preset is not None and value > (limit := getattr(preset, key)):
            bad(
                f"{path}.resources.{key}",
                f"needs {value} but {preset.label} has {limit} "
                f"per socket: split the kernel into sections",
            )
    for i, stream in enumerate(section.streams):
        spath = f"{path}.streams[{i}]"
        for end in ("producer", "consumer"):
            if getattr(stream, end) not in order:
                bad(f"{spath}.{end}", f"no unit {getattr(stream, end)!r} in this section")
        if (
            stream.producer in order
            and stream.consumer in order
            and order[stream.producer] >= order[stream.consumer]
        ):
            bad(
                spath,
                f"producer {stream.producer!r} does not precede consumer "
                f"{stream.consumer!r} in the unit list (units run in list order)",
            )


def _check_unit(
    bad: Report,
    path: str,
    unit: Unit,
    params: dict[str, Param],
    buffers: dict[str, Buffer],
    written: set[str],
    preset: HardwarePreset | None,
    sockets: int,
) -> None:
    kind = str(unit.__struct_config__.tag)
    if kind == "pcu":
        signature = _COMPUTE.get(unit.op)
        if signature is None:
            bad(
                f"{path}.op",
                f"unknown compute op {unit.op!r} for a pcu; known: {', '.join(sorted(_COMPUTE))}",
            )
            return
        places = ("buffer", "buffer")
    else:
        signature = None
        if (kind, unit.op) not in _MOVES:
            known = sorted(op for k, op in _MOVES if k == kind)
            bad(f"{path}.op", f"op {unit.op!r} is not one a {kind} runs; known: {', '.join(known)}")
            return
        places = _MOVES[kind, unit.op]
    if isinstance(unit, Pmu) and preset is not None and unit.sram_bytes > preset.pmu_bytes:
        bad(
            f"{path}.sram_bytes",
            f"{unit.sram_bytes} bytes per PMU, but a PMU of {preset.label} has {preset.pmu_bytes}",
        )
    storage = {"param": params, "buffer": buffers}
    shapes: list[tuple[Access, Param | Buffer] | None] = []
    for r, access in enumerate(unit.reads):
        shapes.append(
            _check_access(
                bad, f"{path}.reads[{r}]", access, storage[places[0]], places[0], unit.count
            )
        )
        if places[0] == "buffer" and access.name in buffers and access.name not in written:
            bad(
                f"{path}.reads[{r}].name",
                f"buffer {access.name!r} is read before any unit "
                f"writes it (units run in list order)",
            )
    out = _check_access(bad, f"{path}.write", unit.write, storage[places[1]], places[1], unit.count)
    if out is not None and unit.count > 1 and not _units_disjoint(unit.write, unit.count):
        bad(
            f"{path}.write.step",
            f"the {unit.count} units write overlapping blocks of {unit.write.name!r}",
        )
    _check_attrs(bad, f"{path}.attrs", unit.attrs)
    required = unit.work.roofline_bytes
    if required is not None and (
        unit.op not in ("load", "store", "copy")
        or required > unit.work.bytes_read + unit.work.bytes_written
    ):
        bad(
            f"{path}.work.roofline_bytes",
            f"{required} bytes: only an off-chip transfer (an agcu load, store or copy) has "
            "them, at most the bytes it moves",
        )
    if signature is None:
        _check_move(bad, path, unit, shapes, out, sockets)
    else:
        _check_compute(bad, path, unit, signature, shapes, out, sockets)
    _check_fused(bad, path, unit, buffers, written, shapes, out)


def _check_fused(
    bad: Report,
    path: str,
    unit: Unit,
    buffers: dict[str, Buffer],
    written: set[str],
    shapes: list[tuple[Access, Param | Buffer] | None],
    out: tuple[Access, Param | Buffer] | None,
) -> None:
    """A unit's fused ops: on a PCU, or after an all-reduce / all-gather (epilogues); each a
    fusable op whose operands (the value it transforms, then its reads) and attributes fit."""
    kind = str(unit.__struct_config__.tag)
    for f, fused in enumerate(unit.fused):
        fpath = f"{path}.fused[{f}]"
        if kind == "pmu" or (kind == "agcu" and (unit.op not in COLLECTIVES or fused.operand >= 0)):
            bad(fpath, f"a {kind} {unit.op} runs no fused ops (PCUs do; collectives epilogues)")
            return
        if fused.op not in FUSABLE:
            bad(f"{fpath}.op", f"{fused.op!r} cannot be fused; fusable: {', '.join(FUSABLE)}")
            return
        if fused.operand >= len(unit.reads):
            bad(f"{fpath}.operand", f"the unit has no read {fused.operand}")
            return
        target = out if fused.operand == -1 else shapes[fused.operand]
        reads: list[tuple[Access, Param | Buffer] | None] = []
        for r, access in enumerate(fused.reads):
            rpath = f"{fpath}.reads[{r}]"
            reads.append(_check_access(bad, rpath, access, buffers, "buffer", unit.count))
            if access.name in buffers and access.name not in written:
                bad(
                    f"{rpath}.name",
                    f"buffer {access.name!r} is read before any unit "
                    f"writes it (units run in list order)",
                )
        signature = _COMPUTE[fused.op]
        if not signature.least <= 1 + len(fused.reads) <= signature.most:
            bad(
                f"{fpath}.reads",
                f"{fused.op} takes {signature.least}..{signature.most} operands, the value "
                f"it transforms and {len(fused.reads)} read(s)",
            )
            continue
        problems = [
            f"{key} {problem}"
            for key in sorted(fused.attrs.keys() & signature.allowed)
            if (problem := _attr_problem(key, fused.attrs[key])) is not None
        ]
        problems += [
            f"needs attribute {key!r}" for key in sorted(signature.required - fused.attrs.keys())
        ]
        problems += [
            f"has no attribute {key!r}" for key in sorted(fused.attrs.keys() - signature.allowed)
        ]
        if problems:
            bad(f"{fpath}.attrs", f"{fused.op}: {'; '.join(problems)}")
            continue
        if target is None or any(r is None for r in reads):
            continue
        value = target[0].block_shape()
        blocks = [value, *(access.block_shape() for access, _ in reads)]  # type: ignore[union-attr]
        problem = _operand_problem(fused.op, fused.attrs, blocks, value)
        if problem is not None:
            bad(fpath, f"{fused.op}: {problem}")


def _check_access(
    bad: Report, path: str, access: Access, space: dict[str, Any], place: str, count: int
) -> tuple[Access, Param | Buffer] | None:
    """Check an access against the param / buffer it names; return both if it is sound."""
    target = space.get(access.name)
    if target is None:
        bad(f"{path}.name", f"no {place} {access.name!r} here (this op accesses {place}s)")
        return None
    shape = target.shape
    if len(access.ranges) != len(shape) or (
        access.step is not None and len(access.step) != len(shape)
    ):
        bad(path, f"ranges / step do not match the rank of {access.name!r} {shape}")
        return None
    for d, (a, b) in enumerate(access.ranges):
        if a >= b:
            bad(f"{path}.ranges[{d}]", f"empty range [{a}, {b})")
            return None
    for j in sorted({0, count - 1}):
        ranges = _shifted(access.ranges, access.step, j)
        dim = _out_of_bounds(ranges, shape)
        if dim is not None:
            who = f"unit {j} of {count}" if count > 1 else "the unit"
            bad(
                f"{path}.ranges[{dim}]",
                f"{who} accesses [{ranges[dim][0]}, {ranges[dim][1]}) "
                f"of dimension {dim} of {access.name!r} {shape}",
            )
            return None
    return access, target


def _units_disjoint(access: Access, count: int) -> bool:
    """Units 0..count-1 write pairwise disjoint blocks: with affine shifts it suffices that
    neighbours are disjoint in some dimension."""
    return count == 1 or _disjoint(
        _shifted(access.ranges, access.step, 0), _shifted(access.ranges, access.step, 1)
    )


def _check_attrs(bad: Report, path: str, attrs: Any) -> None:
    """Attributes are plain JSON; a NaN or infinity would be written as null and lost."""
    if isinstance(attrs, float) and not math.isfinite(attrs):
        bad(path, f"{attrs} cannot be written to JSON")
    elif isinstance(attrs, dict):
        for key, value in attrs.items():
            _check_attrs(bad, f"{path}.{key}", value)
    elif isinstance(attrs, list):
        for i, value in enumerate(attrs):
            _check_attrs(bad, f"{path}[{i}]", value)


def _check_move(
    bad: Report,
    path: str,
    unit: Unit,
    shapes: list[tuple[Access, Param | Buffer] | None],
    out: tuple[Access, Param | Buffer] | None,
    sockets: int,
) -> None:
    if len(unit.reads) != 1:
        bad(f"{path}.reads", f"{unit.op} reads exactly one block, got {len(unit.reads)}")
        return
    gather = unit.op == "all_gather"
    if gather and (
        not {"dim"} <= set(unit.attrs) <= {"dim", "group"}
        or any(type(v) is not int for v in unit.attrs.values())
    ):
        bad(f"{path}.attrs", "all_gather takes an integer 'dim' and maybe an integer 'group'")
        return
    group = unit.attrs.get("group", sockets) if gather else sockets
    if gather and (group < 1 or sockets % group):
        bad(f"{path}.attrs.group", f"group {group} does not divide the {sockets} sockets")
        return
    if unit.attrs and not gather:
        bad(f"{path}.attrs", f"{unit.op} takes no attributes")
    if shapes[0] is None or out is None:
        return
    (src, source), (dst, target) = shapes[0], out
    if gather:
        part, whole = src.block_shape(), dst.block_shape()
        dim = unit.attrs["dim"]
        want = part[:dim] + [part[dim] * group] + part[dim + 1 :] if 0 <= dim < len(part) else None
        if whole != want:
            bad(
                path,
                f"all_gather along dim {dim} over {group} socket(s) of a {part} block "
                f"writes {want or 'nothing (no such dim)'}, not {whole}",
            )
    elif (sizes := [math.prod(acc.block_shape()) for acc in (src, dst)])[0] != sizes[1]:
        bad(path, f"{unit.op} reads {sizes[0]} elements but writes {sizes[1]}")
    if unit.op != "all_reduce" and source.dtype != target.dtype:
        bad(path, f"{unit.op} cannot convert {source.dtype} to {target.dtype} (PCUs convert)")


def _check_compute(
    bad: Report,
    path: str,
    unit: Unit,
    signature: _Signature,
    shapes: list[tuple[Access, Param | Buffer] | None],
    out: tuple[Access, Param | Buffer] | None,
    sockets: int,
) -> None:
    if not signature.least <= len(unit.reads) <= signature.most:
        bad(
            f"{path}.reads",
            f"{unit.op} takes {signature.least}..{signature.most} operands, got {len(unit.reads)}",
        )
        return
    attrs_ok = True
    for key in sorted(unit.attrs.keys() & signature.allowed):
        problem = _attr_problem(key, unit.attrs[key])
        if problem is not None:
            bad(f"{path}.attrs.{key}", f"{unit.op}: {key} {problem}")
            attrs_ok = False
    for key in sorted(signature.required - unit.attrs.keys()):
        bad(f"{path}.attrs", f"{unit.op} needs attribute {key!r}")
    for key in sorted(unit.attrs.keys() - signature.allowed):
        bad(
            f"{path}.attrs.{key}",
            f"{unit.op} has no attribute {key!r}; it takes "
            f"{', '.join(sorted(signature.allowed)) or 'none'}",
        )
    for key, step in getattr(unit, "attr_step", {}).items():
        if type(unit.attrs.get(key)) is not int or type(step) is not int:
            bad(
                f"{path}.attr_step.{key}",
                f"steps an integer attribute of the unit, but {key!r} is not one",
            )
    for key, shifts in getattr(unit, "attr_by_socket", {}).items():
        if type(unit.attrs.get(key)) is not int or any(type(v) is not int for v in shifts):
            bad(
                f"{path}.attr_by_socket.{key}",
                f"shifts an integer attribute of the unit, but {key!r} is not one",
            )
        elif len(shifts) != sockets:
            bad(
                f"{path}.attr_by_socket.{key}",
                f"{len(shifts)} entries for the program's {sockets} socket(s)",
            )
    if unit.op == "kv_cache_write" and unit.reads and unit.reads[0] != unit.write:
        bad(
            f"{path}.write",
            "kv_cache_write updates its cache in place: its write must be "
            "the same block as its first read",
        )
    if (
        attrs_ok
        and signature.required <= unit.attrs.keys()
        and out is not None
        and all(s is not None for s in shapes)
    ):
        blocks = [access.block_shape() for access, _ in shapes]  # type: ignore[union-attr]
        problem = _operand_problem(unit.op, unit.attrs, blocks, out[0].block_shape())
        if problem is not None:
            bad(path, f"{unit.op}: {problem}")


def _positive_int(value: Any) -> str | None:
    return None if type(value) is int and value >= 1 else f"must be an integer >= 1, got {value!r}"


def _finite(value: Any, minimum: float | None = None) -> str | None:
    if type(value) not in (int, float) or not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if minimum is not None and value <= minimum:
        return f"must be > {minimum}, got {value!r}"
    return None


def _rope_scaling(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"must be null or an object, got {value!r}"
    try:
        scaling = RopeScaling(**value) if "kind" in value else RopeScaling.from_hf(value)
        if scaling is None:
            return None
    except (TypeError, ValueError, KeyError) as e:
        return f"is not a rope scaling ({e})"
    if _finite(scaling.factor) or _finite(scaling.low_freq_factor, 0.0):
        return "needs finite factors, low_freq_factor > 0"
    if _finite(scaling.high_freq_factor) or _positive_int(scaling.original_max_position_embeddings):
        return "needs a finite high_freq_factor and an integer original_max_position_embeddings"
    return None


# Unit attribute -> why its value is unusable (None: fine). Every keyword attribute of a PCU op
# in simulator.numerics is listed (test_program checks), so the engines never see a value
# their arithmetic cannot take.
_ATTRS: dict[str, Callable[[Any], str | None]] = {
    "eps": lambda v: _finite(v) or (None if v >= 0 else f"must be >= 0, got {v!r}"),
    "approximate": lambda v: None if v in ("none", "tanh") else f"must be none or tanh, got {v!r}",
    "accumulate_only": lambda v: None if type(v) is bool else f"must be a boolean, got {v!r}",
    "normalize_top_k": lambda v: None if type(v) is bool else f"must be a boolean, got {v!r}",
    "head_dim": _positive_int,
    "num_heads": _positive_int,
    "num_kv_heads": _positive_int,
    "top_k": _positive_int,
    "block_start": lambda v: None if type(v) is int and v >= 0 else f"must be >= 0, got {v!r}",
    "row_offset": lambda v: None if type(v) is int and v >= 0 else f"must be >= 0, got {v!r}",
    "row_stride": _positive_int,
    "head_start": lambda v: None if type(v) is int and v >= 0 else f"must be >= 0, got {v!r}",
    "heads": lambda v: None if v is None else _positive_int(v),
    "num_experts": lambda v: None if v is None else _positive_int(v),
    "sliding_window": lambda v: None if v is None else _positive_int(v),
    "theta": lambda v: _finite(v, minimum=0.0),
    "scale": lambda v: None if v is None else _finite(v),
    "scaling": _rope_scaling,
}


def _attr_problem(key: str, value: Any) -> str | None:
    check = _ATTRS.get(key)
    return None if check is None else check(value)


def _operand_problem(
    op: str, attrs: dict[str, Any], reads: list[list[int]], write: list[int]
) -> str | None:
    """Why ``op``'s operand blocks (``reads``) and written block do not fit together, for the
    ops whose arithmetic relates shapes and attributes (None: they fit)."""
    if op == "rope":
        x, pos = reads
        d = attrs["head_dim"]
        if d % 2 or len(x) != 2 or x[1] % d or math.prod(pos) != x[0] or write != x:
            return (
                f"x {x} must be [batch, heads * head_dim] with an even head_dim {d}, "
                f"positions {pos} one per batch entry, and the write the shape of x"
            )
    elif op in ("attention", "attention_partial"):
        q, k, v, pos = reads
        nh, kvh, d = attrs["num_heads"], attrs["num_kv_heads"], attrs["head_dim"]
        partial = op == "attention_partial"  # k, v: cache blocks; the write: f32 partials
        if (
            nh % kvh
            or len(q) != 2
            or q[1] != nh * d
            or len(k) != 4
            or k != v
            or k[:2] != [q[0], kvh]
            or k[3] != d
            or math.prod(pos) != q[0]
            or (math.prod(write) != q[0] * nh * (d + 2) if partial else write != q)
        ):
            caches, shapes = (
                ("cache blocks", f"partials [B, {nh}, {d}+2]")
                if partial
                else ("caches", f"[B, {nh}*{d}], [B, {kvh}, S, {d}], [B], [B, {nh}*{d}]")
            )
            return (
                f"q {q}, {caches} {k} and {v}, positions {pos} and write {write} do not fit "
                f"{nh} heads over {kvh} kv heads of head_dim {d} ({shapes})"
            )
    elif op == "attention_merge":
        (part,) = reads
        if len(part) != 4 or part[3] < 3 or write != [part[0], 1, *part[2:]]:
            return f"partials {part} [B, blocks, heads, head_dim + 2] do not merge into {write}"
    elif op == "attention_combine":
        (part,) = reads
        heads = attrs.get("heads") or (part[2] if len(part) == 4 else 0)
        if (
            len(part) != 4
            or part[3] < 3
            or attrs.get("head_start", 0) + heads > part[2]
            or math.prod(write) != part[0] * heads * (part[3] - 2)
        ):
            return f"partials {part} [B, blocks, heads, head_dim + 2] do not make {write}"
    elif op in ("moe_partial", "moe_combine"):
        x, router, *rest = reads
        e, hidden = (router + [0, 0])[:2]
        if op == "moe_partial":
            gate, up, down = rest  # E' <= E experts held (from `expert_start` on)
            bad = (
                len(gate) != 3
                or up != gate
                or down != [gate[0], gate[2], gate[1]]
                or gate[2] != hidden
                or not 1 <= gate[0] <= e
                or attrs.get("expert_start", 0) + gate[0] > e
                or math.prod(write) != x[0] * attrs["top_k"] * hidden
            )
        else:
            (part,) = rest
            bad = (
                len(part) != 4
                or part[0] != x[0]
                or part[2] != attrs["top_k"]
                or math.prod(write) != x[0] * part[3]
            )
        if bad or len(router) != 2 or x[-1] != hidden or attrs["top_k"] > e:
            return (
                f"x {x}, router {router}, blocks {rest}, write {write} and top_k "
                f"{attrs['top_k']} do not agree"
            )
    elif op == "rms_norm":
        x, w = reads
        if len(w) != 1 or x[-1] % w[0] or write != x:
            return f"weight {w} must be 1-D dividing the features of x {x}, written as {x}"
    elif op == "kv_cache_write":
        cache, new, pos = reads
        if len(cache) != 4 or new != [cache[0], cache[1] * cache[3]] or math.prod(pos) != cache[0]:
            return f"new rows {new} and positions {pos} do not fit cache {cache} [B, KVH, S, D]"
    elif op == "linear":
        x, w, *bias = reads
        if (
            len(w) != 2
            or x[-1] != w[1]
            or any(b != w[:1] for b in bias)
            or math.prod(write) != math.prod(x[:-1]) * w[0]
        ):
            return f"x {x}, weight {w} [out, in], bias {bias} and write {write} do not agree"
    elif op == "embedding":
        table, ids = reads
        if len(table) != 2 or write != [math.prod(ids), table[1]]:
            return f"table {table} [vocab, hidden], ids {ids}, write {write} do not agree"
    elif op == "moe":
        x, router, gate, up, down = reads
        e = gate[0] if gate else 0
        if (
            len(gate) != 3
            or up != gate
            or down != [e, gate[2], gate[1]]
            or router != [e, gate[2]]
            or x[-1] != gate[2]
            or attrs["top_k"] > e
            or attrs.get("num_experts") not in (None, e)
            or write != x
        ):
            return (
                f"x {x}, router {router}, experts {gate} {up} {down} and top_k "
                f"{attrs['top_k']} do not agree"
            )
    elif op in ("add", "mul"):
        a, b = reads
        shape = _broadcast(a, b)
        if shape is None or math.prod(shape) != math.prod(write):
            return f"operands {a} and {b} do not broadcast to the written {write}"
    elif op == "argmax":
        (x,) = reads
        if len(x) != 2 or write not in ([x[0]], [x[0], 1]):
            return f"x {x} must be [batch, vocab] and the write [batch], got {write}"
    elif op == "layer_norm":
        x, *params = reads
        if any(w != x[-1:] for w in params) or math.prod(write) != math.prod(x):
            return f"weight and bias {params} must be [{x[-1]}] for x {x}, written as {x}"
    elif math.prod(write) != math.prod(reads[0]):  # silu, gelu, softmax: elementwise
        return f"reads {reads[0]} but writes {write}: an elementwise op keeps the size"
    return None


def _broadcast(a: list[int], b: list[int]) -> list[int] | None:
    """numpy's broadcast of two shapes (None if they do not broadcast)."""
    shape = []
    for x, y in zip(
        reversed([1] * (len(b) - len(a)) + a), reversed([1] * (len(a) - len(b)) + b), strict=True
    ):
        if x != y and 1 not in (x, y):
            return None
        shape.append(max(x, y))
    return shape[::-1]


# -- schedule ----------------------------------------------------------------------------------


def _check_launch(
    bad: Report, path: str, launch: Launch, kernels: dict[str, Kernel], tensors: dict[str, Tensor]
) -> None:
    kernel = kernels.get(launch.kernel)
    if kernel is None:
        bad(f"{path}.kernel", f"launches unknown kernel {launch.kernel!r}")
        return
    trips = kernel.trips
    stacked = set(kernel.loop.stacked) if kernel.loop is not None else set()
    params = {p.name: p for p in kernel.params}
    bound: set[str] = set()
    for b, binding in enumerate(launch.bindings):
        bpath = f"{path}.bindings[{b}]"
        param = params.get(binding.param)
        if param is None:
            bad(f"{bpath}.param", f"kernel {kernel.name!r} has no param {binding.param!r}")
            continue
        if binding.param in bound:
            bad(f"{bpath}.param", f"param {binding.param!r} bound twice")
            continue
        bound.add(binding.param)
        views = [
            _check_view(bad, f"{bpath}.tensors[{v}]", view, tensors)
            for v, view in enumerate(binding.tensors)
        ]
        if any(v is None for v in views):
            continue
        _check_binding(bad, bpath, param, views, binding.param in stacked, trips)
    for name in params.keys() - bound:
        bad(f"{path}.bindings", f"param {name!r} of kernel {kernel.name!r} is not bound")
    if len(launch.layers) % trips:
        bad(
            f"{path}.layers",
            f"{len(launch.layers)} layers do not split evenly over the "
            f"{trips} trips of kernel {kernel.name!r}",
        )


def _check_view(
    bad: Report, path: str, view: View, tensors: dict[str, Tensor]
) -> tuple[list[int], str] | None:
    """Check a view; return its shape and dtype (None if broken)."""
    tensor = tensors.get(view.tensor)
    if tensor is None:
        bad(f"{path}.tensor", f"unknown tensor {view.tensor!r}")
        return None
    if len(view.index) > len(tensor.shape) or any(i >= n for i, n in zip(view.index, tensor.shape)):
        bad(f"{path}.index", f"index {view.index} is outside tensor {tensor.name!r} {tensor.shape}")
        return None
    return tensor.shape[len(view.index) :], tensor.dtype


def _check_binding(
    bad: Report, path: str, param: Param, views: list[Any], stacked: bool, trips: int
) -> None:
    shape = list(param.shape)
    if stacked and len(views) == 1 and len(views[0][0]) == len(shape) + 1:
        if views[0][0][1:] == shape and views[0][0][0] != trips:
            bad(
                f"{path}.tensors[0]",
                f"stacked view has leading dimension {views[0][0][0]} but "
                f"the loop runs {trips} trips",
            )
            return
        expected = [[trips, *shape]]
    elif stacked and len(views) != trips:
        bad(
            f"{path}.tensors",
            f"stacked param {param.name!r} needs {trips} views (one per "
            f"trip) or one stacked view, got {len(views)}",
        )
        return
    elif not stacked and len(views) != 1:
        bad(
            f"{path}.tensors",
            f"param {param.name!r} is not stacked: bind one view, got {len(views)}",
        )
        return
    else:
        expected = [shape] * len(views)
    for v, ((got, dtype), want) in enumerate(zip(views, expected)):
        if got != want or dtype != param.dtype:
            bad(
                f"{path}.tensors[{v}]",
                f"view is {got} {dtype}, but param {param.name!r} needs {want} {param.dtype}",
            )
