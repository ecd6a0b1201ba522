"""The cost curve: no-change and changed run time and peak RSS against the number of containers
(100 → 1k → 10k → 30k), a least-squares line through each, and a PNG of it in docs/ (matplotlib,
from the `bench` extras). Reads the sizes `python -m bench` measured; measures nothing itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

SERIES = (
    ("no_change", "no-change run", "s"),
    ("changed", "changed run (with `haproxy -c`)", "s"),
    ("no_change_rss", "peak RSS, no-change", "MB"),
    ("changed_rss", "peak RSS, changed", "MB"),
)


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Slope, intercept and R² of the least-squares line y = slope·x + intercept."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    return slope, intercept, 1 - residual / total if total else 1.0


def plot(sizes: Sequence[dict[str, Any]], path: Path, measured: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    xs = [s["containers"] for s in sizes]
    figure, (times, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, unit in SERIES:
        axis = times if unit == "s" else memory
        ys = [s[key] * (1000 if unit == "s" else 1) for s in sizes]
        slope, intercept, r2 = fit(xs, ys)
        line = axis.plot(xs, ys, "o", label=f"{label} (R² {r2:.3f})")[0]
        axis.plot([0, max(xs)], [intercept, intercept + slope * max(xs)], "--", color=line.get_color(), linewidth=1)
    times.set(xlabel="containers", ylabel="ms (median)", title="run time")
    memory.set(xlabel="containers", ylabel="MB", title="rhgen's peak RSS")
    for axis in (times, memory):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        axis.set_xlim(left=0)
        axis.set_ylim(bottom=0)
    figure.suptitle(f"rhgen cost curve: points measured, dashed lines the least-squares fit ({measured})", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def section(sizes: Sequence[dict[str, Any]], png: Path, link: str, measured: str) -> list[str]:
    """The markdown of the cost curve, the PNG written beside it (none for fewer than 3 sizes)."""
    if len(sizes) < 3:
        return []
    try:
        plot(sizes, png, measured)
        picture = [f"![cost curve]({link})", ""]
    except ImportError:
        picture = ["(No plot: matplotlib is missing; `pip install -e '.[bench]'`.)", ""]
    counts = " → ".join(f"{s['containers']:,}" for s in sizes)
    lines = ["", "## Cost curve", "", f"{counts} containers, from the table above.", "", *picture]
    lines += ["| figure | per 1,000 containers | at 0 containers | R² of the line |", "|---|---:|---:|---:|"]
    xs = [s["containers"] for s in sizes]
    for key, label, unit in SERIES:
        scale = 1000 if unit == "s" else 1
        slope, intercept, r2 = fit(xs, [s[key] * scale for s in sizes])
        shown = "ms" if unit == "s" else "MB"
        lines.append(f"| {label} | {slope * 1000:+.1f} {shown} | {intercept:.0f} {shown} | {r2:.4f} |")
    lines += [
        "",
        "R² says how well a straight line fits: near 1 for the changed run and the memory, whose cost grows",
        "linearly with the containers on top of a fixed start-up (the intercept, mostly imports). The no-change",
        "run hardly grows at all (the answer's bytes are read and hashed, not decoded), so its R² measures",
        "only the machine's noise; its slope is the figure to read.",
    ]
    return lines
