"""One launch per decode step (`merge-launches`): its effect on the fraction of the roofline.

For the goal cases of the mapping issue (llama-3.2-1b on 8 sockets, llama-3.1-8b on 8 and 16,
llama-3.1-70b on 8 and 16, llama-3.1-405b on 16; batch 1, looped, software launch, preset
defaults), `roofline_fraction`, TPOT and the host's launch + sync time per step with
`single-launch=false` (the embedding, the looped layers and the LM head as three launches) and
`true` (one launch), as `rdu-run MODEL --sockets N --json` reports them; then, with every
per-call cost at zero, the looped / unlooped speedup of llama-3.1-8b on 8 sockets (the loop's
overlap alone, and with the LM head streaming beside it).

Run: `python bench/one_launch.py`.
"""

from __future__ import annotations

from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.report import summarize
from rdu_compiler.simulator.timing import simulate

CASES = (
    ("llama-3.2-1b", 8),
    ("llama-3.1-8b", 8),
    ("llama-3.1-8b", 16),
    ("llama-3.1-70b", 8),
    ("llama-3.1-70b", 16),
    ("llama-3.1-405b", 16),
)
PER_CALL = ("launch_software_s", "argument_load_s", "program_load_s", "sync_software_s")


def main() -> None:
    preset = get_preset("sn40l")
    print("looped, software launch, batch 1, preset defaults: three launches -> one launch")
    print(f"{'model':<16}{'sockets':>8}{'%roof':>16}{'TPOT ms':>20}{'launch+sync ms':>20}")
    for model, sockets in CASES:
        rows = [
            summarize(p, preset, simulate(p, preset))
            for p in (
                compile_program(model, sockets=sockets, single_launch=single)
                for single in (False, True)
            )
        ]

        def pair(key: str, rows=rows) -> str:
            return f"{rows[0][key]:.3f} -> {rows[1][key]:.3f}"

        print(
            f"{model:<16}{sockets:>8}{pair('roofline_fraction'):>16}{pair('ms_per_token'):>20}"
            f"{pair('launch_and_sync_ms_per_token'):>20}"
        )
    free = preset.replace(**dict.fromkeys(PER_CALL, 0.0))
    unlooped = simulate(
        compile_program("llama-3.1-8b", sockets=8, kernel_looping=False), free, what_if=True
    )
    for single in (False, True):
        looped = simulate(
            compile_program("llama-3.1-8b", sockets=8, single_launch=single), free, what_if=True
        )
        speedup = unlooped.step_s / looped.step_s
        print(
            f"per-call costs at zero, llama-3.1-8b on 8 sockets, "
            f"single-launch={str(single).lower()}: looped vs unlooped {speedup:.3f}x "
            f"({unlooped.step_s * 1e3:.4f} -> {looped.step_s * 1e3:.4f} ms)"
        )


if __name__ == "__main__":
    main()
