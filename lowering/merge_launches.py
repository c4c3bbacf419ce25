"""`merge-launches`: one launch per decode step - the looped layers' launch takes in the
embedding before it and the LM head after it.

Kernel looping turns a step's N layer launches into one; what stays around it are the launches
of the layerless kernels before the first layer (the embedding) and after the last (final norm,
LM head, argmax), each paying a launch, an Argument Load, a Program Load and a sync. This pass
merges every looped launch with the launches of layerless unlooped kernels right before and
after it (no sync between) into one launch of one kernel: their sections before the
`rdu.hw_loop` (run once, before the first trip), the loop, their sections after it (run once,
after the last trip).

Why here, after the mapping, rather than as a dfk pass: every part keeps exactly the units,
work and resources of its own kernel, so the looped program maps the embedding and the LM head
as the unlooped one does (the unlooped program has no looped launch and keeps one launch per
call: the looped / unlooped comparison compares schedules of one mapping); and whether parts
fit one configuration is known only once they are mapped.

How parts are joined:

* params bound to the same views become one param: the residual stream the embedding stores,
  the loop carries and the LM head reads is one param, so the time model sees the order their
  data imposes. The loop's params keep their names; a part's other params keep theirs unless
  taken, else get the part's kernel name as prefix (`lm_head.embed_tokens`);
* the parts' unit ids get their kernel's name as prefix (`lm_head.ld.h`: ids are unique in a
  kernel); a buffer named like a param is renamed;
* configuration: a part joins the configuration of the section next to it
  (`configured_with_previous`: configured at once, no Program Load between them, and an
  epilogue's weights stream in while the loop runs) when the configuration fits the preset's
  PCUs, PMUs and SRAM with the loop's prefetch reservation (`simulator.program.
  configuration_needs`); else it keeps a configuration of its own (a Program Load between,
  still no launch or sync) and, with `remarks=true`, the pass says why, with the figures.
  The lowering sizes the embedding and LM head to fit beside the layers' configuration where
  that costs less than the Program Loads it saves (`lowering/shared_configuration.py`;
  `lower-dfk-to-rdu{summary=true}` says which way and why).
  Boundaries are tried nearest the loop first, the epilogue's before the prologue's (the LM
  head's weights gain the most from streaming beside the loop).

`remarks=true` prints, per merged launch, its parts and configurations. `single-launch=false`
of `rdu-pipeline` leaves the pass out (three launches per looped step, as before).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    ModuleOp,
    StringAttr,
    SymbolRefAttr,
    UnitAttr,
)
from xdsl.ir import Block, Region
from xdsl.utils.exceptions import PassFailedException

from rdu_compiler.lowering.lower_dfk_to_rdu import lowered_hardware
from rdu_compiler.lowering.shared_configuration import RESOURCE_NAMES, section_resources
from rdu_compiler.lowering.unit_mapping import fresh_name
from rdu_compiler.passes.pass_options import CheckedOptionsPass
from rdu_compiler.rdu_dialect import rdu
from rdu_compiler.rdu_dialect.interpreter import ENTRY
from rdu_compiler.simulator.hardware import (
    HardwarePreset,
    PresetError,
    get_preset,
    hardware_words,
    overrides_between,
)
from rdu_compiler.simulator.program import configuration_needs

__all__ = ["MergeLaunches"]

View = tuple[str, tuple[int, ...]]


def _fail(message: str) -> PassFailedException:
    return PassFailedException(f"merge-launches: {message}")


@dataclass
class _Part:
    """One launch of a merged group and its kernel."""

    launch: rdu.LaunchOp
    kernel: rdu.KernelOp

    @property
    def name(self) -> str:
        return self.kernel.sym_name.data

    def views(self) -> dict[str, tuple[View, ...]]:
        return {
            b.param.data: tuple((t, tuple(i)) for t, i in b.views) for b in self.launch.bindings
        }


@dataclass
class _Group:
    """A looped launch with the layerless launches merged before (prologue) and after it."""

    prologue: list[_Part]
    loop: _Part
    epilogue: list[_Part]

    @property
    def parts(self) -> list[_Part]:
        return [*self.prologue, self.loop, *self.epilogue]


def _groups(step: func.FuncOp, kernels: dict[str, rdu.KernelOp]) -> list[_Group]:
    """Per run of launches between syncs, every looped launch with the launches of layerless
    unlooped kernels next to it (those between two looped launches follow the first)."""
    runs: list[list[rdu.LaunchOp]] = [[]]
    for op in step.body.block.ops:
        if isinstance(op, rdu.LaunchOp):
            runs[-1].append(op)
        elif isinstance(op, rdu.SyncOp):
            runs.append([])

    def part(launch: rdu.LaunchOp) -> _Part:
        return _Part(launch, kernels[launch.kernel.root_reference.data])

    def joins(launch: rdu.LaunchOp) -> bool:
        return part(launch).kernel.loop is None and len(launch.layers) == 0

    groups: list[_Group] = []
    for run in runs:
        claimed = -1  # the last launch of the run already in a group
        for i, launch in enumerate(run):
            if part(launch).kernel.loop is None:
                continue
            first = i
            while first - 1 > claimed and joins(run[first - 1]):
                first -= 1
            last = i
            while last + 1 < len(run) and joins(run[last + 1]):
                last += 1
            claimed = last
            if first < i or last > i:
                groups.append(
                    _Group(
                        [part(x) for x in run[first:i]],
                        part(launch),
                        [part(x) for x in run[i + 1 : last + 1]],
                    )
                )
    return groups


class _Merge:
    """The merged kernel and launch of one group."""

    def __init__(self, group: _Group, taken_kernels: set[str], preset: HardwarePreset):
        self.group, self.preset = group, preset
        loop = group.loop.kernel.loop
        assert loop is not None
        self.prefetch = loop.prefetch.value.data
        self.stacked = {s.data for s in loop.stacked}
        self.name = fresh_name("+".join(p.name for p in group.parts), taken_kernels)
        prefixes: set[str] = set()
        self.prefix = [
            "" if part is group.loop else fresh_name(part.name, prefixes) + "."
            for part in group.parts
        ]
        # params: the loop's named first (their names stay), the others' after, in order
        param_of: dict[tuple[bool, tuple[View, ...]], str] = {}
        found: dict[str, tuple[rdu.ParamOp, tuple[View, ...]]] = {}
        taken = {p.param.data for p in group.loop.kernel.params}
        renamed: dict[int, dict[str, str]] = {}  # per part: its param -> the merged param
        loop_index = group.parts.index(group.loop)
        for k in (loop_index, *(k for k in range(len(group.parts)) if k != loop_index)):
            part, prefix = group.parts[k], self.prefix[k]
            views, names = part.views(), renamed.setdefault(k, {})
            for param in part.kernel.params:
                name = param.param.data
                key = (part is group.loop and name in self.stacked, views[name])
                merged = param_of.get(key)
                if merged is None or merged in names.values():  # new, or twice in one part
                    if part is group.loop:
                        merged = name
                    else:
                        merged = fresh_name(prefix + name if name in taken else name, taken)
                    param_of.setdefault(key, merged)
                    found[merged] = (param, views[name])
                names[name] = merged
        self.renamed = [renamed[k] for k in range(len(group.parts))]
        # in program order of first use, as a kernel lists its params
        order = dict.fromkeys(m for names in self.renamed for m in names.values())
        self.params = {name: found[name][0] for name in order}
        self.views = {name: found[name][1] for name in order}

    # -- sections ------------------------------------------------------------------------------

    def _section(self, section: rdu.SectionOp, part: int) -> rdu.SectionOp:
        """A copy of `section` of part `part`, its unit ids prefixed, its accesses naming the
        merged params, its buffers renamed where they take a param's name."""
        copy = section.clone()
        copy.properties.pop("configured_with_previous", None)
        names = dict(self.renamed[part])
        buffers = [b for b in copy.body.ops if isinstance(b, rdu.BufferOp)]
        taken = set(self.params) | {b.buffer.data for b in buffers}
        for buffer in buffers:
            if buffer.buffer.data in self.params:
                names[buffer.buffer.data] = fresh_name(buffer.buffer.data, taken)
                buffer.buffer = StringAttr(names[buffer.buffer.data])
        prefix = self.prefix[part]
        for unit in copy.units:
            unit.id = StringAttr(prefix + unit.id.data)
            unit.reads = ArrayAttr([_renamed(a, names) for a in unit.reads])
            unit.write = _renamed(unit.write, names)
            if unit.fused is not None:
                unit.fused = ArrayAttr(
                    [
                        DictionaryAttr(
                            f.data
                            | {"reads": ArrayAttr([_renamed(a, names) for a in rdu.fused_reads(f)])}
                        )
                        for f in unit.fused.data
                    ]
                )
        return copy

    def _fits(self, sections: list[tuple[rdu.SectionOp, bool]]) -> str | None:
        """Why `sections` (each with whether the loop repeats it) do not fit one
        configuration (None: they do)."""
        need = configuration_needs(
            [(section_resources(s), looped) for s, looped in sections], self.prefetch
        )
        for key, what in RESOURCE_NAMES:
            if getattr(need, key) > (limit := getattr(self.preset, key)):
                reserve = (
                    f" (with the loop's {1 + self.prefetch} sets of its staging buffers)"
                    if key == "sram_bytes" and self.prefetch
                    else ""
                )
                return (
                    f"together they need {getattr(need, key)} {what}{reserve} but "
                    f"{self.preset.label} has {limit} per socket"
                )
        return None

    def kernel(self) -> tuple[rdu.KernelOp, list[str]]:
        """The merged kernel, and a remark per part boundary left as two configurations."""
        group = self.group
        loop_index = group.parts.index(group.loop)
        parts = [
            [self._section(s, k) for s in part.kernel.sections]
            for k, part in enumerate(group.parts)
        ]
        # configurations: try the boundaries nearest the loop first, epilogue side first
        boundaries = sorted(range(1, len(parts)), key=lambda b: (abs(b - 0.5 - loop_index), -b))
        notes = []
        for b in boundaries:
            joining = parts[b][0]
            joining.configured_with_previous = UnitAttr()
            flat = [(s, k == loop_index) for k, secs in enumerate(parts) for s in secs]
            config = self._configuration(flat, joining)
            problem = self._fits(config)
            if problem is not None:
                del joining.properties["configured_with_previous"]
                before, after = group.parts[b - 1], group.parts[b]
                notes.append(
                    f"@{after.name} stays in a configuration of its own, after @{before.name}'s "
                    f"(a Program Load between them): {problem}"
                )
        block = Block([self.params[name].clone() for name in self.params])
        for name, param in zip(self.params, block.ops, strict=True):
            assert isinstance(param, rdu.ParamOp)
            param.param = StringAttr(name)
        for k, sections in enumerate(parts):
            if k != loop_index:
                block.add_ops(sections)
                continue
            hw_loop = group.loop.kernel.loop
            assert hw_loop is not None
            block.add_op(
                rdu.HwLoopOp(
                    properties=dict(hw_loop.properties),
                    regions=[Region(Block(sections))],
                )
            )
        kernel = rdu.KernelOp(
            properties={"sym_name": StringAttr(self.name)}, regions=[Region(block)]
        )
        return kernel, notes

    @staticmethod
    def _configuration(
        flat: list[tuple[rdu.SectionOp, bool]], section: rdu.SectionOp
    ) -> list[tuple[rdu.SectionOp, bool]]:
        """The sections configured together with `section` (runs joined by the flag)."""
        index = next(i for i, (s, _) in enumerate(flat) if s is section)
        first = index
        while flat[first][0].configured_with_previous is not None:
            first -= 1
        last = index
        while last + 1 < len(flat) and flat[last + 1][0].configured_with_previous is not None:
            last += 1
        return flat[first : last + 1]

    def launch(self) -> rdu.LaunchOp:
        loop = self.group.loop.launch
        return rdu.LaunchOp(
            properties={
                "kernel": SymbolRefAttr(self.name),
                "mode": loop.mode,
                "bindings": ArrayAttr(
                    [rdu.BindingAttr(name, list(self.views[name])) for name in self.params]
                ),
                "label": StringAttr(", ".join(p.launch.label.data for p in self.group.parts)),
                "layers": loop.layers,
            }
        )


@dataclass(frozen=True)
class MergeLaunches(CheckedOptionsPass):
    """Merges each looped launch with the embedding and LM head launches around it into one
    launch (module docstring)."""

    name = "merge-launches"

    hw: str = "sn40l"
    hw_overrides: str = ""
    remarks: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        try:
            base = preset = get_preset(self.hw)
            if self.hw_overrides:
                preset = base.with_overrides(self.hw_overrides)
        except PresetError as error:
            raise _fail(str(error)) from None
        lowered = lowered_hardware(op)
        if lowered is None:
            raise _fail("the module is not in the rdu dialect: lower it first (lower-dfk-to-rdu)")
        wanted = (base.name, overrides_between(base, preset))
        if lowered != wanted:
            raise _fail(
                f"the module is lowered for {hardware_words(*lowered)}, "
                f"not {hardware_words(*wanted)}"
            )
        step = next(
            (o for o in op.ops if isinstance(o, func.FuncOp) and o.sym_name.data == ENTRY), None
        )
        if step is None:
            raise _fail(f"no func.func @{ENTRY} (the host program of a lowered decode step)")
        kernels = {k.sym_name.data: k for k in op.ops if isinstance(k, rdu.KernelOp)}
        groups = _groups(step, kernels)
        taken = set(kernels)
        notes: list[str] = []
        for group in groups:
            merge = _Merge(group, taken, preset)
            kernel, problems = merge.kernel()
            op.body.block.insert_op_after(kernel, group.loop.kernel)
            launches = [p.launch for p in group.parts]
            step.body.block.insert_op_before(merge.launch(), launches[0])
            for launch in launches:
                step.body.block.erase_op(launch)
            notes.append(
                f"@{kernel.sym_name.data}: launches {', '.join(p.name for p in group.parts)} "
                f"merged into one, in {_count_configurations(kernel)} configuration(s)"
            )
            notes += problems
        launched = {
            o.kernel.root_reference.data for o in step.body.block.ops if isinstance(o, rdu.LaunchOp)
        }
        for name, kernel in kernels.items():
            if name not in launched:
                op.body.block.erase_op(kernel)
        if self.remarks:
            if not groups:
                notes.append("no looped launch with an embedding or LM head launch next to it")
            for note in notes:
                print(f"remark: merge-launches: {note}", file=sys.stderr)


def _renamed(access: rdu.AccessAttr, names: dict[str, str]) -> rdu.AccessAttr:
    """`access` naming `names`' new name of its target, if it has one."""
    target = access.target.data
    return rdu.AccessAttr(names.get(target, target), access.ranges, access.steps)


def _count_configurations(kernel: rdu.KernelOp) -> int:
    return sum(s.configured_with_previous is None for s in kernel.sections)
