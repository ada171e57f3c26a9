"""The bar chart of a run (bench/network_bench.png is the recorded one)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.network.figures import median
from bench.network.measurement import MB, Measurement
from bench.network.names import NODE, ORTHANC


def plot(results: Sequence[Measurement], path: Path) -> None:
    """One panel per metric, one bar per target (medians); the storage panel also shows the input."""
    names = list(dict.fromkeys(m.target for m in results))
    colours = {NODE: "tab:blue", ORTHANC: "tab:orange"}
    panels = [
        ("ingest instances/s", lambda m: m.ingest.per_second),
        ("ingest MB/s", lambda m: m.ingest.mb_per_second),
        ("C-GET instances/s", lambda m: m.retrieve.per_second),
        ("C-GET MB/s", lambda m: m.retrieve.mb_per_second),
        ("C-MOVE instances/s", lambda m: m.move.per_second),
        ("C-MOVE MB/s", lambda m: m.move.mb_per_second),
    ]
    figure = Figure(figsize=(22, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels) + 1, gridspec_kw={"width_ratios": [1] * len(panels) + [1.8]})
    for ax, (title, metric) in zip(axes, panels, strict=False):
        values = [median(metric(m) for m in results if m.target == n) for n in names]
        bars = ax.bar(names, values, color=[colours.get(n, "grey") for n in names])
        ax.bar_label(bars, fmt="%.1f")
        ax.margins(y=0.15)
        ax.set_title(f"{title}\n(higher is better)", fontsize=9)
    labels, values, colors = ["sent"], [median(m.ingest.bytes / MB for m in results)], ["grey"]
    for n in names:
        runs = [m for m in results if m.target == n]
        labels.append(f"{n}\nafter ingest")
        values.append(median(m.stored_after_ingest / MB for m in runs))
        colors.append(colours.get(n, "grey"))
        if any(m.compress_seconds is not None for m in runs):
            labels.append(f"{n}\nafter compression")
            values.append(median(m.stored_final / MB for m in runs))
            colors.append(colours.get(n, "grey"))
    bars = axes[-1].bar(range(len(labels)), values, color=colors)
    axes[-1].bar_label(bars, fmt="%.1f")
    axes[-1].margins(y=0.15)
    axes[-1].set_xticks(range(len(labels)), labels, fontsize=8)
    axes[-1].set_title("MB sent, and storage directory MB\n(lower is better)", fontsize=9)
    figure.suptitle("DICOM network benchmark: storescu ingest, getscu and movescu retrieval (medians)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
