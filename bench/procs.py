"""Small process and timing helpers for the benchmarks."""

from __future__ import annotations

import datetime
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


def median_seconds(command: list[str], env: dict[str, str], runs: int, warmup: int = 2) -> float:
    """Median wall time of a command: hyperfine when installed, else a plain loop."""
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as export:
            quoted = " ".join(_quote(part) for part in command)
            subprocess.run(
                ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
                 "--export-json", export.name, quoted],
                env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            return json.load(open(export.name))["results"][0]["median"]
    for _ in range(warmup):
        subprocess.run(command, env=env, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _quote(part: str) -> str:
    return part if part.replace("/", "").replace("-", "").replace(".", "").replace("_", "").isalnum() else repr(part)


# Run from a small process of its own: Linux records a process's peak RSS across exec, so a child
# forked straight from the benchmark (which holds the synthetic answers, tens of MB) would report
# the benchmark's size, not its own. This launcher stays small; its child's figure is the child's.
_LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_mb(command: list[str], env: dict[str, str]) -> float:
    """Peak resident memory of the command's own process (not of the haproxy -c it runs)."""
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], env=env, capture_output=True, text=True, check=True)
    code, kilobytes = (int(part) for part in done.stdout.split())
    if code != 0:
        raise RuntimeError(f"{command} exited {code}")
    return kilobytes / 1024


def summary(seconds: list[float]) -> dict[str, float]:
    """Samples, median, p95 (nearest rank) and max of `seconds`, rounded to the millisecond."""
    ordered = sorted(seconds)
    return {
        "samples": len(ordered),
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[max(0, -(-len(ordered) * 95 // 100) - 1)], 3),
        "max": round(ordered[-1], 3),
    }


def measured_now() -> str:
    """When and where a section was measured, as its first line says it."""
    from bench.__main__ import machine

    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}"


def report(result: dict[str, Any], markdown: bool, render: Callable[[dict[str, Any], str], str | list[str]]) -> None:
    """What a bench module run as a script prints: its docs/benchmarks.md section (`render` gives
    it as text or as lines), or the result as JSON."""
    if not markdown:
        print(json.dumps(result, indent=2))
        return
    section = render(result, measured_now())
    print(section if isinstance(section, str) else "\n".join(section))
