"""How long from `docker start` of a labelled container to its first 200 through haproxy, with
`rhgen watch` following the real Docker daemon's events? Not a test: a measurement to run by hand.

    .venv/bin/python -m bench.docker_convergence               # 20 rounds of each kind
    .venv/bin/python -m bench.docker_convergence --rounds 30 --settle 0.1

Everything is real: the Docker daemon on /var/run/docker.sock, a busybox httpd container on a
network made for the measurement (its bridge IP is reachable from the host), `rhgen watch` on
the host writing the files and reloading haproxy -W (SIGUSR2 to the master), as the watch mode
does in production. A round stops the container, waits until haproxy no longer routes to it,
then times from just before `docker start` until a request with the stack's Host header is
answered 200 by the container. Two kinds: a container without a HEALTHCHECK, and one whose
HEALTHCHECK runs every 0.5 s (it gets traffic only once `healthy`, so the check's interval
adds to the figure). Every container and network it makes is removed at the end.

measure() returns the numbers as a dict, for a harness that wants to import it.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.docker import build_backend_image, daemon_answers, docker, DockerLab
from tests.support.haproxy import Haproxy
from tests.support.net import free_port, wait_for
from tests.support.rhgen import rhgen_env, Watch

HEALTH_INTERVAL = "0.5s"


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "samples": len(ordered),
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[max(0, -(-len(ordered) * 95 // 100) - 1)], 3),
        "max": round(ordered[-1], 3),
    }


def routed(haproxy: Haproxy, host: str) -> bool:
    try:
        return haproxy.get(host)[0] == 200
    except (OSError, http.client.HTTPException):
        return True  # a request to the stopped container's address that timed out: still routed there


def measure(rounds: int = 20, settle: float = 0.2) -> dict[str, Any]:
    daemon_answers()
    image = build_backend_image()
    lab = DockerLab()
    folder = Path(tempfile.mkdtemp(prefix="rhb-", dir="/tmp"))
    haproxy, watcher = None, None
    try:
        net = lab.network("bench")
        plain, checked = lab.name("plain"), lab.name("checked")
        lab.run(image, "sh", "-c", "hostname > /www/index.html; exec httpd -f -p 80 -h /www", name=plain,
                network=net, labels={lab.route_label: "80"}, options=["--hostname", plain])
        lab.run(image, "sh", "-c", "hostname > /www/index.html; exec httpd -f -p 80 -h /www", name=checked,
                network=net, labels={lab.route_label: "80"},
                options=["--hostname", checked, "--health-cmd", "wget -q -O /dev/null http://127.0.0.1/",
                         "--health-interval", HEALTH_INTERVAL])
        for name in (plain, checked):
            docker("stop", "-t", "1", name)
        port = free_port()
        env = rhgen_env(folder, port, RHGEN_SOURCE="docker", DOCKER_HOST="unix:///var/run/docker.sock",
                        RANCHER_LABEL=lab.route_label, RHGEN_SETTLE=str(settle),
                        HAPROXY_STATS_SOCKET=str(folder / "stats.sock"))
        watcher = Watch(env, "--allow-empty")  # renders the first (empty) configuration
        watcher.wait_out("changed:", timeout=30)
        haproxy = Haproxy(folder, port).start()
        watcher.stop()
        watcher = Watch({**env, "RELOAD_COMMAND": haproxy.reload_command}, "--allow-empty")
        time.sleep(1)
        reloads_before = haproxy.reloads

        results: dict[str, list[float]] = {plain: [], checked: []}
        start_returned: list[float] = []  # the `docker start` command alone: the daemon's share
        for _ in range(rounds):
            for name in (plain, checked):
                host = f"{name}.dev.tld"
                started = time.monotonic()
                docker("start", name)
                start_returned.append(time.monotonic() - started)
                haproxy.wait_routes(host, name + "\n", timeout=30)
                results[name].append(time.monotonic() - started)
                docker("stop", "-t", "1", name)
                wait_for(lambda: not routed(haproxy, host), timeout=30, what=f"{host} to stop answering")
        return {
            "rounds": rounds,
            "settle": settle,
            "without_healthcheck_seconds": summary(results[plain]),
            "healthcheck_every_0_5s_seconds": summary(results[checked]),
            "docker_start_command_seconds": summary(start_returned),
            "reloads": haproxy.reloads - reloads_before,
        }
    finally:
        if watcher:
            watcher.stop()
        if haproxy:
            haproxy.close()
        lab.close()
        shutil.rmtree(folder, ignore_errors=True)


def render(result: dict[str, Any], measured: str) -> list[str]:
    """The docs/benchmarks.md section (bench/__main__.py writes it too)."""
    def row(what: str, key: str) -> str:
        s = result[key]
        return f"| {what} | {s['samples']} | {s['median'] * 1000:.0f} ms | {s['p95'] * 1000:.0f} ms | {s['max'] * 1000:.0f} ms |"

    return [
        "## Docker: `docker start` to first 200", "",
        f"Measured {measured}. Reproduce: `.venv/bin/python -m bench.docker_convergence --rounds {result['rounds']} --markdown`.", "",
        "The real Docker daemon (20.10), a busybox httpd container on a network made for the run, `rhgen watch`",
        f"(RHGEN_SETTLE {result['settle']} s) on the host following `/events`, writing the files and reloading",
        "haproxy -W with SIGUSR2; from just before `docker start` until the stack's host answers 200 through haproxy.",
        "",
        "| what | samples | median | p95 | max |", "|---|---:|---:|---:|---:|",
        row("no HEALTHCHECK", "without_healthcheck_seconds"),
        row(f"HEALTHCHECK every {HEALTH_INTERVAL} (routed once `healthy`)", "healthcheck_every_0_5s_seconds"),
        row("the `docker start` command alone", "docker_start_command_seconds"),
        "",
        f"Of the figure without a healthcheck, `docker start` itself takes about half; the rest is the settle",
        f"window, one rhgen run and one reload ({result['reloads']} reloads for {2 * result['rounds']} starts and as many stops).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--settle", type=float, default=0.2)
    parser.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md section, not JSON")
    args = parser.parse_args()
    result = measure(args.rounds, args.settle)
    if args.markdown:
        from bench.__main__ import machine

        measured = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}"
        print("\n".join(render(result, measured)))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
