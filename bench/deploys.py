"""Failed requests and reloads through deploys (issue 11). Not a test: a measurement to run by hand.

    .venv/bin/python -m bench.deploys            # both variants, prints the table
    .venv/bin/python -m bench.deploys --write    # and puts it into docs/benchmarks.md

Everything is real and local: the Rancher metadata look-alike (tests/servers.py), haproxy -W with a
master socket (its reload counter), `rhgen generate` run after each metadata change (as watch mode
would, `--lag` seconds after the containers changed), and every "container" an HTTP app in its own
process on 127.0.0.x, labelled rhgen.healthcheck=/healthz: SIGTERM stops it gracefully (for
fall x inter + 1.5 s its /healthz answers 503 while everything else is still answered, with
`Connection: close`; then it stops accepting and exits), SIGKILL without warning. Client threads, half with
`Connection: close` and half keep-alive, ask the stack under change all the time and count every
answer other than 200 and every connection error as failed.

Variants: "before" renders with the templates of today's release (no health checks, no retries,
every server change reloads: no stats socket); "after" with this checkout's templates and
HAPROXY_STATS_SOCKET set.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from tests.support.haproxy import Haproxy
from tests.support.metadata import container, MetadataServer
from tests.support.net import free_port
from tests.support.rhgen import rhgen_env

BEFORE_COMMIT = "4741932"  # the release before issue 11: no checks, no retries, reloads on server changes
INTER_MS, FALL, RISE = 1000, 2, 2  # the defaults

APP = r"""
import signal, sys, threading, time
from tests.support.apps import App
app = App(sys.argv[1], sys.argv[2])
grace = float(sys.argv[3])
handler = app.server.RequestHandlerClass
draining = threading.Event()
original_get, original_end = handler.do_GET, handler.end_headers
def do_GET(self):
    if draining.is_set() and self.path == "/healthz":  # stopping: tell the proxy first
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return
    original_get(self)
def end_headers(self):
    if draining.is_set():  # and let every connection go after its answer
        self.send_header("Connection", "close")
        self.close_connection = True
    original_end(self)
handler.do_GET, handler.end_headers = do_GET, end_headers
def stop(*_):
    draining.set()
    time.sleep(grace)  # still serving: the proxy's health check takes it out meanwhile
    app.server.shutdown()
    app.server.server_close()
    time.sleep(0.5)  # requests already accepted finish
    sys.exit(0)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop).start())
print(app.port, flush=True)
while True:
    time.sleep(3600)
"""
# A graceful stop as orchestrators expect it (SIGTERM, grace period, exit): /healthz fails for longer
# than fall x inter plus one check, requests keep being answered, then the process exits.
GRACE = FALL * INTER_MS / 1000 + 1.5


class AppProcess:
    """A "container": tests.support.apps.App in its own process, so SIGKILL ends its connections as a crash does."""

    def __init__(self, name: str, ip: str, stack: str):
        self.name, self.ip, self.stack = name, ip, stack
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", APP, name, ip, str(GRACE)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.port = int(self.process.stdout.readline())

    def container(self) -> dict:
        return container(self.stack, "web", self.ip, self.port, labels={"rhgen.healthcheck": "/healthz"}, name=self.name)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self) -> None:
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@dataclass
class Load:
    """Client threads asking `host` through haproxy; failures with their time."""

    port: int
    host: str
    threads_per_kind: int = 2
    pause: float = 0.002  # between two requests of one thread: a bounded load, the machine is shared
    most: int = 0  # requests per thread at most (0: until stop())
    requests: dict[str, int] = field(default_factory=lambda: {"close": 0, "keep-alive": 0})
    failures: dict[str, list[float]] = field(default_factory=lambda: {"close": [], "keep-alive": []})
    reasons: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for kind in ("close", "keep-alive"):
            for _ in range(self.threads_per_kind):
                thread = threading.Thread(target=self._run, args=(kind,), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def _run(self, kind: str) -> None:
        connection = None
        sent = 0
        while not self._stop.is_set() and not (self.most and sent >= self.most):
            sent += 1
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                headers = {"Host": self.host}
                if kind == "close":
                    headers["Connection"] = "close"
                connection.request("GET", "/", headers=headers)
                answer = connection.getresponse()
                answer.read()
                ok = answer.status == 200
                reason = str(answer.status)
                if kind == "close" or answer.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                ok, reason = False, type(exc).__name__
                if connection is not None:
                    connection.close()
                connection = None
            self.requests[kind] += 1
            if not ok:
                self.failures[kind].append(time.monotonic())
                self.reasons.append(f"{kind} {reason} at {time.monotonic() - self.started:.2f} s")
            time.sleep(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


@dataclass(frozen=True)
class Result:
    variant: str
    scenario: str
    requests: dict[str, int]
    failed: dict[str, int]
    reloads: int
    note: str = ""


class Bench:
    """One scenario's world: metadata, apps, haproxy, rhgen generate."""

    def __init__(self, folder: Path, sockets: Path, variant: str, lag: float):
        self.folder, self.variant, self.lag = folder, variant, lag
        self.metadata = MetadataServer()
        self.apps: list[AppProcess] = []
        self.next_ip = 11
        port = free_port()
        extra = {"RANCHER_API_HOST": self.metadata.host}
        if variant == "before":
            extra["RHGEN_TEMPLATE_DIR"] = str(_before_templates(folder))
        else:
            extra["HAPROXY_STATS_SOCKET"] = str(sockets / "stats.sock")
        self.env = rhgen_env(folder, port, **extra)
        self.port = port
        self.haproxy: Haproxy | None = None

    def app(self, stack: str = "app1") -> AppProcess:
        app = AppProcess(f"{stack}-{self.next_ip}", f"127.0.0.{self.next_ip}", stack)
        self.next_ip += 1
        self.apps.append(app)
        return app

    def publish(self, live: list[AppProcess]) -> None:
        self.metadata.set([a.container() for a in live])
        result = subprocess.run([sys.executable, "-m", "rhgen", "generate"], env=self.env,
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"rhgen generate: {result.stderr}")

    def start(self, live: list[AppProcess]) -> None:
        self.publish(live)
        self.haproxy = Haproxy(self.folder, self.port).start()
        self.env["RELOAD_COMMAND"] = self.haproxy.reload_command
        time.sleep(0.5)

    def close(self) -> None:
        if self.haproxy:
            self.haproxy.close()
        for app in self.apps:
            app.stop(signal.SIGKILL)
            app.wait()
        self.metadata.close()


def _before_templates(folder: Path) -> Path:
    templates = folder / "before-templates"
    templates.mkdir(exist_ok=True)
    for name in ("haproxy.cfg.j2", "backends.cfg.j2"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:templates/{name}"],
                              capture_output=True, text=True, check=True).stdout
        (templates / name).write_text(text)
    return templates


def rolling(bench: Bench) -> str:
    live = [bench.app() for _ in range(3)]
    bench.start(live)
    load = Load(bench.port, "app1.dev.tld").start()
    time.sleep(1)
    for index in range(3):
        new = bench.app()
        live.append(new)
        bench.publish(live)  # the new one is up and listed
        time.sleep(RISE * INTER_MS / 1000 + 0.5)  # and healthy
        old = live.pop(0)
        old.stop()  # then the old one stops, and the source notices once it has exited
        old.wait()
        time.sleep(bench.lag)
        bench.publish(live)
    time.sleep(1)
    load.stop()
    return _finish(bench, "1. rolling replacement, 3 servers one at a time", load)


def scale(bench: Bench) -> str:
    live = [bench.app()]
    bench.start(live)
    load = Load(bench.port, "app1.dev.tld").start()
    time.sleep(1)
    live += [bench.app() for _ in range(4)]
    bench.publish(live)
    if os.environ.get("BENCH_DEBUG"):
        print("scaled up at", f"{time.monotonic() - load.started:.2f}", file=sys.stderr)
    time.sleep(2)
    leaving = live[1:]
    for app in leaving:
        app.stop()
    if os.environ.get("BENCH_DEBUG"):
        print("stopping at", f"{time.monotonic() - load.started:.2f}", file=sys.stderr)
    for app in leaving:
        app.wait()
    time.sleep(bench.lag)
    bench.publish(live[:1])
    time.sleep(1)
    load.stop()
    return _finish(bench, "2. scale 1 → 5 → 1", load)


def kill(bench: Bench) -> str:
    live = [bench.app() for _ in range(3)]
    bench.start(live)
    load = Load(bench.port, "app1.dev.tld").start()
    time.sleep(1)
    killed_at = time.monotonic()
    live[0].stop(signal.SIGKILL)
    live[0].wait()
    time.sleep(4.0)  # the metadata lags as the 10 s schedule does
    bench.publish(live[1:])
    time.sleep(1)
    load.stop()
    bound = killed_at + FALL * INTER_MS / 1000
    late = sum(t > bound for kind in load.failures.values() for t in kind)
    return _finish(bench, "3. a server killed (SIGKILL), metadata 4 s late", load, f"{late} failed after fall × inter")


def new_stack(bench: Bench) -> str:
    live = [bench.app() for _ in range(2)]
    bench.start(live)
    load = Load(bench.port, "app1.dev.tld").start()
    time.sleep(1)
    other = bench.app("app2")
    bench.publish([*live, other])
    assert bench.haproxy is not None
    bench.haproxy.wait_routes("app2.dev.tld", other.name, timeout=10)
    time.sleep(1)
    load.stop()
    return _finish(bench, "4. a new stack appears while others serve", load)


RESULTS: list[Result] = []


def _finish(bench: Bench, scenario: str, load: Load, note: str = "") -> str:
    assert bench.haproxy is not None
    reloads = bench.haproxy.reloads
    if os.environ.get("BENCH_DEBUG"):
        print(scenario, load.reasons, file=sys.stderr)
    RESULTS.append(Result(bench.variant, scenario, dict(load.requests),
                          {k: len(v) for k, v in load.failures.items()}, reloads, note))
    return scenario


SCENARIOS: list[Callable[[Bench], str]] = [rolling, scale, kill, new_stack]
if os.environ.get("BENCH_ONLY"):
    SCENARIOS = [f for f in SCENARIOS if f.__name__ == os.environ["BENCH_ONLY"]]


def run(variants: list[str], lag: float) -> list[Result]:
    for variant in variants:
        for scenario in SCENARIOS:
            with tempfile.TemporaryDirectory(prefix="rhgen-deploys-") as tmp, \
                    tempfile.TemporaryDirectory(prefix="rh-", dir="/tmp") as sockets:
                bench = Bench(Path(tmp), Path(sockets), variant, lag)
                try:
                    print(f"bench deploys: {variant}, {scenario.__name__} …", file=sys.stderr)
                    scenario(bench)
                finally:
                    bench.close()
    return RESULTS


def table(results: list[Result], lag: float) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    lines = [
        "## Deploys (issue 11)",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), {haproxy}.",
        f"Reproduce: `.venv/bin/python -m bench.deploys --write` (Rancher metadata look-alike; the source notices "
        f"a stop {lag} s after the container exited, a kill 4 s late). 2 close + 2 keep-alive client threads on the stack under change.",
        "\"before\": the templates of the release before issue 11, no stats socket; \"after\": this checkout,",
        "health checks `inter 1000 fall 2 rise 2`, `retry-on conn-failure` + `option redispatch 1`, HAPROXY_STATS_SOCKET.",
        "",
        "| scenario | variant | requests close / keep-alive | failed close / keep-alive | reloads | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in sorted(results, key=lambda r: (r.scenario, r.variant != "before")):
        lines.append(
            f"| {r.scenario} | {r.variant} | {r.requests['close']:,} / {r.requests['keep-alive']:,} | "
            f"{r.failed['close']} / {r.failed['keep-alive']} | {r.reloads} | {r.note} |"
        )
    lines += [
        "",
        "Goals (issue 11): 1 and 2 → 0 failed, 0 reloads (servers are added, drained and deleted through the",
        "runtime API); 3 → failures only for requests in flight on the killed server, none after fall × inter;",
        "4 → one reload (a new backend), 0 failed. \"before\" fails every request sent to a stopped server before",
        "the source says so: refused, retried on the same server a second apart, 503; and it reloads on every",
        "server change.",
        "",
        "What the figures depend on: the apps stop gracefully (their /healthz fails before they stop listening).",
        "An app that exits at once on SIGTERM loses the requests in flight and those its kernel had already",
        "accepted into the listen backlog (0-3 per scenario in trial runs): such a request reached the server,",
        "so it is not retried. A killed server's in-flight requests fail the same way (0-1 per run here).",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path) -> None:
    """Replace (or append) the `## Deploys (issue 11)` section of docs/benchmarks.md."""
    current = path.read_text()
    pattern = re.compile(r"## Deploys \(issue 11\)\n.*?(?=\n## |\Z)", re.S)
    updated = pattern.sub(text.rstrip("\n") + "\n", current) if pattern.search(current) else current.rstrip("\n") + "\n\n" + text
    path.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="before,after")
    parser.add_argument("--lag", type=float, default=0.5, help="seconds between a stop and the source saying so")
    parser.add_argument("--write", action="store_true", help="put the table into docs/benchmarks.md")
    args = parser.parse_args()
    if not shutil.which("haproxy"):
        sys.exit("bench: haproxy is needed")
    text = table(run(args.variants.split(","), args.lag), args.lag)
    print(text)
    if args.write:
        write_section(text, ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    main()
