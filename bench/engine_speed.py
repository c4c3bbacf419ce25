"""Why the timing model has its own event engine rather than SimPy: a measurement.

The full timing simulation of one decode step (bandwidth sharing, backpressure, prefetch,
launches) is timed against a SimPy *skeleton* of the same event graph: one process per unit
execution (every unit of every trip of every launch) that waits for the start of its stream
producers and the end of its previous trip, then for its service time - no bandwidth sharing,
no buffers, no host, i.e. strictly less work than the real model. If the skeleton alone is
slower, SimPy cannot be the faster engine. SimPy is not a dependency of the project: install the
`bench` extra to run this (`pip install -e '.[bench]'`). Run: `python bench/engine_speed.py`.
"""

from __future__ import annotations

import sys
import time

from rdu_compiler.lowering.pipeline import compile_program
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.program import Launch
from rdu_compiler.simulator.timing import _SectionModel, simulate


def simpy_skeleton(program, preset) -> float:
    import simpy

    env = simpy.Environment()
    kernels = {k.name: k for k in program.kernels}
    previous_end = None
    for launch in (s for s in program.schedule if isinstance(s, Launch)):
        kernel = kernels[launch.kernel]
        for s, section in enumerate(kernel.sections):
            trips = kernel.runs(s)
            units = _SectionModel(section, preset).units
            started = [[env.event() for _ in units] for _ in range(trips)]
            ended = [[env.event() for _ in units] for _ in range(trips)]

            def unit(t, i, u, started=started, ended=ended, after=previous_end):
                waits = [started[t][p] for p in u.producers]
                if t > 0:
                    waits.append(ended[t - 1][i])
                elif after is not None:
                    waits.append(after)
                yield env.all_of(waits)
                started[t][i].succeed()
                yield env.timeout(u.service + u.nbytes / preset.hbm_bandwidth)
                ended[t][i].succeed()

            for t in range(trips):
                for i, u in enumerate(units):
                    env.process(unit(t, i, u))
            previous_end = env.all_of([e for row in ended for e in row])
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start


def main() -> None:
    try:
        import simpy  # noqa: F401
    except ImportError:
        sys.exit("engine_speed: SimPy is not installed (pip install -e '.[bench]')")
    preset = get_preset("sn40l")
    for model, sockets in (("llama-3.1-8b", 1), ("llama-3.1-70b", 16)):
        for looped in (True, False):
            program = compile_program(model, sockets=sockets, kernel_looping=looped, context=4096)
            ours = min(_timed(lambda p=program: simulate(p, preset)) for _ in range(5))
            skeleton = min(simpy_skeleton(program, preset) for _ in range(5))
            print(
                f"{model} on {sockets} socket(s), {'looped' if looped else 'unlooped'}: "
                f"full model {ours * 1e3:.1f} ms, SimPy skeleton {skeleton * 1e3:.1f} ms "
                f"({skeleton / ours:.1f}x)"
            )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
