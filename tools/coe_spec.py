"""The description of a Composition-of-Experts node that `rdu-serve SPEC` reads (YAML or JSON),
checked with a located message for every mistake (``FILE:LINE:COL: key: what is wrong``).

```yaml
name: my-coe                 # optional (default: the file's name)
node: {hardware: sn40l, sockets: 8, launch: software}
experts:
  - {name: expert, model: llama-2-7b, count: 150, seed: 0}   # expert-000 .. expert-149
  - {name: coder, model: ./coder/config.json, weights: ./coder/}
router: {model: llama-3.2-1b, seed: 1}          # a model of its own, run on the node
# router: {policy: trace, cost_ms: 2.0}         # or a stated policy (the trace's expert)
cache: {policy: popularity, prefetch: true}     # lru | popularity
serving: {batch: 1, context: 1024}              # the compiled program's batch and KV length
trace: {requests: 1000, arrival_rate: 2.0, zipf: 1.0, prompt_tokens: [32, 256],
        output_tokens: [32, 256], seed: 0}      # or trace: {file: requests.jsonl}
baselines: [dgx-h100, dgx-a100]
```

`model` is a preset or a config.json / model folder path, `weights` a safetensors file or
folder; relative paths are relative to the description's folder. `count: N` is N experts of
one architecture, named ``NAME-000`` ..., seeded ``seed``, ``seed + 1``, ... (weights are per
expert, so `count` takes no `weights`). Token ranges are a number or ``[min, max]``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from rdu_compiler.tools.cli import UserError

if TYPE_CHECKING:
    from rdu_compiler.simulator.program import LaunchMode

__all__ = ["CoeSpec", "ExpertSpec", "RouterSpec", "SpecError", "load_spec"]

CACHE_POLICIES = ("lru", "popularity")
ROUTER_POLICIES = ("trace",)
LAUNCHES = ("software", "hardware")


class SpecError(UserError):
    """A description that is not valid. A message that starts with its location
    (``FILE:LINE:COL: ...``) is reported as ``FILE:LINE:COL: error: ...``, as the other tools
    report located errors (:func:`tools.cli.describe_error` reads ``span`` and ``msg``)."""

    def __init__(self, text: str):
        super().__init__(text)
        where, _, message = text.partition(": ")
        if re.fullmatch(r".+:\d+:\d+", where):
            self.span, self.msg = _Location(where), message


@dataclass(frozen=True)
class _Location:
    where: str

    def get_location(self) -> str:
        return self.where


@dataclass(frozen=True)
class ExpertSpec:
    name: str
    model: str  # preset name or resolved path
    config: Any  # frontend.config.ModelConfig
    weights: str | None
    seed: int


@dataclass(frozen=True)
class RouterSpec:
    """A router model (``config`` set) or a stated policy with its cost."""

    policy: str | None = None
    cost_ms: float = 0.0
    model: str | None = None
    config: Any = None
    weights: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class TraceSpec:
    requests: int = 1000
    arrival_rate: float = 1.0
    zipf: float = 1.0
    prompt_tokens: tuple[int, int] = (128, 128)
    output_tokens: tuple[int, int] = (128, 128)
    seed: int = 0
    file: str | None = None


@dataclass(frozen=True)
class CoeSpec:
    path: str
    name: str
    hardware: str
    sockets: int
    launch: LaunchMode
    experts: tuple[ExpertSpec, ...]
    router: RouterSpec
    cache_policy: str
    prefetch: bool
    batch: int
    context: int
    trace: TraceSpec
    baselines: tuple[str, ...] = field(default=("dgx-h100", "dgx-a100"))


# -- a YAML tree that remembers where each value was written ---------------------------------


@dataclass(frozen=True)
class _Node:
    value: Any  # dict[str, _Node] | list[_Node] | scalar
    where: str


def _tree(loader: yaml.SafeLoader, node: yaml.Node, path: str) -> _Node:
    where = f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
    if isinstance(node, yaml.MappingNode):
        items: dict[str, _Node] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            key_where = f"{path}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}"
            if not isinstance(key, str):
                raise SpecError(f"{key_where}: keys are names, got {json.dumps(str(key))}")
            if key in items:
                raise SpecError(f"{key_where}: {key} is given twice")
            items[key] = _tree(loader, value_node, path)
        return _Node(items, where)
    if isinstance(node, yaml.SequenceNode):
        return _Node([_tree(loader, child, path) for child in node.value], where)
    return _Node(loader.construct_object(node), where)


def _parse(path: str) -> _Node:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"cannot read '{path}': {error.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file") from None
    if path.endswith(".json"):
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError(f"{path}:{error.lineno}:{error.colno}: not JSON: {error.msg}") from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpecError(f"{path}: the description is empty")
        return _tree(loader, root, path)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise SpecError(f"{where}: not YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not YAML: {error}") from None
    finally:
        loader.dispose()


class _Section:
    """The keys of one mapping, read once each; unknown keys are refused when done."""

    def __init__(self, node: _Node, name: str, known: tuple[str, ...]):
        if not isinstance(node.value, dict):
            raise SpecError(f"{node.where}: {name} must be a mapping")
        self.node, self.name, self.known = node, name, known
        for key, child in node.value.items():
            if key not in known:
                raise SpecError(
                    f"{child.where}: {name}: unknown key {key!r}; known: {', '.join(known)}"
                )

    def has(self, key: str) -> bool:
        return key in self.node.value

    def where(self, key: str) -> str:
        return self.node.value[key].where if key in self.node.value else self.node.where

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.where(key)}: {self.name}.{key}: {message}")

    def raw(self, key: str) -> _Node | None:
        return self.node.value.get(key)

    def int(self, key: str, default: int | None = None, *, low: int = 0) -> int:
        node = self.raw(key)
        if node is None:
            if default is None:
                raise self.error(key, "is required")
            return default
        if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value < low:
            raise self.error(key, f"must be an integer >= {low}, got {_show(node.value)}")
        return node.value

    def number(self, key: str, default: float, *, positive: bool = False) -> float:
        node = self.raw(key)
        if node is None:
            return default
        v = node.value
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < 0 or (positive and v == 0):
            want = "a number > 0" if positive else "a number >= 0"
            raise self.error(key, f"must be {want}, got {_show(v)}")
        return float(v)

    def str(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        node = self.raw(key)
        if node is None:
            if default is None:
                raise self.error(key, "is required")
            return default
        if not isinstance(node.value, str) or not node.value:
            raise self.error(key, f"must be a name, got {_show(node.value)}")
        if choices and node.value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {node.value!r}")
        return node.value

    def bool(self, key: str, default: bool) -> bool:
        node = self.raw(key)
        if node is None:
            return default
        if not isinstance(node.value, bool):
            raise self.error(key, f"must be true or false, got {_show(node.value)}")
        return node.value

    def tokens(self, key: str, default: tuple[int, int]) -> tuple[int, int]:
        node = self.raw(key)
        if node is None:
            return default
        v = node.value
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            return (v, v)
        if isinstance(v, list) and len(v) == 2:
            low, high = (c.value for c in v)
            if all(isinstance(x, int) and not isinstance(x, bool) for x in (low, high)):
                if 1 <= low <= high:
                    return (low, high)
        raise self.error(key, f"must be a token count >= 1 or [min, max], got {_show(v)}")


def _show(value: Any) -> str:
    """A value as the user wrote it (never a Python repr of our tree)."""
    if isinstance(value, _Node):
        return _show(value.value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value, default=str)


def _resolve(base: Path, text: str) -> str:
    """A preset name as it is, else a path relative to the description's folder."""
    from rdu_compiler.frontend.config import list_presets

    if text.strip().lower() in list_presets():
        return text
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else base / path)


def _model(section: _Section, base: Path, layers: int | None = None) -> tuple[str, Any]:
    from rdu_compiler.frontend.config import ConfigError, load_model_config

    model = _resolve(base, section.str("model"))
    try:
        return model, load_model_config(model, layers=layers)
    except (ConfigError, OSError) as error:
        raise section.error("model", str(error)) from None


def _weights(section: _Section, base: Path) -> str | None:
    if not section.has("weights"):
        return None
    weights = _resolve(base, section.str("weights"))
    if not Path(weights).exists():
        raise section.error("weights", f"no such file or folder '{weights}'")
    return weights


def _experts(node: _Node | None, where: str, base: Path) -> tuple[ExpertSpec, ...]:
    if node is None:
        raise SpecError(f"{where}: experts is required (a list of experts)")
    if not isinstance(node.value, list) or not node.value:
        raise SpecError(f"{node.where}: experts must be a non-empty list")
    experts: list[ExpertSpec] = []
    configs: dict[str, Any] = {}
    for i, item in enumerate(node.value):
        s = _Section(item, f"experts[{i}]", ("name", "model", "weights", "seed", "count"))
        name = s.str("name")
        count = s.int("count", 1, low=1)
        if count > 1 and s.has("weights"):
            raise s.error("weights", "experts with count > 1 are seeded (one checkpoint each)")
        seed = s.int("seed", i)
        model = _resolve(base, s.str("model"))
        config = configs.get(model) or _model(s, base)[1]
        configs[model] = config
        weights = _weights(s, base)
        width = len(str(count - 1))
        for k in range(count):
            label = f"{name}-{k:0{max(width, 3)}d}" if count > 1 else name
            experts.append(ExpertSpec(label, model, config, weights, seed + k))
    seen: dict[str, int] = {}
    for i, e in enumerate(experts):
        if e.name in seen:
            raise SpecError(f"{node.where}: experts: two experts are named {e.name!r}")
        seen[e.name] = i
    return tuple(experts)


def load_spec(path: str) -> CoeSpec:
    """The description at ``path``, checked (module docstring)."""
    root = _parse(path)
    top = _Section(
        root,
        "description",
        ("name", "node", "experts", "router", "cache", "serving", "trace", "baselines"),
    )
    base = Path(path).parent

    def sub(key: str, known: tuple[str, ...]) -> _Section:
        node = top.raw(key) or _Node({}, top.where(key))
        return _Section(node, key, known)

    node = sub("node", ("hardware", "sockets", "launch"))
    hardware = node.str("hardware", "sn40l")
    sockets = node.int("sockets", 1, low=1)
    launch = cast("LaunchMode", node.str("launch", "software", LAUNCHES))  # one of LAUNCHES
    experts = _experts(top.raw("experts"), root.where, base)

    r = sub("router", ("model", "weights", "seed", "policy", "cost_ms"))
    if top.raw("router") is None:
        router = RouterSpec(policy="trace")  # the trace's expert, at no cost: say so to time one
    elif r.has("model") == r.has("policy"):
        raise SpecError(
            f"{r.node.where}: router: give a model (a router model of its own) or a policy "
            f"({', '.join(ROUTER_POLICIES)}) with its cost_ms"
        )
    elif r.has("model"):
        if r.has("cost_ms"):
            raise r.error("cost_ms", "a router model is timed on the node: drop cost_ms")
        model, config = _model(r, base)
        router = RouterSpec(
            model=model, config=config, weights=_weights(r, base), seed=r.int("seed", 0)
        )
    else:
        for key in ("weights", "seed"):
            if r.has(key):
                raise r.error(key, "a router policy has no weights: give a model instead")
        router = RouterSpec(
            policy=r.str("policy", choices=ROUTER_POLICIES), cost_ms=r.number("cost_ms", 0.0)
        )

    cache = sub("cache", ("policy", "prefetch"))
    cache_policy, prefetch = (
        cache.str("policy", "lru", CACHE_POLICIES),
        cache.bool("prefetch", False),
    )
    serving = sub("serving", ("batch", "context"))
    batch = serving.int("batch", 1, low=1)
    limit = min(e.config.max_position_embeddings for e in experts)
    context = serving.int("context", min(limit, 4096), low=1)
    if context > limit:
        raise serving.error(
            "context", f"{context} exceeds the experts' max_position_embeddings ({limit})"
        )

    t = sub(
        "trace",
        ("requests", "arrival_rate", "zipf", "prompt_tokens", "output_tokens", "seed", "file"),
    )
    if t.has("file"):
        for key in ("arrival_rate", "zipf", "prompt_tokens", "output_tokens", "seed"):
            if t.has(key):
                raise t.error(key, "a trace file gives the requests: drop it (or drop file)")
        trace = TraceSpec(file=_resolve(base, t.str("file")), requests=t.int("requests", 0, low=0))
    else:
        trace = TraceSpec(
            requests=t.int("requests", 1000, low=1),
            arrival_rate=t.number("arrival_rate", 1.0, positive=True),
            zipf=t.number("zipf", 1.0),
            prompt_tokens=t.tokens("prompt_tokens", (128, 128)),
            output_tokens=t.tokens("output_tokens", (128, 128)),
            seed=t.int("seed", 0),
        )
        longest = trace.prompt_tokens[1] + trace.output_tokens[1] - 1
        if longest > context:
            raise t.error(
                "output_tokens",
                f"the longest request needs {longest} cache rows (prompt + output - 1), "
                f"more than serving.context {context}",
            )

    baselines = top.raw("baselines")
    names: tuple[str, ...] = ("dgx-h100", "dgx-a100")
    if baselines is not None:
        if not isinstance(baselines.value, list) or not all(
            isinstance(b.value, str) for b in baselines.value
        ):
            raise SpecError(f"{baselines.where}: baselines must be a list of GPU node names")
        names = tuple(b.value for b in baselines.value)

    return CoeSpec(
        path=path,
        name=top.str("name", Path(path).stem),
        hardware=hardware,
        sockets=sockets,
        launch=launch,
        experts=experts,
        router=router,
        cache_policy=cache_policy,
        prefetch=prefetch,
        batch=batch,
        context=context,
        trace=trace,
        baselines=names,
    )
