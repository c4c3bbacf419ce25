"""Hardware presets: the figures of one socket that lowering checks fits against and the
simulator times with.

Simulator-side contract code (stdlib and msgspec only; never xDSL, never the compiler): the
lowering imports it to check a kernel's resources, the simulator to time a program, and a
program file names its preset so both sides read the same numbers.

Every figure carries its provenance (:class:`Provenance`): ``source`` - a published figure, cited
from ``ANCHORS.md``; ``parameter`` - no source gives it, so the note says how the default was
chosen; such a value is calibrated or swept, never presented as a fact, and a published figure
used to choose it is not also claimed as a prediction; ``override`` - set by the user (e.g. a
sensitivity sweep), the note keeping the preset's own value. Units are SI base units: bytes,
bytes/s, seconds, Hz, FLOP/s. All figures are per socket.

Overrides: ``preset.replace(hbm_bandwidth=2.4e12)`` or, from a command line,
``preset.with_overrides("hbm_bandwidth=2.4e12,launch_software_s=0")``; unknown keys and bad
values raise :class:`PresetError` naming the key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec
from msgspec import Meta

__all__ = [
    "LANE_BYTES",
    "HardwarePreset",
    "PresetError",
    "Provenance",
    "build_figures",
    "check_figures",
    "collective_plan",
    "describe_hardware",
    "encode_hardware",
    "get_preset",
    "hardware_words",
    "list_presets",
    "load_hardware",
    "changed_figures",
    "overrides_between",
    "parse_overrides",
    "pcu_flops_per_s",
    "replaced_fields",
    "vector_bytes_per_s",
]


class PresetError(ValueError):
    """An unknown preset, an unknown hardware parameter, or a bad value for one."""


class Provenance(msgspec.Struct, frozen=True, kw_only=True):
    """Where a figure comes from (see the module docstring for the three origins)."""

    origin: Literal["source", "parameter", "override"]
    note: str


Positive = Annotated[int, Meta(ge=1)]
Rate = Annotated[float, Meta(gt=0)]
Latency = Annotated[float, Meta(ge=0)]
Fraction = Annotated[float, Meta(gt=0, le=1)]
Topology = Literal["switch", "ring"]
TOPOLOGIES: tuple[str, ...] = get_args(Topology)


class HardwarePreset(msgspec.Struct, frozen=True, kw_only=True):
    """The figures of one socket of a dataflow chip (SI units), with their provenance.

    Field groups: resources lowering must fit into (``pcus``, ``pmus``, ``sram_bytes``);
    geometry and rates the time model derives throughput from; off-chip memories; the
    launch / sync / pipeline / peer-to-peer costs that no source gives (parameters)."""

    name: str
    # on-chip resources
    pcus: Positive
    pmus: Positive
    sram_bytes: Positive
    agcus: Positive
    pcu_lanes: Positive
    pcu_stages: Positive
    clock_hz: Rate
    peak_bf16_flops: Rate
    # off-chip memory and scale-out
    hbm_bytes: Positive
    hbm_bandwidth: Rate
    hbm_efficiency: Fraction
    ddr_bytes: Positive
    ddr_bandwidth: Rate
    ddr_efficiency: Fraction
    max_sockets: Positive
    p2p_bandwidth: Rate
    p2p_links: Positive
    p2p_topology: Topology
    p2p_latency_s: Latency
    # launch, sync and pipeline costs
    launch_software_s: Latency
    launch_hardware_s: Latency
    program_load_s: Latency
    argument_load_s: Latency
    sync_software_s: Latency
    sync_hardware_s: Latency
    stage_latency_s: Latency
    provenance: dict[str, Provenance]

    def __post_init__(self) -> None:
        check_figures(self, self.figures())
        if self.sram_bytes < self.pmus:
            raise PresetError(
                f"preset {self.name!r}: sram_bytes {self.sram_bytes} < pmus "
                f"{self.pmus} leaves a PMU without a byte"
            )

    @classmethod
    def figures(cls) -> tuple[str, ...]:
        """Names of the figures (every field but ``name`` and ``provenance``), in order."""
        return tuple(f for f in cls.__struct_fields__ if f not in ("name", "provenance"))

    @property
    def label(self) -> str:
        """How messages name this hardware (`but sn40l with pcus=40 has 40 per socket`): the
        preset's name and the figures that differ from the built-in preset of that name, so
        that hardware checked or timed with overrides is never reported as the bare preset."""
        base = _PRESETS.get(self.name)
        return hardware_words(self.name, overrides_between(base, self) if base else "")

    @property
    def pmu_bytes(self) -> int:
        """SRAM of one PMU, derived (``sram_bytes // pmus``: 0.5 MiB on the SN40L), so that an
        override of either figure keeps the two consistent."""
        return self.sram_bytes // self.pmus

    def parameters(self) -> tuple[str, ...]:
        """Figures no source gives (origin ``parameter``): what a sensitivity sweep varies."""
        return tuple(f for f in self.figures() if self.provenance[f].origin == "parameter")

    def replace(self, **changes: Any) -> HardwarePreset:
        """A copy with some figures changed (each marked ``override``); values are checked
        against the figure's type and range, unknown names rejected with a suggestion."""
        for key in changes:
            _check_key(key)
        return build_figures(HardwarePreset, replaced_fields(self, changes))

    def with_overrides(self, overrides: str | Iterable[str]) -> HardwarePreset:
        """:meth:`replace` from ``key=value`` text (see :func:`parse_overrides`)."""
        return self.replace(**parse_overrides(overrides))


_INTEGER_FIGURES = frozenset(
    f.name for f in msgspec.structs.fields(HardwarePreset) if get_args(f.type)[:1] == (int,)
)


LANE_BYTES = 4
"""Bytes a PCU or PMU lane moves per cycle (one f32): the vector rate of their data paths."""


def pcu_flops_per_s(preset: HardwarePreset, count: int, *, systolic: bool = True) -> float:
    """The FLOP rate of ``count`` PCUs: one multiply-add per lane per cycle, per stage in
    systolic mode (all PCUs, systolic: the peak the time model can reach). Here, with the
    figures, so that the lowering's allocation and the simulator's timing use one rate."""
    return count * preset.pcu_lanes * 2 * preset.clock_hz * (preset.pcu_stages if systolic else 1)


def vector_bytes_per_s(preset: HardwarePreset, count: int) -> float:
    """The rate at which ``count`` PCUs or PMUs move on-chip data (``LANE_BYTES`` per lane per
    cycle)."""
    return count * preset.pcu_lanes * LANE_BYTES * preset.clock_hz


def _check_key(key: str) -> None:
    if key in HardwarePreset.figures():
        return
    if key in ("name", "provenance"):
        raise PresetError(f"hardware parameter {key!r} cannot be overridden")
    close = difflib.get_close_matches(key, HardwarePreset.figures(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise PresetError(
        f"unknown hardware parameter {key!r}{hint}; known: {', '.join(HardwarePreset.figures())}"
    )


_Figures = TypeVar("_Figures", bound=msgspec.Struct)


def check_figures(struct: Any, figures: tuple[str, ...]) -> None:
    """What every struct of figures (a preset, a GPU node) guarantees beyond its fields' types
    and ranges: finite numbers, and a provenance for each figure and nothing else."""
    for key in figures:
        value = getattr(struct, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise PresetError(f"hardware parameter {key}: {value} is not a finite number")
    missing = set(figures) - set(struct.provenance)
    extra = set(struct.provenance) - set(figures)
    if missing or extra:
        raise PresetError(
            f"preset {struct.name!r}: provenance missing for {sorted(missing)}, "
            f"given for unknown figures {sorted(extra)}"
        )


def replaced_fields(struct: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """The fields of a struct of figures (a preset, a GPU node) with ``changes`` applied, each
    changed figure's provenance marked ``override`` (its note keeping the preset's value and
    origin); the keys are checked by the caller."""
    provenance = dict(struct.provenance)
    for key, value in changes.items():
        was = provenance[key]
        provenance[key] = Provenance(
            origin="override",
            note=f"{value!r} instead of the preset's {getattr(struct, key)!r} ({was.origin}: "
            f"{was.note})",
        )
    fields = {f: getattr(struct, f) for f in struct.__struct_fields__}
    fields.update(changes, provenance=provenance)
    return fields


def build_figures(cls: type[_Figures], fields: dict[str, Any]) -> _Figures:
    """Construct a struct of figures through msgspec so every figure's type and range
    constraint is enforced; a bad value raises :class:`PresetError` naming the figure."""
    try:
        return msgspec.convert(fields, cls)
    except msgspec.ValidationError as e:
        message, _, where = str(e).partition(" - at `$.")
        key = where.rstrip("`").split(".")[0] if where else ""
        raise PresetError(
            f"hardware parameter {key}: {message}, got {fields.get(key)!r}"
            if key in fields
            else str(e)
        ) from None


def parse_overrides(overrides: str | Iterable[str]) -> dict[str, int | float | str]:
    """``"a=1,b=2.5e9"`` (or ``["a=1", "b=2.5e9"]``, e.g. repeated CLI options) -> a dict of
    checked keys and numbers (names for ``p2p_topology``). Integer figures accept integral
    floats (``hbm_bytes=64e9``); ranges are checked by :meth:`HardwarePreset.replace`."""
    items = overrides.split(",") if isinstance(overrides, str) else list(overrides)
    parsed: dict[str, int | float | str] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, eq, text = (s.strip() for s in item.partition("="))
        if not eq or not key:
            raise PresetError(f"hardware override {item!r} is not key=value")
        _check_key(key)
        if key in parsed:
            raise PresetError(f"hardware parameter {key!r} given twice")
        if key == "p2p_topology":
            if text not in TOPOLOGIES:
                raise PresetError(
                    f"hardware parameter {key}: {text!r} is not one of {', '.join(TOPOLOGIES)}"
                )
            parsed[key] = text
            continue
        try:
            number = float(text)
        except ValueError:
            raise PresetError(f"hardware parameter {key}: {text!r} is not a number") from None
        if not math.isfinite(number):
            raise PresetError(f"hardware parameter {key}: {text!r} is not a finite number")
        if key in _INTEGER_FIGURES:
            if not number.is_integer():
                raise PresetError(f"hardware parameter {key} needs an integer, got {text!r}")
            parsed[key] = int(number)
        else:
            parsed[key] = number
    return parsed


# ----------------------------------------------------------------------------------------------
# SN40L
# ----------------------------------------------------------------------------------------------

_SN40L_PAPER = (
    'ANCHORS.md, SN40L (Prabhakar et al., "SambaNova SN40L: Scaling the AI Memory '
    'Wall...", arXiv 2405.07518; Hot Chips 2024)'
)


def _source(note: str) -> Provenance:
    return Provenance(origin="source", note=f"{_SN40L_PAPER}: {note}")


def _parameter(note: str) -> Provenance:
    return Provenance(origin="parameter", note=f"{note} A parameter: calibrate or sweep it.")


_MIB, _GIB, _TIB = 1 << 20, 1 << 30, 1 << 40

_SN40L: dict[str, tuple[int | float | str, Provenance]] = {
    "pcus": (1040, _source("1040 PCUs per socket.")),
    "pmus": (1040, _source("1040 PMUs per socket.")),
    "sram_bytes": (520 * _MIB, _source("520 MiB on-chip SRAM per socket (0.5 MiB per PMU).")),
    "agcus": (
        32,
        _parameter(
            "No source gives the AGCU count. 32 (16 per die) is an assumption; off-chip transfers "
            "are bounded by the memory tier's bandwidth, so the time model should be insensitive "
            "to it."
        ),
    ),
    "pcu_lanes": (
        32,
        _parameter(
            "No source gives the SN40L PCU geometry (searched). 32 SIMD lanes x 6 stages is an "
            "assumption, chosen with clock_hz so that pcus x lanes x stages x 2 FLOP x clock "
            "(systolic mode, one multiply-add per lane and stage per cycle) = 639 TFLOP/s matches "
            "the sourced 638 TFLOP/s peak; that peak is therefore calibration, not a prediction."
        ),
    ),
    "pcu_stages": (6, _parameter("See pcu_lanes: 6 pipeline stages per PCU, an assumption.")),
    "clock_hz": (
        1.6e9,
        _parameter(
            "ANCHORS gives only 'under 2 GHz'. 1.6 GHz is chosen with pcu_lanes / pcu_stages so "
            "that the systolic peak of 1040 PCUs matches the sourced 638 BF16 TFLOP/s."
        ),
    ),
    "peak_bf16_flops": (638e12, _source("638 BF16 TFLOP/s per socket.")),
    "hbm_bytes": (64 * _GIB, _source("64 GiB HBM per socket.")),
    "hbm_bandwidth": (
        1.8e12,
        _source("HBM at 1.8 TB/s per socket (the text also says about 2 TB/s)."),
    ),
    "hbm_efficiency": (
        0.95,
        _parameter(
            "Fraction of hbm_bandwidth a long streaming read sustains (refresh, page and bank "
            "overheads). 0.95 is an assumption, not fitted to any SN40L outcome: the published "
            "~85% of HBM bandwidth of a fused decoder and the >90% of peak with kernel looping "
            "stay predictions to compare against."
        ),
    ),
    "ddr_bytes": (int(1.5 * _TIB), _source("up to 1.5 TiB DDR per socket.")),
    "ddr_bandwidth": (200e9, _source("DDR at 200 GB/s per socket.")),
    "ddr_efficiency": (
        0.85,
        _parameter(
            "Fraction of ddr_bandwidth a streaming read sustains; 0.85 is an assumption (DDR "
            "loses more than HBM to refresh and bank conflicts), not fitted to any outcome."
        ),
    ),
    "max_sockets": (
        16,
        _source("systems of up to 16 sockets (SN40L-16), joined by a peer-to-peer network."),
    ),
    "p2p_bandwidth": (
        100e9,
        _parameter(
            "Peer-to-peer bandwidth between sockets is unconfirmed (ANCHORS). 100 GB/s per link "
            "and direction is an assumption of a PCIe-5-x16 / NVLink-class link; decode "
            "all-reduces carry a few kB per layer, so p2p_latency_s matters more."
        ),
    ),
    "p2p_links": (
        1,
        _parameter(
            "Peer-to-peer links per socket (each of p2p_bandwidth) are unconfirmed (ANCHORS: "
            "the AGCUs carry the peer-to-peer protocol, nothing says over how many ports). 1 "
            "keeps the earlier assumption of one PCIe-5-x16-class port per socket; a socket's "
            "transfers to several peers share its links."
        ),
    ),
    "p2p_topology": (
        "switch",
        _parameter(
            "How sockets are joined is unconfirmed (ANCHORS: 'a peer-to-peer network'). "
            "'switch' (every socket's links reach every other socket: one-shot or ring "
            "collectives, whichever is faster for the size) is an assumption; 'ring' (links "
            "only to the two neighbours: ring collectives only) is the alternative to sweep."
        ),
    ),
    "p2p_latency_s": (
        2e-6,
        _parameter(
            "Peer-to-peer latency is unconfirmed (ANCHORS). 2 us per transfer is an assumption of "
            "the order of a PCIe round trip through a switch."
        ),
    ),
    "launch_software_s": (
        10e-6,
        _parameter(
            "Host-side cost of issuing one kernel launch in software-orchestrated mode (runtime "
            "call, driver, doorbell); unconfirmed. 10 us is an assumption of the order of a "
            "non-graph GPU kernel launch."
        ),
    ),
    "launch_hardware_s": (
        1e-6,
        _parameter(
            "Cost of one launch sequenced by the AGCUs from a static schedule (hardware-"
            "orchestrated mode); unconfirmed. 1 us is an assumption, by analogy with a CUDA-graph "
            "launch (~1.3 us, ANCHORS GPU side). The published 1.4x-8x decode gain of hardware "
            "orchestration is an outcome to compare against, not used here."
        ),
    ),
    "program_load_s": (
        10e-6,
        _parameter(
            "Program Load: configuring the units with one kernel (or one section of a split "
            "kernel); unconfirmed. 10 us is an assumption."
        ),
    ),
    "argument_load_s": (
        2e-6,
        _parameter(
            "Argument Load: binding a kernel's off-chip tensors at launch; unconfirmed. 2 us is "
            "an assumption."
        ),
    ),
    "sync_software_s": (
        10e-6,
        _parameter(
            "Time for the host to learn a launch finished (interrupt or poll round trip) in "
            "software mode; unconfirmed (ANCHORS: per-call sync cost unconfirmed). 10 us is an "
            "assumption."
        ),
    ),
    "sync_hardware_s": (
        1e-6,
        _parameter(
            "Completion seen by the AGCU sequencer in hardware mode; unconfirmed. 1 us is an "
            "assumption."
        ),
    ),
    "stage_latency_s": (
        100e-9,
        _parameter(
            "Latency of a tile through one pipeline stage (a unit plus its network hops), which "
            "sets pipeline fill and drain (stages x this); unconfirmed. 100 ns (160 cycles at "
            "1.6 GHz) is an assumption."
        ),
    ),
}

_PRESETS: dict[str, HardwarePreset] = {
    "sn40l": build_figures(
        HardwarePreset,
        {
            "name": "sn40l",
            **{key: value for key, (value, _) in _SN40L.items()},
            "provenance": {key: prov for key, (_, prov) in _SN40L.items()},
        },
    ),
}


def list_presets() -> list[str]:
    """Names of the built-in presets, sorted."""
    return sorted(_PRESETS)


def get_preset(name: str) -> HardwarePreset:
    """The built-in preset ``name`` (e.g. ``"sn40l"``)."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise PresetError(
            f"unknown hardware preset {name!r}; known: {', '.join(list_presets())}"
        ) from None


def load_hardware(spec: str) -> HardwarePreset:
    """``--hardware NAME|FILE``: a built-in preset by name, or a JSON file in the preset's own
    schema (what :func:`encode_hardware` writes: every figure and its provenance), checked like
    a preset (types, ranges, a provenance per figure)."""
    if spec in _PRESETS:
        return _PRESETS[spec]
    try:
        with open(spec, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise PresetError(
            f"--hardware {spec!r} is neither a preset ({', '.join(list_presets())}) nor a file"
        ) from None
    except OSError as error:
        raise PresetError(f"cannot read hardware file '{spec}': {error.strerror}") from None
    try:
        return msgspec.json.decode(data, type=HardwarePreset)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise PresetError(f"{spec}: not a hardware file: {error}") from None


def encode_hardware(preset: HardwarePreset) -> bytes:
    """A preset as a hardware file (indented JSON, figures then provenance), which
    :func:`load_hardware` reads back: the way to start a hardware file of one's own."""
    return msgspec.json.format(msgspec.json.encode(preset), indent=2) + b"\n"


def changed_figures(base: HardwarePreset, preset: HardwarePreset) -> dict[str, int | float | str]:
    """Every figure where ``preset`` differs from ``base``, in figure order: what a program
    records of the hardware it was compiled for besides the preset's name."""
    return {
        key: getattr(preset, key)
        for key in HardwarePreset.figures()
        if getattr(preset, key) != getattr(base, key)
    }


def overrides_between(base: HardwarePreset, preset: HardwarePreset) -> str:
    """``key=value,...`` for every figure where ``preset`` differs from ``base`` (exact: floats
    are written with ``repr``), so a tool that names hardware by preset plus overrides (the
    lowering's ``hw`` / ``hw-overrides``) can be given a hardware file."""
    return ",".join(f"{key}={value!r}" for key, value in changed_figures(base, preset).items())


def hardware_words(name: str, overrides: str) -> str:
    """A preset and its overrides (`key=value,...`) for a message: `sn40l`, `sn40l with
    pcus=512` (:attr:`HardwarePreset.label`; a program or a lowered module records the two)."""
    return f"{name} with {overrides}" if overrides else name


def describe_hardware(preset: HardwarePreset) -> str:
    """A preset as a table for people: each figure, its value and where it comes from."""
    lines = [f"hardware {preset.name} (per socket; SI units: bytes, bytes/s, s, Hz, FLOP/s)"]
    width = max(len(f) for f in HardwarePreset.figures())
    for key in HardwarePreset.figures():
        value = getattr(preset, key)
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        p = preset.provenance[key]
        lines.append(f"  {key:<{width}} {text:>14}  {p.origin}: {p.note}")
    return "\n".join(lines)


def collective_plan(
    preset: HardwarePreset, op: str, sockets: int, block_bytes: float
) -> tuple[float, float]:
    """``(latency, bytes)`` of one socket's part in a collective over ``sockets`` sockets whose
    blocks are ``block_bytes`` each: the bytes cross the socket's ``p2p_links`` links (each
    ``p2p_bandwidth``) after the latency. The faster of the algorithms the topology allows,
    for this size: one-shot (``switch`` only: every socket sends its block to every other, one
    latency, ``(N-1) b``; an all-reduce then sums what it received), two-shot (``switch``
    only, all-reduce: a one-shot reduce-scatter, socket j receiving every peer's j-th
    ``b / N`` slice and summing it, then a one-shot all-gather of the sums: two latencies,
    ``2 (N-1) b / N``, the bytes of a ring) and ring (neighbours only: reduce-scatter then
    all-gather, ``2 (N-1)`` steps of ``b / N`` for an all-reduce, ``N-1`` steps of ``b`` for
    an all-gather, each a latency). One socket: nothing to do."""
    n = sockets
    if n == 1:
        return 0.0, 0.0
    b, lat = float(block_bytes), preset.p2p_latency_s
    rings = {"all_reduce": (2 * (n - 1) * lat, 2 * (n - 1) * b / n)}
    rings["all_gather"] = ((n - 1) * lat, (n - 1) * b)
    plans = [rings[op]]
    if preset.p2p_topology == "switch":
        plans.append((lat, (n - 1) * b))
        if op == "all_reduce":
            plans.append((2 * lat, 2 * (n - 1) * b / n))
    rate = preset.p2p_bandwidth * preset.p2p_links
    return min(plans, key=lambda plan: plan[0] + plan[1] / rate)
