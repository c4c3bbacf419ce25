"""Placement of the host's tensors in memory tiers (HBM, DDR), per socket.

Kept apart from the host walk because it decides on the whole set of tensors at once: what
must be in HBM, what may fall back to DDR and in which order, so that a looped and an unlooped
program place every weight alike; a model that fits neither tier is refused here.
"""

from __future__ import annotations

import re
from typing import Any

from rdu_compiler.lowering.diagnostics import fail
from rdu_compiler.lowering.host import HostTensor
from rdu_compiler.simulator.hardware import HardwarePreset


def _natural(name: str) -> list[Any]:
    """Sort key reading digit runs as numbers (`layers.2` before `layers.10`)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _size(nbytes: int) -> str:
    """Bytes for a person: in the largest binary unit they reach (GiB, MiB, KiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} bytes"


def place_tensors(
    tensors: list[HostTensor], preset: HardwarePreset, sockets: int, model: str
) -> str:
    """Memory tiers: inputs, outputs and activations in HBM; the KV caches in HBM while they
    fit (else the last ones, by name, in DDR, with their aliases: a long context or a large
    batch still runs, from the slower tier); weights in HBM while they fit, then DDR, in
    checkpoint order (layers in numeric order), so that a looped and an unlooped program place
    every weight alike. Returns a one-line summary."""
    hbm = preset.hbm_bytes
    owners = [t for t in tensors if t.aliases is None]
    pinned = sum(t.nbytes for t in owners if t.kind not in ("weight", "kv_cache"))
    caches = sorted((t for t in owners if t.kind == "kv_cache"), key=lambda t: t.name)
    in_hbm = list(caches)
    while in_hbm and pinned + sum(t.nbytes for t in in_hbm) > hbm:
        moved = in_hbm.pop()
        for t in tensors:
            if t is moved or t.aliases == moved.name:
                t.tier = "ddr"
    fixed = pinned + sum(t.nbytes for t in in_hbm)
    if fixed > hbm:
        raise fail(
            f"{model} does not fit: inputs, outputs and activations need {_size(pinned)} of HBM "
            f"per socket ({sockets} socket(s)) but {preset.label} has {_size(hbm)}; use a "
            f"smaller batch"
        )
    free, spilled = hbm - fixed, 0
    ddr_used = sum(t.nbytes for t in caches if t not in in_hbm)
    weights = sorted(
        (t for t in tensors if t.kind == "weight"), key=lambda t: _natural(t.sources[0].value.data)
    )
    for t in weights:
        if t.nbytes <= free:
            free -= t.nbytes
        else:
            t.tier = "ddr"
            ddr_used += t.nbytes
            spilled += 1
    if ddr_used > preset.ddr_bytes:
        raise fail(
            f"{model} does not fit: weights and KV caches need "
            f"{_size(sum(t.nbytes for t in weights + caches))} per socket ({sockets} socket(s)) "
            f"but {preset.label} has {_size(hbm - pinned)} of HBM left after inputs, outputs and "
            f"activations and {_size(preset.ddr_bytes)} of DDR; use more sockets (they split "
            f"the weights and KV heads) or a smaller batch or context"
        )
    where = ", ".join(f"{t.name} in {t.tier.upper()}" for t in caches)
    return (
        f"{model}: {len(weights) - spilled} weight tensor(s) in HBM, {spilled} in DDR "
        f"({ddr_used} bytes per socket); {where or 'no KV caches'} ({sockets} socket(s))"
    )
