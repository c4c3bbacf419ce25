"""Composition of Experts: the figures `docs/serving.md` quotes, measured.

1. `rdu-serve examples/coe/samba-coe-150.yaml` (150 Llama-2-7B experts, 8 sockets, 1,000
   requests, three nodes served): wall and CPU seconds of the whole command (the goal: <= 10 s).
2. The affine step time: the compiled step at a third cache length against the line through
   the two lengths rdu-serve compiles (1 and the context).
3. Switching one 7B expert: the RDU node (DDR -> HBM on every socket at once) against a DGX
   H100 / A100 loading it over all 8 PCIe links and over one GPU's link, and what each ratio is
   made of, beside the published 15x and 31x (ANCHORS.md). Nothing here is fitted to them.
4. The cache policies (LRU, popularity) with and without prefetch on the router's decision, at
   three arrival rates: switches, HBM hit rate, stall, request p99.

Run: `python bench/coe_serving.py` (about a minute alone on 2 cores).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from rdu_compiler.frontend.config import load_model_config
from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.gpu_node import GPU_NODES
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.serving import POLICIES, StepTime, simulate_serving
from rdu_compiler.simulator.timing import simulate

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "coe" / "samba-coe-150.yaml"
PUBLISHED = {"dgx-h100": 15.0, "dgx-a100": 31.0}  # SN40L paper: model switching (ANCHORS.md)


def run_150() -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "rdu_compiler.tools.rdu_serve", str(SPEC), "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"1. rdu-serve {SPEC.relative_to(ROOT)} (1,000 requests, 3 nodes): {wall:.1f} s wall, ")
    print(
        f"   {cpu:.1f} s CPU (the machine is shared: CPU seconds are the load-independent figure)"
    )
    return json.loads(out)


def check_affine() -> None:
    preset = get_preset("sn40l")
    config = load_model_config("llama-2-7b")
    measured = {
        rows: simulate(compile_program(config, sockets=8, context=rows), preset).step_s
        for rows in (1, 1024, 400)
    }
    line = StepTime.through([(1, measured[1]), (1024, measured[1024])])
    error = line.at(400) / measured[400] - 1
    print(
        f"2. llama-2-7b, 8 sockets: step {measured[1] * 1e3:.4f} ms at 1 row, "
        f"{measured[1024] * 1e3:.4f} ms at 1024; at 400 rows compiled {measured[400] * 1e3:.4f} "
        f"ms, the line says {line.at(400) * 1e3:.4f} ms ({error:+.3%})"
    )


def switching(report: dict) -> None:
    rdu = next(iter(report["rdu"]["architectures"].values()))
    preset = get_preset("sn40l")
    rate = report["rdu"]["copy_rate_bytes_per_s"]
    per_socket = rdu["expert_bytes"] / 8
    print(
        f"3. one expert: {rdu['expert_bytes'] / 1e9:.2f} GB on the RDU node (13.48 GB of "
        f"parameters, the embedding table replicated on every socket), {per_socket / 1e9:.2f} "
        f"GB per socket at {preset.ddr_bandwidth / 1e9:.0f} GB/s x ddr_efficiency "
        f"{preset.ddr_efficiency} = {rate / 1e12:.2f} TB/s for the node: {rdu['switch_ms']:.1f} ms"
    )
    for name, published in PUBLISHED.items():
        b = report["baselines"][name]
        gpu = GPU_NODES[name]
        one = next(iter(b["details"]["switch_ms_one_gpu"].values()))
        print(
            f"   {name}: 13.48 GB over 8 links at {8 * gpu.pcie_bandwidth / 1e9:.0f} GB/s "
            f"{b['switch_ms_mean']:.1f} ms ({b['switch_ratio']:.1f}x); over one GPU's link at "
            f"{gpu.pcie_bandwidth / 1e9:.1f} GB/s {one:.1f} ms "
            f"({b['switch_ratio_one_gpu']:.1f}x); published {published:.0f}x (ours / "
            f"published: {b['switch_ratio_one_gpu'] / published:.2f})"
        )
    print(
        "   the published pair matches 'above 1 TB/s' DDR -> HBM per node over ONE x16 link's "
        f"nominal rate: 1.0e12 / 64e9 = {1e12 / 64e9:.1f}x (Gen5), 1.0e12 / 32e9 = "
        f"{1e12 / 32e9:.1f}x (Gen4)\n"
    )


def policies(spec_nodes) -> None:
    from rdu_compiler.simulator.request_trace import LengthRange, synthetic_trace

    print("4. cache policies, 1,000 requests (switches / HBM hit / stall s / request p99 ms):")
    for rate in (0.5, 1.0, 2.0):
        trace = synthetic_trace(
            requests=1000,
            experts=150,
            arrival_rate=rate,
            zipf=1.0,
            prompt=LengthRange(16, 256),
            output=LengthRange(16, 256),
            seed=0,
        )
        for name, node in spec_nodes:
            cells = []
            for policy in POLICIES:
                for prefetch in (False, True):
                    f = simulate_serving(node, trace, policy, prefetch)
                    cells.append(
                        f"{policy}{'+pf' if prefetch else ''} {f['switches']}/"
                        f"{f['hbm_hit_rate']:.1%}/{f['switch_stall_ms_total'] / 1e3:.1f}/"
                        f"{f['request_ms_p99']:,.0f}"
                    )
            print(f"   {rate} req/s {name:<10} " + "  ".join(cells))


def main() -> None:
    report = run_150()
    check_affine()
    switching(report)
    from rdu_compiler.tools.cli import Progress
    from rdu_compiler.tools.coe_spec import load_spec
    from rdu_compiler.tools.rdu_serve import gpu_node_model, rdu_node_model, request_trace

    spec = load_spec(str(SPEC))
    trace, _ = request_trace(spec, None, None)
    with Progress(0) as progress:
        rdu, _ = rdu_node_model(spec, trace, progress)
    nodes = [("sn40l", rdu)] + [(n, gpu_node_model(n, spec, trace, rdu)[0]) for n in spec.baselines]
    policies(nodes)


if __name__ == "__main__":
    main()
