"""Import-time benchmark: build llama-3.1-405b's decode step and print it to /dev/null.

Each case runs in a fresh subprocess so that peak RSS (`resource.getrusage`) is its own; the
baseline is the RSS after imports, so `peak - baseline` is what building and printing cost.
Run: `python bench/import_405b.py` (cases: 8, 32 and all 126 layers).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

MODEL = "llama-3.1-405b"
LAYERS = (8, 32, None)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _one(layers: int | None) -> dict[str, float]:
    from xdsl.printer import Printer

    from rdu_compiler.frontend.builder import build_decode_step
    from rdu_compiler.frontend.config import load_model_config

    baseline = _rss_mib()
    t0 = time.perf_counter()
    module = build_decode_step(load_model_config(MODEL, layers=layers))
    t1 = time.perf_counter()
    with open("/dev/null", "w") as sink:
        Printer(stream=sink).print_op(module)
    t2 = time.perf_counter()
    ops = sum(1 for _ in module.walk())
    return {
        "ops": ops,
        "build_s": t1 - t0,
        "print_s": t2 - t1,
        "baseline_mib": baseline,
        "peak_mib": _rss_mib(),
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(_one(None if sys.argv[2] == "all" else int(sys.argv[2]))))
        return
    print(f"{MODEL}: build + print to /dev/null (fresh process per case)")
    print(
        f"{'layers':>6} {'ops':>6} {'build s':>8} {'print s':>8} {'total s':>8} "
        f"{'peak RSS MiB':>12} {'(+ over imports)':>16}"
    )
    for layers in LAYERS:
        arg = "all" if layers is None else str(layers)
        out = subprocess.run(
            [sys.executable, __file__, "--one", arg], check=True, capture_output=True, text=True
        ).stdout
        r = json.loads(out)
        print(
            f"{layers or 126:>6} {r['ops']:>6} {r['build_s']:>8.2f} {r['print_s']:>8.2f} "
            f"{r['build_s'] + r['print_s']:>8.2f} {r['peak_mib']:>12.0f} "
            f"{r['peak_mib'] - r['baseline_mib']:>16.0f}"
        )


if __name__ == "__main__":
    main()
