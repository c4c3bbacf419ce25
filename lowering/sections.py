"""Sections: cut a kernel's units into sections that fit one socket, spill what crosses a cut,
and materialize each section as an `rdu.section` of units and buffers.

A kernel whose units need more PCUs, PMUs or SRAM than the preset has runs as several
sections (reconfigured in turn); buffers do not survive a section, so data read after a cut
goes through an HBM scratch param. Cuts fall between ops only, so that one op's loads,
staging PMUs and PCUs stay together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    IntegerAttr,
    StringAttr,
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue

from rdu_compiler.lowering.diagnostics import fail
from rdu_compiler.lowering.tensor_types import stream_of, tensor_of, whole
from rdu_compiler.lowering.unit_mapping import Access, KernelLowering, Unit
from rdu_compiler.rdu_dialect import rdu
from rdu_compiler.simulator.hardware import HardwarePreset
from rdu_compiler.simulator.numerics import DTYPES, bytes_of

_RESOURCE = {"pcus": "PCUs", "pmus": "PMUs", "sram_bytes": "bytes of SRAM"}


def _footprint(units: Sequence[Unit]) -> dict[str, int]:
    used = {"pcus": 0, "pmus": 0, "sram_bytes": 0}
    for unit in units:
        if unit.kind == "pcu":
            used["pcus"] += unit.count
        elif unit.kind == "pmu":
            used["pmus"] += unit.count
            used["sram_bytes"] += unit.count * unit.sram_bytes
    return used


def split_sections(kernel: str, units: list[Unit], preset: HardwarePreset) -> list[list[Unit]]:
    """Units cut into sections whose resources fit the preset, in list order and only between
    ops (an op's loads, staging PMUs and PCUs stay together). An op that alone needs more than
    the chip fails with a diagnostic."""
    limits = {"pcus": preset.pcus, "pmus": preset.pmus, "sram_bytes": preset.sram_bytes}
    groups: dict[int, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.group, []).append(unit)
    sections: list[list[Unit]] = [[]]
    used = dict.fromkeys(limits, 0)
    for group in groups.values():
        need = _footprint(group)
        for key, value in need.items():
            if value > limits[key]:
                what = next((u for u in group if u.kind == "pcu"), group[-1])
                raise fail(
                    f"kernel @{kernel} does not fit: its {what.op} '{what.id}' alone "
                    f"needs {value} {_RESOURCE[key]} but {preset.label} has "
                    f"{limits[key]} per socket (lower the parallelization factors)"
                )
        if sections[-1] and any(used[k] + need[k] > limits[k] for k in limits):
            sections.append([])
            used = dict.fromkeys(limits, 0)
        sections[-1].extend(group)
        for key in limits:
            used[key] += need[key]
    return sections


def spill(lowering: KernelLowering, sections: list[list[Unit]]) -> list[tuple[str, list[int], str]]:
    """Buffers do not survive a section: one read in a later section than the one that wrote
    it goes through a scratch param (stored once at the end of the writing section, loaded at
    the start of each later section reading it)."""
    spills: list[tuple[str, list[int], str]] = []
    written_in: dict[str, int] = {}
    for s, section in enumerate(sections):
        loads: list[Unit] = []
        for unit in section:
            for access in unit.all_reads():
                origin = written_in.get(access.name)
                if origin is None or origin == s:
                    continue
                shape, dtype = lowering.buffers[access.name]
                param, size = f"{access.name}.spill", bytes_of(shape, dtype)
                if param not in lowering.params:
                    lowering.params[param] = (shape, dtype)
                    spills.append((param, shape, dtype))
                    sections[origin].append(
                        Unit(
                            "agcu",
                            "store",
                            f"st.{param}",
                            [Access(access.name, whole(shape))],
                            Access(param, whole(shape)),
                            bytes_read=size,
                            bytes_written=size,
                            tiles=1,
                        )
                    )
                if all(u.write.name != access.name for u in loads):
                    loads.append(
                        Unit(
                            "agcu",
                            "load",
                            f"ld.{param}.{s}",
                            [Access(param, whole(shape))],
                            Access(access.name, whole(shape)),
                            bytes_read=size,
                            bytes_written=size,
                            tiles=1,
                        )
                    )
            written_in.setdefault(unit.write.name, s)
        section[:0] = loads
    return spills


def materialize_section(lowering: KernelLowering, units: list[Unit]) -> rdu.SectionOp:
    knobs = lowering.knobs
    used = {access.name for unit in units for access in (*unit.all_reads(), unit.write)}
    block = Block()
    for name, (shape, dtype) in lowering.buffers.items():
        if name in used:
            block.add_op(
                rdu.BufferOp(
                    properties={
                        "buffer": StringAttr(name),
                        "type": tensor_of(dtype, shape),
                    }
                )
            )
    producer: dict[str, SSAValue] = {}
    ops: list[rdu.UnitOp] = []
    for unit in units:
        inputs: list[SSAValue] = []
        for access in unit.all_reads():
            stream = producer.get(access.name)
            if stream is not None and stream not in inputs:
                inputs.append(stream)
        space = lowering.buffers.get(unit.write.name) or lowering.params[unit.write.name]
        elements = max(
            1, min(math.prod(unit.write.block()), knobs.tile // DTYPES[space[1]].itemsize)
        )
        stream_type = stream_of(space[1], elements, knobs.buffer_depth)
        props: dict[str, Attribute] = {
            "op": rdu.PcuComputeAttr(rdu.PcuCompute(unit.op))
            if unit.kind == "pcu"
            else StringAttr(unit.op),
            "id": StringAttr(unit.id),
            "count": IntegerAttr(unit.count, i64),
            "reads": ArrayAttr([a.attr() for a in unit.reads]),
            "write": unit.write.attr(),
            "work": rdu.WorkAttr(
                unit.flops, unit.bytes_read, unit.bytes_written, unit.tiles, unit.roofline_bytes
            ),
        }
        if unit.kind == "pcu":
            cls: type[rdu.UnitOp] = rdu.PcuOp
            props["mode"] = rdu.PcuModeAttr(rdu.PcuMode(unit.mode))
        elif unit.kind == "pmu":
            cls = rdu.PmuOp
            props["sram_bytes"] = IntegerAttr(unit.sram_bytes, i64)
            props["buffers"] = IntegerAttr(unit.buffers, i64)
        else:
            cls = rdu.AgcuOp
        if unit.fused:
            props["fused"] = ArrayAttr([f.attr() for f in unit.fused])
        if unit.attrs:
            props["attrs"] = DictionaryAttr(unit.attrs)
        if unit.attr_step:
            props["attr_step"] = DictionaryAttr(
                {k: IntegerAttr(v, i64) for k, v in unit.attr_step.items()}
            )
        if unit.attr_by_socket:
            props["attr_by_socket"] = DictionaryAttr(
                {
                    k: ArrayAttr([IntegerAttr(v, i64) for v in shifts])
                    for k, shifts in unit.attr_by_socket.items()
                }
            )
        op = cls.create(operands=inputs, result_types=[stream_type], properties=props)
        block.add_op(op)
        ops.append(op)
        if unit.write.name in lowering.buffers:
            producer[unit.write.name] = op.results[0]
    totals = rdu.used_resources(ops)
    return rdu.SectionOp(
        properties={k: IntegerAttr(v, i64) for k, v in totals.items()}, regions=[Region(block)]
    )
