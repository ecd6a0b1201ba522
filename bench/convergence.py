"""Convergence: time from a metadata change (a new stack appears) to its host answering through haproxy."""

from __future__ import annotations

import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.apps import App
from tests.support.haproxy import Haproxy
from tests.support.metadata import CONTAINERS, MetadataServer, synthetic_aliases, synthetic_containers
from tests.support.net import free_port, get
from tests.support.rhgen import rhgen_env

SIZE = 1000
NEW_HOST = "app-new.dev.tld"


@dataclass(frozen=True)
class Convergence:
    mode: str
    samples: list[float]
    how: str

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def _status(port: int) -> int:
    try:
        return get(port, NEW_HOST, timeout=2)[0]
    except OSError:
        return 0


def measure(mode: str, command: list[str], samples: int, period_hint: float) -> Convergence:
    containers = synthetic_containers(SIZE, extra=1)
    new = containers[-1]
    before, after = json.dumps(containers[:-1]).encode(), json.dumps(containers).encode()
    server = MetadataServer(service_metadata=synthetic_aliases(SIZE))
    server.answer(CONTAINERS, body=before)
    backend = App("ok", new["primary_ip"], int(new["labels"]["map-public-http"]))
    with tempfile.TemporaryDirectory(prefix="rhgen-bench-conv-") as tmp:
        folder = Path(tmp)
        port = free_port()
        env = rhgen_env(folder, port, RANCHER_API_HOST=server.host)
        subprocess.run([sys.executable, "-m", "rhgen", "generate"], env=env, check=True, capture_output=True)
        haproxy = Haproxy(folder, port, master=False).start()
        env["RELOAD_COMMAND"] = haproxy.reload_command
        runner = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        results = []
        try:
            time.sleep(1.0)
            for _ in range(samples):
                time.sleep(random.uniform(0, period_hint))  # changes come at any moment of the schedule
                server.answer(CONTAINERS, body=after)
                start = time.monotonic()
                while _status(port) != 200:
                    if time.monotonic() - start > period_hint * 3 + 10:
                        raise TimeoutError(f"{mode}: the new host never answered")
                    time.sleep(0.005)
                results.append(time.monotonic() - start)
                server.answer(CONTAINERS, body=before)
                while _status(port) == 200:
                    time.sleep(0.02)
        finally:
            subprocess.os.killpg(runner.pid, signal.SIGTERM)
            runner.wait(10)
            haproxy.close()
            server.close()
            backend.close()
    return Convergence(mode, results, "")


def measure_all() -> list[Convergence]:
    period = 10
    loop = ["sh", "-c", f"while true; do {sys.executable} -m rhgen generate; sleep {period}; done"]
    scheduled = measure(f"schedule, every {period} s (default)", loop, samples=4, period_hint=period)
    results = [
        Convergence(
            scheduled.mode, scheduled.samples,
            f"rhgen generate every {period} s as the crontab does, reload by SIGUSR2 to the haproxy master; "
            f"{SIZE:,} containers. Expect about half the period plus one changed run on average.",
        )
    ]
    from . import watch_convergence  # rhgen watch against a long-polling metadata server

    watched = watch_convergence.measure(rounds=10)
    for kind, label in (("new_stack", "a new stack"), ("new_server", "a new server in a stack"), ("new_alias", "a new alias (runtime API)")):
        figures = watched[f"{kind}_seconds"]
        results.append(
            Convergence(
                f"watch: {label}", [figures["median"], figures["max"]],
                f"rhgen watch (RHGEN_SETTLE 0.2 s) long-polling /version, 10 rounds; median and max shown."
                f" In {watched['changes']} changes it reloaded "
                f"{watched['reloads']} times: {watched['reloads_avoided']} reloads avoided through the runtime API.",
            )
        )
    return results
