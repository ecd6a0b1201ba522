"""Convergence: time from a metadata change (a new stack appears) to its host answering through haproxy."""

from __future__ import annotations

import http.client
import http.server
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import MetadataServer, aliases, synthetic_containers
from .procs import free_port, wait_for_port

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
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/", headers={"Host": NEW_HOST})
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def _backend(ip: str, port: int) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((ip, port), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def measure(mode: str, command: list[str], samples: int, period_hint: float) -> Convergence:
    containers = synthetic_containers(SIZE, extra=1)
    new = containers[-1]
    server = MetadataServer(
        [json.dumps(containers[:-1]).encode(), json.dumps(containers).encode()], aliases(SIZE)
    )
    backend = _backend(new["primary_ip"], int(new["labels"]["map-public-http"]))
    with tempfile.TemporaryDirectory(prefix="rhgen-bench-conv-") as tmp:
        folder = Path(tmp)
        port = free_port()
        env = {
            "PATH": subprocess.os.environ["PATH"],
            "STACK_DOMAIN": "dev.tld", "BIND_ADDRESS": "127.0.0.1", "HTTP_PORT": str(port),
            "RANCHER_API_HOST": server.host,
            "HAPROXY_CONFIG": str(folder / "haproxy.cfg"),
            "HAPROXY_BACKEND_CONFIG": str(folder / "backends.cfg"),
            "HAPROXY_DOMAIN_MAP": str(folder / "domain.map"),
        }
        subprocess.run([sys.executable, "-m", "rhgen", "generate"], env=env, check=True, capture_output=True)
        haproxy = subprocess.Popen(
            ["haproxy", "-W", "-db", "-f", env["HAPROXY_CONFIG"], "-f", env["HAPROXY_BACKEND_CONFIG"]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        env["RELOAD_COMMAND"] = f"kill -USR2 {haproxy.pid}"
        wait_for_port("127.0.0.1", port)
        runner = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        results = []
        try:
            time.sleep(1.0)
            for _ in range(samples):
                time.sleep(random.uniform(0, period_hint))  # changes come at any moment of the schedule
                server.current = 1
                start = time.monotonic()
                while _status(port) != 200:
                    if time.monotonic() - start > period_hint * 3 + 10:
                        raise TimeoutError(f"{mode}: the new host never answered")
                    time.sleep(0.005)
                results.append(time.monotonic() - start)
                server.current = 0
                while _status(port) == 200:
                    time.sleep(0.02)
        finally:
            subprocess.os.killpg(runner.pid, signal.SIGTERM)
            runner.wait(10)
            haproxy.terminate()
            haproxy.wait(10)
            server.close()
            backend.shutdown()
            backend.server_close()
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
