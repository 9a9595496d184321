"""The benchmark's outputs: the table of figures beside their baselines, and the two plots.

Apart from the measuring (bpflab.tools.bench) because a recorded run is drawn and tabled
again without measuring anything: notebook 04 and lab measure read `labs/measure/bench.json`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from bpflab import measure


@dataclass(frozen=True)
class Figure:
    """One line of the table: a figure, its baseline from the same run, and what we aim for."""

    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    target: str
    limited_by: str

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")



def table(figures: list[Figure]) -> str:
    """Each figure, its baseline from the same run, their difference and ratio, and the target."""
    rows = [f"{'figure':74} {'value':>11} {'baseline':>11} {'diff':>10} {'ratio':>7}  target"]
    for f in figures:
        rows.append(f"{f.name:74} {f.value:11.1f} {f.baseline:11.1f} {f.value - f.baseline:10.1f} "
                    f"{f.ratio:7.2f}  {f.target}")
    return "\n".join(rows)


def plot_rtt_cdf(ax, samples: dict[str, list[float]]) -> None:
    """One CDF per responder on `ax` (a matplotlib Axes), log time axis, gridded for reading."""
    from matplotlib import ticker

    for responder, values in samples.items():
        ordered = sorted(values)
        ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=responder)
    everything = [v for values in samples.values() for v in values]
    ax.set(xscale="log", xlabel="round-trip time (µs)", ylabel="fraction of pings", title="Ping RTT, CDF",
           xlim=(min(everything) * 0.9, measure.percentile(everything, 0.995) * 1.5), ylim=(0, 1))
    ax.yaxis.set_major_locator(ticker.MultipleLocator(0.1))
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)  # 20, 30, ... labelled too: the plot is read, not just seen
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.grid(True, which="both", alpha=0.35)
    ax.legend()


def plot_qps(ax, qps: dict[str, tuple[float, float]], cores: int | None = None) -> None:
    """Queries per second per server and generator on `ax`, log scale, each bar labelled."""
    bars = ax.barh(list(qps), [value for value, _ in qps.values()])
    ax.bar_label(bars, labels=[f" {value:,.0f}/s ({busy:.1f} cores busy)" for value, busy in qps.values()],
                 fontsize=8)
    ax.set(xscale="log", xlabel="queries per second",
           title=f"DNS throughput ({cores or os.cpu_count()} cores)")
    values = [value for value, _ in qps.values()]
    ax.set_xlim(min(values) / 3, max(values) * 20)  # every bar visible, room for the labels
    ax.grid(True, axis="x", which="both", alpha=0.35)


def plots(samples: dict[str, list[float]], qps: dict[str, tuple[float, float]], folder: Path,
          cores: int | None = None) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("rtt_cdf.png", lambda ax: plot_rtt_cdf(ax, samples)),
                       ("dns_qps.png", lambda ax: plot_qps(ax, qps, cores))):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        draw(ax)
        fig.savefig(folder / name, dpi=100, bbox_inches="tight")
        written.append(folder / name)
    plt.close("all")
    return written


def recorded_qps(recorded: dict) -> dict[str, tuple[float, float]]:
    """A recorded run's throughput (the JSON `run` writes) as `plot_qps` takes it."""
    return {source: (entry["qps"], entry["cores"]) for source, entry in recorded["qps"].items()}


def recorded_figures(recorded: dict) -> list[Figure]:
    """A recorded run's figures, for `table`."""
    names = {field.name for field in fields(Figure)}
    return [Figure(**{k: v for k, v in f.items() if k in names}) for f in recorded["figures"]]
