"""RHGEN_SOURCE=docker: containers from a Docker Engine API on a unix socket, routed like Rancher's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from servers import DockerDaemon, docker_container, free_port, rhgen_env


@pytest.fixture
def sockets():
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def daemon(sockets):
    server = DockerDaemon(sockets / "docker.sock")
    yield server
    server.close()


def run(tmp_path: Path, daemon: DockerDaemon, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = rhgen_env(tmp_path, free_port(), **{"RHGEN_SOURCE": "docker", "DOCKER_HOST": daemon.url, **settings})
    return subprocess.run([sys.executable, "-m", "rhgen", *args], env=env, capture_output=True, text=True, timeout=30)


def routes(tmp_path: Path, daemon: DockerDaemon, **settings: str) -> dict:
    result = run(tmp_path, daemon, "routes", "--json", **settings)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_running_compose_containers_become_stack_backends(tmp_path, daemon):
    daemon.put(
        docker_container("app1-web-1", "app1", "172.18.0.2", 8080),
        docker_container("app1-web-2", "app1", "172.18.0.3", 8080, health="healthy"),
        docker_container("App-R2-api-1", "App-R2", "172.19.0.2", 9000, service="api", proxy_protocol="send-proxy"),
        docker_container("app1-db-1", "app1", "172.18.0.4", None, service="db"),  # no routing label
    )
    data = routes(tmp_path, daemon, RANCHER_PROXY_LABEL="proxy_protocol")
    assert [(r["host"], r["backend"]) for r in data["routes"]] == [("app-r2.dev.tld", "app-r2"), ("app1.dev.tld", "app1")]
    servers = {s["container"]: s for r in data["routes"] for s in r["servers"]}
    assert set(servers) == {"app1-web-1", "app1-web-2", "App-R2-api-1"}
    assert (servers["app1-web-2"]["address"], servers["app1-web-2"]["port"]) == ("172.18.0.3", 8080)
    assert servers["App-R2-api-1"]["proxy_protocol"] == "send-proxy"
    assert servers["App-R2-api-1"]["name"].startswith("api-")
    assert data["skipped"] == []
    # The list was filtered by the routing label on the daemon's side; only running ones were inspected.
    assert any("filters=" in r and "map-public-http" in r for r in daemon.requests)


def test_stopped_unhealthy_and_starting_containers_get_no_traffic(tmp_path, daemon):
    daemon.put(
        docker_container("app1-web-1", "app1", "172.18.0.2", 8080, health="healthy"),
        docker_container("app1-web-2", "app1", "172.18.0.3", 8080, health="unhealthy"),
        docker_container("app1-web-3", "app1", "172.18.0.5", 8080, health="starting"),
        docker_container("app1-web-4", "app1", "172.18.0.6", 8080, status="exited"),
        docker_container("app1-web-5", "app1", "172.18.0.7", 8080, status="paused"),
    )
    data = routes(tmp_path, daemon)
    assert [s["container"] for s in data["routes"][0]["servers"]] == ["app1-web-1"]
    reasons = {s["what"]: s["reason"] for s in data["skipped"]}
    assert reasons == {
        "container 'app1-web-2'": "health_state is 'unhealthy'",
        "container 'app1-web-3'": "health_state is 'starting'",
        "container 'app1-web-4'": "state is 'exited'",
        "container 'app1-web-5'": "state is 'paused'",
    }
    inspected = [r for r in daemon.requests if r.endswith("/json") and "/containers/json" not in r]
    assert len(inspected) == 3  # the exited and paused ones are judged from the list alone


def test_network_setting_picks_the_address(tmp_path, daemon):
    both = docker_container("app1-web-1", "app1", "172.18.0.2", 8080, network="app1_default")
    both["NetworkSettings"]["Networks"]["proxy"] = {**both["NetworkSettings"]["Networks"]["app1_default"], "IPAddress": "10.5.0.7"}
    other = docker_container("app2-web-1", "app2", "172.20.0.2", 8080, network="app2_default")
    daemon.put(both, other)

    first = routes(tmp_path, daemon)
    assert {s["address"] for r in first["routes"] for s in r["servers"]} == {"172.18.0.2", "172.20.0.2"}

    chosen = routes(tmp_path, daemon, RHGEN_DOCKER_NETWORK="proxy")
    assert [s["address"] for r in chosen["routes"] for s in r["servers"]] == ["10.5.0.7"]
    assert chosen["skipped"] == [{
        "what": "container 'app2-web-1'",
        "reason": "is not attached to network 'proxy' (RHGEN_DOCKER_NETWORK; it is on app2_default)",
    }]


def test_containers_outside_compose_or_without_address_are_skipped_with_the_reason(tmp_path, daemon):
    plain = docker_container("lonely", None, "172.17.0.9", 8080)
    host_mode = docker_container("app3-web-1", "app3", "", 8080)
    host_mode["NetworkSettings"]["Networks"] = {"host": {**host_mode["NetworkSettings"]["Networks"]["app3_default"], "IPAddress": ""}}
    daemon.put(plain, host_mode, docker_container("app3-web-2", "app3", "172.21.0.2", "80a"))
    result = run(tmp_path, daemon, "routes")
    assert result.returncode == 0, result.stderr
    assert "container 'lonely': has no label com.docker.compose.project" in result.stdout
    assert "container 'app3-web-1': has no IP address on network 'host'" in result.stdout
    assert "container 'app3-web-2': label map-public-http='80a' is not a port (1-65535)" in result.stdout
    # Bad labels are warnings, the ordinary states are not.
    assert "lonely" in result.stderr


def test_generate_writes_a_config_haproxy_accepts(tmp_path, daemon):
    daemon.put(docker_container("app1-web-1", "app1", "172.18.0.2", 8080, health="healthy"))
    result = run(tmp_path, daemon, "generate")
    assert result.returncode == 0, result.stderr
    assert "server web-" in (tmp_path / "backends.cfg").read_text()
    assert "172.18.0.2:8080" in (tmp_path / "backends.cfg").read_text()
    assert (tmp_path / "domain.map").read_text().splitlines()[-1] == "app1.dev.tld app1"


def test_a_missing_socket_is_one_error_line_and_changes_nothing(tmp_path, sockets):
    env = rhgen_env(tmp_path, free_port(), RHGEN_SOURCE="docker", DOCKER_HOST=f"unix://{sockets}/nope.sock")
    result = subprocess.run([sys.executable, "-m", "rhgen", "generate"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == f"rhgen: error: docker unix://{sockets}/nope.sock /containers/json: socket not found"
    assert list(tmp_path.iterdir()) == []


def test_a_daemon_error_is_reported(tmp_path, daemon):
    daemon.down = True
    result = run(tmp_path, daemon, "generate")
    assert result.returncode == 1
    assert "HTTP 500" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["/var/run/docker.sock", "http://x", "unix://relative.sock", "tcp://a b"])
def test_docker_host_must_be_unix_or_tcp(tmp_path, daemon, value):
    result = run(tmp_path, daemon, "generate", DOCKER_HOST=value)
    assert result.returncode == 2
    assert "DOCKER_HOST" in result.stderr


def test_docker_host_is_not_checked_for_other_sources(tmp_path):
    # Often set for the docker CLI on hosts that use another source.
    answers = tmp_path / "answers.json"
    answers.write_text('{"containers": []}')
    env = rhgen_env(tmp_path, free_port(), RHGEN_SOURCE="file", METADATA_FILE=str(answers), DOCKER_HOST="ssh://me@host")
    result = subprocess.run([sys.executable, "-m", "rhgen", "routes"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_disable_metadata_and_docker_source_contradict(tmp_path, daemon):
    result = run(tmp_path, daemon, "generate", DISABLE_METADATA="true", METADATA_FILE=str(tmp_path / "m.json"))
    assert result.returncode == 2
    assert "contradict" in result.stderr
