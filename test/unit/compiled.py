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
) -> Program:
    """``compile_program``; with ``hw_overrides`` (e.g. fewer PCUs, to force kernels split
    into sections) the same passes with the lowering's ``hw-overrides`` option; ``mapping``:
    the lowering's knobs; ``kv_seq_split`` the pipeline's option of that name."""
    from rdu_compiler.lowering.pipeline import compile_program

    mapping = mapping or Mapping()
    if not hw_overrides:
        return compile_program(
            model,
            sockets=sockets,
            kernel_looping=looped,
            single_launch=single_launch,
            batch=batch,
            context=context,
            launch=launch,
            fusion=fusion,
            mapping=mapping,
            kv_seq_split=kv_seq_split,
        )
    from xdsl.context import Context

    from rdu_compiler.frontend.builder import build_decode_step
    from rdu_compiler.frontend.config import load_model_config
    from rdu_compiler.lowering.emit_program import build_program
    from rdu_compiler.lowering.pipeline import pipeline_passes

    module = build_decode_step(load_model_config(model), batch=batch, context=context)
    ctx = Context()
    for p in pipeline_passes(
        sockets=sockets,
        kernel_looping=looped,
        single_launch=single_launch,
        launch=launch,
        fusion=fusion,
        kv_seq_split=kv_seq_split,
        hw_overrides=hw_overrides,
        mapping=mapping,
    ):
        p.apply(ctx, module)
    return build_program(module)
