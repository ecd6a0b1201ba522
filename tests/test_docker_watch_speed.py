"""`rhgen watch` on the real Docker Engine, for speed: a started container is routed at once (the first
change of a quiet period runs without waiting for the settle window), and a burst of fifty containers
started together costs at most two reloads. Real daemon, real haproxy -W reloaded by SIGUSR2 (its
master counts the reloads), real requests through it to the containers' bridge IPs."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.docker import BACKEND_COMMAND, BACKEND_IMAGE, docker, SocketRecorder, wait_for
from tests.support.haproxy import Haproxy
from tests.support.net import routes_to
from tests.support.rhgen import Watch

SOCKET = "/var/run/docker.sock"
COMPOSE, SERVICE = "com.docker.compose.project", "com.docker.compose.service"


@pytest.fixture
def proxied(target, docker_lab, run_rhgen):
    """(env, haproxy): the target's files generated empty from this lab's containers, and haproxy -W
    serving them with a master socket (its reload counter) in a short folder of its own."""
    run_dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))  # unix socket paths are short
    env = {**target.env, "PATH": os.environ["PATH"], "RHGEN_SOURCE": "docker", "DOCKER_HOST": f"unix://{SOCKET}",
           "RANCHER_LABEL": docker_lab.route_label, "RHGEN_RESYNC": "3600",
           "HAPROXY_STATS_SOCKET": str(run_dir / "stats.sock")}
    result = run_rhgen(["generate", "--allow-empty"], env)
    assert result.returncode == 0, result.stderr
    haproxy = Haproxy(target.folder, target.port, run_dir=run_dir).start()
    try:
        yield {**env, "RELOAD_COMMAND": haproxy.reload_command}, haproxy
    finally:
        haproxy.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def create(lab, name, network, labels):
    """A stopped busybox httpd container (labelled, so the lab removes it) answering its name."""
    args = ["create", "--label", lab.label, "--name", name, "--hostname", name, "--network", network]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    docker(*args, BACKEND_IMAGE, *BACKEND_COMMAND)


def watching(env, recorder):
    """`rhgen watch` through the recorder's socket, once its first run has listed the containers."""
    watcher = Watch({**env, "DOCKER_HOST": recorder.host}, "--allow-empty", "-v")
    wait_for(lambda: any("/containers/json" in r for r in recorder.requests()), 30, f"the first run: {watcher.err}")
    return watcher


def quiet(watcher, seconds):
    """Wait until rhgen has written nothing for `seconds` (with -v it logs every run)."""
    seen = [len(watcher.err), time.monotonic()]

    def still() -> bool:
        if len(watcher.err) != seen[0]:
            seen[:] = [len(watcher.err), time.monotonic()]
        return time.monotonic() - seen[1] >= seconds

    wait_for(still, 60, f"rhgen quiet for {seconds} s")


def test_a_started_container_is_routed_without_waiting_for_the_settle_window(proxied, docker_lab):
    env, haproxy = proxied
    lab = docker_lab
    web = lab.name("web")
    create(lab, web, lab.network("net"), {lab.route_label: "80"})
    # A settle window far longer than a run: waiting for it (the old debounce) cannot pass.
    recorder = SocketRecorder(SOCKET)
    watcher = watching({**env, "RHGEN_SETTLE": "5"}, recorder)
    try:
        quiet(watcher, 0.5)
        reloads = haproxy.reloads
        docker("start", web)  # sends `network connect` (a run that changes nothing), then `start`
        started = time.monotonic()
        wait_for(routes_to(haproxy.port, f"{web}.dev.tld", web + "\n"), 20, f"{web} through haproxy", interval=0.01)
        seconds = time.monotonic() - started
        assert seconds < 2.5, f"routed {seconds:.2f} s after docker start returned, RHGEN_SETTLE=5: {watcher.err}"
        assert haproxy.reloads == reloads + 1
        assert watcher.stop() == 0
    finally:
        watcher.close()
        recorder.close()


def test_fifty_containers_of_a_service_started_at_once_cost_at_most_two_reloads(proxied, docker_lab, target):
    env, haproxy = proxied
    lab = docker_lab
    net, project = lab.network("net"), lab.name("shop")
    names = [lab.name(f"web-{i}") for i in range(50)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: create(lab, n, net, {lab.route_label: "80", COMPOSE: project, SERVICE: "web"}), names))
    recorder = SocketRecorder(SOCKET)
    watcher = watching(env, recorder)  # RHGEN_SETTLE at its default
    try:
        quiet(watcher, 0.5)
        reloads = haproxy.reloads
        docker("start", *names, timeout=300)
        servers = lambda: sum(line.strip().startswith("server ") for line in target.backends.read_text().splitlines())  # noqa: E731
        wait_for(lambda: servers() == 50, 60, "50 servers in backends.cfg", interval=0.05)
        host = f"{project}.dev.tld"
        for name in names[:3] + names[-3:]:  # the first and the last started are served
            wait_for(routes_to(haproxy.port, host, name + "\n"), 20, f"{name} behind {host}", interval=0.01)
        quiet(watcher, 1.5)  # a late run would come within a few settle windows
        assert haproxy.reloads - reloads <= 2, watcher.out
        assert watcher.stop() == 0
    finally:
        watcher.close()
        recorder.close()
