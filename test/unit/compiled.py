"""Programs compiled by the default pipeline, cached per process (tests of the simulator and
its tools compile the same few models many times)."""

from __future__ import annotations

from functools import cache

from rdu_compiler.lowering.lower_dfk_to_rdu import Mapping
from rdu_compiler.simulator.program import Program


@cache
def compiled(
    model: str,
    *,
    sockets: int = 1,
    looped: bool = True,
    single_launch: bool = True,
    batch: int = 1,
    context: int | None = None,
    launch: str = "software",
    fusion: str = "layer",
    hw_overrides: str = "",
    mapping: Mapping | None = None,
    kv_seq_split: int = -1,
    moe: str = "tensor",
) -> Program:
    """``compile_program`` with these options (``hw_overrides``: e.g. fewer PCUs, to force
    kernels split into sections; ``mapping``: the lowering's knobs; ``kv_seq_split`` and
    ``moe`` the pipeline's options of those names)."""
    from rdu_compiler.lowering.pipeline import compile_program

    return compile_program(
        model,
        sockets=sockets,
        kernel_looping=looped,
        single_launch=single_launch,
        batch=batch,
        context=context,
        launch=launch,
        fusion=fusion,
        hw_overrides=hw_overrides,
        mapping=mapping or Mapping(),
        kv_seq_split=kv_seq_split,
        moe=moe,
    )
