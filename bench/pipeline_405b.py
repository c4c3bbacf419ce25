"""Default-pipeline benchmark on llama-3.1-405b: from the import to the program file.

In process (what `rdu-run` does): build the decode step (`rdu-import`'s builder), run
`rdu-pipeline` pass by pass (outline-kernels, kernel-looping or its disabling, canonicalize,
shard-tensor-parallel, lower-dfk-to-rdu), then build, validate and encode the program; for 16
sockets, with and without kernel looping, at 8, 32 and 126 layers (the cost should grow
linearly with the layers). Then the same as a user types it, through text:
`rdu-import llama-3.1-405b | rdu-opt -p 'rdu-pipeline{sockets=16}' -t rdu-program`.
Goal: under 20 s, linear in layers. Run: `python bench/pipeline_405b.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

MODEL = "llama-3.1-405b"
SOCKETS = 16
LAYERS = (8, 32, 126)
PASSES = ("outline", "looping", "canonicalize", "shard", "lower")
COLUMNS = ("import", *PASSES, "emit", "load")


def _in_process(layers: int, looped: bool) -> dict[str, float]:
    from xdsl.context import Context

    from rdu_compiler.frontend.builder import build_decode_step
    from rdu_compiler.frontend.config import load_model_config
    from rdu_compiler.lowering.emit_program import build_program
    from rdu_compiler.lowering.pipeline import pipeline_passes
    from rdu_compiler.simulator.program import encode_program, load_program

    times: dict[str, float] = {}
    t = time.perf_counter()
    module = build_decode_step(load_model_config(MODEL, layers=layers))
    times["import"] = time.perf_counter() - t
    ctx = Context()
    for column, p in zip(PASSES, pipeline_passes(sockets=SOCKETS, kernel_looping=looped)):
        t = time.perf_counter()
        p.apply(ctx, module)
        times[column] = time.perf_counter() - t
    t = time.perf_counter()
    encoded = encode_program(build_program(module))  # validates, then writes the bytes
    times["emit"] = time.perf_counter() - t
    t = time.perf_counter()
    load_program(encoded)  # what rdu-sim pays before simulating
    times["load"] = time.perf_counter() - t
    return times


def _text(looped: bool) -> float:
    bin_dir = os.path.dirname(sys.executable)
    pipeline = f"rdu-pipeline{{sockets={SOCKETS} kernel-looping={str(looped).lower()}}}"
    t = time.perf_counter()
    subprocess.run(
        f"{bin_dir}/rdu-import {MODEL} | {bin_dir}/rdu-opt -p '{pipeline}' "
        f"-t rdu-program > /dev/null",
        shell=True,
        check=True,
    )
    return time.perf_counter() - t


def main() -> None:
    print(f"{MODEL}, {SOCKETS} sockets: default pipeline, import -> program bytes, in process")
    print(
        f"{'looping':<8}{'layers':>6}"
        + "".join(f"{k:>13}" for k in COLUMNS)
        + f"{'total s':>9}{'ms/layer':>9}"
    )
    for looped in (True, False):
        for layers in LAYERS:
            times = _in_process(layers, looped)
            total = sum(t for k, t in times.items() if k != "load")  # compile time only
            print(
                f"{'on' if looped else 'off':<8}{layers:>6}"
                + "".join(f"{times[k]:>13.3f}" for k in COLUMNS)
                + f"{total:>9.2f}{1e3 * total / layers:>9.1f}"
            )
    for looped in (True, False):
        print(
            f"through text (rdu-import | rdu-opt -p rdu-pipeline -t rdu-program), looping "
            f"{'on' if looped else 'off'}: {_text(looped):.2f} s"
        )


if __name__ == "__main__":
    main()
