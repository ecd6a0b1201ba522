"""rhgen benchmarks: `python -m bench` (from the repository's top folder, rhgen installed).

Measures, for synthetic environments of 100, 1,000 and 10,000 containers served by a real
metadata HTTP server: the no-change run, the changed run, the `haproxy -c` floor, the import
floor, peak memory, convergence, and failed requests across reloads under load. Writes the
table to docs/benchmarks.md (or --output).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import convergence, reload_safety
from .procs import median_seconds, peak_rss_mb
from tests.support.metadata import CONTAINERS, MetadataServer, synthetic_aliases, synthetic_containers
from tests.support.rhgen import rhgen_env

ROOT = Path(__file__).resolve().parent.parent
RHGEN = [sys.executable, "-m", "rhgen", "generate"]
KEPT_SECTIONS = ("Swarm source: convergence after `docker service scale`, failed requests in a rolling update", "Deploys (issue 11)")


def measure_size(count: int, runs: int) -> dict[str, float | int | bool]:
    base = json.dumps(synthetic_containers(count)).encode()
    grown = json.dumps(synthetic_containers(count, extra=1)).encode()
    server = MetadataServer(service_metadata=synthetic_aliases(count))
    server.answer(CONTAINERS, body=base)
    try:
        with tempfile.TemporaryDirectory(prefix="rhgen-bench-") as tmp:
            folder = Path(tmp)
            calls = folder / "haproxy-calls"
            recorder = folder / "haproxy-recorder"
            recorder.write_text(f'#!/bin/sh\necho x >> {calls}\nexec haproxy "$@"\n')
            recorder.chmod(0o755)
            env = rhgen_env(folder, 18080, RANCHER_API_HOST=server.host, HAPROXY_BIN=str(recorder))
            subprocess.run(RHGEN, env=env, check=True, capture_output=True)
            calls.unlink()

            no_change = median_seconds(RHGEN, env, runs)
            haproxy_calls_without_change = calls.read_text().count("x") if calls.exists() else 0
            no_change_rss = peak_rss_mb(RHGEN, env)

            server.answer(CONTAINERS, rotate=[grown, base])  # every run sees a change
            changed = median_seconds(RHGEN, env, runs)
            changed_rss = peak_rss_mb(RHGEN, {**env, "HAPROXY_BIN": "true"})  # rhgen alone, not haproxy -c
            server.answer(CONTAINERS, body=base)

            check_floor = median_seconds(
                ["haproxy", "-c", "-q", "-f", env["HAPROXY_CONFIG"], "-f", env["HAPROXY_BACKEND_CONFIG"]], env, runs
            )
            backends = Path(env["HAPROXY_BACKEND_CONFIG"]).read_text().count("\nbackend ")
    finally:
        server.close()
    return {
        "containers": count,
        "backends": backends,
        "no_change": no_change,
        "haproxy_calls_without_change": haproxy_calls_without_change,
        "changed": changed,
        "check_floor": check_floor,
        "no_change_rss": no_change_rss,
        "changed_rss": changed_rss,
    }


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory / 1024 / 1024:.0f} GiB memory, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {haproxy}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="container counts (default 100,1000,10000)")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per measurement (median)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--skip-load", action="store_true", help="skip the reload-safety load test")
    parser.add_argument("--skip-convergence", action="store_true", help="skip the convergence measurement")
    parser.add_argument("--skip-docker", action="store_true", help="skip `docker start` convergence (needs a Docker daemon)")
    args = parser.parse_args()
    for tool in ("haproxy", "wrk"):
        if not shutil.which(tool) and not (tool == "wrk" and args.skip_load):
            sys.exit(f"bench: {tool} is needed (apt-get install {tool})")

    started = datetime.datetime.now(datetime.timezone.utc)
    import_floor = median_seconds([sys.executable, "-c", "import click, requests, yaml"], dict(os.environ), args.runs)
    interpreter = median_seconds([sys.executable, "-c", "pass"], dict(os.environ), args.runs)
    sizes = []
    for count in (int(n) for n in args.sizes.split(",")):
        print(f"bench: {count} containers …", file=sys.stderr)
        sizes.append(measure_size(count, args.runs))
    converge = [] if args.skip_convergence else convergence.measure_all()
    loads = []
    if not args.skip_load:
        for way in ("rhgen", "seed"):
            for close in (False, True):
                print(f"bench: reload safety, {way}, {'close' if close else 'keep-alive'} …", file=sys.stderr)
                loads.append(reload_safety.measure(way, close))
    report = render_report(started, import_floor, interpreter, sizes, converge, loads, " ".join(sys.argv[1:]))
    if not args.skip_docker:
        print("bench: docker start convergence …", file=sys.stderr)
        from . import docker_convergence

        measured = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}"
        report += "\n" + "\n".join(docker_convergence.render(docker_convergence.measure(), measured)) + "\n"
    output = Path(args.output)
    # Sections measured by their own scripts (bench/deploys.py, bench/swarm_convergence.py): keep them.
    for title in KEPT_SECTIONS:
        kept = re.search(rf"\n## {re.escape(title)}\n.*?(?=\n## |\Z)", output.read_text(), re.S) if output.exists() else None
        if kept:
            report = report.rstrip("\n") + "\n" + kept.group(0).rstrip("\n") + "\n"
    output.write_text(report)
    print(report)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def render_report(started, import_floor, interpreter, sizes, converge, loads, arguments) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine()}.",
        "",
        f"Reproduce: `python -m bench {arguments}`".rstrip() + " (from the top folder, rhgen and wrk/hyperfine installed).",
        "Times are medians of repeated runs (hyperfine). The metadata source is a real local HTTP",
        "server answering `/latest/containers` with synthetic containers (5 per stack; one in 50",
        "stopped, unhealthy or with a bad label) and aliases for every 20th stack.",
        "",
        f"Floors on this machine: the interpreter alone {_ms(interpreter)}; "
        f"`python -c \"import click, requests, yaml\"` {_ms(import_floor)} (the import floor).",
        "",
        "| containers | backends | no-change run | ÷ import floor | haproxy runs on no-change | changed run | `haproxy -c` floor | changed ÷ floor | peak RSS no-change | peak RSS changed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        lines.append(
            f"| {s['containers']:,} | {s['backends']:,} | {_ms(s['no_change'])} | {s['no_change'] / import_floor:.2f}× | "
            f"{s['haproxy_calls_without_change']} | {_ms(s['changed'])} | {_ms(s['check_floor'])} | "
            f"{s['changed'] / s['check_floor']:.1f}× | {s['no_change_rss']:.0f} MB | {s['changed_rss']:.0f} MB |"
        )
    lines += [
        "",
        "The no-change run is the common cron case: rhgen fetches, builds the model, compares its",
        "fingerprint with the live files and stops (no rendering, no haproxy). The changed run adds",
        "or removes one container each time, so it renders, runs `haproxy -c` and swaps. Peak RSS is",
        "rhgen's own process (for the changed run measured with HAPROXY_BIN=true so that the",
        "`haproxy -c` child is not counted).",
    ]
    if converge:
        lines += ["", "## Convergence", "", "Time from a metadata change (a new stack) to its host answering 200 through haproxy.", ""]
        lines += ["| mode | median | max |", "|---|---:|---:|"]
        for c in converge:
            median = c.samples[0] if c.mode.startswith("watch") else c.median
            lines.append(f"| {c.mode} | {_ms(median)} | {_ms(max(c.samples))} |")
        lines += [""] + [f"- {c.mode}: {c.how}" for c in converge]
    if loads:
        lines += [
            "", "## Reload safety", "",
            "wrk (2 threads, 32 connections, 10 s) against haproxy on 127.0.0.1 while it is reloaded 20 times;",
            "the backend is a second haproxy answering 200. Failed = socket errors + non-2xx answers.",
            "",
            "| reload way | connections | requests | failed | reloads | wrk says |",
            "|---|---|---:|---:|---:|---|",
        ]
        names = {"rhgen": "rhgen: master-worker, SIGUSR2 to the master", "seed": "seed: `haproxy -D -sf <old pids>` restart"}
        for r in loads:
            lines.append(f"| {names[r.way]} | {r.connection} | {r.requests:,} | {r.failed:,} | {r.reloads} | {r.detail} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
