"""`rhgen generate` with RHGEN_SOURCE=docker on the real Docker Engine at 300 labelled containers,
beside the file source holding the same model (same stacks, services, names and addresses): a
no-change run and a changed run each. Not a test: a measurement.

    .venv/bin/python -m bench.docker_scale               # JSON
    .venv/bin/python -m bench.docker_scale --markdown    # the docs/benchmarks.md section

The containers are the 1 MB busybox image running `sleep`, 3 per compose service, on a network
made for the bench. A changed run follows a change made just before it (outside the timing): the
docker side pauses or unpauses one container through the Engine API (a paused container is not
routed; the bench waits until the daemon's list says so, outside the timing), the file side writes the
answers file with or without that container. The API calls of
one run are recorded through socat (tests/support/docker.py SocketRecorder): the target is one
GET /containers/json and no inspect. Bounded: a number of runs and a time limit; every container
and network it makes is removed at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import engine_api
from bench.procs import measured_now, report
from tests.support.docker import build_backend_image, daemon_answers, DockerLab, SocketRecorder
from tests.support.metadata import container
from tests.support.rhgen import rhgen_env

RHGEN = [sys.executable, "-m", "rhgen", "generate"]
PER_SERVICE = 3


def interleaved(sides: list[tuple[dict[str, str], Callable[[int], None]]], runs: int, deadline: float) -> list[float]:
    """Median seconds of `rhgen generate` for each (env, before) side, the sides taking turns run by run
    so that both see the same load on a shared machine; before(i) runs outside the timing."""
    times: list[list[float]] = [[] for _ in sides]
    for i in range(runs + 2):  # two warm-up rounds
        if time.monotonic() > deadline and i > 2:
            break
        for side, (env, before) in enumerate(sides):
            before(i)
            started = time.perf_counter()
            done = subprocess.run(RHGEN, env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise AssertionError(f"rhgen generate: exit {done.returncode}: {done.stderr}")
            if i >= 2:
                times[side].append(elapsed)
    return [statistics.median(t) for t in times]


def measure(count: int = 300, runs: int = 20, time_limit: float = 600.0) -> dict[str, Any]:
    daemon_answers()
    image = build_backend_image()
    lab = DockerLab()
    deadline = time.monotonic() + time_limit
    try:
        net = lab.network("scale")
        names = [lab.name(f"c{i}") for i in range(count)]

        def make(i: int) -> None:
            labels = {lab.route_label: "80", "rhgen.test": lab.run_id, "com.docker.compose.project": f"app{i // PER_SERVICE}",
                      "com.docker.compose.service": "web"}
            engine_api.create(names[i], image, ["sleep", "3600"], labels, net)
            engine_api.start(names[i])

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(make, range(count)))
        setup_seconds = time.monotonic() - started
        status, listed = engine_api.call("GET", "/containers/json",
                                         {"filters": json.dumps({"label": [lab.route_label]})})
        assert status == 200 and len(listed) == count, f"{len(listed)} of {count} containers running"
        ips = {item["Names"][0].lstrip("/"): item["NetworkSettings"]["Networks"][net]["IPAddress"] for item in listed}

        with tempfile.TemporaryDirectory(prefix="rhgen-scale-") as tmp:
            folder = Path(tmp)
            # The file source: the same containers, as Rancher-shaped answers.
            answers = folder / "answers.json"
            rows = [container(f"app{i // PER_SERVICE}", "web", ips[name], 80, name=name) for i, name in enumerate(names)]
            full, less = (json.dumps({"containers": rows}), json.dumps({"containers": rows[1:]}))
            answers.write_text(full)
            file_env = rhgen_env(folder / "file", 18080, RHGEN_SOURCE="file", METADATA_FILE=str(answers))
            docker_env = rhgen_env(folder / "docker", 18080, RHGEN_SOURCE="docker",
                                   DOCKER_HOST=f"unix://{engine_api.SOCKET}", RANCHER_LABEL=lab.route_label)
            for sub in ("file", "docker"):
                (folder / sub).mkdir()
            nothing = lambda i: None  # noqa: E731
            unchanged = interleaved([(file_env, nothing), (docker_env, nothing)], runs, deadline)

            def drop(i: int) -> None:
                answers.write_text(less if i % 2 == 0 else full)

            def toggle(i: int) -> None:
                status, body = engine_api.call("POST", f"/containers/{names[0]}/{'pause' if i % 2 == 0 else 'unpause'}")
                assert status == 204, f"pause/unpause {names[0]}: HTTP {status} {body}"
                # The list answers paused as the state once the daemon is done with the pause (outside the timing).
                wanted = "paused" if i % 2 == 0 else "running"
                until = time.monotonic() + 10
                while time.monotonic() < until:
                    _, listed = engine_api.call("GET", "/containers/json", {"filters": json.dumps({"name": [names[0]]})})
                    if listed and listed[0]["State"] == wanted:
                        break
                    time.sleep(0.01)

            changed = interleaved([(file_env, drop), (docker_env, toggle)], runs, deadline)
            results = {"file": {"no_change": unchanged[0], "changed": changed[0]},
                       "docker": {"no_change": unchanged[1], "changed": changed[1]}}
            answers.write_text(full)
            if engine_api.call("GET", f"/containers/{names[0]}/json")[1]["State"]["Paused"]:
                toggle(1)
            same = (folder / "file" / "backends.cfg").read_text() == (folder / "docker" / "backends.cfg").read_text()

            recorder = SocketRecorder(engine_api.SOCKET)
            try:
                subprocess.run(RHGEN, env={**docker_env, "DOCKER_HOST": recorder.host}, check=True, capture_output=True)
                calls = recorder.requests()
            finally:
                recorder.close()
        return {
            "containers": count,
            "services": -(-count // PER_SERVICE),
            "runs": runs,
            "setup_seconds": round(setup_seconds, 1),
            "file": {k: round(v, 3) for k, v in results["file"].items()},
            "docker": {k: round(v, 3) for k, v in results["docker"].items()},
            "same_backends_file": same,
            "api_calls_per_run": [c.split(" HTTP/")[0].split("?")[0] for c in calls],
        }
    finally:
        lab.close()


def render(result: dict[str, Any], measured: str) -> list[str]:
    f, d = result["file"], result["docker"]
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    ratio = lambda k: d[k] / f[k]  # noqa: E731
    calls = ", ".join(result["api_calls_per_run"]) or "none"
    return [
        "## Docker: 300 containers, `rhgen generate`", "",
        f"Measured {measured}. Reproduce: `.venv/bin/python -m bench.docker_scale --markdown`.", "",
        f"{result['containers']} busybox `sleep` containers ({result['services']} compose services of {PER_SERVICE}) on the real "
        "Docker daemon (20.10), read with RHGEN_SOURCE=docker, beside the file source holding the same model "
        f"(same names, stacks and addresses{'; the two backends.cfg are byte-identical' if result['same_backends_file'] else ''}). "
        f"Medians of {result['runs']} runs of `python -m rhgen generate` each, the two sources taking turns run by run "
        "(so both see the same load on the shared machine); a changed run follows one container "
        "paused or unpaused (docker) or dropped from the answers file (file). Target: docker ≤ 1.5× file.", "",
        "| run | file source | docker source | docker / file | target |", "|---|---:|---:|---:|---:|",
        f"| no change | {ms(f['no_change'])} | {ms(d['no_change'])} | {ratio('no_change'):.2f}× | ≤ 1.5× |",
        f"| changed | {ms(f['changed'])} | {ms(d['changed'])} | {ratio('changed'):.2f}× | ≤ 1.5× |",
        "",
        f"Engine API calls of one run (recorded through socat): {calls} — one list call, no per-container inspect.",
    ]


def section(quick: bool) -> str:
    """The markdown section for docs/benchmarks.md (quick: the same, 20 runs is already the floor)."""
    result = measure(runs=20)
    measured = measured_now()
    return "\n".join(render(result, measured)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=300)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md section, not JSON")
    args = parser.parse_args()
    report(measure(args.containers, args.runs, args.time_limit), args.markdown, render)


if __name__ == "__main__":
    main()
