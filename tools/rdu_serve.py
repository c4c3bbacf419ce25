"""`rdu-serve SPEC`: a Composition-of-Experts node serving a request trace, beside GPU nodes.

SPEC (YAML or JSON, `tools/coe_spec.py`) names the experts, the router, the node, the HBM
cache policy and the trace. Each architecture is compiled ONCE (the default pipeline, kernel
looping on): experts of one architecture share that program, and a switch moves weights
(DDR -> HBM), never a Program Load. The program's decode step is timed on the timing engine at
two KV-cache lengths (1 and the compiled context); the step time is affine in the cache length
(the engine reads the cache linearly), so every step of every request is priced without
simulating it again. The serving simulation (`simulator/serving.py`) then plays the trace on
the node and, with the same trace and policy, on each GPU baseline (`simulator/gpu_node.py`:
its decode step from the same compiler figures, its switch over PCIe from host memory).

`--functional` computes real numbers instead (tiny experts): the router model (if any) picks
each request's expert from the last logits of its prompt (argmax over the first E logits), and
the expert's program, its weights bound for that expert, generates the tokens greedily.

Vocabulary: TPOT is a request's time per output token after its first; request latency is
arrival to last token; tokens/s counts every request's output tokens over the trace's span.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdu_compiler import __version__
from rdu_compiler.tools.cli import (
    ArgumentParser,
    Progress,
    UserError,
    integer,
    run_tool,
    write_atomically,
)

if TYPE_CHECKING:
    from rdu_compiler.simulator.program import LaunchMode

PROG = "rdu-serve"
KEYS = (
    "tokens_per_s",
    "tpot_ms_p50",
    "tpot_ms_p99",
    "request_ms_p50",
    "request_ms_p99",
    "switches",
    "switch_ms_mean",
    "hbm_hit_rate",
)

EXAMPLES = """\
examples:
  rdu-serve examples/coe/samba-coe-150.yaml                 # 150 7B experts, 8 sockets
  rdu-serve examples/coe/samba-coe-150.yaml --json --plot latency.png
  rdu-serve examples/coe/samba-coe-150.yaml --requests 200 --seed 3 --policy lru --no-prefetch
  rdu-serve examples/coe/samba-coe-150.yaml --compare-policies   # lru / popularity x prefetch
  rdu-serve examples/coe/tiny-coe.yaml --functional --json  # real tokens, tiny experts"""


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description=(__doc__ or "").split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", metavar="SPEC", help="CoE description (YAML or JSON)")
    p.add_argument("--version", action="version", version=f"{PROG} (rdu-compiler {__version__})")
    p.add_argument(
        "--requests", type=integer(1), metavar="N", help="requests of the trace (override)"
    )
    p.add_argument(
        "--seed", type=integer(0), metavar="S", help="seed of the synthetic trace (override)"
    )
    p.add_argument("--policy", choices=("lru", "popularity"), help="HBM cache policy (override)")
    prefetch = p.add_mutually_exclusive_group()
    prefetch.add_argument(
        "--prefetch", dest="prefetch", action="store_true", default=None, help="load on routing"
    )
    prefetch.add_argument(
        "--no-prefetch", dest="prefetch", action="store_false", help="load when a batch is due"
    )
    p.add_argument(
        "--compare-policies",
        action="store_true",
        help="also serve the trace with every cache policy, with and without prefetch",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="FILE.png", help="chart of the latency percentiles")
    p.add_argument(
        "--functional", action="store_true", help="real numbers (tiny experts): tokens served"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    from rdu_compiler.simulator.request_trace import TraceError
    from rdu_compiler.simulator.serving import ServingError
    from rdu_compiler.tools.coe_spec import load_spec

    args = _parser().parse_args(argv)
    if args.plot and not args.plot.endswith(".png"):
        raise UserError(f"--plot {args.plot}: the chart is a PNG (give a FILE.png)")
    spec = load_spec(args.spec)
    if args.functional:
        for flag, value in (
            ("--plot", args.plot),
            ("--policy", args.policy),
            ("--prefetch/--no-prefetch", args.prefetch),
            ("--compare-policies", args.compare_policies or None),
        ):
            if value is not None:
                raise UserError(f"{flag} times the node: drop it with --functional")
    try:
        requests, prompts = request_trace(spec, args.requests, args.seed)
        if args.functional:
            report = _functional(spec, requests, prompts)
            print(json.dumps(report, indent=2) if args.json else _format_functional(report))
            return 0
        report = _timing(spec, requests, args)
    except (ServingError, TraceError) as error:
        raise UserError(str(error)) from None
    if args.plot:
        from rdu_compiler.simulator.plots import plot_serving_latency

        write_atomically(args.plot, plot_serving_latency(report))
    print(json.dumps(report, indent=2) if args.json else _format(report))
    return 0


# -- the trace ---------------------------------------------------------------------------------


def request_trace(spec, requests: int | None, seed: int | None):
    from rdu_compiler.simulator.request_trace import (
        LengthRange,
        read_jsonl_trace,
        synthetic_trace,
    )

    t = spec.trace
    if t.file is not None:
        if seed is not None:
            raise UserError("--seed draws a synthetic trace; this description reads a trace file")
        trace, prompts = read_jsonl_trace(t.file, [e.name for e in spec.experts])
        count = requests or t.requests or len(trace)
        trace, prompts = trace[:count], {i: p for i, p in prompts.items() if i < count}
        longest = max(r.steps for r in trace)
        if longest > spec.context:
            raise UserError(
                f"{t.file}: a request needs {longest} cache rows (prompt + output - 1), more "
                f"than serving.context {spec.context}"
            )
        return trace, prompts
    trace = synthetic_trace(
        requests=requests or t.requests,
        experts=len(spec.experts),
        arrival_rate=t.arrival_rate,
        zipf=t.zipf,
        prompt=LengthRange(*t.prompt_tokens),
        output=LengthRange(*t.output_tokens),
        seed=t.seed if seed is None else seed,
    )
    return trace, {}


# -- timing: the RDU node ----------------------------------------------------------------------


@dataclass(frozen=True)
class ArchTiming:
    """One architecture's compiled program on the node, as the serving simulation needs it:
    step time and HBM bytes per step (affine in the cache length), and the bytes per socket it
    keeps in HBM."""

    step_s: Any  # StepTime
    step_bytes: Any  # StepTime, node total
    weight_bytes: int  # per socket
    kv_bytes: int  # per socket, at the compiled context
    other_bytes: int  # per socket: inputs, outputs, activations


def _hardware(spec):
    from rdu_compiler.simulator.hardware import list_presets, load_hardware

    name = spec.hardware
    if name not in list_presets():
        path = Path(name)
        name = str(path if path.is_absolute() else Path(spec.path).parent / path)
    return load_hardware(name)


def _time_architecture(
    config, *, sockets: int, batch: int, context: int, launch: LaunchMode, preset, progress
) -> ArchTiming:
    """Compile `config` at cache lengths 1 and `context` and time one decode step of each."""
    from rdu_compiler.simulator.numerics import bytes_of
    from rdu_compiler.simulator.serving import StepTime
    from rdu_compiler.simulator.timing import SimulationError, simulate
    from rdu_compiler.tools.timing_runs import Case, Timer

    timer = Timer(config, "bf16", preset)
    steps, moved, program = [], [], None
    for rows in sorted({1, context}):
        progress.advance(f"{config.name}: compiling and timing a step at cache length {rows}")
        program = timer.compile(Case(sockets, batch, rows, launch, "looped"))
        try:
            timing = simulate(program, preset)
        except SimulationError as error:
            raise UserError(f"{config.name}: {error}") from None
        steps.append((rows, timing.step_s))
        moved.append((rows, sockets * (timing.bytes["hbm"] + timing.bytes["ddr"])))
    assert program is not None
    in_ddr = [t.name for t in program.tensors if t.tier != "hbm" and t.aliases is None]
    if in_ddr:
        raise UserError(
            f"{config.name} on {sockets} socket(s) of {preset.label} keeps {in_ddr[0]} in DDR: an "
            f"expert must fit HBM to be served from it (use more sockets)"
        )

    def total(kinds: tuple[str, ...]) -> int:
        return sum(
            bytes_of(t.shape, t.dtype)
            for t in program.tensors
            if t.kind in kinds and t.aliases is None
        )

    return ArchTiming(
        step_s=StepTime.through(steps),
        step_bytes=StepTime.through(moved),
        weight_bytes=total(("weight",)),
        kv_bytes=total(("kv_cache",)),
        other_bytes=total(("input", "output", "activation")),
    )


def _architectures(spec) -> dict[str, list[int]]:
    """Architecture key -> expert indices; experts of one architecture share a program."""
    groups: dict[str, list[int]] = {}
    keys: dict[Any, str] = {}
    for i, e in enumerate(spec.experts):
        shape = replace(e.config, name="")
        if shape not in keys:  # named after its first expert's model, unique
            taken = e.config.name in groups
            keys[shape] = f"{e.config.name}-{len(groups)}" if taken else e.config.name
        groups.setdefault(keys[shape], []).append(i)
    return groups


def rdu_node_model(spec, trace, progress) -> tuple[Any, dict[str, Any]]:
    from rdu_compiler.simulator.serving import NodeModel, overlap_slowdown

    preset = _hardware(spec)
    archs = _architectures(spec)
    timed = {
        name: _time_architecture(
            spec.experts[members[0]].config,
            sockets=spec.sockets,
            batch=spec.batch,
            context=spec.context,
            launch=spec.launch,
            preset=preset,
            progress=progress,
        )
        for name, members in archs.items()
    }
    arch_of = {i: name for name, members in archs.items() for i in members}
    router, pinned = _rdu_router(spec, trace, preset, progress)
    # HBM per socket: the experts' cache is what the largest architecture's KV caches and
    # scratch, and the router's weights, caches and scratch leave
    reserved = pinned + max(a.kv_bytes + a.other_bytes for a in timed.values())
    cache_bytes = spec.sockets * (preset.hbm_bytes - reserved)
    hbm_rate = preset.hbm_bandwidth * preset.hbm_efficiency
    # per socket, DDR -> HBM: read from DDR, written into HBM, the slower side sets the pace
    copy_rate = min(preset.ddr_bandwidth * preset.ddr_efficiency, hbm_rate)
    node = NodeModel(
        name=f"{spec.sockets} x {preset.name}",
        batch=spec.batch,
        cache_bytes=cache_bytes,
        expert_arch=tuple(arch_of[i] for i in range(len(spec.experts))),
        expert_bytes=tuple(
            spec.sockets * timed[arch_of[i]].weight_bytes for i in range(len(spec.experts))
        ),
        step_s={name: a.step_s for name, a in timed.items()},
        step_bytes={name: a.step_bytes for name, a in timed.items()},
        switch_s={name: a.weight_bytes / copy_rate for name, a in timed.items()},
        copy_tier="ddr",
        copy_slowdown=overlap_slowdown(hbm_rate, copy_rate),
        router=router,
    )
    provenance = {
        key: {"value": getattr(preset, key), **_provenance(preset.provenance[key])}
        for key in ("hbm_bytes", "hbm_bandwidth", "hbm_efficiency", "ddr_bytes")
        + ("ddr_bandwidth", "ddr_efficiency")
    }
    details = {
        "node": node.name,
        "sockets": spec.sockets,
        "architectures": {
            name: {
                "experts": len(archs[name]),
                "expert_bytes": spec.sockets * a.weight_bytes,
                "kv_bytes_at_context": spec.sockets * a.kv_bytes,
                "step_ms_at_1": a.step_s.at(1) * 1e3,
                "step_ms_at_context": a.step_s.at(spec.context) * 1e3,
                "switch_ms": node.switch_s[name] * 1e3,
            }
            for name, a in timed.items()
        },
        "expert_cache_bytes": cache_bytes,
        "copy_rate_bytes_per_s": spec.sockets * copy_rate,
        "copy_slowdown": node.copy_slowdown,
        "parameters": provenance,
        "ddr_bytes": spec.sockets * preset.ddr_bytes,
    }
    return node, details


def _provenance(p) -> dict[str, str]:
    return {"origin": p.origin, "note": p.note}


def _rdu_router(spec, trace, preset, progress):
    """The router's time model and the HBM bytes per socket it pins (weights, caches)."""
    from rdu_compiler.simulator.serving import Router

    r = spec.router
    if r.config is None:
        return Router(cost_s=r.cost_ms / 1e3), 0
    longest = max(q.prompt_tokens for q in trace)
    if longest > r.config.max_position_embeddings:
        raise UserError(
            f"the router {r.config.name} has {r.config.max_position_embeddings} positions, "
            f"a prompt has {longest} tokens"
        )
    a = _time_architecture(
        r.config,
        sockets=spec.sockets,
        batch=1,
        context=longest,
        launch=spec.launch,
        preset=preset,
        progress=progress,
    )
    return Router(step=a.step_s, on_node=True), a.weight_bytes + a.kv_bytes + a.other_bytes


# -- timing: the GPU baselines -----------------------------------------------------------------


@functools.cache
def _tensor_parallel(config, gpus: int) -> int:
    """The most GPUs (a power of two, at most `gpus`) the sharding pass splits `config` over
    (a 7B on a DGX: 8; a tiny test model with 4 heads: 4)."""
    for tp in (d for d in (16, 8, 4, 2) if d <= gpus):
        try:
            _workload(config, batch=1, rows=1, tensor_parallel=tp)
            return tp
        except UserError:  # the sharding refused this many
            continue
    return 1


@functools.cache
def _workload(config, *, batch: int, rows: int, tensor_parallel: int):
    """`rdu-run --gpu`'s workload (the compiler's figures for the step at `rows` cache rows),
    kept: every GPU node of a run asks for the same ones."""
    from rdu_compiler.tools.gpu_baseline import decode_workload

    return decode_workload(
        config, batch=batch, context=rows, dtype="bf16", tensor_parallel=tensor_parallel
    )


def gpu_node_model(name: str, spec, trace, rdu_node) -> tuple[Any, dict[str, Any]]:
    """A GPU baseline serving the same experts: every expert tensor parallel over the node's
    GPUs (as the RDU node spreads it over its sockets), loaded from pinned host memory by all
    GPUs at once, the HBM left after the KV caches (and router) caching experts."""
    from rdu_compiler.simulator.gpu_node import GPU_NODES
    from rdu_compiler.simulator.serving import NodeModel, Router, StepTime, overlap_slowdown
    from rdu_compiler.simulator.timing import SimulationError

    if name not in GPU_NODES:
        raise UserError(
            f"{spec.path}: baselines: unknown GPU node {name!r}; known: {', '.join(GPU_NODES)}"
        )
    gpu = GPU_NODES[name]

    def step_model(config, batch: int, context: int):
        points, moved = [], []
        tp = _tensor_parallel(config, gpu.gpus)
        for rows in sorted({1, context}):
            w = _workload(config, batch=batch, rows=rows, tensor_parallel=tp)
            try:
                points.append((rows, gpu.decode_step_s(w)))
            except SimulationError as error:
                raise UserError(f"{name}: {config.name}: {error}") from None
            moved.append((rows, w.weight_bytes + w.kv_bytes_per_step))
        return StepTime.through(points), StepTime.through(moved)

    archs = _architectures(spec)
    step_s, step_bytes, switch_s, one_gpu_switch_s = {}, {}, {}, {}
    expert_bytes = [0] * len(spec.experts)
    kv_reserve = 0
    for arch, members in archs.items():
        config = spec.experts[members[0]].config
        nbytes = config.num_parameters * 2
        for i in members:
            expert_bytes[i] = nbytes
        step_s[arch], step_bytes[arch] = step_model(config, spec.batch, spec.context)
        switch_s[arch] = gpu.host_to_hbm_s(nbytes)
        one_gpu_switch_s[arch] = (
            gpu.host_to_hbm_s(nbytes, 1) if nbytes <= gpu.hbm_bytes_per_gpu else None
        )
        kv_reserve = max(kv_reserve, _kv_allocation(config, spec.batch, spec.context))
    router = Router(cost_s=rdu_node.router.cost_s)
    pinned = 0
    if spec.router.config is not None:
        longest = max(q.prompt_tokens for q in trace)
        router = Router(step=step_model(spec.router.config, 1, longest)[0], on_node=True)
        pinned = spec.router.config.num_parameters * 2 + _kv_allocation(
            spec.router.config, 1, longest
        )
    copy_rate = gpu.pcie_bandwidth  # per GPU, host -> HBM
    hbm_rate = gpu.hbm_bandwidth * gpu.decode_efficiency
    node = NodeModel(
        name=name,
        batch=spec.batch,
        cache_bytes=gpu.hbm_bytes - kv_reserve - pinned,
        expert_arch=rdu_node.expert_arch,
        expert_bytes=tuple(expert_bytes),
        step_s=step_s,
        step_bytes=step_bytes,
        switch_s=switch_s,
        copy_tier="host",
        copy_slowdown=overlap_slowdown(hbm_rate, copy_rate),
        router=router,
    )
    return node, {
        "node": name,
        "gpus": gpu.gpus,
        "expert_cache_bytes": node.cache_bytes,
        "switch_ms": {a: s * 1e3 for a, s in switch_s.items()},
        "switch_ms_one_gpu": {
            a: None if s is None else s * 1e3 for a, s in one_gpu_switch_s.items()
        },
        "step_ms_at_1": {a: s.at(1) * 1e3 for a, s in step_s.items()},
        "step_ms_at_context": {a: s.at(spec.context) * 1e3 for a, s in step_s.items()},
        "copy_slowdown": node.copy_slowdown,
        "parameters": {
            key: {"value": getattr(gpu, key), **_provenance(gpu.provenance[key])}
            for key in gpu.figures()
        },
    }


def _kv_allocation(config, batch: int, context: int) -> int:
    """Bytes of K and V caches of every layer at `context` rows (bf16)."""
    return 2 * config.num_layers * batch * config.num_kv_heads * context * config.head_dim * 2


# -- timing: the report ------------------------------------------------------------------------


def _footprint(spec, rdu_details, baselines) -> dict[str, Any]:
    """How many nodes of each kind hold every expert: the RDU node in DDR, a GPU node in HBM
    (experts packed into its memory) and, as the SN40L paper's comparison counts, one expert
    per GPU."""
    total = sum(a["expert_bytes"] * a["experts"] for a in rdu_details["architectures"].values())
    out: dict[str, Any] = {
        "experts": len(spec.experts),
        "expert_bytes_total": total,
        "rdu": {"nodes": math.ceil(total / rdu_details["ddr_bytes"]), "tier": "ddr"},
    }
    for name, (node, details) in baselines.items():
        largest = max(node.expert_bytes)
        per_node = node.cache_bytes // largest
        out[name] = {
            "experts_per_node_in_hbm": per_node,
            "nodes_packed_in_hbm": math.ceil(len(spec.experts) / per_node) if per_node else None,
            "nodes_one_expert_per_gpu": math.ceil(len(spec.experts) / details["gpus"]),
        }
    return out


def _timing(spec, trace, args) -> dict[str, Any]:
    from rdu_compiler.simulator.serving import POLICIES, simulate_serving

    policy = args.policy or spec.cache_policy
    prefetch = spec.prefetch if args.prefetch is None else args.prefetch
    archs = len(_architectures(spec))
    with Progress(2 * archs + (2 if spec.router.config is not None else 0)) as progress:
        rdu, rdu_details = rdu_node_model(spec, trace, progress)
    result = simulate_serving(rdu, trace, policy, prefetch)
    baselines = {name: gpu_node_model(name, spec, trace, rdu) for name in spec.baselines}
    report: dict[str, Any] = {
        "spec": spec.name,
        "node": rdu.name,
        "experts": len(spec.experts),
        "requests": len(trace),
        "policy": policy,
        "prefetch": prefetch,
        **result,
        "baselines": {},
        "rdu": rdu_details,
    }
    for name, (node, details) in baselines.items():
        figures = simulate_serving(node, trace, policy, prefetch)
        one_gpu = [v for v in details["switch_ms_one_gpu"].values() if v is not None]
        rdu_switch = [a["switch_ms"] for a in rdu_details["architectures"].values()]
        report["baselines"][name] = {
            **figures,
            "switch_ratio": figures["switch_ms_mean"] / result["switch_ms_mean"]
            if result["switch_ms_mean"]
            else None,
            # the same expert loaded onto ONE GPU over its own PCIe link (a 7B expert per GPU,
            # as the SN40L paper's footprint counts), against the RDU node's switch
            "switch_ratio_one_gpu": one_gpu[0] / rdu_switch[0]
            if len(one_gpu) == len(rdu_switch) == 1
            else None,
            "details": details,
        }
    report["footprint"] = _footprint(
        spec, rdu_details, {n: (node, d) for n, (node, d) in baselines.items()}
    )
    if args.compare_policies:
        report["policies"] = {
            f"{p}{'+prefetch' if ahead else ''}": {
                name: {
                    k: simulate_serving(node, trace, p, ahead)[k]
                    for k in (*KEYS, "switch_stall_ms_total")
                }
                for name, node in [(rdu.name, rdu)] + [(n, b[0]) for n, b in baselines.items()]
            }
            for p in POLICIES
            for ahead in (False, True)
        }
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def _bytes(n: float) -> str:
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _format(report: dict[str, Any]) -> str:
    nodes = [(report["node"], report)] + list(report["baselines"].items())
    lines = [
        f"{report['spec']}: {report['experts']} experts, {report['requests']} requests; "
        f"cache policy {report['policy']}{', prefetch on routing' if report['prefetch'] else ''}",
        "",
        f"{'node':<14} {'tokens/s':>9} {'TPOT p50':>9} {'TPOT p99':>9} {'req p50 ms':>11} "
        f"{'req p99 ms':>11} {'switches':>8} {'switch ms':>9} {'stall s':>8} {'HBM hit':>7}",
    ]
    for name, f in nodes:
        lines.append(
            f"{name:<14} {f['tokens_per_s']:>9.1f} {_ms(f['tpot_ms_p50']):>9} "
            f"{_ms(f['tpot_ms_p99']):>9} {_ms(f['request_ms_p50']):>11} "
            f"{_ms(f['request_ms_p99']):>11} {f['switches']:>8} {_ms(f['switch_ms_mean']):>9} "
            f"{f['switch_stall_ms_total'] / 1e3:>8.2f} {f['hbm_hit_rate']:>7.1%}"
        )
    lines.append("")
    for name, f in report["baselines"].items():
        if f["switch_ratio"] is not None:
            line = (
                f"switching an expert: {report['node']} {_ms(report['switch_ms_mean'])} ms, "
                f"{name} {_ms(f['switch_ms_mean'])} ms ({f['switch_ratio']:.1f}x) over all GPUs"
            )
            if f["switch_ratio_one_gpu"] is not None:
                one = next(iter(f["details"]["switch_ms_one_gpu"].values()))
                line += f", {_ms(one)} ms ({f['switch_ratio_one_gpu']:.1f}x) onto one GPU"
            lines.append(line)
    fp = report["footprint"]
    lines.append(
        f"footprint of {fp['experts']} experts ({_bytes(fp['expert_bytes_total'])}): "
        f"{fp['rdu']['nodes']} RDU node(s) (DDR); "
        + "; ".join(
            f"{n}: {v['nodes_packed_in_hbm']} node(s) packed in HBM "
            f"({v['experts_per_node_in_hbm']} per node), {v['nodes_one_expert_per_gpu']} at one "
            f"expert per GPU"
            for n, v in fp.items()
            if isinstance(v, dict) and "experts_per_node_in_hbm" in v
        )
    )
    for name, f in nodes:
        tiers = ", ".join(
            f"{tier} {kind} {_bytes(n)}"
            for tier, counts in f["bytes_per_tier"].items()
            for kind, n in counts.items()
        )
        lines.append(f"bytes per tier, {name}: {tiers}")
    if "policies" in report:
        lines += ["", "cache policies (switches, HBM hit rate, stall s, request p99 ms):"]
        for label, per_node in report["policies"].items():
            lines.append(
                f"  {label:<20} "
                + "  ".join(
                    f"{n}: {v['switches']}, {v['hbm_hit_rate']:.1%}, "
                    f"{v['switch_stall_ms_total'] / 1e3:.2f}, {_ms(v['request_ms_p99'])}"
                    for n, v in per_node.items()
                )
            )
    return "\n".join(lines)


# -- functional mode ---------------------------------------------------------------------------


def _functional(spec, trace, prompts: dict[int, list[int]]) -> dict[str, Any]:
    """Serve the trace with real numbers (module docstring); returns the tokens per request."""
    import numpy as np

    from rdu_compiler.simulator.functional import FunctionalError, FunctionalSimulator
    from rdu_compiler.simulator.weights import open_weights
    from rdu_compiler.tools.cli import decode_loop
    from rdu_compiler.tools.timing_runs import Case, Timer

    preset = _hardware(spec)
    vocab = min(e.config.vocab_size for e in spec.experts)
    router = spec.router
    if router.config is not None:
        vocab = min(vocab, router.config.vocab_size)
        if router.config.vocab_size < len(spec.experts):
            raise UserError(
                f"the router {router.config.name} has {router.config.vocab_size} logits, "
                f"fewer than the {len(spec.experts)} experts it must choose among"
            )
    rng = np.random.Generator(np.random.PCG64([spec.trace.seed, 1]))

    def simulator(config, context: int, weights):
        program = Timer(config, "bf16", preset).compile(
            Case(spec.sockets, 1, context, spec.launch, "looped")
        )
        try:
            return FunctionalSimulator(program, weights)
        except FunctionalError as error:
            raise UserError(str(error)) from None

    sources = [open_weights(e.weights, None if e.weights else e.seed) for e in spec.experts]
    programs: dict[str, Any] = {}
    bound: dict[str, int] = {}
    router_sim = None
    if router.config is not None:
        router_sim = simulator(
            router.config,
            max(q.prompt_tokens for q in trace),
            open_weights(router.weights, None if router.weights else router.seed),
        )
    served, switches = [], 0
    arch_of = {i: a for a, members in _architectures(spec).items() for i in members}
    for request in trace:
        prompt = prompts.get(request.id) or [
            int(t) for t in rng.integers(0, vocab, request.prompt_tokens)
        ]
        expert = request.expert
        if router_sim is not None:
            router_sim.reset_state()
            _, logits = decode_loop(router_sim.decode, prompt, 1, 1)
            expert = int(np.argmax(np.asarray(logits, np.float32)[0, : len(spec.experts)]))
        arch = arch_of[expert]
        if arch not in programs:
            programs[arch] = simulator(spec.experts[expert].config, spec.context, sources[expert])
            bound[arch] = expert
        sim = programs[arch]
        if bound[arch] != expert:
            sim.bind_weights(sources[expert])  # the switch: weights move, the program stays
            bound[arch] = expert
            switches += 1
        sim.reset_state()
        tokens, _ = decode_loop(sim.decode, prompt, request.output_tokens, 1)
        served.append(
            {
                "id": request.id,
                "expert": spec.experts[expert].name,
                "prompt": prompt,
                "tokens": tokens[0],
            }
        )
    return {
        "spec": spec.name,
        "routed_by": router.config.name if router.config is not None else router.policy,
        "programs": len(programs),
        "switches": switches,
        "requests": served,
    }


def _format_functional(report: dict[str, Any]) -> str:
    lines = [
        f"{report['spec']}: {len(report['requests'])} requests routed by {report['routed_by']}; "
        f"{report['programs']} program(s), {report['switches']} weight switch(es)"
    ]
    for r in report["requests"]:
        lines.append(f"request {r['id']} -> {r['expert']}: {', '.join(map(str, r['tokens']))}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
