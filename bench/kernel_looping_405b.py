"""Kernel-looping benchmark on llama-3.1-405b: the two passes in process, and the text path.

In process: build the decode step, then time `outline-kernels` and `kernel-looping` alone
(8, 32 and 126 layers), to show their cost grows linearly with the layer count. End to end:
`rdu-import llama-3.1-405b | rdu-opt -p outline-kernels,kernel-looping` as a user runs it
(parse and print included). Run: `python bench/kernel_looping_405b.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

MODEL = "llama-3.1-405b"
LAYERS = (8, 32, 126)


def _passes(layers: int) -> tuple[float, float, int, int]:
    from xdsl.context import Context

    from rdu_compiler.frontend.builder import build_decode_step
    from rdu_compiler.frontend.config import load_model_config
    from rdu_compiler.passes.kernel_looping import KernelLooping
    from rdu_compiler.passes.outline_kernels import OutlineKernels

    module = build_decode_step(load_model_config(MODEL, layers=layers))
    ctx = Context()
    t0 = time.perf_counter()
    OutlineKernels().apply(ctx, module)
    t1 = time.perf_counter()
    calls_before = sum(op.name == "dfk.call" for op in module.walk())
    KernelLooping().apply(ctx, module)
    t2 = time.perf_counter()
    calls_after = sum(op.name == "dfk.call" for op in module.walk())
    return t1 - t0, t2 - t1, calls_before, calls_after


def _end_to_end() -> float:
    bin_dir = os.path.dirname(sys.executable)
    t0 = time.perf_counter()
    subprocess.run(
        f"{bin_dir}/rdu-import {MODEL} | {bin_dir}/rdu-opt -p outline-kernels,kernel-looping"
        " > /dev/null",
        shell=True,
        check=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    print(f"{MODEL}: outline-kernels and kernel-looping, in process")
    print(f"{'layers':>6} {'outline s':>10} {'looping s':>10} {'per layer ms':>13} {'calls':>12}")
    for layers in LAYERS:
        outline, looping, before, after = _passes(layers)
        print(
            f"{layers:>6} {outline:>10.3f} {looping:>10.3f} "
            f"{1e3 * (outline + looping) / layers:>13.2f} {before:>5} -> {after:<4}"
        )
    print(
        f"end to end (rdu-import | rdu-opt -p outline-kernels,kernel-looping): "
        f"{_end_to_end():.2f} s"
    )


if __name__ == "__main__":
    main()
