"""A seeded mutation fuzzer for rdu-compiler's command-line tools.

Every case is one tool run on a mutated input: IR at every stage (llm from rdu-import,
outlined, looped, lowered rdu) through `rdu-opt` with the next pass or target, `config.json`
files through `rdu-import`, program files through `rdu-sim` (timing and functional), and
mutated command lines of `rdu-import`, `rdu-opt`, `rdu-sim` and `rdu-run`. A case passes when
the run ends in exit 0, or in exit 1 with a message on stderr (`rdu-opt`'s argparse usage errors
exit 2), with no Python traceback, within the per-case time limit, and, when it failed, with
its `-o` / `--trace` file (created beforehand) unchanged.

Cases run in forked children of a process that has imported everything once, so a case costs
milliseconds of start-up, a hang is killed at the time limit, and no case can disturb the next.
The same seed gives the same cases (mutations use one `random.Random(seed)` per case).

    python test/fuzz/fuzzing.py --cases 10000 --seed 1 --jobs 2

prints counts per outcome and per input kind, and each failing case (its kind, command line
and the first lines of its stderr; `--keep DIR` saves the failing inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SENTINEL = "pre-existing output: a failing run must leave this file unchanged\n"
PASSES_AFTER = {  # the stage an IR seed is at -> what rdu-opt runs on it next
    "llm": ["-p", "outline-kernels"],
    "outlined": ["-p", "kernel-looping"],
    "looped": ["-p", "lower-dfk-to-rdu"],
    "rdu": ["-t", "rdu-program"],
}
INTERESTING_INTS = [0, 1, -1, -2, 2, 3, 7, 8, 16, 2**31 - 1, 2**31, 2**32, 2**63, 10**20, 10**9]
INTERESTING_TOKENS = [
    "0", "-1", "2147483647", "2147483648", "9223372036854775808", "99999999999999999999",
    "1e309", "nan", "i1", "i8", "f64", "index", "bf16", "{", "}", "(", ")", "<", ">", '"', "%0",
    "@missing", "^bb1", "#rdu<tier ddr>", "tensor<?x4xbf16>", "tensor<0x4xbf16>", "\\",
]  # fmt: skip
DEEP = "deeply-nested-array:"
# Keys whose values the engines compute with: mutated alone half the time, so that mutated
# programs and configs often pass the schema and reach the checks and engines behind it.
FOCUS = {"attrs", "shape", "trips", "count", "sockets", "batch", "context", "prefetch", "step",
         "ranges", "start", "at", "index", "sram_bytes", "depth", "num_hidden_layers",
         "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
         "head_dim", "vocab_size", "max_position_embeddings", "sliding_window", "rope_theta",
         "rope_scaling", "num_local_experts", "num_experts_per_tok", "layer_types"}  # fmt: skip
TYPE_SWAPS = [("bf16", "i8"), ("bf16", "i1"), ("bf16", "f64"), ("i32", "i1"), ("bf16", "f32")]


@dataclass
class Case:
    """One run: the tool, its arguments, the files it writes (checked when it fails)."""

    kind: str
    tool: str
    argv: list[str]
    outputs: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    case: Case
    status: str  # ok, refused, usage, traceback, hang, crash, changed-output, silent-failure
    seconds: float
    stderr: str


# -- seeds --------------------------------------------------------------------------------------


def make_seeds(folder: Path) -> dict[str, list[Path]]:
    """The inputs mutations start from, made with the real tools (in process, once)."""
    from rdu_compiler.frontend.config import preset_path
    from rdu_compiler.tools import rdu_import, rdu_opt

    seeds: dict[str, list[Path]] = {k: [] for k in (*PASSES_AFTER, "program", "config")}
    for model in ("tiny-llama", "tiny-mixtral", "tiny-qwen3"):
        llm = folder / f"{model}.llm.mlir"
        _quiet(rdu_import.main, [model, "--layers", "2", "--context", "8", "-o", str(llm)])
        stages = {
            "llm": llm,
            "outlined": folder / f"{model}.outlined.mlir",
            "looped": folder / f"{model}.looped.mlir",
            "rdu": folder / f"{model}.rdu.mlir",
        }
        for stage, pipeline in (
            ("outlined", "outline-kernels"),
            ("looped", "outline-kernels,kernel-looping"),
            ("rdu", "rdu-pipeline"),
        ):
            _quiet(rdu_opt.main, [str(llm), "-p", pipeline, "-o", str(stages[stage])])
        program = folder / f"{model}.program.json"
        _quiet(rdu_opt.main, [str(stages["rdu"]), "-t", "rdu-program", "-o", str(program)])
        for stage, path in stages.items():
            seeds[stage].append(path)
        seeds["program"].append(program)
        config = folder / f"{model}.config.json"
        shutil.copy(preset_path(model), config)
        seeds["config"].append(config)
    return seeds


def _quiet(main: Callable[[list[str]], int], argv: list[str]) -> None:
    code = main(argv)
    if code:
        raise RuntimeError(f"making a fuzzing seed failed: {argv}")


# -- mutations ----------------------------------------------------------------------------------


def mutate_text(rng: random.Random, text: str) -> str:
    """One to three edits of IR text: lines dropped, swapped or duplicated, a number or token
    replaced, a type swapped, a span deleted, the text truncated."""
    for _ in range(rng.randint(1, 3)):
        lines = text.split("\n")
        choice = rng.randrange(8)
        if choice == 0 and len(lines) > 2:
            del lines[rng.randrange(len(lines))]
        elif choice == 1 and len(lines) > 2:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif choice == 2:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
        elif choice == 3:
            numbers = list(re.finditer(r"-?\d+", text))
            if numbers:
                m = rng.choice(numbers)
                new = str(rng.choice(INTERESTING_INTS))
                text = text[: m.start()] + new + text[m.end() :]
                continue
        elif choice == 4:
            old, new = rng.choice(TYPE_SWAPS)
            hits = [m.start() for m in re.finditer(re.escape(old), text)]
            if hits:
                at = rng.choice(hits)
                text = text[:at] + new + text[at + len(old) :]
                continue
        elif choice == 5 and text:
            at = rng.randrange(len(text))
            text = text[:at] + text[at + rng.randint(1, 40) :]
            continue
        elif choice == 6 and text:
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice(INTERESTING_TOKENS) + text[at:]
            continue
        elif text:
            text = text[: rng.randrange(len(text))]
            continue
        text = "\n".join(lines)
    return text


def _interesting_value(rng: random.Random, old: object) -> object:
    pick = rng.randrange(10)
    if pick < 4 and isinstance(old, int) and not isinstance(old, bool):
        return rng.choice(INTERESTING_INTS + [-old, old * 2, old + 1, old - 1])
    if pick == 4 and isinstance(old, float):
        return rng.choice([0.0, -1.0, 1e308, -0.0, 1e-45])
    if pick == 5:
        return rng.choice([None, True, "", "x", [], {}, 1.5])
    if pick == 6 and isinstance(old, list) and old:
        return old[:-1] if rng.random() < 0.5 else [*old, old[-1]]
    if pick == 7:  # spliced in as text by _mutated_json_text (too deep for json itself)
        return f"{DEEP}{rng.choice([3, 50, 5000])}"
    if pick == 8 and isinstance(old, str):
        return rng.choice(["", old + "x", "bf16", "i8", "f64", "hbm", "ddr", "\u00e9"])
    return rng.choice(INTERESTING_INTS)


def _places(data: object) -> tuple[list[tuple[object, object]], list[tuple[object, object]]]:
    """Every (container, key or index) of a JSON document, and those at or under a FOCUS key."""
    places: list[tuple[object, object]] = []
    focused: list[tuple[object, object]] = []
    stack: list[tuple[object, bool]] = [(data, False)]
    while stack:
        node, in_focus = stack.pop()
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for key, value in items:
            inside = in_focus or (isinstance(node, dict) and key in FOCUS)
            places.append((node, key))
            if inside:
                focused.append((node, key))
            stack.append((value, inside))
    return places, focused


def mutate_json(rng: random.Random, data: object) -> object:
    """One to three structural edits of a JSON document: a value replaced by an interesting
    one, a key deleted or added, a list entry dropped or duplicated."""
    for _ in range(rng.randint(1, 3)):
        containers, focused = _places(data)
        if not containers:
            return _interesting_value(rng, data)
        if focused and rng.random() < 0.5:
            containers = focused
        parent, key = rng.choice(containers)
        action = rng.randrange(6)
        if action == 0:
            del parent[key]  # type: ignore[index, arg-type]
        elif action == 1 and isinstance(parent, dict):
            parent[f"unknown_{rng.randrange(10)}"] = _interesting_value(rng, 1)
        elif action == 2 and isinstance(parent, list):
            parent.insert(key, parent[key])  # type: ignore[arg-type]
        else:
            parent[key] = _interesting_value(rng, parent[key])  # type: ignore[index]
    return data


def _mutated_json_text(rng: random.Random, source: Path) -> str:
    data = mutate_json(rng, json.loads(source.read_text()))
    text = re.sub(rf'"{DEEP}(\d+)"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), json.dumps(data))
    if rng.random() < 0.1:  # sometimes broken JSON too
        text = text[: rng.randrange(max(1, len(text)))]
    return text


# -- cases --------------------------------------------------------------------------------------


def make_case(rng: random.Random, seeds: dict[str, list[Path]], work: Path) -> Case:
    """A random case: an input kind, a mutated input written to `work`, the tool's argv."""
    kind = rng.choices(
        ["llm", "outlined", "looped", "rdu", "program", "config", "cmdline"],
        weights=[2, 2, 2, 2, 3, 3, 2],
    )[0]
    out = str(work / "out.file")
    if kind in PASSES_AFTER:
        source = rng.choice(seeds[kind])
        path = work / "input.mlir"
        path.write_text(mutate_text(rng, source.read_text()))
        return Case(kind, "rdu-opt", [str(path), *PASSES_AFTER[kind], "-o", out], [out])
    if kind == "program":
        path = work / "program.json"
        path.write_text(_mutated_json_text(rng, rng.choice(seeds["program"])))
        if rng.random() < 0.5:
            return Case(kind, "rdu-sim", [str(path), "--functional", "--steps", "2"])
        trace = str(work / "trace.json")
        return Case(kind, "rdu-sim", [str(path), "--json", "--trace", trace], [trace])
    if kind == "config":
        path = work / "config.json"
        path.write_text(_mutated_json_text(rng, rng.choice(seeds["config"])))
        extra = ["--stats"] if rng.random() < 0.3 else []
        return Case(kind, "rdu-import", [str(path), "--context", "8", *extra, "-o", out], [out])
    return _command_line(rng, seeds, work)


_VALUES = [
    "0", "1", "-5", "2", "8", "99999999999999999999", "", "x", "1,2", "-1,3", "/nonexistent",
    "1.5", "16", "3",
]  # fmt: skip
_OPTIONS = {
    "rdu-import": ["--batch", "--context", "--layers", "--dtype", "--stats", "--json",
                   "--print-debuginfo"],
    "rdu-opt": ["-p", "-t", "--split-input-file", "--verify-diagnostics", "--print-op-generic",
                "--no-implicit-module"],
    "rdu-sim": ["--functional", "--weights", "--seed", "--prompt", "--steps", "--json", "--trace",
                "--hw-override"],
    "rdu-run": ["--engine", "--seed", "--weights", "--prompt", "--steps", "--batch", "--context",
                "--layers", "--dtype", "--json", "--sockets", "--functional", "--launch",
                "--no-kernel-looping", "--logits-out"],
}  # fmt: skip
_FLAGS = {
    "--stats", "--json", "--print-debuginfo", "--split-input-file", "--verify-diagnostics",
    "--print-op-generic", "--no-implicit-module", "--functional", "--no-kernel-looping",
}  # fmt: skip
_CHOICES = {
    "--dtype": ["bf16", "f32", "f8"],
    "--engine": ["reference", "sim", "gpu"],
    "--launch": ["software", "hardware", "both", "none"],
    "-p": ["outline-kernels", "kernel-looping", "canonicalize", "no-such-pass",
           "shard-tensor-parallel{sockets=3}", "kernel-looping{min-run=0}", "outline-kernels{"],
    "-t": ["rdu-program", "mlir", "nope"],
    "--hw-override": ["pcus=8", "pcus=0", "hbm_bytes=-1", "nope=1", "pcus"],
}  # fmt: skip


def _command_line(rng: random.Random, seeds: dict[str, list[Path]], work: Path) -> Case:
    """Random options and values for a tool, on a valid input (the options are the mutation).
    rdu-run always keeps `--engine reference --layers 1 --context 8` or a small timing run
    out of reach: its options are mutated on the reference engine only (sim compiles take
    seconds)."""
    tool = rng.choice(list(_OPTIONS))
    outputs: list[str] = []
    argv: list[str]
    if tool == "rdu-import":
        argv = [rng.choice(["tiny-llama", "tiny-mixtral", "no-such-model", ""]), "--layers", "1"]
    elif tool == "rdu-opt":
        argv = [str(rng.choice(seeds["llm"]))]
    elif tool == "rdu-sim":
        argv = [str(rng.choice(seeds["program"]))]
    else:
        argv = ["tiny-llama", "--engine", "reference", "--layers", "1", "--context", "8"]
    for option in rng.sample(_OPTIONS[tool], rng.randint(1, 3)):
        if tool == "rdu-run" and option in ("--engine", "--layers", "--context", "--batch"):
            continue
        argv.append(option)
        if option in _FLAGS:
            continue
        if option in ("--trace", "--logits-out"):
            path = str(work / "written.out")
            outputs.append(path)
            argv.append(rng.choice([path, ""]))
        else:
            argv.append(rng.choice(_CHOICES.get(option, _VALUES)))
    if tool in ("rdu-import", "rdu-opt") and rng.random() < 0.5:
        out = str(work / "out.file")
        argv += ["-o", out]
        outputs.append(out)
    return Case("cmdline", tool, argv, outputs)


# -- running ------------------------------------------------------------------------------------


MAINS: dict[str, Callable[[list[str]], int]] = {}


def preload() -> None:
    """Import everything a case may touch, once, before forking: children start warm, and
    see the code as it was when the campaign started even if the tree changes meanwhile."""
    from rdu_compiler.tools import rdu_import, rdu_opt, rdu_run, rdu_sim

    MAINS.update(
        {
            "rdu-import": rdu_import.main,
            "rdu-opt": rdu_opt.main,
            "rdu-sim": rdu_sim.main,
            "rdu-run": rdu_run.main,
        }
    )
    import rdu_compiler.frontend.builder  # noqa: F401
    import rdu_compiler.lowering.emit_program  # noqa: F401
    import rdu_compiler.lowering.pipeline  # noqa: F401
    import rdu_compiler.passes.cost_model  # noqa: F401
    import rdu_compiler.rdu_dialect.interpreter  # noqa: F401
    import rdu_compiler.simulator.functional  # noqa: F401
    import rdu_compiler.simulator.report  # noqa: F401
    import rdu_compiler.simulator.timing  # noqa: F401
    import rdu_compiler.simulator.weights  # noqa: F401
    import rdu_compiler.tools.cli  # noqa: F401
    from rdu_compiler.tools.universe import DIALECTS, PASSES, TARGETS

    for factory in (*DIALECTS.values(), *PASSES.values(), *TARGETS.values()):
        factory()


TRACEBACK_EXIT = 70  # the child's exit status when the tool raised instead of reporting


def _child(case: Case, stderr_fd: int) -> None:
    """In the forked child: run the tool with stdout discarded and stderr to `stderr_fd`."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(stderr_fd, 2)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    try:
        code = MAINS[case.tool](case.argv)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:  # noqa: BLE001 - what the fuzzer looks for
        traceback.print_exc()
        code = TRACEBACK_EXIT
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


class _Running:
    """A case running in a forked child."""

    def __init__(self, case: Case, timeout: float):
        self.case, self.deadline, self.start = case, time.monotonic() + timeout, time.monotonic()
        for path in case.outputs:
            Path(path).write_text(SENTINEL)
        self.stderr_file = tempfile.TemporaryFile()
        self.pid = os.fork()
        if self.pid == 0:
            _child(case, self.stderr_file.fileno())

    def poll(self) -> Outcome | None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            if time.monotonic() < self.deadline:
                return None
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            return self._outcome("hang", None)
        return self._outcome(None, status)

    def _outcome(self, status: str | None, wait_status: int | None) -> Outcome:
        seconds = time.monotonic() - self.start
        self.stderr_file.seek(0)
        err = self.stderr_file.read().decode(errors="replace")
        self.stderr_file.close()
        if status is None:
            assert wait_status is not None
            status = classify(self.case, wait_status, err)
        return Outcome(self.case, status, seconds, err)


def classify(case: Case, wait_status: int, err: str) -> str:
    """ok (exit 0), refused (exit 1 with a message), usage (argparse's exit 2), or a failure:
    traceback, crash (killed by a signal), silent-failure (no message), changed-output."""
    if os.WIFSIGNALED(wait_status):
        return "crash"
    code = os.WEXITSTATUS(wait_status)
    if code == TRACEBACK_EXIT or "Traceback (most recent call last)" in err:
        return "traceback"
    if code == 0:
        return "ok"
    if any(Path(p).exists() and Path(p).read_text() != SENTINEL for p in case.outputs):
        return "changed-output"
    if not err.strip():
        return "silent-failure"
    return "usage" if code == 2 else "refused" if code == 1 else f"exit-{code}"


FAILURES = ("traceback", "hang", "crash", "changed-output", "silent-failure")


@dataclass
class Campaign:
    outcomes: list[Outcome]

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in FAILURES or o.status.startswith("exit")]

    def summary(self) -> str:
        by_kind: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            by_kind.setdefault(o.case.kind, Counter())[o.status] += 1
        lines = [f"{len(self.outcomes)} cases: " + _counts(self.counts)]
        lines += [f"  {kind:<9} {_counts(c)}" for kind, c in sorted(by_kind.items())]
        signatures = Counter(signature(o) for o in self.failures)
        lines += [f"  {count:>5} x {sig}" for sig, count in signatures.most_common()]
        slowest = max(self.outcomes, key=lambda o: o.seconds, default=None)
        if slowest is not None:
            lines.append(
                f"  slowest case {slowest.seconds:.1f} s: {slowest.case.tool} "
                f"{' '.join(slowest.case.argv)}"
            )
        return "\n".join(lines)


def signature(outcome: Outcome) -> str:
    """What tells failures apart: the status, and for a traceback the exception type and the
    innermost frame of our code (``KeyError at passes/kernels.py:35``; with none, the
    innermost frame, by its last two path parts)."""
    if outcome.status != "traceback":
        return f"{outcome.status} ({outcome.case.kind}, {outcome.case.tool})"
    frames = re.findall(r'File "([^"]+)", line (\d+)', outcome.stderr)
    ours = [(module, line) for f, line in frames if (module := package_file(f)) is not None]
    if ours:
        where, line = ours[-1]
    else:
        path, line = frames[-1] if frames else ("?", "?")
        where = "/".join(Path(path).parts[-2:])
    last = outcome.stderr.strip().splitlines()[-1] if outcome.stderr.strip() else "?"
    return f"{last.split(':')[0]} at {where}:{line}"


def package_file(path: str) -> str | None:
    """``path`` as a file of the rdu_compiler package (``passes/kernels.py``), or None for
    any other file (the fuzzer, xDSL, the standard library). The same either way the package
    is installed: editable (the repository, which may also hold a virtual environment) or from
    a wheel (in site-packages, beside its dependencies)."""
    import rdu_compiler

    root = Path(rdu_compiler.__file__).resolve().parent
    try:
        relative = Path(path).resolve().relative_to(root)
    except ValueError:
        return None
    layer = relative.parts[0]
    if relative.parts == ("__init__.py",) or (root / layer / "__init__.py").is_file():
        return relative.as_posix()
    return None


def _counts(counter: Counter[str]) -> str:
    order = ["ok", "refused", "usage", *FAILURES]
    keys = [k for k in order if k in counter] + sorted(set(counter) - set(order))
    return ", ".join(f"{counter[k]} {k}" for k in keys)


def run_campaign(
    cases: int,
    seed: int,
    *,
    jobs: int = 1,
    timeout: float = 60.0,
    keep: Path | None = None,
    progress: Callable[[int, Counter[str]], None] | None = None,
) -> Campaign:
    """Run `cases` seeded cases, `jobs` at a time; case i mutates with `Random(f"{seed}:{i}")`."""
    preload()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="rdu-fuzz-") as tmp:
        root = Path(tmp)
        seeds_dir = root / "seeds"
        seeds_dir.mkdir()
        seeds = make_seeds(seeds_dir)
        running: dict[int, tuple[_Running, Path]] = {}
        next_case = 0
        while next_case < cases or running:
            while next_case < cases and len(running) < jobs:
                work = root / f"case{next_case}"
                work.mkdir()
                case = make_case(random.Random(f"{seed}:{next_case}"), seeds, work)
                running[next_case] = (_Running(case, timeout), work)
                next_case += 1
            finished = []
            for index, (run, work) in running.items():
                outcome = run.poll()
                if outcome is None:
                    continue
                finished.append(index)
                outcomes.append(outcome)
                if keep is not None and outcome.status in FAILURES:
                    shutil.copytree(work, keep / f"case{index}", dirs_exist_ok=True)
                shutil.rmtree(work, ignore_errors=True)
                if progress is not None:
                    progress(len(outcomes), Counter(o.status for o in outcomes))
            for index in finished:
                del running[index]
            if not finished:
                select.select([], [], [], 0.01)
    return Campaign(outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=500, help="number of cases (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds before a case is a hang (60)"
    )
    parser.add_argument("--keep", type=Path, help="save the inputs of failing cases here")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    def progress(done: int, counts: Counter[str]) -> None:
        if done % 500 == 0:
            print(
                f"[{time.monotonic() - start:7.0f} s] {done} cases: {_counts(counts)}", flush=True
            )

    campaign = run_campaign(
        args.cases, args.seed, jobs=args.jobs, timeout=args.timeout, keep=args.keep,
        progress=progress,
    )  # fmt: skip
    for o in campaign.failures:
        print(f"\n{o.status}: [{o.case.kind}] {o.case.tool} {' '.join(o.case.argv)}")
        print("  " + "\n  ".join(o.stderr.strip().splitlines()[-6:]))
    print(f"\nseed {args.seed}, {time.monotonic() - start:.0f} s")
    print(campaign.summary())
    return 1 if campaign.failures else 0


if __name__ == "__main__":
    sys.exit(main())
