"""Charts of timing results (matplotlib, PNG): a sweep's achieved time against the roofline,
looped vs unlooped; one run's per-trip (per-layer) times from the timeline, looped vs
unlooped; a sensitivity sweep of the kernel-looping speedup; a Composition-of-Experts node's
latency percentiles beside its GPU baselines.

Each chart is drawn on its own :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot
state, no display needed) at ``SIZE`` pixels and returned as PNG bytes (the tools write them
whole or not at all). Inputs are plain rows (the dicts rdu-run prints with ``--json``,
:func:`simulator.breakdown.trip_times`), so the charts import nothing of the compiler.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SIZE", "plot_sensitivity", "plot_serving_latency", "plot_sweep", "plot_trips"]

SIZE = (1200, 700)  # pixels (width, height) of every chart
_DPI = 100
_COLORS = {"looped": "tab:blue", "unlooped": "tab:orange", "roofline": "black"}


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(SIZE[0] / _DPI, SIZE[1] / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    """PNG bytes, without the matplotlib version in the metadata (the same chart, the same
    bytes); the caller writes them (tools write files whole or not at all)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _case_label(row: Mapping[str, Any], varying: Sequence[str]) -> str:
    short = {"sockets": "s", "batch": "b", "context": "ctx", "launch": "", "model": ""}
    return " ".join(f"{short[k]}{row[k]}" for k in varying) or row["model"]


def plot_sweep(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """A sweep (rows with ``model, sockets, batch, context, launch, looping, tpot_ms,
    roofline_ms, roofline_fraction``): top, TPOT per case, looped and unlooped bars with the
    roofline marked; bottom, the fraction of the roofline each reaches."""
    keys = ("model", "sockets", "batch", "context", "launch")
    cases: dict[tuple, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        cases.setdefault(tuple(row[k] for k in keys), {})[row["looping"]] = row
    varying = [k for i, k in enumerate(keys) if len({c[i] for c in cases}) > 1]
    labels = [_case_label(next(iter(v.values())), varying) for v in cases.values()]
    variants = [v for v in ("looped", "unlooped") if any(v in c for c in cases.values())]
    figure = _figure()
    top, bottom = figure.subplots(2, 1, sharex=True)
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(cases))]
        tpot = [c[variant]["tpot_ms"] if variant in c else 0 for c in cases.values()]
        fraction = [c[variant]["roofline_fraction"] if variant in c else 0 for c in cases.values()]
        top.bar(xs, tpot, width, label=variant, color=_COLORS[variant])
        bottom.bar(xs, fraction, width, label=variant, color=_COLORS[variant])
    roofline = [next(iter(c.values()))["roofline_ms"] for c in cases.values()]
    top.scatter(range(len(cases)), roofline, marker="_", s=900, color=_COLORS["roofline"], zorder=3)
    top.scatter([], [], marker="_", color=_COLORS["roofline"], label="roofline (lower bound)")
    top.set_ylabel("TPOT (step time), ms")
    top.set_title(f"{rows[0]['model']}: achieved vs roofline, looped vs unlooped")
    top.legend()
    bottom.axhline(1.0, color=_COLORS["roofline"], linewidth=1)
    bottom.set_ylabel("fraction of roofline")
    bottom.set_ylim(0, 1.05)
    bottom.set_xticks(range(len(cases)), labels, rotation=30 if len(cases) > 8 else 0)
    bottom.set_xlabel(", ".join(varying) or "case")
    figure.tight_layout()
    return _png(figure)


def plot_trips(trips: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> bytes:
    """One run's timeline per variant (``{"looped": trip_times(...), "unlooped": ...}``): top,
    every kernel execution / loop trip as a bar on the time axis; bottom, each layer's cost
    (from the previous layer's end to its own), so the gaps kernel looping removes show as the
    difference."""
    figure = _figure()
    top, bottom = figure.subplots(2, 1)
    names = list(trips)
    for y, variant in enumerate(names):
        spans = [(t["start_ms"], t["end_ms"] - t["start_ms"]) for t in trips[variant]]
        top.broken_barh(
            spans, (y - 0.35, 0.7), facecolors=_COLORS.get(variant, "tab:gray"), edgecolor="white"
        )
        ends = [(t["layers"][0], t["start_ms"], t["end_ms"]) for t in trips[variant] if t["layers"]]
        # a layer's cost: from the previous layer's end to its own (trips of a loop overlap, so
        # start-to-end would count the prefetch twice); the first layer from its start
        per_layer = [
            end - (ends[i - 1][2] if i else start) for i, (_, start, end) in enumerate(ends)
        ]
        bottom.plot(
            [layer for layer, _, _ in ends],
            per_layer,
            marker="o",
            label=variant,
            color=_COLORS.get(variant, "tab:gray"),
        )
    top.set_yticks(range(len(names)), names)
    top.set_xlabel("time in the step, ms")
    top.set_title(title)
    bottom.set_xlabel("layer")
    bottom.set_ylabel("ms per layer (previous layer's end to its end)")
    bottom.legend()
    figure.tight_layout()
    return _png(figure)


def plot_sensitivity(
    table: Mapping[str, Sequence[tuple[str, Mapping[str, float]]]],
    baseline: Mapping[str, float],
) -> bytes:
    """A sensitivity sweep: one panel per parameter, the speedup of each case (lines) at each
    value of that parameter (``table[parameter] = [(value label, {case: speedup})]``; None
    where the simulator refused the point: a gap), the all-defaults speedups (``baseline``)
    dashed."""
    names = list(table)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    figure = _figure()
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        points = table[name]
        for case in baseline:
            ax.plot(
                range(len(points)),
                [math.nan if speedups[case] is None else speedups[case] for _, speedups in points],
                marker=".",
                label=case,
            )
        for value in baseline.values():
            if value is not None:
                ax.axhline(value, linestyle="--", linewidth=0.6, color="gray")
        ax.set_xticks(range(len(points)), [label for label, _ in points], fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    figure.suptitle("kernel-looping speedup (unlooped / looped) as each parameter varies")
    figure.tight_layout()
    return _png(figure)


def plot_serving_latency(report: Mapping[str, Any]) -> bytes:
    """``rdu-serve``'s report: request latency (left) and TPOT (right) at each percentile, one
    line per node (the RDU node and every baseline), on a log scale."""
    nodes = [(report["node"], report)] + list(report["baselines"].items())
    figure = _figure()
    left, right = figure.subplots(1, 2)
    for axes, key, title in (
        (left, "latency_ms_percentiles", "request latency (arrival to last token)"),
        (right, "tpot_ms_percentiles", "TPOT (time per output token after the first)"),
    ):
        for name, figures in nodes:
            points = [(float(q), v) for q, v in figures[key].items() if v is not None]
            axes.plot(*zip(*points), marker="o", label=name)
        axes.set_yscale("log")
        axes.set_xlabel("percentile")
        axes.set_ylabel("ms")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle(
        f"{report['spec']}: {report['experts']} experts, {report['requests']} requests, "
        f"cache {report['policy']}{' + prefetch' if report['prefetch'] else ''}"
    )
    return _png(figure)
