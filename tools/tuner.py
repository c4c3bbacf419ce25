"""Design-space exploration of the compiler's knobs on Optuna: the engine behind `rdu-tune`.

A *knob* is an option of `rdu-pipeline{...}` (a field of
:class:`~rdu_compiler.lowering.pipeline.RduPipeline`, the lowering's :class:`Mapping` knobs
included) or, named `hw.<figure>`, a figure of the hardware preset. :func:`default_space` reads
the knobs from the pipeline's option dataclass, so a knob the lowering adds is searched without
an edit here. A trial turns the knobs' values into one `RduPipeline`, lowers a prepared module
(the passes before the lowering run once per fusion policy, looping choice and socket count:
:func:`~rdu_compiler.lowering.pipeline.prepare_module`) and simulates its timing, all in
process. Whatever the compiler refuses (a kernel that does not fit, an unsupported sharding, a
hardware figure out of range) makes the trial infeasible (constraint `feasible` > 0), never an
error; objectives are figures of the simulator's report.

Sampling: :class:`KnobSampler` proposes the first trials itself, by a Pareto local search from
the default point (`tools/pareto_search.py`), or while it has nothing to propose, the default
point (with the space's priors) with a few knobs moved at random, with generators seeded by the
seed and the trial's number, so parallel workers propose distinct points and a run is
reproducible; then a model takes over (multi-objective TPE, or NSGA-II) and, for the last
trials, a local search (`tools/local_search.py`); or nothing does (random search, the baseline,
every knob at random throughout).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import time
import typing
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from xdsl.dialects.builtin import ModuleOp

from rdu_compiler.lowering.pipeline import RduPipeline, lower_to_program, prepare_module
from rdu_compiler.simulator.hardware import HardwarePreset, PresetError, get_preset
from rdu_compiler.simulator.program import Pcu, Program, ProgramError, compiled_hardware
from rdu_compiler.tools import local_search, pareto_search

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HW_PREFIX = "hw."
KINDS = ("int", "float", "ordinal", "categorical")
# Pipeline options that are not searched by default: the preset is chosen, not tuned, and its
# overrides are the hardware space's; sockets come from --sockets. `fusion=op` (a kernel per
# op) was 7.5 to 14x the default's TPOT on bench/tune.py's three cases (outside the
# hypervolume's reference box) and a 70B/16 trial with it costs 2.7 to 3.4 s of CPU against
# 0.8 to 1.5 s with layer fusion: a space file (`fusion: {values: [layer, op]}`) still tries it.
# `moe=expert` (experts dealt over the sockets) ties or loses against the default on Mixtral
# (docs/tensor_parallelism.md) and means nothing for a dense model: a space file searches it.
NOT_SEARCHED = ("hw", "hw_overrides", "sockets", "fusion", "moe")
# Options whose default is -1 ("the allocation decides", or the cost model for `kv-seq-split`)
# have no magnitude to scale a range from: beside -1 itself they search the powers of two
# between these bounds (`kv-seq-split` deals over socket counts, which are powers of two).
AUTO_RANGES = {
    "matmul_par": (1, 1024),
    "attention_par": (1, 1024),
    "tile_bytes": (8192, 524288),
    "kv_seq_split": (1, 16),
}
# Hardware figures `--hardware-space` explores when no file says which (users' what-if
# questions: compute units, SRAM, HBM bandwidth, peer-to-peer links), each over half to twice
# the preset's value.
DEFAULT_HARDWARE_KNOBS = ("pcus", "pmus", "sram_bytes", "hbm_bandwidth", "p2p_bandwidth")


class TuneError(Exception):
    """A bad space, objective or storage: reported to the user as one line."""


# ----------------------------------------------------------------------------------------------
# The space
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knob:
    """One dimension of the search: `int` / `float` over `[low, high]` (`log`: sampled on a log
    scale), `ordinal` (ordered `values`, searched by index so the order counts) or
    `categorical` (unordered `values`); `prior`: the value the user believes best, drawn around
    in the first trials and tried first."""

    name: str
    kind: Literal["int", "float", "ordinal", "categorical"]
    low: float = 0
    high: float = 0
    values: tuple[Any, ...] = ()
    log: bool = False
    prior: Any = None

    def suggest(self, trial: optuna.Trial) -> Any:
        """The knob's value for `trial` (an ordinal is sampled by index, so its order counts)."""
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "ordinal":
            return self.values[trial.suggest_int(self.name, 0, len(self.values) - 1)]
        return trial.suggest_categorical(self.name, self.values)

    def param(self, value: Any) -> Any | None:
        """The Optuna parameter that gives `value`, or None when the space does not hold it."""
        if self.kind in ("ordinal", "categorical"):
            if value not in self.values:
                return None
            return self.values.index(value) if self.kind == "ordinal" else value
        return value if self.low <= value <= self.high else None

    def describe(self) -> dict[str, Any]:
        """JSON-ready, as a space file writes it (also what a resumed study is compared on)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in ("int", "float"):
            out.update(range=[self.low, self.high], log=self.log)
        else:
            out["values"] = list(self.values)
        if self.prior is not None:
            out["prior"] = self.prior
        return out

    def draw(self, rng: np.random.RandomState, use_prior: bool, avoid: Any = None) -> Any:
        """A random Optuna parameter: uniform (on the log scale for `log`), or for an int or
        float with a prior, normal around it (a fifth of the range wide). An ordinal or
        categorical knob draws any of its values but the parameter `avoid` (a knob moved away
        from its starting point moves)."""
        if self.kind in ("categorical", "ordinal"):
            params = list(range(len(self.values))) if self.kind == "ordinal" else self.values
            choices = [p for p in params if p != avoid] or params
            return choices[rng.randint(len(choices))]
        if self.kind == "float":
            a, b = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        elif self.log:  # an int: floor(exp(x)), each integer its log share
            a, b = math.log(self.low), math.log(self.high + 1)
        else:  # a linear int: round(x), each integer an equal share
            a, b = self.low - 0.5, self.high + 0.5
        if use_prior and self.prior is not None:
            centre = self.prior
            if self.log:  # an int's share is [log p, log(p + 1)]
                centre = math.log(centre + 0.5 if self.kind == "int" else centre)
            x = min(max(rng.normal(centre, (b - a) / 5), a), b)
        else:
            x = rng.uniform(a, b)
        if self.kind == "float":
            return min(max(math.exp(x) if self.log else x, self.low), self.high)
        v = math.floor(math.exp(x)) if self.log else round(x)
        return int(min(max(v, self.low), self.high))


def _pipeline_types() -> dict[str, Any]:
    return typing.get_type_hints(RduPipeline)


def default_space() -> list[Knob]:
    """The lowering's knobs, read from the pipeline's option dataclass: booleans and `Literal`
    options are categorical; an integer in :data:`AUTO_RANGES` is ordinal over its default
    (-1, automatic) and those powers of two; an integer whose default d is a power of two is
    ordinal over the powers of two from d/8 to 8d; another positive integer an integer range
    d/8..8d (log); a non-positive integer (a sentinel such as `prefetch=-1`) d..d+8; a float
    d/8..8d (log).
    Free-text options (`hw`) are not searched."""
    types = _pipeline_types()
    knobs = []
    for f in fields(RduPipeline):
        if f.name in NOT_SEARCHED:
            continue
        default: Any = f.default  # every pipeline option has a default (it is a CLI option)
        kind = types[f.name]
        if kind is bool:
            knobs.append(Knob(f.name, "categorical", values=(False, True)))
        elif typing.get_origin(kind) is Literal:
            knobs.append(Knob(f.name, "categorical", values=typing.get_args(kind)))
        elif kind is int and f.name in AUTO_RANGES:
            low, high = AUTO_RANGES[f.name]
            powers = [1 << i for i in range(low.bit_length() - 1, high.bit_length())]
            knobs.append(Knob(f.name, "ordinal", values=(default, *powers)))
        elif kind is int and default > 0 and default & (default - 1) == 0:
            powers = {max(1, default >> i) for i in range(4)} | {default << i for i in range(4)}
            knobs.append(Knob(f.name, "ordinal", values=tuple(sorted(powers))))
        elif kind is int and default > 0:
            knobs.append(Knob(f.name, "int", max(1, default // 8), default * 8, log=True))
        elif kind is int:
            knobs.append(Knob(f.name, "int", default, default + 8))
        elif kind is float and default > 0:
            knobs.append(Knob(f.name, "float", default / 8, default * 8, log=True))
    return knobs


def default_hardware_space(preset: HardwarePreset) -> list[Knob]:
    """:data:`DEFAULT_HARDWARE_KNOBS`, each from half to twice the preset's value (log)."""
    knobs = []
    for name in DEFAULT_HARDWARE_KNOBS:
        value = getattr(preset, name)
        if isinstance(value, int):
            knobs.append(Knob(HW_PREFIX + name, "int", max(1, value // 2), value * 2, log=True))
        else:
            knobs.append(Knob(HW_PREFIX + name, "float", value / 2, value * 2, log=True))
    return knobs


def parse_space(
    spec: Any, where: str, *, hardware: bool = False
) -> tuple[list[Knob], dict[str, Any]]:
    """A space file's content (a mapping: knob name -> `{kind, range | values, log, prior}`,
    or a bare value, which fixes the knob) -> `(knobs, fixed values)`. Names are pipeline
    options (dashed or not) or `hw.<figure>`; in a hardware space file (`hardware`) figure
    names need no prefix. Every mistake is a TuneError naming `where` and the knob."""
    if not isinstance(spec, dict) or not spec:
        raise TuneError(f"{where}: expected a mapping of knob names to their ranges")
    types = _pipeline_types()
    knobs: list[Knob] = []
    fixed: dict[str, Any] = {}
    for raw_name, entry in spec.items():
        name = _knob_name(str(raw_name), where, hardware)
        at = f"{where}: knob {raw_name}"
        if isinstance(entry, list):
            raise TuneError(
                f"{at}: a bare value fixes the knob, got the list {_shown(entry)} "
                "(to search values: {values: [...]})"
            )
        if not isinstance(entry, dict):
            fixed[name] = _check_value(name, entry, at, types)
            continue
        unknown = set(entry) - {"kind", "range", "values", "log", "prior"}
        if unknown:
            raise TuneError(f"{at}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        kind = entry.get("kind", "categorical" if "values" in entry else "int")
        if kind not in KINDS:
            raise TuneError(f"{at}: kind must be one of {', '.join(KINDS)}, got {_shown(kind)}")
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise TuneError(f"{at}: log must be true or false")
        if kind in ("int", "float"):
            bounds = entry.get("range")
            if isinstance(bounds, list):  # YAML 1.1 reads 1.0e12 (no exponent sign) as text
                bounds = [_yaml_number(b) for b in bounds]
            if (
                not isinstance(bounds, list)
                or len(bounds) != 2
                or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
            ):
                raise TuneError(f"{at}: range must be [low, high] (two numbers)")
            low, high = bounds
            if kind == "int" and not all(float(b).is_integer() for b in bounds):
                raise TuneError(f"{at}: an int range needs integers, got [{low}, {high}]")
            if not low < high:
                raise TuneError(f"{at}: range needs low < high, got [{low}, {high}]")
            if log and low <= 0:
                raise TuneError(f"{at}: a log scale needs a positive range, got [{low}, {high}]")
            if kind == "int":
                low, high = int(low), int(high)
            knob = Knob(name, kind, low, high, log=log)
        else:
            values = entry.get("values")
            if not isinstance(values, list) or not values or "range" in entry:
                raise TuneError(f"{at}: a {kind} knob needs values: [a list], and no range")
            if log:
                raise TuneError(f"{at}: log applies to int and float ranges only")
            checked = tuple(_check_value(name, v, at, types) for v in values)
            if len(set(checked)) != len(checked):
                raise TuneError(f"{at}: values repeat")
            knob = Knob(name, kind, values=checked)
        if "prior" in entry:
            prior = _check_value(name, entry["prior"], at, types)
            if knob.param(prior) is None:
                raise TuneError(f"{at}: prior {prior} is outside the knob's range or values")
            knob = replace(knob, prior=prior)
        knobs.append(knob)
    return knobs, fixed


def _yaml_number(value: Any) -> Any:
    """`value`, or the number a text such as `1.0e12` spells (else the text, refused later)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _knob_name(raw: str, where: str, hardware: bool) -> str:
    name = raw.replace("-", "_")
    if hardware and not name.startswith(HW_PREFIX):
        name = HW_PREFIX + name
    if name.startswith(HW_PREFIX):
        figure = name[len(HW_PREFIX) :]
        if figure not in HardwarePreset.figures():
            raise TuneError(
                f"{where}: unknown hardware figure {figure}; known: "
                f"{', '.join(HardwarePreset.figures())}"
            )
        return name
    options = [f.name for f in fields(RduPipeline)]
    if name not in options or name == "hw_overrides":
        raise TuneError(
            f"{where}: unknown knob {raw}; rdu-pipeline options: "
            f"{', '.join(o.replace('_', '-') for o in options if o != 'hw_overrides')} "
            f"(hardware figures: hw.<figure>)"
        )
    return name


def _check_value(name: str, value: Any, at: str, types: dict[str, Any]) -> Any:
    """`value` checked against the knob's type (a pipeline option's, or a number for a
    hardware figure)."""
    kind = types.get(name, float)
    ok = (
        isinstance(value, bool)
        if kind is bool
        else value in typing.get_args(kind)
        if typing.get_origin(kind) is Literal
        else isinstance(value, str)
        if kind is str
        else isinstance(value, int) and not isinstance(value, bool)
        if kind is int
        else isinstance(value, int | float) and not isinstance(value, bool)
    )
    if not ok:
        expected = (
            "one of " + ", ".join(map(str, typing.get_args(kind)))
            if typing.get_origin(kind) is Literal
            else {bool: "true or false", str: "text", int: "an integer"}.get(kind, "a number")
        )
        raise TuneError(f"{at}: expected {expected}, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A value of a space file as its file would write it (JSON), never a Python repr."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


# ----------------------------------------------------------------------------------------------
# Objectives
# ----------------------------------------------------------------------------------------------


def _peak(resource: str) -> Callable[[dict, Program], float]:
    def peak(summary: dict, program: Program) -> float:
        return max(getattr(s.resources, resource) for k in program.kernels for s in k.sections)

    return peak


# Objectives that are not keys of the simulator's report, derived from it and the program.
DERIVED_OBJECTIVES: dict[str, tuple[str, Callable[[dict, Program], float]]] = {
    "pcus": ("PCUs per socket of the largest kernel section (chip occupied)", _peak("pcus")),
    "pmus": ("PMUs per socket of the largest kernel section", _peak("pmus")),
    "sram_bytes": ("PMU SRAM bytes per socket of the largest section", _peak("sram_bytes")),
    "socket_ms": (
        "sockets x ms_per_token (the machine time a token costs)",
        lambda s, p: s["sockets"] * s["ms_per_token"],
    ),
}
# Report keys where more is better; every other objective is minimized.
MAXIMIZED = frozenset(
    {
        "tokens_per_s",
        "bandwidth_fraction_of_peak",
        "roofline_fraction",
        "achieved_bandwidth",
        "hbm_busy_fraction",
    }
)
DEFAULT_OBJECTIVES = ("ms_per_token", "pcus")


@dataclass(frozen=True)
class Objective:
    name: str
    direction: Literal["minimize", "maximize"]

    def measure(self, summary: dict, program: Program) -> float:
        if self.name in DERIVED_OBJECTIVES:
            return float(DERIVED_OBJECTIVES[self.name][1](summary, program))
        return float(summary[self.name])


def parse_objectives(text: str, report_keys: Iterable[str]) -> list[Objective]:
    """`ms_per_token,pcus` (a name may say `max:` or `min:` to override the direction) ->
    objectives; names are numeric keys of the simulator's report or :data:`DERIVED_OBJECTIVES`."""
    known = sorted(set(report_keys) | set(DERIVED_OBJECTIVES))
    objectives = []
    for item in (t.strip() for t in text.split(",")):
        direction, _, name = item.rpartition(":")
        if direction not in ("", "min", "max"):
            raise TuneError(f"--objectives: {item}: a direction is min: or max:")
        if name not in known:
            raise TuneError(
                f"--objectives: unknown objective {name or item!r}; known: {', '.join(known)}"
            )
        if not direction:
            direction = "max" if name in MAXIMIZED else "min"
        objectives.append(Objective(name, "maximize" if direction == "max" else "minimize"))
    if len({o.name for o in objectives}) != len(objectives):
        raise TuneError("--objectives: an objective is named twice")
    return objectives


# ----------------------------------------------------------------------------------------------
# One trial: knobs -> pipeline -> program -> timing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """What is tuned, picklable for worker processes: the model and step shape, the pipeline
    options not searched (`base`), the space and the objectives."""

    model: str
    batch: int
    context: int | None
    layers: int | None
    base: RduPipeline
    space: tuple[Knob, ...]
    objectives: tuple[Objective, ...]

    def describe(self) -> dict[str, Any]:
        """What a resumed study must match."""
        return {
            "model": self.model,
            "batch": self.batch,
            "context": self.context,
            "layers": self.layers,
            "base": self.base.spec(),
            "space": {k.name: k.describe() for k in self.space},
            "objectives": [[o.name, o.direction] for o in self.objectives],
        }

    def pipeline(self, values: dict[str, Any]) -> RduPipeline:
        """The base options with the knobs' values; `hw.*` values join the base's overrides."""
        options = {k: v for k, v in values.items() if not k.startswith(HW_PREFIX)}
        hardware = [
            f"{k[len(HW_PREFIX) :]}={v!r}" for k, v in values.items() if k.startswith(HW_PREFIX)
        ]
        if hardware:
            options["hw_overrides"] = ",".join(filter(None, [self.base.hw_overrides, *hardware]))
        return replace(self.base, **options)


@dataclass(frozen=True)
class Evaluation:
    """A trial's outcome: the objectives' values, or why the point is infeasible."""

    objectives: dict[str, float] | None
    reason: str | None = None
    resolved: dict[str, int] | None = None  # :func:`resolved_parallelism`, when compiled


def _refusals() -> tuple[type[BaseException], ...]:
    """What makes a point infeasible: the compiler's refusals (passes, fit checks, program
    validation), a hardware figure the preset rejects, a simulation the timing engine refuses
    (its reason is reported with the others)."""
    from xdsl.utils.exceptions import DiagnosticException

    from rdu_compiler.simulator.timing import SimulationError

    return (DiagnosticException, ProgramError, PresetError, SimulationError)


class Evaluator:
    """Compiles and times pipelines of one problem, keeping each prepared module (the passes
    before the lowering) for the next trial with the same options of those passes."""

    def __init__(self, problem: Problem, *, remember: bool = True):
        from rdu_compiler.frontend.config import load_model_config

        self.problem = problem
        self._config = load_model_config(problem.model, layers=problem.layers)
        self._step: ModuleOp | None = None  # the decode step, built once
        self._prepared: dict[tuple, Any] = {}
        self._results: dict[str, Evaluation] = {}
        self._remember = remember

    def evaluate(self, pipeline: RduPipeline) -> Evaluation:
        """The objectives of `pipeline`, or why it is infeasible. A point proposed again is
        not compiled again (compiling and timing are deterministic) unless `remember` is off
        (bench/tune.py times every trial)."""
        spec = pipeline.spec()
        if not self._remember:
            return self._evaluate(pipeline)
        if spec not in self._results:
            self._results[spec] = self._evaluate(pipeline)
        return self._results[spec]

    def _evaluate(self, pipeline: RduPipeline) -> Evaluation:
        from rdu_compiler.simulator.report import summarize
        from rdu_compiler.simulator.timing import simulate

        options = pipeline.prepare_options()
        key = tuple(options.items())
        try:
            if key not in self._prepared:
                try:
                    self._prepared[key] = prepare_module(self._decode_step().clone(), **options)
                except _refusals() as error:
                    self._prepared[key] = error
                _freeze_long_lived()
            prepared = self._prepared[key]
            if isinstance(prepared, BaseException):
                raise prepared
            program = lower_to_program(prepared.clone(), **pipeline.lowering_options())
            preset = compiled_hardware(program)
            summary = summarize(program, preset, simulate(program, preset))
        except _refusals() as error:
            return Evaluation(None, str(error).strip().splitlines()[0])
        return Evaluation(
            {o.name: o.measure(summary, program) for o in self.problem.objectives},
            resolved=resolved_parallelism(pipeline, program),
        )

    def _decode_step(self) -> ModuleOp:
        """The llm module of the problem's decode step, which every preparation starts from
        (a copy of it: copying costs half of building it again)."""
        if self._step is None:
            from rdu_compiler.frontend.builder import build_decode_step

            self._step = build_decode_step(
                self._config, batch=self.problem.batch, context=self.problem.context
            )
        return self._step


# The units whose PCU count a knob left at -1 (the allocation's choice) sets: what
# :func:`resolved_parallelism` reads back.
AUTO_UNITS = {
    "matmul_par": ("linear", "moe_partial"),
    "attention_par": ("attention", "attention_partial"),
}


def resolved_parallelism(pipeline: RduPipeline, program: Program) -> dict[str, int]:
    """For each knob of :data:`AUTO_UNITS` the pipeline leaves at -1, the PCUs the allocation
    gave its ops: the most units of one of them in the section with the most PCUs (the one
    the `pcus` objective reports). A search moves such a knob from -1 to the values beside it
    (`tools/local_search.py`) rather than to an extreme."""
    largest = max((s for k in program.kernels for s in k.sections), key=lambda s: s.resources.pcus)
    resolved = {}
    for name, ops in AUTO_UNITS.items():
        counts = [u.count for u in largest.units if isinstance(u, Pcu) and u.op in ops]
        if getattr(pipeline, name) == -1 and counts:
            resolved[name] = max(counts)
    return resolved


def _freeze_long_lived() -> None:
    """Exempt what lives for the whole study (the prepared modules, the imported code and
    presets) from Python's cyclic garbage collector. Each trial builds and drops a lowered
    module full of reference cycles, so full collections come about once a trial; they scanned
    every long-lived object too, a quarter of a 70B trial's CPU time (0.25 s of 0.7-0.9 s),
    against 0.07 s once these are frozen. Collected first, so no garbage is kept."""
    gc.collect()
    gc.freeze()


def report_keys() -> list[str]:
    """The numeric keys of the simulator's report (objective names), from a tiny program."""
    from rdu_compiler.lowering.pipeline import compile_program
    from rdu_compiler.simulator.report import summarize
    from rdu_compiler.simulator.timing import simulate

    program = compile_program("tiny-llama", layers=1, context=8)
    preset = compiled_hardware(program)
    summary = summarize(program, preset, simulate(program, preset))
    return [k for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)]


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------

SAMPLERS = ("tpe", "nsga2", "random")
MOVED_SHARE = 2  # knobs a startup trial moves from the centre, on average
CLIMB_SHARE = 1 / 6  # of the budget: the last trials, the local search's
PARETO_SHARE = 1 / 2  # of the budget: the first trials, the Pareto local search's
# The weight of TPE's prior (a flat density over the space) beside the good trials' kernels
# (Optuna's default: 1.0; a deprecated argument since Optuna 4.9, kept by the pin below 6).
# With the few good trials of a short budget, a full weight makes half of TPE's proposals
# nearly random; on bench/tune.py's llama-3.1-8b/8, 0.3 took the median trials to reach random
# search's final hypervolume from 0.30 to 0.22 of the budget.
TPE_PRIOR_WEIGHT = 0.3


class KnobSampler(optuna.samplers.BaseSampler):
    """The first `startup` trials (module docstring), then `model`; with no model, random
    search throughout (priors and the default ignored: the baseline knows nothing).

    A startup trial is the `centre` point (the default with the priors: the cost model's
    automatic allocation is a strong prior) with a few knobs moved, each with probability
    :data:`MOVED_SHARE` of the knobs and at least one: a local design, since a random point
    of this space usually moves some knob far from its default (a kernel per op, no looping,
    one buffer) and says little about the others."""

    def __init__(
        self,
        space: Sequence[Knob],
        seed: int,
        startup: int,
        model: optuna.samplers.BaseSampler | None,
        centre: dict[str, Any] | None = None,
        climb_from: int | None = None,
        pareto_until: int = 0,
    ):
        self._space = tuple(space)
        self._knobs = {k.name: k for k in space}
        self._seed, self._startup, self._model = seed, startup, model
        self._centre = centre or {}
        self._climb_from = climb_from
        self._pareto_until = pareto_until
        self._proposals: dict[int, dict[str, Any] | None] = {}

    def _modelled(self, trial: FrozenTrial) -> bool:
        return self._model is not None and trial.number >= self._startup

    def _proposal(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any] | None:
        """The local searches' point for `trial`, or None (the startup design or the model
        proposes): before trial `pareto_until`, the Pareto local search's
        (`tools/pareto_search.py`); from trial `climb_from` on, the closing climb's
        (`tools/local_search.py`); none without a model, for a queued trial, or when the
        search has no point left. Recorded in the trial (`local_search.PROPOSED_ATTR`), so
        that parallel workers see the point before the trial has set its parameters."""
        if self._model is None or "fixed_params" in trial.system_attrs:
            return None
        if trial.number not in self._proposals:
            trials = study.get_trials(deepcopy=False)
            point: dict[str, Any] | None = None
            attrs: dict[str, Any] = {}
            if self._climb_from is not None and trial.number >= self._climb_from:
                point = next(
                    local_search.moves(self._space, trials, study.directions, feasible), None
                )
            elif trial.number < self._pareto_until:
                proposal = next(iter(self._pareto(study, trials)), None)
                if proposal is not None:
                    point, attrs = proposal.point, {pareto_search.ORIGIN_ATTR: proposal.origin}
            if point is not None:
                for key, value in {local_search.PROPOSED_ATTR: point, **attrs}.items():
                    study._storage.set_trial_system_attr(trial._trial_id, key, value)
            self._proposals[trial.number] = point
        return self._proposals[trial.number]

    def _pareto(
        self, study: optuna.Study, trials: Sequence[FrozenTrial]
    ) -> Iterable[pareto_search.Proposal]:
        """The Pareto local search's points, the objectives in units of the centre point's
        (as the benchmark's hypervolume counts them); none before the centre is evaluated."""
        centre = next(
            (
                t
                for t in trials
                if feasible(t) and all(t.params.get(n) == v for n, v in self._centre.items())
            ),
            None,
        )
        if centre is None:
            return ()
        signs = [1 if d == optuna.study.StudyDirection.MINIMIZE else -1 for d in study.directions]

        def loss(trial: FrozenTrial) -> tuple[float, ...]:
            return tuple(
                v / s if sign > 0 else REFERENCE - v / s
                for v, s, sign in zip(trial.values, centre.values, signs, strict=True)
            )

        return pareto_search.proposals(self._space, trials, loss, feasible, REFERENCE)

    def infer_relative_search_space(self, study, trial):
        if not self._modelled(trial) or self._proposal(study, trial) is not None:
            return {}
        return self._model.infer_relative_search_space(study, trial)  # type: ignore[union-attr]

    def sample_relative(self, study, trial, search_space):
        if not self._modelled(trial) or self._proposal(study, trial) is not None:
            return {}
        return self._model.sample_relative(study, trial, search_space)  # type: ignore[union-attr]

    def sample_independent(self, study, trial, param_name, param_distribution):
        proposal = self._proposal(study, trial)
        if proposal is not None:
            return proposal[param_name]
        if self._modelled(trial):
            return self._model.sample_independent(  # type: ignore[union-attr]
                study, trial, param_name, param_distribution
            )
        # one generator per (seed, trial, knob): reproducible whatever the order of sampling
        rng = self._rng(trial, param_name)
        knob = self._knobs[param_name]
        if self._model is None:
            return knob.draw(rng, use_prior=False)
        centre = self._centre.get(param_name)
        if centre is not None and param_name not in self._moved(trial):
            return centre
        return knob.draw(rng, use_prior=True, avoid=centre)

    def _rng(self, trial: FrozenTrial, salt: str) -> np.random.RandomState:
        digest = hashlib.sha256(f"{self._seed}:{trial.number}:{salt}".encode()).digest()
        return np.random.RandomState(int.from_bytes(digest[:4], "little"))

    def _moved(self, trial: FrozenTrial) -> set[str]:
        """The knobs a startup trial moves from the centre (a generator per seed and trial)."""
        names = sorted(self._knobs)
        rng = self._rng(trial, "moved")
        share = min(1.0, MOVED_SHARE / len(names))
        moved = {n for n, u in zip(names, rng.uniform(size=len(names)), strict=True) if u < share}
        return moved or {names[rng.randint(len(names))]}

    def before_trial(self, study, trial):
        if self._model is not None:
            self._model.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        if self._model is not None:
            self._model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self._model is not None:
            self._model.reseed_rng()


@dataclass(frozen=True)
class Phases:
    """How a model-guided search spends its budget: `startup` trials around the default point
    (:class:`KnobSampler`), then the model, and from trial `climb_from` on (None: never) the
    local search (`tools/local_search.py`)."""

    startup: int
    climb_from: int | None = None
    pareto_until: int = 0


def phases(
    trials: int, startup: int | None = None, climb: int | None = None, pareto: int | None = None
) -> Phases:
    """The phases of a budget of `trials`: `startup` (default trials/10, 4 to 10), the first
    `pareto` trials the Pareto local search's (default :data:`PARETO_SHARE` of the budget; 0:
    none) and the last `climb` trials climbing (default :data:`CLIMB_SHARE`; 0: none)."""
    startup = startup or max(4, min(10, trials // 10))
    climb = round(trials * CLIMB_SHARE) if climb is None else climb
    pareto = round(trials * PARETO_SHARE) if pareto is None else pareto
    return Phases(startup, trials - climb if climb > 0 else None, pareto)


def make_sampler(name: str, problem: Problem, seed: int, phases: Phases) -> KnobSampler:
    """`tpe` (multi-objective TPE, multivariate, constant liar for parallel workers), `nsga2`
    or `random`; feasibility comes from each trial's constraints (`Trial.set_constraint`).
    Random search ignores the phases (the baseline knows nothing)."""
    startup = phases.startup
    model: optuna.samplers.BaseSampler | None = None
    if name == "tpe":
        with warnings.catch_warnings():  # prior_weight: deprecated, not gone (see the pin)
            warnings.filterwarnings("ignore", "`prior_weight`", FutureWarning)
            model = optuna.samplers.TPESampler(
                n_startup_trials=startup,
                multivariate=True,
                constant_liar=True,
                seed=seed,
                prior_weight=TPE_PRIOR_WEIGHT,
            )
    elif name == "nsga2":
        model = optuna.samplers.NSGAIISampler(population_size=max(4, startup), seed=seed)
    centre = _initial_points(problem)[-1]
    return KnobSampler(
        problem.space, seed, startup, model, centre, phases.climb_from, phases.pareto_until
    )


# ----------------------------------------------------------------------------------------------
# Studies: storage, trials, workers
# ----------------------------------------------------------------------------------------------

PROBLEM_ATTR = "rdu_tune.problem"
FEASIBLE = "feasible"  # the constraint: 0 feasible, 1 refused by the compiler


def open_storage(url: str | None) -> optuna.storages.BaseStorage:
    """None: in memory. A URL (`sqlite:///f.db`, `postgresql://user:pw@host/db`): a database
    (RDB storage); any other text: a journal file (safe for several local processes). Bad URLs
    and unreachable servers are TuneErrors."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(url))
        except OSError as error:
            raise TuneError(f"--storage {url}: {error.strerror}") from None
    if url.startswith(("postgresql", "postgres")):
        try:
            import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql://)
        except ImportError:
            raise TuneError(
                "--storage postgresql://... needs the psycopg driver: "
                "pip install 'rdu-compiler[postgres]'"
            ) from None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as error:  # SQLAlchemy: bad URL, unreachable server, bad credentials
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TuneError(f"--storage: cannot open {_redact(url)}: {message}") from None


def _redact(url: str) -> str:
    """The URL without its password (it may be printed)."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':')[0]}:***@{host}"


def open_study(
    problem: Problem, storage: optuna.storages.BaseStorage, name: str, sampler: KnobSampler
) -> optuna.Study:
    """Create the study (recording the problem, queueing the default point and the priors'
    point) or, when it exists, load it and check that it was made for the same problem.
    Creation is atomic in the storage, so of several workers starting at once exactly one
    creates; the others wait for the problem record."""
    directions: list[Literal["minimize", "maximize"]] = [o.direction for o in problem.objectives]
    described = problem.describe()
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=directions, sampler=sampler
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        for _ in range(100):
            if PROBLEM_ATTR in study.user_attrs:
                break
            time.sleep(0.1)
        recorded = study.user_attrs.get(PROBLEM_ATTR)
        if recorded != described:
            raise TuneError(
                f"study {name!r} was made for another problem "
                f"({_difference(recorded, described)}); give a new --study name"
            ) from None
        return study
    study.set_user_attr(PROBLEM_ATTR, described)
    for point in _initial_points(problem):
        study.enqueue_trial(point, skip_if_exists=True)
    return study


def _difference(recorded: dict | None, described: dict) -> str:
    if recorded is None:
        return "no rdu-tune problem recorded"
    keys = [k for k in described if recorded.get(k) != described[k]]
    return "different " + ", ".join(keys)


def _initial_points(problem: Problem) -> list[dict[str, Any]]:
    """The default point (every knob at the pipeline's default, where the space holds it), and
    the priors' point (knobs with a prior at it) when the space has priors."""
    preset = get_preset(problem.base.hw).with_overrides(problem.base.hw_overrides)
    points = []
    default_point = {}
    for knob in problem.space:
        if knob.name.startswith(HW_PREFIX):
            param = knob.param(getattr(preset, knob.name[len(HW_PREFIX) :]))
        else:
            param = knob.param(getattr(problem.base, knob.name))
        if param is not None:
            default_point[knob.name] = param
    points.append(default_point)
    priors = {k.name: k.param(k.prior) for k in problem.space if k.prior is not None}
    if priors:
        points.append({**default_point, **priors})
    return points


def run_trial(trial: optuna.Trial, problem: Problem, evaluator: Evaluator) -> list[float]:
    """Sample the knobs, compile and time; an infeasible point gets constraint 1 and the worst
    value of each objective (so no sampler mistakes it for a good one)."""
    values = {k.name: k.suggest(trial) for k in problem.space}
    pipeline = problem.pipeline(values)
    trial.set_user_attr("pipeline", pipeline.spec())
    trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
    outcome = evaluator.evaluate(pipeline)
    if outcome.objectives is None:
        trial.set_user_attr("infeasible", outcome.reason)
        trial.set_constraint(FEASIBLE, 1.0)
        return [math.inf if o.direction == "minimize" else -math.inf for o in problem.objectives]
    trial.set_constraint(FEASIBLE, 0.0)
    trial.set_user_attr("objectives", outcome.objectives)
    if outcome.resolved:
        trial.set_user_attr(local_search.RESOLVED_ATTR, outcome.resolved)
    return [outcome.objectives[o.name] for o in problem.objectives]


def counted(study: optuna.Study) -> int:
    """The trials that count towards the budget: finished or running (not the failed ones, an
    interrupted trial, which a resumed run does again; not those only queued)."""
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def work(
    study: optuna.Study,
    problem: Problem,
    evaluator: Evaluator,
    total: int,
    share: int | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
) -> int:
    """Run trials until the study holds `total` (:func:`counted`; and, given a `share`, this
    worker ran that many): ask, evaluate, tell. A trial interrupted (Ctrl-C) is told failed,
    never left running. Returns the trials this worker ran."""
    done = 0
    while share is None or done < share:
        if counted(study) >= total:
            break
        trial = study.ask()
        try:
            values = run_trial(trial, problem, evaluator)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        frozen = study.tell(trial, values)
        done += 1
        if on_trial is not None:
            on_trial(frozen)
    return done


def feasible(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and trial.constraints.get(FEASIBLE, 1.0) <= 0


# ----------------------------------------------------------------------------------------------
# Hypervolume
# ----------------------------------------------------------------------------------------------

REFERENCE = 2.0  # the hypervolume's reference point, per objective, in units of the default


def losses(
    values: Sequence[float], objectives: Sequence[Objective], scale: Sequence[float]
) -> list[float]:
    """Objective values in units of `scale` (the default's figures), lower better: a minimized
    objective v/s, a maximized one 2 - v/s; the default sits at 1 on every axis and the
    reference point at 2 (twice the default's cost, or nothing of what it maximizes)."""
    return [
        v / s if o.direction == "minimize" else REFERENCE - v / s
        for v, o, s in zip(values, objectives, scale, strict=True)
    ]


def hypervolume_history(
    trials: Sequence[FrozenTrial], objectives: Sequence[Objective], scale: Sequence[float]
) -> list[float]:
    """The hypervolume (:func:`losses`, reference 2 on every axis) of the feasible trials among
    the first k, for k = 1 .. len(trials), in trial-number order."""
    from optuna._hypervolume import compute_hypervolume

    reference = np.full(len(objectives), REFERENCE)
    points: list[list[float]] = []
    history = []
    volume = 0.0
    for trial in sorted(trials, key=lambda t: t.number):
        if feasible(trial):
            loss = losses(trial.values, objectives, scale)
            if all(x < REFERENCE for x in loss):
                points.append(loss)
                volume = float(compute_hypervolume(np.array(points), reference))
        history.append(volume)
    return history


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto front, one trial per distinct pipeline, best first objective first."""
    signs = [1 if d == optuna.study.StudyDirection.MINIMIZE else -1 for d in study.directions]

    def order(trial: FrozenTrial) -> tuple:
        return (*(s * v for s, v in zip(signs, trial.values, strict=True)), trial.number)

    seen: set[str] = set()
    out = []
    for trial in sorted(study.best_trials, key=order):
        pipeline = trial.user_attrs["pipeline"]
        if pipeline not in seen:
            seen.add(pipeline)
            out.append(trial)
    return out
