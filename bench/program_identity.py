"""Byte-identity check of the compiler's and timing engine's outputs, for changes that must not
change any output (speed-ups, refactors).

`write FOLDER` compiles a fixed, broad set of cases in process (every tiny preset over sockets,
kernel looping and fusion; the large presets over sockets, looping, batch and launch mode;
mapping knobs that split sections or shrink tiles; hardware overrides; refusals) and writes, per
case, the lowered IR text (`.mlir`), the program JSON (`.json`) and the timing report
(`.timing.json`, the simulator's summary), or the refusal message (`.err`). `compare BEFORE
AFTER` prints each file that differs or exists on one side only and exits 1 if any does.

    git stash                                  # or check out the commit before the change
    python bench/program_identity.py write /tmp/before
    git stash pop
    python bench/program_identity.py write /tmp/after
    python bench/program_identity.py compare /tmp/before /tmp/after

`--only TEXT` restricts `write` to the cases whose name contains TEXT (a quick check while
iterating; compare then only the cases written, with `compare --common`).
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import sys
from pathlib import Path
from typing import Any

from xdsl.printer import Printer

from rdu_compiler.lowering.pipeline import RduPipeline, lower_to_program, prepare_module
from rdu_compiler.simulator.program import compiled_hardware, encode_program
from rdu_compiler.simulator.report import summarize
from rdu_compiler.simulator.timing import simulate
from rdu_compiler.tools.tuner import _refusals

TINY = (
    "tiny-llama",
    "tiny-mistral",
    "tiny-mixtral",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-alternating",
)
LARGE = ("llama-3.1-8b", "mixtral-8x7b", "llama-3.2-1b")


def cases() -> list[dict[str, Any]]:
    """Each case: `model`, optional `batch` / `context` / `layers`, and pipeline options."""
    found: list[dict[str, Any]] = []
    for model in TINY:
        for sockets in (1, 2, 4):
            for looping in (True, False):
                for fusion in ("layer", "op"):
                    found.append(
                        dict(model=model, sockets=sockets, kernel_looping=looping, fusion=fusion)
                    )
        found.append(dict(model=model, sockets=2, batch=8))
        found.append(dict(model=model, sockets=2, single_launch=False))
    for model in LARGE:
        for sockets in (1, 2, 8, 16):
            for looping in (True, False):
                found.append(dict(model=model, sockets=sockets, kernel_looping=looping))
        found.append(dict(model=model, sockets=8, fusion="op"))
        found.append(dict(model=model, sockets=8, batch=8))
    found += [
        dict(model="llama-3.1-8b", sockets=16, context=65536),
        dict(model="llama-3.1-8b", sockets=8, context=131072, batch=8),
        dict(model="llama-3.1-8b", sockets=16, kv_seq_split=1),
        dict(model="llama-3.1-8b", sockets=8, single_launch=False),
        dict(model="llama-3.1-70b", sockets=8),
        dict(model="llama-3.1-70b", sockets=16, context=4096),
        dict(model="llama-3.1-70b", sockets=16, batch=16),
        dict(model="llama-3.1-405b", sockets=16),
        dict(model="qwen2.5-7b", sockets=8),
        dict(model="qwen2.5-7b", sockets=4),
        dict(model="mistral-7b", sockets=8, launch="hardware"),
        dict(model="llama-3.1-8b", sockets=8, launch="hardware", kernel_looping=False),
        dict(model="llama-3.1-8b", sockets=8, hw_overrides="pcus=512"),
        dict(model="llama-3.1-8b", sockets=1, hw_overrides="sram_bytes=100000000"),
        dict(model="llama-3.1-8b", sockets=8, tile_bytes=262144),
        dict(model="tiny-llama", sockets=2, tile_bytes=1024),
        dict(model="llama-3.1-70b", sockets=1),  # refused: does not fit
        dict(model="llama-3.1-8b", sockets=8, matmul_par=2048),  # refused: too many PCUs
        # 70B on 16 sockets at rdu-tune's slow corners: sections split by a wide matmul, small
        # tiles, deep buffers, prefetch, the other launch mode
        dict(model="llama-3.1-70b", sockets=16, context=4096, matmul_par=512),
        dict(model="llama-3.1-70b", sockets=16, context=4096, matmul_par=1024, simd_par=64),
        dict(model="llama-3.1-70b", sockets=16, context=4096, tile_bytes=8192, buffer_depth=8),
        dict(model="llama-3.1-70b", sockets=16, context=4096, attention_par=256, prefetch=4),
        dict(model="llama-3.1-70b", sockets=16, context=4096, launch="hardware", agcus=8),
        dict(model="mixtral-8x7b", sockets=8, context=4096, matmul_par=256, tile_bytes=16384),
    ]
    return found


def case_name(index: int, case: dict[str, Any]) -> str:
    return f"{index:03d}_" + "_".join(f"{k}={v}" for k, v in case.items()).replace("/", "-")


def compile_case(case: dict[str, Any]) -> dict[str, bytes]:
    """The case's output files (suffix -> content), as rdu-tune computes a trial."""
    options = dict(case)
    model = options.pop("model")
    shape = {k: options.pop(k) for k in ("batch", "context", "layers") if k in options}
    pipeline = RduPipeline(**options)
    try:
        module = prepare_module(model, **pipeline.prepare_options(), **shape)
        program = lower_to_program(module, **pipeline.lowering_options())
        preset = compiled_hardware(program)
        summary = summarize(program, preset, simulate(program, preset))
    except _refusals() as error:
        return {".err": str(error).encode()}
    text = io.StringIO()
    Printer(stream=text).print_op(module)
    return {
        ".mlir": text.getvalue().encode(),
        ".json": encode_program(program, pretty=True),
        ".timing.json": json.dumps(summary, indent=1, sort_keys=True).encode(),
    }


def write(folder: Path, only: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, case in enumerate(cases()):
        name = case_name(index, case)
        if only and only not in name:
            continue
        for suffix, content in compile_case(case).items():
            (folder / f"{name}{suffix}").write_bytes(content)
        print(name, flush=True)


def compare(before: Path, after: Path, common: bool) -> int:
    """Print every difference (a short unified diff per file); the number of files differing."""
    names_before = {p.name for p in before.iterdir()}
    names_after = {p.name for p in after.iterdir()}
    differing = 0
    if not common:
        for name in sorted(names_before ^ names_after):
            side = before if name in names_before else after
            print(f"only in {side}: {name}")
            differing += 1
    for name in sorted(names_before & names_after):
        old, new = (before / name).read_bytes(), (after / name).read_bytes()
        if old == new:
            continue
        differing += 1
        print(f"differs: {name}")
        diff = difflib.unified_diff(
            old.decode(errors="replace").splitlines(),
            new.decode(errors="replace").splitlines(),
            lineterm="",
            n=1,
        )
        for line in list(diff)[2:22]:
            print(f"    {line}")
    compared = len(names_before & names_after)
    print(f"{compared} files compared, {differing} differ")
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write_cmd = commands.add_parser("write", help="compile every case into FOLDER")
    write_cmd.add_argument("folder", type=Path)
    write_cmd.add_argument("--only", help="only the cases whose name contains this text")
    compare_cmd = commands.add_parser("compare", help="compare two written folders")
    compare_cmd.add_argument("before", type=Path)
    compare_cmd.add_argument("after", type=Path)
    compare_cmd.add_argument(
        "--common", action="store_true", help="ignore files written on one side only"
    )
    args = parser.parse_args()
    if args.command == "write":
        write(args.folder, args.only)
    else:
        sys.exit(1 if compare(args.before, args.after, args.common) else 0)


if __name__ == "__main__":
    main()
