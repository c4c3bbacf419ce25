"""Request traces for the serving simulation: synthetic (seeded) or read from a JSONL file.

Synthetic: Poisson arrivals at ``arrival_rate`` requests per second; the expert of each request
drawn with Zipf popularity (expert ``i`` of ``n``, in the order the description lists them,
with probability proportional to ``1 / (i + 1) ** zipf``: the first expert is the most popular;
``zipf = 0`` is uniform); prompt and output lengths uniform over ``[min, max]``. Each of the
four quantities comes from its own numpy ``PCG64`` stream spawned from ``seed``, drawn request
by request, so a seed gives the same trace and a longer trace of the same seed starts with the
shorter one (``--requests 2N`` serves the requests of ``--requests N`` first, then N more).

JSONL: one request per line, ``{"arrival_s": 0.5, "expert": "name", "prompt_tokens": 128,
"output_tokens": 64}`` (``expert`` is a name of the description, or its index), optional
``"prompt": [ids]`` (functional mode feeds those tokens; else it draws them). Lines are sorted
by arrival (stable); a bad line is reported as ``FILE:LINE: message``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rdu_compiler.simulator.serving import Request

__all__ = ["LengthRange", "TraceError", "read_jsonl_trace", "synthetic_trace"]


class TraceError(ValueError):
    """A trace file or parameters that do not describe requests."""


@dataclass(frozen=True)
class LengthRange:
    """Token counts drawn uniformly from ``low .. high`` (inclusive)."""

    low: int
    high: int


def synthetic_trace(
    *,
    requests: int,
    experts: int,
    arrival_rate: float,
    zipf: float,
    prompt: LengthRange,
    output: LengthRange,
    seed: int,
) -> list[Request]:
    """``requests`` requests (module docstring), sorted by arrival."""
    # one stream per quantity: drawing N of one never shifts where another's draws start
    gaps, experts_rng, prompts_rng, outputs_rng = (
        np.random.Generator(np.random.PCG64(child))
        for child in np.random.SeedSequence(seed).spawn(4)
    )
    arrivals = np.cumsum(gaps.exponential(1.0 / arrival_rate, requests))
    weights = 1.0 / np.arange(1, experts + 1, dtype=np.float64) ** zipf
    chosen = experts_rng.choice(experts, size=requests, p=weights / weights.sum())
    prompts = prompts_rng.integers(prompt.low, prompt.high, size=requests, endpoint=True)
    outputs = outputs_rng.integers(output.low, output.high, size=requests, endpoint=True)
    return [
        Request(i, float(arrivals[i]), int(chosen[i]), int(prompts[i]), int(outputs[i]))
        for i in range(requests)
    ]


_KEYS = {"arrival_s", "expert", "prompt_tokens", "output_tokens", "prompt"}


def read_jsonl_trace(
    path: str, expert_names: Sequence[str]
) -> tuple[list[Request], dict[int, list[int]]]:
    """The requests of a JSONL trace (sorted by arrival, ids in that order) and the prompts
    given as token ids, by request id."""
    index = {name: i for i, name in enumerate(expert_names)}
    rows: list[tuple[float, int, int, int, list[int] | None]] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise TraceError(f"cannot read trace '{path}': {error.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text file") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise TraceError(f"{where}: not JSON: {error.msg} (column {error.colno})") from None
        if not isinstance(item, dict):
            raise TraceError(f"{where}: expected an object with arrival_s, expert, ...")
        unknown = sorted(set(item) - _KEYS)
        if unknown:
            raise TraceError(
                f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_KEYS))}"
            )
        for key in ("arrival_s", "expert", "prompt_tokens", "output_tokens"):
            if key not in item:
                raise TraceError(f"{where}: missing {key!r}")
        arrival = item["arrival_s"]
        if (
            isinstance(arrival, bool)
            or not isinstance(arrival, int | float)
            or not (0 <= arrival < float("inf"))
        ):
            raise TraceError(f"{where}: arrival_s must be a finite number >= 0")
        expert = item["expert"]
        if isinstance(expert, str) and expert in index:
            expert = index[expert]
        elif (
            isinstance(expert, bool)
            or not isinstance(expert, int)
            or not (0 <= expert < len(expert_names))
        ):
            raise TraceError(
                f"{where}: expert {json.dumps(expert)} is neither a name of the description "
                f"nor an index 0..{len(expert_names) - 1}"
            )
        counts = []
        for key in ("prompt_tokens", "output_tokens"):
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TraceError(f"{where}: {key} must be an integer >= 1")
            counts.append(value)
        prompt = item.get("prompt")
        if prompt is not None:
            if (
                not isinstance(prompt, list)
                or len(prompt) != counts[0]
                or not all(
                    isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt
                )
            ):
                raise TraceError(
                    f"{where}: prompt must be a list of prompt_tokens ({counts[0]}) token ids"
                )
        rows.append((float(arrival), expert, counts[0], counts[1], prompt))
    if not rows:
        raise TraceError(f"{path}: the trace has no requests")
    rows.sort(key=lambda row: row[0])
    requests = [Request(i, a, e, p, o) for i, (a, e, p, o, _) in enumerate(rows)]
    prompts = {i: row[4] for i, row in enumerate(rows) if row[4] is not None}
    return requests, prompts
