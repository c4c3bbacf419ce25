"""The embedding and the LM head sized to share the chip with the layers' configuration.

`merge-launches` configures the layerless kernels called next to a layer kernel (the embedding
before the looped layers, the final norm / LM head / argmax after them) together with the
loop's section when they fit beside it: no Program Load into their configuration and back each
step, and the LM head's weights stream in while the loop leaves HBM idle. Sized as if alone on
the chip, the LM head of llama-3.1-70b or -405b on 16 sockets stages 234 MiB of its weight,
which does not fit beside the loop's two sets of staging (436-468 MiB of 520 MiB).

So each layerless kernel called next to a layer kernel is mapped alone first; if that does not
fit beside the layer kernel's configuration (each of its sections with `1 + prefetch` sets of
its staging, as `merge-launches` checks), it is mapped again with the allocation told what
that configuration holds (the PCUs, PMUs and SRAM it leaves: fewer PCUs, less staging). The
shared mapping is kept when it fits and the expected time of its stages (`Allocation.seconds`)
exceeds the alone mapping's by less than the Program Loads sharing saves (into its own
configuration and back: `2 x program_load_s` per step); else the alone mapping. Less staging
costs nothing in that figure: in a configuration of its own the head stages nothing before
its launch, in the loop's it stages what it holds while the loop leaves HBM idle.
`summary=true` says which mapping was kept, with the figures.

The layer kernel's mapping is the same looped and unlooped, and the prefetch counted is the one
the allocation plans for (`planned_prefetch`), not the loop's (which SRAM may lower): so the
looped and the unlooped programs (and `single-launch=false`) map these kernels alike too.
"""

from __future__ import annotations

from rdu_compiler.lowering.kernels import KernelPlan, lower_kernel, planned_prefetch
from rdu_compiler.lowering.unit_mapping import Mapping
from rdu_compiler.rdu_dialect import dfk, rdu
from rdu_compiler.rdu_dialect.llm import LAYER_ATTR
from rdu_compiler.simulator.hardware import HardwarePreset
from rdu_compiler.simulator.program import Resources, configuration_needs

__all__ = ["RESOURCE_NAMES", "lower_kernels", "section_resources"]

RESOURCE_NAMES = (("pcus", "PCUs"), ("pmus", "PMUs"), ("sram_bytes", "bytes of SRAM"))
"""A section's resources, as `Resources` fields and as messages name them."""


def section_resources(section: rdu.SectionOp) -> Resources:
    return Resources(
        pcus=section.pcus.value.data,
        pmus=section.pmus.value.data,
        sram_bytes=section.sram_bytes.value.data,
    )


def lower_kernels(
    kernels: dict[str, dfk.KernelOp],
    calls: list[dfk.CallOp],
    inplace: dict[str, dict[int, int]],
    knobs: Mapping,
    preset: HardwarePreset,
) -> dict[str, KernelPlan]:
    """Every called kernel lowered (in order of first call): the layer kernels first, then the
    layerless ones, each sized to share the chip with its neighbours' configuration when that
    costs less than the Program Loads it saves (module doc)."""
    names = list(dict.fromkeys(call.callee.string_value() for call in calls))
    layered = {call.callee.string_value() for call in calls if _layer_call(call, kernels)}
    plans = {
        name: lower_kernel(kernels[name], inplace[name], knobs, preset)
        for name in names
        if name in layered
    }
    neighbours: dict[str, dict[str, None]] = {name: {} for name in names if name not in layered}
    for i, call in enumerate(calls):
        name = call.callee.string_value()
        if name in layered:
            continue
        for near in (calls[j] for j in (i - 1, i + 1) if 0 <= j < len(calls)):
            if near.callee.string_value() in layered:
                neighbours[name][near.callee.string_value()] = None
    for name, near in neighbours.items():
        plans[name] = _lower_beside(
            kernels[name], inplace[name], knobs, preset, [plans[n] for n in near]
        )
    return {name: plans[name] for name in names}


def _layer_call(call: dfk.CallOp, kernels: dict[str, dfk.KernelOp]) -> bool:
    """A call of layers: one layer's (it carries the layer) or a looped kernel's."""
    kernel = kernels[call.callee.string_value()]
    return LAYER_ATTR in call.attributes or any(isinstance(o, dfk.LoopOp) for o in kernel.body.ops)


def _held(plans: list[KernelPlan], prefetch: int) -> Resources:
    """The most any configuration of `plans` holds (each section with `1 + prefetch` sets of
    its staging, as a loop reserves)."""
    needs = [
        configuration_needs([(section_resources(s), True)], prefetch)
        for plan in plans
        for s in plan.op.sections
    ]
    return Resources(
        pcus=max(n.pcus for n in needs),
        pmus=max(n.pmus for n in needs),
        sram_bytes=max(n.sram_bytes for n in needs),
    )


def _fits_beside(plan: KernelPlan, held: Resources, preset: HardwarePreset) -> bool:
    return all(
        getattr(held, key) + getattr(section_resources(s), key) <= getattr(preset, key)
        for s in plan.op.sections
        for key, _ in RESOURCE_NAMES
    )


def _lower_beside(
    kernel: dfk.KernelOp,
    inplace: dict[int, int],
    knobs: Mapping,
    preset: HardwarePreset,
    near: list[KernelPlan],
) -> KernelPlan:
    """`kernel` mapped alone, or for what its neighbours' configuration leaves (module doc)."""
    alone = lower_kernel(kernel, inplace, knobs, preset)
    if not near:
        return alone
    prefetch = planned_prefetch(knobs)
    held = _held(near, prefetch)
    if _fits_beside(alone, held, preset):
        return alone
    shared = lower_kernel(kernel, inplace, knobs, preset, reserved=held)
    where = (
        f"beside the configuration of {', '.join('@' + p.name for p in near)} ({held.pcus} "
        f"PCUs, {held.pmus} PMUs, {held.sram_bytes} bytes of SRAM with {1 + prefetch} sets of "
        "its staging)"
    )
    if not _fits_beside(shared, held, preset):
        _note(alone, f"sized as if alone on the chip: it does not fit {where}")
        return alone
    extra_us = (shared.allocation.seconds(preset) - alone.allocation.seconds(preset)) * 1e6
    saved_us = 2 * preset.program_load_s * 1e6
    if extra_us >= saved_us:
        _note(
            alone,
            f"sized as if alone on the chip: sized to fit {where}, its stages would take "
            f"{extra_us:.2f} us longer, more than the {saved_us:.2f} us of Program Loads per "
            "step a configuration of its own costs",
        )
        return alone
    _note(
        shared,
        f"sized to fit {where}: its stages take {extra_us:.2f} us longer than alone on the "
        f"chip, less than the {saved_us:.2f} us of Program Loads per step sharing saves",
    )
    return shared


def _note(plan: KernelPlan, text: str) -> None:
    plan.allocation.notes.append(text)
