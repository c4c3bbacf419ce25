"""The one registry of rdu-compiler's dialects, passes and targets.

Exposed to plain `xdsl-opt` through the `xdsl.universe` entry point (pyproject.toml), and read
by `rdu-opt`. Factories import lazily so that starting a driver stays cheap.
"""

from collections.abc import Callable

from xdsl.ir import Dialect
from xdsl.passes import ModulePass
from xdsl.universe import Universe
from xdsl.utils.target import Target


def _llm() -> Dialect:
    from rdu_dialect.llm import LLM

    return LLM


def _dfk() -> Dialect:
    from rdu_dialect.dfk import DFK

    return DFK


def _rdu() -> Dialect:
    from rdu_dialect.rdu import RDU

    return RDU


DIALECTS: dict[str, Callable[[], Dialect]] = {"llm": _llm, "dfk": _dfk, "rdu": _rdu}
PASSES: dict[str, Callable[[], type[ModulePass]]] = {}
TARGETS: dict[str, Callable[[], type[Target]]] = {}

RDU_UNIVERSE = Universe(all_dialects=DIALECTS, all_passes=PASSES, all_targets=TARGETS)
